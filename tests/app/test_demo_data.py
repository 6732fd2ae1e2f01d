"""The embedded demo dataset: deterministic bytes, real amazon2018 format, learnable structure."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from pipeline.app.demo_data import N_STYLES, STYLES, write_demo_dataset
from pipeline.core.config import load_settings
from pipeline.stages.extract import run_extract


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    first = write_demo_dataset(tmp_path / "a", seed=7)
    write_demo_dataset(tmp_path / "b", seed=7)
    write_demo_dataset(tmp_path / "c", seed=8)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a")["reviews.json.gz"] != _files(tmp_path / "c")["reviews.json.gz"]
    assert first["users"] == 400 and first["items"] == 240 and 0 < first["items_without_image"] < 24


def test_format_structure_and_extract(tmp_path: Path) -> None:
    info = write_demo_dataset(tmp_path, seed=2023, n_users=120, n_items=80)
    reviews, meta = _lines(tmp_path / "reviews.json.gz"), _lines(tmp_path / "meta.json.gz")
    assert set(reviews[0]) == {"reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary"}
    assert {"asin", "title", "brand", "category", "description", "imageURLHighRes"} <= set(meta[0])
    assert len(meta) == 80 and len(reviews) == info["interactions"]

    # the style shows in the title words and in the image's dominant colour
    by_asin = {m["asin"]: m for m in meta}
    for item, m in enumerate(meta):
        colour, rgb, material, _, _ = STYLES[item % N_STYLES]
        assert colour in m["title"].lower() and material in m["title"]
        if m["imageURLHighRes"]:
            pixels = np.asarray(Image.open(tmp_path / m["imageURLHighRes"][0]).convert("RGB")).reshape(-1, 3)
            far_from_background = pixels[np.abs(pixels.astype(int) - 235).sum(axis=1) > 60]
            if len(far_from_background):  # ivory is close to the background
                assert np.abs(far_from_background.mean(axis=0) - rgb).max() < 60
    missing = [m for m in meta if not m["imageURLHighRes"]]
    assert missing and not any((tmp_path / "images" / f"{m['asin']}.jpg").exists() for m in missing)

    # users mostly step to the next style: a sequential signal
    steps = Counter()
    by_user: dict[str, list[dict]] = {}
    for r in reviews:
        by_user.setdefault(r["reviewerID"], []).append(r)
    for rows in by_user.values():
        rows.sort(key=lambda r: r["unixReviewTime"])
        assert len({r["unixReviewTime"] for r in rows}) == len(rows)  # strictly increasing days
        styles = [list(by_asin).index(r["asin"]) % N_STYLES for r in rows]
        steps.update((b - a) % N_STYLES for a, b in zip(styles, styles[1:], strict=False))
    assert steps[1] / sum(steps.values()) > 0.6

    settings = load_settings()  # default 5-core
    report = run_extract(settings, "demo", "amazon2018", Path(info["reviews"]), Path(info["meta"]))
    assert report.rejects == 0 and report.users > 100 and report.items > 60
    items = pq.read_table(settings.dataset_dir("demo") / "items.parquet").to_pylist()
    assert {i["item_id"] for i in items if i["image_ref"] is None} == {m["asin"] for m in missing} & {
        i["item_id"] for i in items
    }
    assert all(Path(i["image_ref"]).is_file() for i in items if i["image_ref"])
