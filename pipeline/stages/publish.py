"""Publish stage: ``MMSR_HOME/analytics.duckdb``: views over the warehouse Parquet, swapped in atomically.

The file holds only views and a macro; Parquet stays the source of truth. A new
file is built beside the old one and ``os.replace``-d over it, so an analyst's
open read-only connection keeps its old file (and never blocks the writer) while
new connections see the new one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.core.io import write_atomically
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
