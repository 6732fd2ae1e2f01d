"""``mmsr show``: one user's history and latest recommendations, with titles, as rich tables.

Reads the dataset's Parquet directly (DuckDB in memory), so it works before or
without a published analytics file.
"""

from __future__ import annotations

from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.warehouse.queries import load_sql


def _query(name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        return con.execute(load_sql(name), params).fetchall()
    finally:
        con.close()


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    return table


def show_user(settings: Settings, dataset: str, user: str, k: int, console: Console | None = None) -> None:
    """Print ``user``'s history and top ``k`` recommendations of the latest run."""
    root = settings.dataset_dir(dataset)
    for name in ("sequences", "item_index", "items"):
        if not (root / f"{name}.parquet").is_file():
            raise PipelineError(
                f"{root / f'{name}.parquet'} is missing: run `mmsr extract --dataset {dataset}` first"
            )
    files = {"sequences": str(root / "sequences.parquet"), "item_index": str(root / "item_index.parquet")}
    history = _query("show_history", files | {"items": str(root / "items.parquet"), "user": user})
    if not history:
        raise PipelineError(f"user {user!r} not found in dataset {dataset!r} ({root / 'sequences.parquet'})")
    partitions = sorted((root / "recommendations").glob("run_date=*/*.parquet"))
    if not partitions:
        raise PipelineError(
            f"no recommendations for dataset {dataset!r} yet: run `mmsr recommend --dataset {dataset}`"
        )
    recs = _query(
        "show_recommendations",
        {
            "recommendations": str(root / "recommendations" / "run_date=*" / "*.parquet"),
            "items": str(root / "items.parquet"),
            "user": user,
            "k": k,
        },
    )
    console = console or Console()
    console.print(
        _table(f"{dataset} · user {user} · history ({len(history)} items)", ["#", "item", "title"], history)
    )
    if not recs:
        console.print(f"user {user} has no recommendations in the latest run")
        return
    run_date, model, version = recs[0][4], recs[0][5], recs[0][6]
    title = f"top {k} · run {run_date} · {model} v{version}"
    console.print(_table(title, ["rank", "item", "title", "score"], [r[:4] for r in recs]))
