"""Health metrics per night and the publish gate: a broken night never reaches analysts' views."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_warehouse import spread, tiny_settings, write_candidate, write_tiny_warehouse

from pipeline.core.config import GateSettings, Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.health import gate_failures, read_health
from pipeline.stages.publish import publish_night
from pipeline.warehouse.model_runs import upsert_model_run

NIGHT1, NIGHT2 = date(2026, 6, 1), date(2026, 6, 2)
N_USERS, N_ITEMS = 60, 40  # the tiny warehouse's


def numpy_gini(ids: np.ndarray) -> float:
    """Gini of item exposure, the textbook way (mean absolute difference over twice the mean)."""
    x = np.bincount(ids.ravel(), minlength=N_ITEMS).astype(float)
    return float(np.abs(x[:, None] - x[None, :]).mean() / (2 * x.mean()))


@pytest.fixture
def warehouse(mmsr_home: Path) -> Settings:
    settings = tiny_settings(mmsr_home)
    write_tiny_warehouse(settings)
    upsert_model_run(settings, "tiny", 1, {"test_ndcg_at_10": 0.25, "test_hr_at_10": 0.5})
    return settings


def _latest(settings: Settings) -> list[tuple]:
    con = duckdb.connect(str(settings.analytics_db), read_only=True)
    try:
        return con.execute("SELECT DISTINCT run_date FROM latest_recommendations").fetchall()
    finally:
        con.close()


def test_health_figures_of_a_night_and_against_the_previous(warehouse: Settings) -> None:
    write_candidate(warehouse, NIGHT1, spread(NIGHT1))
    first = publish_night(warehouse, "tiny", NIGHT1)
    figures = first["health"]
    assert figures["rows"] == N_USERS * 20 and figures["users_served"] == figures["users_expected"] == N_USERS
    assert figures["users_without_recs"] == 0 and figures["users_short"] == 0 and figures["k"] == 20
    assert figures["coverage_at_10"] == 1.0 and figures["coverage_at_20"] == 1.0
    assert figures["gini"] == pytest.approx(numpy_gini(spread(NIGHT1)))
    counts = pq.read_table(warehouse.dataset_dir("tiny") / "interactions.parquet")["item_id"].value_counts()
    top = min((-c["counts"].as_py(), c["values"].as_py()) for c in counts)[1]  # the top 1 % is one item
    exposure = np.bincount(spread(NIGHT1).ravel(), minlength=N_ITEMS)
    assert figures["top_1pct_share"] == pytest.approx(exposure[int(top[-3:])] / (N_USERS * 20))
    assert 0.0 < figures["mean_popularity_percentile"] < 1.0
    assert figures["jaccard_at_20"] is None and figures["new_item_share"] is None  # no previous night
    assert figures["model_version"] == 1 and figures["test_ndcg_at_10"] == 0.25
    # night 2: two new items appended to the index; everyone's top 20 shifted by one item
    root = warehouse.dataset_dir("tiny")
    index = pq.read_table(root / "item_index.parquet")
    pq.write_table(
        pa.concat_tables(
            [
                index,
                pa.table({"item_id": ["tiny-I040", "tiny-I041"], "item_idx": pa.array([40, 41], pa.int32())}),
            ]
        ),
        root / "item_index.parquet",
    )
    write_candidate(warehouse, NIGHT2, spread(NIGHT2))
    second = publish_night(warehouse, "tiny", NIGHT2)["health"]
    assert second["previous_run_date"] == NIGHT1 and second["items_in_index"] == 42
    assert second["jaccard_at_20"] == pytest.approx(19 / 21)  # 19 shared of 21 distinct
    assert second["new_item_share"] == 0.0  # the new ids exist but nobody got them
    con = duckdb.connect(str(warehouse.analytics_db), read_only=True)
    try:
        rows = con.execute(
            "SELECT dataset, run_date, gate_passed, published, coverage_at_20 FROM recommendation_health "
            "ORDER BY run_date"
        ).fetchall()
    finally:
        con.close()
    assert rows == [("tiny", NIGHT1, True, True, 1.0), ("tiny", NIGHT2, True, True, 1.0)]
    assert _latest(warehouse) == [(NIGHT2,)]
    assert not warehouse.pending_partition("tiny", NIGHT2).exists()


def test_collapsed_night_is_stopped_and_yesterday_stays_published(warehouse: Settings) -> None:
    write_candidate(warehouse, NIGHT1, spread(NIGHT1, k=10))
    publish_night(warehouse, "tiny", NIGHT1)
    same_for_everyone = np.tile(np.arange(10) + 7, (N_USERS, 1))
    write_candidate(warehouse, NIGHT2, same_for_everyone)
    with pytest.raises(PipelineError, match="coverage at 20 fell to 0.2500 from 1.0000") as failed:
        publish_night(warehouse, "tiny", NIGHT2)
    assert "keep seeing the previous night" in str(failed.value)
    assert _latest(warehouse) == [(NIGHT1,)]
    assert not warehouse.recommendations_partition("tiny", NIGHT2).exists()
    assert any(warehouse.pending_partition("tiny", NIGHT2).glob("*.parquet"))  # kept for inspection
    kept = read_health(warehouse, "tiny", NIGHT2)
    assert kept["gate_passed"] is False and kept["published"] is False
    assert kept["coverage_at_20"] == 0.25 and "coverage" in kept["gate_failures"][0]
    assert kept["gini"] > 0.7 and kept["jaccard_at_20"] < 0.5


def test_gate_can_be_switched_off(warehouse: Settings) -> None:
    write_candidate(warehouse, NIGHT1, spread(NIGHT1)[: N_USERS // 2])
    settings = warehouse.model_copy(update={"gate": GateSettings(enabled=False)})
    report = publish_night(settings, "tiny", NIGHT1)
    assert report["published"] and not report["health"]["gate_passed"]
    assert read_health(settings, "tiny", NIGHT1)["published"] is True
    assert _latest(settings) == [(NIGHT1,)]


def test_nan_scores_and_missing_users_fail(warehouse: Settings) -> None:
    write_candidate(warehouse, NIGHT1, spread(NIGHT1), nan_rows=2)
    with pytest.raises(PipelineError, match="2 recommendation scores are NaN"):
        publish_night(warehouse, "tiny", NIGHT1)
    write_candidate(warehouse, NIGHT1, spread(NIGHT1)[:50])
    with pytest.raises(PipelineError, match="10 of 60 users with a history got no recommendation.*rows"):
        publish_night(warehouse, "tiny", NIGHT1)
    assert _latest(warehouse) == []


def test_rerun_after_publishing_and_missing_candidate(warehouse: Settings) -> None:
    with pytest.raises(PipelineError, match="run `mmsr recommend --dataset tiny --run-date 2026-06-01`"):
        publish_night(warehouse, "tiny", NIGHT1)
    write_candidate(warehouse, NIGHT1, spread(NIGHT1))
    publish_night(warehouse, "tiny", NIGHT1)
    again = publish_night(warehouse, "tiny", NIGHT1)
    assert again["published"] and again["health"]["gate_passed"] is True


def test_gate_rules_and_their_thresholds() -> None:
    good = {"bad_scores": 0, "users_expected": 100, "users_without_recs": 0, "k": 10, "rows": 1000,
            "coverage_at_20": 0.3}  # fmt: skip
    gate = GateSettings()
    assert gate_failures(good, {"coverage_at_20": 0.5, "run_date": NIGHT1}, gate) == []
    assert gate_failures(good | {"rows": 905}, None, gate) == []
    assert "rows" in gate_failures(good | {"rows": 850}, None, gate)[0]
    assert gate_failures(good | {"rows": 850}, None, GateSettings(row_count_tolerance=0.2)) == []
    assert gate_failures(good | {"users_without_recs": 1}, None, gate) == []  # 1 % is tolerated
    assert "no recommendation" in gate_failures(good | {"users_without_recs": 2}, None, gate)[0]
    assert "coverage" in gate_failures(good, {"coverage_at_20": 0.61, "run_date": NIGHT1}, gate)[0]
    assert (
        gate_failures(
            good, {"coverage_at_20": 0.61, "run_date": NIGHT1}, GateSettings(min_coverage_ratio=0.4)
        )
        == []
    )
    assert gate_failures(good | {"rows": 0}, None, gate)


def test_publish_command_gates_a_night(warehouse: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pipeline.app.cli import app

    monkeypatch.setenv("MMSR_HOME", str(warehouse.home))
    write_candidate(warehouse, NIGHT1, spread(NIGHT1, k=10))
    done = CliRunner().invoke(app, ["publish", "--dataset", "tiny", "--run-date", str(NIGHT1)])
    assert done.exit_code == 0, done.output
    assert '"gate_passed": true' in done.output
    write_candidate(warehouse, NIGHT2, np.tile(np.arange(10), (N_USERS, 1)))
    stopped = CliRunner().invoke(app, ["publish", "--dataset", "tiny", "--run-date", str(NIGHT2)])
    assert stopped.exit_code == 1
    assert _latest(warehouse) == [(NIGHT1,)]
