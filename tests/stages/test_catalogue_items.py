"""Catalogue-only items: indexed, embedded and coded from the meta file, recommended by content."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_warehouse import TINY_MODEL, tiny_settings

from pipeline.core.config import Settings
from pipeline.stages.codes import run_codes
from pipeline.stages.embed import run_embed
from pipeline.stages.extract import run_extract
from pipeline.stages.recommend import run_recommend
from pipeline.stages.train.run import run_train

CONTENT_MODEL = TINY_MODEL | {"modalities": ["text"], "item_content": "add", "cold_items": "content_only"}
ITEMS = [f"i{n:02d}" for n in range(12)]
NEW = ["new_titled", "new_described"]


def _write_inputs(folder: Path) -> tuple[Path, Path]:
    """Users walk i -> i+1; the meta file also describes two never-reviewed items and one without content."""
    rng = np.random.default_rng(7)
    reviews = []
    for u in range(40):
        start = int(rng.integers(len(ITEMS)))
        for step in range(6):
            item = ITEMS[(start + step) % len(ITEMS)]
            reviews.append({"reviewerID": f"u{u:02d}", "asin": item, "unixReviewTime": 1_500_000_000 + step})
    meta = [{"asin": i, "title": f"product {i}"} for i in ITEMS] + [
        {"asin": "new_titled", "title": "a brand new product"},
        {"asin": "new_described", "description": ["described, not titled"]},
        {"asin": "new_empty", "brand": "no text and no image"},
    ]
    paths = folder / "reviews.json", folder / "meta.json"
    for path, records in zip(paths, (reviews, meta), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


def _text_features(folder: Path, ids: list[str]) -> Path:
    rng = np.random.default_rng(3)
    path = folder / "text_features.parquet"
    pq.write_table(pa.table({"item_id": ids, "vector": rng.normal(size=(len(ids), 8)).tolist()}), path)
    return path


def _items(settings: Settings) -> dict[str, dict]:
    rows = pq.read_table(settings.dataset_dir("shop") / "items.parquet").to_pylist()
    return {r["item_id"]: r for r in rows}


def test_off_by_default_only_interacted_items(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", kcore=0)
    report = run_extract(settings, "shop", "amazon2018", *_write_inputs(tmp_path))
    assert set(_items(settings)) == set(ITEMS) and report.catalogue_only_items == 0
    assert all(r["has_interactions"] for r in _items(settings).values())


def test_needs_a_content_aware_model(tmp_path: Path) -> None:
    assert Settings(home=tmp_path, catalogue_items=True).model.item_content == "add"  # the defaults fit
    with pytest.raises(ValueError, match="catalogue_items needs model.item_content=add"):
        Settings(home=tmp_path, catalogue_items=True, model={"item_content": "none"})
    with pytest.raises(ValueError, match="cold_items=content_only"):
        Settings(home=tmp_path, catalogue_items=True, model={"cold_items": "id_and_content"})


def test_indexed_after_interacted_items_and_kept_when_reviewed_later(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "home", kcore=0, catalogue_items=True, model=CONTENT_MODEL)
    reviews, meta = _write_inputs(tmp_path)
    report = run_extract(settings, "shop", "amazon2018", reviews, meta)
    items = _items(settings)
    assert set(items) == set(ITEMS) | set(NEW)  # new_empty has nothing to be scored by
    assert [i for i, r in items.items() if not r["has_interactions"]] == sorted(NEW)
    assert report.catalogue_only_items == 2 and report.items == 14
    index = pq.read_table(settings.dataset_dir("shop") / "item_index.parquet").to_pydict()
    by_id = dict(zip(index["item_id"], index["item_idx"], strict=True))
    assert sorted(by_id[i] for i in NEW) == [12, 13]
    # the next night someone reviews one of them: same idx, now an interacted item
    with reviews.open("a") as f:
        review = {"reviewerID": "u00", "asin": "new_titled", "unixReviewTime": 1_600_000_000}
        f.write(json.dumps(review) + "\n")
    run_extract(settings, "shop", "amazon2018", reviews, meta)
    index = pq.read_table(settings.dataset_dir("shop") / "item_index.parquet").to_pydict()
    assert dict(zip(index["item_id"], index["item_idx"], strict=True)) == by_id
    assert _items(settings)["new_titled"]["has_interactions"]
    assert not _items(settings)["new_described"]["has_interactions"]


@pytest.mark.slow
def test_content_aware_champion_recommends_catalogue_items(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "home", kcore=0, catalogue_items=True, model=CONTENT_MODEL)
    run_extract(settings, "shop", "amazon2018", *_write_inputs(tmp_path))
    run_embed(settings, "shop", "text", import_features=_text_features(tmp_path, ITEMS + NEW))
    run_codes(settings, "shop")
    run_train(settings, "shop")
    day = date(2026, 3, 1)
    report = run_recommend(settings, "shop", day, k=len(ITEMS) + len(NEW))
    recs = pq.read_table(settings.pending_partition("shop", day) / "part-0.parquet").to_pylist()
    assert report.users == 40
    for item in NEW:  # never a target, yet scored (finite) for every user
        scores = [r["score"] for r in recs if r["item_id"] == item]
        assert len(scores) == 40 and np.isfinite(scores).all(), item
