"""Every raw format parsed from the real Amazon files in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline.core.config import load_settings
from pipeline.stages.extract import run_extract
from pipeline.stages.extract.formats import get_adapter
from pipeline.stages.extract.staging import META_SCHEMA, RejectLog, stage_file
from pipeline.warehouse.queries import load_sql

pytestmark = pytest.mark.shared_data

HTML = re.compile(r"<[/!]?[A-Za-z][^<>]*>|<[A-Za-z]|&(amp|lt|gt|quot|nbsp|#\d+);")


def _table(settings, dataset: str, name: str) -> list[dict]:
    return pq.read_table(settings.dataset_dir(dataset) / f"{name}.parquet").to_pylist()


def _stage_meta(path: Path, fmt: str, tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """Only the meta side: adapter -> staged Parquet -> the one-row-per-item SQL."""
    rejects = RejectLog(tmp_path / "rejects.jsonl")
    stats = stage_file(
        path, "meta", get_adapter(fmt).meta(path), META_SCHEMA, tmp_path / "m.parquet", rejects, 0.0
    )
    rejects.close()
    assert stats.rejects == 0
    con = duckdb.connect()
    con.execute(load_sql("extract_meta"), {"meta": str(tmp_path / "m.parquet")})
    return con


def test_gift_cards_2018(shared_data: Path) -> None:
    root = shared_data / "amazon2018" / "gift_cards"
    settings = load_settings(kcore=0)
    report = run_extract(
        settings,
        "gift",
        "amazon2018",
        root / "Gift_Cards_5.json.gz",
        root / "meta_Gift_Cards.json.gz",
        root / "images",
    )
    assert report.files[0].lines == 2972 and report.duplicates_dropped == 3 and report.rejects == 0
    assert (report.interactions, report.users, report.items) == (2969, 458, 148)
    assert (report.items_with_meta, report.items_with_local_image) == (148, 115)
    items = _table(settings, "gift", "items")
    local = [i["image_ref"] for i in items if i["image_ref"] and not i["image_ref"].startswith("http")]
    assert len(local) == 115 and all(Path(p).is_file() for p in local)
    assert all(i["title"] for i in items)
    sequences = _table(settings, "gift", "sequences")
    assert sum(len(s["items"]) for s in sequences) == 2969
    assert all(s["ts"] == sorted(s["ts"]) for s in sequences)


def test_gift_cards_5core_drops_the_thin_items(shared_data: Path) -> None:
    root = shared_data / "amazon2018" / "gift_cards"
    settings = load_settings(kcore=5)
    report = run_extract(settings, "gift", "amazon2018", root / "Gift_Cards_5.json.gz")
    assert report.items < 148 and report.kcore_rounds >= 1
    rows = _table(settings, "gift", "interactions")
    assert min(Counter(r["user_id"] for r in rows).values()) >= 5
    assert min(Counter(r["item_id"] for r in rows).values()) >= 5


def test_magazine_meta_is_deduplicated_and_html_free(shared_data: Path, tmp_path: Path) -> None:
    samples = shared_data / "amazon2018" / "samples"
    con = _stage_meta(samples / "meta_Magazine_Subscriptions.json.gz", "amazon2018", tmp_path)
    assert con.execute("SELECT count(*), count(DISTINCT item_id) FROM meta").fetchone() == (2320, 2320)
    texts = con.execute(
        "SELECT title, brand, description, array_to_string(categories, ' | ') FROM meta"
    ).fetchall()
    dirty = [t for row in texts for t in row if t and HTML.search(t)]
    assert dirty == []
    # the raw titles are mostly '<span class="a-size-medium a-color-secondary"': nothing is left of them
    assert con.execute("SELECT count(*) FROM meta WHERE title IS NOT NULL").fetchone()[0] < 400
    assert (
        con.execute("SELECT count(*) FROM meta WHERE description LIKE '%&%'").fetchone()[0] > 0
    )  # '&' decoded

    settings = load_settings(kcore=0)
    report = run_extract(
        settings,
        "magazine",
        "amazon2018",
        samples / "Magazine_Subscriptions_5.json.gz",
        samples / "meta_Magazine_Subscriptions.json.gz",
    )
    assert report.rejects == 0 and report.items == 157 and report.items_with_meta == 151  # 6 lack meta
    items = _table(settings, "magazine", "items")
    assert not [i for i in items for f in ("title", "description", "brand") if i[f] and HTML.search(i[f])]


@pytest.mark.parametrize(
    ("name", "lines"), [("AMAZON_FASHION_5", 3176), ("All_Beauty_5", 5269), ("Appliances_5", 2277)]
)
def test_other_2018_review_samples_parse(shared_data: Path, name: str, lines: int) -> None:
    settings = load_settings(kcore=0)
    report = run_extract(
        settings, name.lower(), "amazon2018", shared_data / "amazon2018" / "samples" / f"{name}.json.gz"
    )
    assert report.files[0].lines == lines and report.rejects == 0
    # these 5-core files repeat reviews: Appliances keeps only 189 distinct (user, item, time) rows
    assert report.interactions == lines - report.duplicates_dropped > 0


def test_amazon2023_meta_sample(shared_data: Path, tmp_path: Path) -> None:
    meta = shared_data / "amazon2023" / "samples" / "meta_Health_and_Personal_Care.jsonl.gz"
    con = _stage_meta(meta, "amazon2023", tmp_path)
    n, titled, images = con.execute(
        "SELECT count(*), count(title), count(*) FILTER (WHERE image_ref LIKE 'https://%') FROM meta"
    ).fetchone()
    assert n == 1714 and titled > 1700 and images > 1500
    # a full run with reviews written in the 2023 format for the first items of the sample
    ids = [r[0] for r in con.execute("SELECT item_id FROM meta ORDER BY item_id LIMIT 4").fetchall()]
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text(
        "".join(
            json.dumps(
                {"user_id": f"U{u}", "parent_asin": i, "rating": 5.0, "timestamp": 1_600_000_000_000 + k}
            )
            for u in range(3)
            for k, i in enumerate(ids)
        ).replace("}{", "}\n{")
        + "\n"
    )
    settings = load_settings(kcore=0)
    report = run_extract(settings, "hpc", "amazon2023", reviews, meta)
    assert (report.interactions, report.items, report.items_with_meta) == (12, 4, 4)


def test_amazon2014_review_sample(shared_data: Path) -> None:
    settings = load_settings(kcore=0)
    path = shared_data / "amazon2014" / "samples" / "reviews_Musical_Instruments_5.head50.json"
    report = run_extract(settings, "music", "amazon2014", path)
    assert report.files[0].lines == 50 and report.rejects == 0 and report.interactions == 50
    assert (report.users, report.items) == (49, 7)


@pytest.mark.slow
def test_beauty_sequences(shared_data: Path) -> None:
    root = shared_data / "sequences" / "beauty"
    settings = load_settings()  # default 5-core: the file already is one
    report = run_extract(
        settings, "beauty", "sequences", root / "user_sequence.txt.gz", root / "item_text.txt.gz"
    )
    assert (report.users, report.items, report.interactions) == (22363, 12101, 198502)
    assert report.items_with_meta == 12101 and report.rejects == 0
    assert report.split_rows == {"train": 198502 - 3 * 22363, "valid": 22363, "test": 22363}
