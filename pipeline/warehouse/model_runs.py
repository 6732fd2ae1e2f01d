"""``warehouse/<dataset>/model_runs.parquet``: one row per trained model version.

Analysts see training history through DuckDB without touching the MLflow
database; the train stage appends a row and the promotion gate fills in its
decision. Each write replaces the whole (small) file atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.config import Settings
from pipeline.core.io import write_parquet_atomic


def model_runs_path(settings: Settings, dataset: str) -> Path:
    return settings.dataset_dir(dataset) / "model_runs.parquet"


def read_model_runs(settings: Settings, dataset: str) -> list[dict[str, Any]]:
    path = model_runs_path(settings, dataset)
    return pq.read_table(path).to_pylist() if path.is_file() else []


def upsert_model_run(settings: Settings, dataset: str, model_version: int, fields: dict[str, Any]) -> None:
    """Merge ``fields`` into the row of ``model_version`` (appending it when new)."""
    rows = read_model_runs(settings, dataset)
    row = next((r for r in rows if r.get("model_version") == model_version), None)
    if row is None:
        row = {"dataset": dataset, "model_version": model_version}
        rows.append(row)
    row.update(fields)
    columns = list(dict.fromkeys(key for r in rows for key in r))
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
    path = model_runs_path(settings, dataset)
    write_parquet_atomic(table, path)
