"""Publish stage: the health gate, then ``MMSR_HOME/analytics.duckdb`` swapped in atomically.

``publish_night`` checks a night's candidate recommendations (``pending/``, written by
recommend) with ``pipeline.stages.health``; only a night that passes is moved into
``recommendations/``, which every view reads, so after a broken night analysts keep
seeing the previous one. The DuckDB file holds only views and a macro; Parquet stays
the source of truth. A new file is built beside the old one and ``os.replace``-d over
it, so an analyst's open read-only connection keeps its old file (and never blocks the
writer) while new connections see the new one.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.core.io import publish_folder, write_atomically
from pipeline.warehouse.queries import load_sql

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[]{}")


def warehouse_literal(warehouse: Path) -> str:
    """The warehouse folder as a quoted SQL string literal.

    The one value not bound as a parameter: DuckDB rejects parameters in CREATE VIEW,
    and a view must carry its path. It is our own setting, quoted, and refused if it
    contains glob characters that would change what the views read.
    """
    path = str(warehouse.resolve())
    if _GLOB_CHARS & set(path):
        raise PipelineError(
            f"MMSR_HOME warehouse path {path!r} must not contain any of {sorted(_GLOB_CHARS)}"
        )
    return "'" + path.replace("'", "''") + "'"


def publish_analytics(settings: Settings) -> Path:
    """Build a fresh analytics DuckDB file over every dataset and rename it into place."""
    target = settings.analytics_db
    sql = load_sql("analytics_views").replace("__WAREHOUSE__", warehouse_literal(settings.warehouse))
    datasets: list[str] = []

    def build(tmp: Path) -> None:
        con = duckdb.connect(str(tmp))
        try:
            con.execute(sql)
            datasets.extend(name for (name,) in con.execute(load_sql("analytics_datasets")).fetchall())
        finally:
            con.close()
        # a WAL left beside the target by a crashed writer would be replayed into the new file
        target.with_name(target.name + ".wal").unlink(missing_ok=True)

    write_atomically(target, build)
    log.info("published %s over datasets %s", target, datasets)
    return target


def publish_night(settings: Settings, dataset: str, run_date: date) -> dict[str, Any]:
    """Gate ``run_date``'s candidate recommendations, move a passing night into place, rebuild the views.

    A night the gate stops stays in ``pending/`` for inspection, its health row records
    why, the views are rebuilt without it and a ``PipelineError`` fails the task.
    """
    from pipeline.stages.health import check_night, read_health, write_health

    pending = settings.pending_partition(dataset, run_date)
    final = settings.recommendations_partition(dataset, run_date)
    if not any(pending.glob("*.parquet")):
        if any(final.glob("*.parquet")):  # a rerun after the night was published
            log.info("%s %s: already published; rebuilding the views only", dataset, run_date)
            health = read_health(settings, dataset, run_date)
            return {
                "run_date": run_date,
                "published": True,
                "health": health,
                "path": str(final),
                "analytics_db": str(publish_analytics(settings)),
            }
        raise PipelineError(
            f"no recommendations for {dataset!r} on {run_date} in {pending}: "
            f"run `mmsr recommend --dataset {dataset} --run-date {run_date}` first"
        )
    health = check_night(settings, dataset, run_date, pending)
    publish = health.passed or not settings.gate.enabled
    health_path = write_health(settings, dataset, health, published=publish)
    log.info(
        "%s %s gate: %s %s",
        dataset,
        run_date,
        "passed" if health.passed else "FAILED: " + "; ".join(health.failures),
        json.dumps(health.figures, default=str),
    )
    if publish:
        if not health.passed:
            log.warning("%s %s: published despite the gate (gate.enabled is false)", dataset, run_date)
        publish_folder(pending, final)  # also removes the pending folder
    db = publish_analytics(settings)
    if not publish:
        raise PipelineError(
            f"publish gate stopped {dataset!r} {run_date}: {'; '.join(health.failures)}. Analysts keep "
            f"seeing the previous night; the candidate stays in {pending}, its health in {health_path}"
        )
    figures = health.figures | {"gate_passed": health.passed}
    return {
        "run_date": run_date,
        "published": True,
        "health": figures,
        "path": str(final),
        "analytics_db": str(db),
    }
