"""analytics.duckdb: views and macro over every dataset, atomic publish under a concurrent reader."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny_warehouse import tiny_settings, write_tiny_warehouse

from pipeline.core.config import Settings
from pipeline.core.io import fresh_staging_dir, publish_folder
from pipeline.stages.publish import publish_analytics
from pipeline.stages.recommend import _block_table
from pipeline.warehouse.model_runs import upsert_model_run

DAYS = (date(2026, 5, 1), date(2026, 5, 2))


def write_recommendations(settings: Settings, dataset: str, day: date, k: int = 3, version: int = 1) -> None:
    """One partition in the recommend stage's exact schema and atomic move (no model needed)."""
    users = np.array([f"{dataset}-U{u:03d}" for u in range(60)], dtype=object)
    items = np.array([f"{dataset}-I{i:03d}" for i in range(40)], dtype=object)
    ids = (np.arange(60)[:, None] + np.arange(k)[None, :] + day.day) % 40
    scores = np.tile(np.linspace(1.0, 0.5, k, dtype=np.float32), (60, 1))
    constants = {"run_date": day, "model_name": f"mmsr-{dataset}", "model_version": version}
    staging = fresh_staging_dir(settings.staging_dir(dataset), f"recommendations-{day}")
    pq.write_table(_block_table(users, ids, scores, items, constants), staging / "part-0.parquet")
    publish_folder(staging, settings.recommendations_partition(dataset, day))


@pytest.fixture
def two_datasets(mmsr_home: Path) -> Settings:
    """'tiny' with two days of recommendations and a model run; 'other' with tables only."""
    settings = tiny_settings(mmsr_home)
    write_tiny_warehouse(settings, "tiny")
    write_tiny_warehouse(settings, "other", n_users=10)
    for version, day in enumerate(DAYS, 1):
        write_recommendations(settings, "tiny", day, version=version)
        upsert_model_run(
            settings, "tiny", version, {"run_id": f"r{version}", "val_ndcg_at_10": 0.1 * version}
        )
    upsert_model_run(settings, "tiny", 2, {"promotion": "promoted"})
    return settings


def _query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_views_cover_every_dataset(two_datasets: Settings) -> None:
    db = publish_analytics(two_datasets)
    assert db == two_datasets.analytics_db and db.is_file()
    assert not list(db.parent.glob(".*tmp*"))
    counts = dict(_query(db, "SELECT dataset, count(*) FROM items GROUP BY ALL"))
    assert counts == {"tiny": 40, "other": 40}
    interactions = dict(_query(db, "SELECT dataset, count(DISTINCT user_id) FROM interactions GROUP BY ALL"))
    assert interactions == {"tiny": 60, "other": 10}
    assert _query(db, "SELECT run_date, count(*) FROM recommendations GROUP BY ALL ORDER BY 1") == [
        (DAYS[0], 180),
        (DAYS[1], 180),
    ]
    assert _query(db, "SELECT DISTINCT run_date, model_version FROM latest_recommendations") == [(DAYS[1], 2)]
    titled = _query(db, "SELECT count(*), count(title), count(image_ref) FROM recommendations_with_items")
    assert titled[0][0] == titled[0][1] == 360 and 0 < titled[0][2] < 360
    runs = _query(
        db, "SELECT dataset, model_version, run_id, promotion FROM model_runs ORDER BY model_version"
    )
    assert runs == [("tiny", 1, "r1", None), ("tiny", 2, "r2", "promoted")]


def test_recs_for_user_macro(two_datasets: Settings) -> None:
    db = publish_analytics(two_datasets)
    rows = _query(db, "SELECT dataset, run_date, rank, item_id, title FROM recs_for_user(?)", ["tiny-U005"])
    assert [(r[0], r[1], r[2]) for r in rows] == [("tiny", DAYS[1], rank) for rank in (1, 2, 3)]
    assert [r[3] for r in rows] == ["tiny-I007", "tiny-I008", "tiny-I009"]
    assert all(title == f"Title of {item}" for *_, item, title in rows)
    assert _query(db, "SELECT * FROM recs_for_user('nobody')") == []


def test_publish_before_any_recommendations(mmsr_home: Path) -> None:
    settings = tiny_settings(mmsr_home)
    write_tiny_warehouse(settings, "fresh")
    db = publish_analytics(settings)
    assert _query(db, "SELECT count(*) FROM latest_recommendations") == [(0,)]
    assert _query(db, "SELECT count(*) FROM model_runs") == [(0,)]
    columns = [r[0] for r in _query(db, "DESCRIBE recommendations_with_items")]
    assert columns[:6] == ["dataset", "run_date", "user_id", "rank", "item_id", "score"]
    # a partition written later is visible to the existing file without republishing
    write_recommendations(settings, "fresh", DAYS[0])
    assert _query(db, "SELECT count(*) FROM latest_recommendations") == [(180,)]


READER = """
import sys, time, duckdb
db, stop = sys.argv[1], sys.argv[2]
con = duckdb.connect(db, read_only=True)
seen = set()
print("ready", con.execute("SELECT count(*) FROM recommendations").fetchone()[0], flush=True)
import os
while not os.path.exists(stop):
    seen.add(con.execute("SELECT count(*) FROM recommendations").fetchone()[0])
    fresh = duckdb.connect(db, read_only=True)
    seen.add(fresh.execute("SELECT count(*) FROM recommendations").fetchone()[0])
    fresh.close()
print("seen", sorted(seen), flush=True)
"""


@pytest.mark.slow
def test_open_reader_never_blocks_the_writer_nor_sees_partial_data(
    two_datasets: Settings, tmp_path: Path
) -> None:
    settings = two_datasets
    db = publish_analytics(settings)
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().split() == ["ready", "360"]
        for _ in range(3):
            started = time.perf_counter()
            publish_analytics(settings)
            assert time.perf_counter() - started < 20, "publish must not wait for the reader"
        write_recommendations(settings, "tiny", date(2026, 5, 3), version=3)
        for _ in range(3):
            publish_analytics(settings)
        time.sleep(1.0)
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err[-2000:]
    seen = [int(v) for v in out.split("seen", 1)[1].strip(" []\n").split(",")]
    # only whole days, before and after the third partition landed: never a partial count
    assert set(seen) <= {360, 540} and 540 in seen
    assert _query(db, "SELECT count(*) FROM latest_recommendations") == [(180,)]
    assert _query(db, "SELECT max(run_date) FROM recommendations") == [(date(2026, 5, 3),)]
