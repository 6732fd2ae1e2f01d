"""What the nightly report shows, read from the published analytics views and MLflow.

The report reads ``analytics.duckdb`` read-only, so it shows exactly what analysts
query; only the champion's learning curve comes from the MLflow tracking store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.warehouse.queries import load_sql

log = logging.getLogger(__name__)

TOP_ITEMS = 20
SAMPLE_K = 10


@dataclass
class ReportData:
    """Everything one report page needs, as plain rows."""

    dataset: str
    run_date: date
    health: list[dict[str, Any]]
    model_runs: list[dict[str, Any]]
    top_items: list[dict[str, Any]]
    #: user id -> (latest history newest first, top recommendations)
    users: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]
    #: metric name -> [(epoch, value)] of the served model's training run
    learning_curve: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def night(self) -> dict[str, Any] | None:
        return next((row for row in self.health if row["run_date"] == self.run_date), None)


def _rows(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cursor = con.execute(load_sql(name), params)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def latest_night(con: duckdb.DuckDBPyConnection, dataset: str) -> date:
    (day,) = con.execute(load_sql("report_latest_night"), {"dataset": dataset}).fetchone()
    if day is None:
        raise PipelineError(f"no published recommendations for dataset {dataset!r}: nothing to report")
    return day


def read_report_data(settings: Settings, dataset: str, run_date: date | None) -> ReportData:
    """Query the published views for ``dataset`` (``run_date`` default: its latest published night)."""
    if not settings.analytics_db.is_file():
        raise PipelineError(f"{settings.analytics_db} is missing: run `mmsr publish` first")
    con = duckdb.connect(str(settings.analytics_db), read_only=True)
    try:
        day = run_date or latest_night(con, dataset)
        night = {"dataset": dataset, "run_date": day}
        samples = _rows(
            con, "report_sample_users", night | {"users": settings.report_sample_users, "k": SAMPLE_K}
        )
        users: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for row in samples:
            users.setdefault(row["user_id"], ([], []))[1].append(row)
        history = _rows(con, "report_user_history", {"dataset": dataset, "users": list(users), "k": SAMPLE_K})
        for row in history:
            users[row["user_id"]][0].append(row)
        data = ReportData(
            dataset=dataset,
            run_date=day,
            health=_rows(con, "report_health", {"dataset": dataset}),
            model_runs=_rows(con, "report_model_runs", {"dataset": dataset}),
            top_items=_rows(con, "report_top_items", night | {"limit": TOP_ITEMS}),
            users=users,
        )
    finally:
        con.close()
    data.learning_curve = learning_curve(settings, data)
    return data


def served_version(data: ReportData) -> int | None:
    """The model version that produced the night, from its health row (None when it has none)."""
    if data.night and data.night.get("model_version") is not None:
        return int(data.night["model_version"])
    return None


def learning_curve(settings: Settings, data: ReportData) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch MLflow metrics (``epoch_*``, MMSR's own) of the served version's training run."""
    version = served_version(data)
    run = next((r for r in data.model_runs if r.get("model_version") == version), None)
    if not run or not run.get("run_id"):
        return {}
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    try:
        names = [k for k in client.get_run(run["run_id"]).data.metrics if k.startswith("epoch_")]
        return {
            name.removeprefix("epoch_"): sorted(
                (m.step, m.value) for m in client.get_metric_history(run["run_id"], name)
            )
            for name in sorted(names)
        }
    except MlflowException as exc:  # a pruned run: the rest of the report is still worth having
        log.warning("no learning curve for %s v%s: %s", data.dataset, version, exc)
        return {}
