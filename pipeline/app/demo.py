"""``mmsr demo`` (``make demo``): the real nightly DAG, once, on the synthetic demo dataset.

Writes the seeded demo input under ``MMSR_HOME/demo/raw``, runs the ``mmsr_nightly_demo``
DAG with ``dag.test()`` (Airflow metadata in SQLite under ``MMSR_HOME/airflow``, no
scheduler or webserver; see ``pipeline.orchestration.airflow_local``), then prints what a user wants
to see: MMSR's test metrics next to the baselines', the MLflow run and registered
version with its alias, the analytics database, three users' recommendations, the
night's health and the path of the HTML report.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.orchestration.airflow_local import DagRunSummary, run_dag
from pipeline.orchestration.datasets import DEMO_DATASET, demo_raw_dir
from pipeline.warehouse.queries import load_sql

log = logging.getLogger(__name__)

METRICS = ("hr_at_10", "ndcg_at_10", "mrr_at_10", "hr_at_20", "ndcg_at_20")
SAMPLE_USERS = 3
SAMPLE_K = 5


def _metrics_table(train: dict[str, Any]) -> Table:
    table = Table(title="Test metrics (leave-one-out, full ranking)")
    table.add_column("model")
    for name in METRICS:
        table.add_column(name, justify="right")
    rows = {"mmsr": train.get("test", {}), **train.get("baselines", {})}
    for model, metrics in rows.items():
        table.add_row(model, *(f"{metrics[m]:.4f}" if m in metrics else "-" for m in METRICS))
    return table


def _samples_table(settings: Settings) -> Table:
    table = Table(title=f"Sample recommendations (top {SAMPLE_K} of {SAMPLE_USERS} users)")
    for name in ("user_id", "rank", "item_id", "title", "score"):
        table.add_column(name, justify="right" if name in ("rank", "score") else "left")
    con = duckdb.connect(str(settings.analytics_db), read_only=True)
    try:
        rows = con.execute(
            load_sql("demo_sample_recommendations"),
            {"dataset": DEMO_DATASET, "users": SAMPLE_USERS, "k": SAMPLE_K},
        ).fetchall()
    finally:
        con.close()
    for user_id, rank, item_id, title, score in rows:
        table.add_row(user_id, str(rank), item_id, title or "", f"{score:.3f}")
    return table


def _print_summary(settings: Settings, summary: DagRunSummary, seconds: float, console: Console) -> None:
    train, promote = summary.reports.get("train", {}), summary.reports.get("promote", {})
    recommend = summary.reports.get("recommend", {})
    console.print(_metrics_table(train))
    alias = "champion" if promote.get("promoted") else "challenger"
    console.print(f"MLflow run id:       {train.get('run_id')}  ({settings.tracking_uri})")
    console.print(
        f"registered model:    {train.get('registered_model')} version {train.get('model_version')} "
        f"-> alias {alias} ({promote.get('reason', '')})"
    )
    console.print(f"recommendations:     {recommend.get('rows')} rows for {recommend.get('users')} users")
    console.print(f"analytics database:  {settings.analytics_db.resolve()}")
    console.print(_samples_table(settings))
    health = summary.reports.get("publish_analytics", {}).get("health") or {}
    if health:
        console.print(
            f"health:              coverage@20 {health.get('coverage_at_20', 0):.3f}, "
            f"Gini {health.get('gini', 0):.3f}, publish gate "
            f"{'passed' if health.get('gate_passed') else 'FAILED'}"
        )
    console.print(f"report:              {summary.reports.get('report', {}).get('path', '(not written)')}")
    console.print(
        f"DAG {summary.dag_id} run {summary.run_id}: {summary.state} in {summary.seconds:.0f} s "
        f"(demo total {seconds:.0f} s)"
    )


def run_demo(settings: Settings, config_file: Path | None = None) -> DagRunSummary:
    """Generate the demo data, run the nightly DAG once, print the results; fails if any task failed.

    ``config_file`` (the ``--config`` the settings came from) is handed on to the DAG's
    tasks, which load their settings themselves.
    """
    from pipeline.app.demo_data import write_demo_dataset

    started = time.perf_counter()
    os.environ["MMSR_DEMO"] = "1"  # the demo DAG exists even when other datasets are configured
    if config_file is not None:
        os.environ["MMSR_CONFIG"] = str(config_file)
    for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the demo encoders are local files
        os.environ.setdefault(offline, "1")
    written = write_demo_dataset(demo_raw_dir(settings), seed=settings.seed)
    log.info("demo data: %s", written)
    summary = run_dag(settings, DEMO_DATASET, datetime.now(UTC).date())
    if not summary.succeeded:
        failed = sorted(task for task, state in summary.task_states.items() if state != "success")
        raise PipelineError(
            f"demo DAG run {summary.run_id} ended {summary.state}; tasks not successful: {failed} "
            f"(the task's error is logged above)"
        )
    _print_summary(settings, summary, time.perf_counter() - started, Console(width=max(Console().width, 110)))
    return summary
