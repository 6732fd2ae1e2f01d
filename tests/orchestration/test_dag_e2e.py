"""The real nightly DAG, run with ``dag.test()`` on a tiny demo dataset in a temp MMSR_HOME.

The slowest test of the suite, so all runs share one module-scoped fixture:
1. a full run for 2024-05-01 (every task, tiny model: hidden 16, 2 epochs, Pop baseline);
2. a rerun for the same date of the data tasks (extract, recommend, publish; the model
   tasks are marked done, their output is already in MLflow), this time with recommend
   fanned out over 2 shards -> same tables, same rows, one partition;
3. a run for 2024-05-02 with a corrupt reviews file -> extract fails with the extract
   stage's clear message, nothing downstream runs, the previous tables are untouched.
Each run is ``python -m pipeline.orchestration.airflow_local`` in a fresh interpreter, because Airflow
reads its configuration (AIRFLOW_HOME, metadata DB) once, when first imported.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from browser import LOAD_ERRORS, render

from pipeline.app.demo_data import write_demo_dataset

ROOT = Path(__file__).resolve().parents[2]
DAY, NEXT_DAY = "2024-05-01", "2024-05-02"
TASKS = {
    "extract",
    "embed_text",
    "embed_image",
    "codes",
    "train",
    "promote",
    "recommend",
    "publish_analytics",
    "report",
}
TABLES = ("interactions", "items", "user_index", "item_index", "sequences", "splits")

pytestmark = pytest.mark.slow


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MMSR_HOME": str(home),
        "MMSR_CONFIG": str(ROOT / "configs" / "demo.yaml"),
        "MMSR_DEMO": "1",
        "MMSR_IMAGE_DOWNLOAD": "false",
        "MMSR_MODEL__HIDDEN_SIZE": "16",
        "MMSR_MODEL__MAX_EPOCHS": "2",
        "MMSR_MODEL__PATIENCE": "1",
        "MMSR_BASELINES": '["pop"]',
        "MMSR_CODES_C": "4",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **extra,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run(home: Path, day: str, *extra: str, shards: int = 1) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.orchestration.airflow_local", "demo", day, *extra],
        env=_env(home, MMSR_SHARDS=str(shards)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-5000:]
    summary = json.loads(lines[-1])
    return {
        "rc": done.returncode,
        "summary": summary,
        "output": done.stdout + done.stderr,
        "seconds": time.perf_counter() - started,
    }


def _snapshot(home: Path) -> dict[str, str]:
    """Content hash of every extract table and of the day's recommendations."""
    folder = home / "warehouse" / "demo"
    paths = [folder / f"{name}.parquet" for name in TABLES]
    paths += sorted((folder / "recommendations" / f"run_date={DAY}").glob("*.parquet"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _recommendation_rows(home: Path, day: str) -> int:
    folder = home / "warehouse" / "demo" / "recommendations" / f"run_date={day}"
    return sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("e2e") / "mmsr_home"
    raw = home / "demo" / "raw"
    write_demo_dataset(raw, seed=2023, n_users=60, n_items=40)
    result: dict = {"home": home}
    result["first"] = _run(home, DAY)
    result["first_rows"] = _recommendation_rows(home, DAY)
    result["rerun"] = _run(home, DAY, "--mark-success", "embed_.*|codes|train|promote", shards=2)
    result["rerun_rows"] = _recommendation_rows(home, DAY)
    result["before_failure"] = _snapshot(home)
    with gzip.open(raw / "reviews.json.gz", "wt") as corrupt:
        corrupt.write('{"reviewerID": "u1", "asin": "A1"\nthis is not json\n')
    result["failed"] = _run(home, NEXT_DAY)
    result["after_failure"] = _snapshot(home)
    return result


def test_every_task_succeeds_and_recommendations_are_queryable(runs: dict) -> None:
    first = runs["first"]
    assert first["rc"] == 0, first["output"][-5000:]
    summary = first["summary"]
    assert summary["state"] == "success"
    assert summary["task_states"] == dict.fromkeys(TASKS, "success")
    reports = summary["reports"]
    assert reports["extract"]["run_date"] == DAY and reports["extract"]["users"] == 60
    assert reports["train"]["model_version"] == 1 and reports["promote"]["promoted"] is True
    assert reports["recommend"]["rows"] == runs["first_rows"] > 0
    con = duckdb.connect(str(runs["home"] / "analytics.duckdb"), read_only=True)
    try:
        (rows,) = con.execute("SELECT count(*) FROM latest_recommendations WHERE dataset = 'demo'").fetchone()
    finally:
        con.close()
    assert rows == runs["first_rows"]
    assert reports["publish_analytics"]["health"]["gate_passed"] is True
    page = runs["home"] / "reports" / "demo" / f"run_date={DAY}" / "index.html"
    assert reports["report"]["path"] == str(page)


def test_demo_report_renders_in_headless_chromium(runs: dict, tmp_path: Path) -> None:
    """The demo's report loads in a real browser without errors and shows every section."""
    page = runs["home"] / "reports" / "demo" / f"run_date={DAY}" / "index.html"
    assert 0 < page.stat().st_size < 5 * 2**20
    rendered = render(page, tmp_path)
    assert not [line for line in rendered.log.splitlines() if any(e in line for e in LOAD_ERRORS)]
    for section in ("health", "model-metrics", "learning-curve", "top-items", "sample-users"):
        assert f'<section id="{section}">' in rendered.dom
    assert "passed the publish gate" in rendered.dom
    learning = rendered.dom.split('<section id="learning-curve">')[1].split("</section>")[0]
    assert 'src="data:image/png;base64,' in learning  # the trained champion's per-epoch metrics
    assert 'class="thumb" src="data:image/jpeg;base64,' in rendered.dom  # the demo's local JPEGs
    assert rendered.screenshot.stat().st_size > 20_000  # a drawn page, not a blank one
    shutil.copyfile(rendered.screenshot, runs["home"].parent / "report-screenshot.png")


def test_rerun_for_the_same_date_is_idempotent(runs: dict) -> None:
    rerun = runs["rerun"]
    assert rerun["rc"] == 0, rerun["output"][-5000:]
    shards = {"recommend_shard[0]", "recommend_shard[1]"}
    assert set(rerun["summary"]["task_states"]) >= TASKS | shards
    assert set(rerun["summary"]["task_states"].values()) == {"success"}
    assert set(rerun["summary"]["reports"]) == {
        "extract",
        "recommend_shard",
        "recommend",
        "publish_analytics",
        "report",
    }
    assert rerun["summary"]["reports"]["recommend"] == {
        "run_date": DAY,
        "rows": runs["first_rows"],
        "shards": 2,
        "path": str(runs["home"] / "warehouse" / "demo" / "pending" / f"run_date={DAY}"),
    }
    assert rerun["summary"]["reports"]["publish_analytics"]["health"]["rows"] == runs["first_rows"]
    assert runs["rerun_rows"] == runs["first_rows"]
    assert len(list((runs["home"] / "warehouse" / "demo" / "recommendations").iterdir())) == 1


def test_corrupt_input_fails_with_the_stage_error_and_keeps_previous_tables(runs: dict) -> None:
    failed = runs["failed"]
    assert failed["rc"] == 1
    states = failed["summary"]["task_states"]
    assert failed["summary"]["state"] == "failed"
    assert states["extract"] == "failed"
    assert all(states[t] == "upstream_failed" for t in TASKS - {"extract"})
    assert "reviews.json.gz" in failed["output"] and "malformed" in failed["output"]
    assert runs["after_failure"] == runs["before_failure"]
    assert not (runs["home"] / "warehouse" / "demo" / "recommendations" / f"run_date={NEXT_DAY}").exists()


def test_timings_are_reported(runs: dict) -> None:
    """Not an assertion on speed (shared CI cores): the numbers land in the test log."""
    timings = {name: round(runs[name]["seconds"], 1) for name in ("first", "rerun", "failed")}
    print(f"dag.test() wall seconds: {timings}")
    assert all(seconds > 0 for seconds in timings.values())
