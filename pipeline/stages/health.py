"""Recommendation health of one night, and the gate that keeps a broken night from analysts.

The metrics are DuckDB SQL (``pipeline/sql/health_*.sql``) over the candidate partition
(``pending/run_date=DAY``) and the previous published night; one row per night is kept
in ``health/run_date=DAY.parquet`` whether the night passed or not, so the decision and
its figures stay queryable (view ``recommendation_health``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.config import GateSettings, Settings
from pipeline.core.io import write_parquet_atomic
from pipeline.warehouse.model_runs import read_model_runs
from pipeline.warehouse.queries import load_sql

log = logging.getLogger(__name__)

#: test metrics of the served model copied into the health row (from model_runs.parquet)
MODEL_METRICS = ("test_hr_at_10", "test_ndcg_at_10", "test_mrr_at_10")
HEALTH_SCHEMA = pa.schema(
    [
        ("run_date", pa.date32()),
        ("computed_at", pa.timestamp("us", tz="UTC")),
        ("rows", pa.int64()),
        ("users_expected", pa.int64()),
        ("users_served", pa.int64()),
        ("users_without_recs", pa.int64()),
        ("users_short", pa.int64()),
        ("k", pa.int32()),
        ("catalogue_items", pa.int64()),
        ("items_in_index", pa.int64()),
        ("coverage_at_10", pa.float64()),
        ("coverage_at_20", pa.float64()),
        ("gini", pa.float64()),
        ("top_1pct_share", pa.float64()),
        ("mean_popularity_percentile", pa.float64()),
        ("new_item_share", pa.float64()),
        ("jaccard_at_20", pa.float64()),
        ("bad_scores", pa.int64()),
        ("model_version", pa.int32()),
        ("model_versions", pa.int32()),
        *((name, pa.float64()) for name in MODEL_METRICS),
        ("previous_run_date", pa.date32()),
        ("gate_passed", pa.bool_()),
        ("gate_failures", pa.list_(pa.string())),
        ("published", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class NightHealth:
    """A night's figures and the gate's verdict on them."""

    figures: dict[str, Any]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def published_nights(settings: Settings, dataset: str) -> list[date]:
    """Run dates whose recommendations analysts see, oldest first."""
    folder = settings.dataset_dir(dataset) / "recommendations"
    days = []
    for path in folder.glob("run_date=*") if folder.is_dir() else []:
        try:
            if any(path.glob("*.parquet")):
                days.append(date.fromisoformat(path.name.removeprefix("run_date=")))
        except ValueError:
            log.warning("ignoring %s: not a run_date=YYYY-MM-DD folder", path)
    return sorted(days)


def read_health(settings: Settings, dataset: str, run_date: date) -> dict[str, Any] | None:
    path = settings.health_file(dataset, run_date)
    return pq.read_table(path).to_pylist()[0] if path.is_file() else None


def _query(name: str, params: dict[str, Any]) -> dict[str, Any]:
    con = duckdb.connect()
    try:
        cursor = con.execute(load_sql(name), params)
        columns = [d[0] for d in cursor.description]
        return dict(zip(columns, cursor.fetchone(), strict=True))
    finally:
        con.close()


def compute_health(
    settings: Settings,
    dataset: str,
    run_date: date,
    night: Path,
    previous_day: date | None,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Every health figure of the night whose Parquet lies in folder ``night``, compared with the
    previous published night ``previous_day`` (``previous``: its health row, when kept)."""
    root = settings.dataset_dir(dataset)
    tables = {n: str(root / f"{n}.parquet") for n in ("items", "interactions", "item_index", "sequences")}
    glob = str(night / "*.parquet")
    figures = _query("health_night", {"night": glob, **tables})
    figures["users_without_recs"] = figures["users_expected"] - figures["users_served"]
    figures |= {"run_date": run_date, "previous_run_date": previous_day}
    figures |= {"new_item_share": None, "jaccard_at_20": None}
    if previous_day is not None:
        new_from = previous["items_in_index"] if previous else None
        previous_glob = str(settings.recommendations_partition(dataset, previous_day) / "*.parquet")
        params = {"night": glob, "previous": previous_glob, "item_index": tables["item_index"]}
        compared = _query("health_vs_previous", params | {"new_from": new_from})
        figures["jaccard_at_20"] = compared["jaccard_at_20"]
        figures["new_item_share"] = compared["new_item_share"] if new_from is not None else None
    runs = {r.get("model_version"): r for r in read_model_runs(settings, dataset)}
    served = runs.get(figures["model_version"], {})
    figures |= {name: served.get(name) for name in MODEL_METRICS}
    return figures


def gate_failures(figures: dict[str, Any], previous: dict[str, Any] | None, gate: GateSettings) -> list[str]:
    """Why the night must not be published (empty: it looks healthy)."""
    failures = []
    if figures["bad_scores"]:
        failures.append(f"{figures['bad_scores']} recommendation scores are NaN, infinite or NULL")
    expected = figures["users_expected"]
    missing = figures["users_without_recs"]
    if expected and missing / expected > gate.max_users_without_recs:
        failures.append(
            f"{missing} of {expected} users with a history got no recommendation "
            f"(more than gate.max_users_without_recs={gate.max_users_without_recs})"
        )
    wanted = expected * figures["k"]
    if not figures["rows"] or abs(figures["rows"] - wanted) > gate.row_count_tolerance * wanted:
        failures.append(
            f"{figures['rows']} rows, expected about {wanted} ({expected} users x k={figures['k']}, "
            f"gate.row_count_tolerance={gate.row_count_tolerance})"
        )
    before = (previous or {}).get("coverage_at_20")
    coverage = figures["coverage_at_20"] or 0.0
    if before and coverage < gate.min_coverage_ratio * before:
        failures.append(
            f"coverage at 20 fell to {coverage:.4f} from {before:.4f} on {previous['run_date']} "
            f"(below gate.min_coverage_ratio={gate.min_coverage_ratio} of it)"
        )
    return failures


def check_night(settings: Settings, dataset: str, run_date: date, night: Path) -> NightHealth:
    """Compute the night's health and the gate's verdict against the previous published night."""
    earlier = [d for d in published_nights(settings, dataset) if d < run_date]
    previous_day = earlier[-1] if earlier else None
    previous = read_health(settings, dataset, previous_day) if previous_day else None
    if previous_day and previous is None:
        log.warning("%s: no health row for %s; the coverage rule is skipped", dataset, previous_day)
    figures = compute_health(settings, dataset, run_date, night, previous_day, previous)
    return NightHealth(figures, gate_failures(figures, previous, settings.gate))


def write_health(settings: Settings, dataset: str, health: NightHealth, published: bool) -> Path:
    """Keep the night's figures and decision (replacing an earlier try of the same night)."""
    row = health.figures | {
        "computed_at": datetime.now(UTC),
        "gate_passed": health.passed,
        "gate_failures": health.failures,
        "published": published,
    }
    path = settings.health_file(dataset, row["run_date"])
    write_parquet_atomic(pa.Table.from_pylist([row], schema=HEALTH_SCHEMA), path)
    return path
