"""The codes tables, written in one place (the codes stage, test fixtures and benchmarks use it).

- ``codes/<modality>_centres.parquet``: ``code`` INTEGER, ``vector`` FLOAT[]
- ``codes/item_codes.parquet``: ``item_id``, ``modality``, ``codes`` INTEGER[] (nearest
  first), ``distances`` FLOAT[]; an item without a modality has no row for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core.io import write_parquet_atomic

ITEM_CODES_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("modality", pa.string()),
        ("codes", pa.list_(pa.int32())),
        ("distances", pa.list_(pa.float32())),
    ]
)
ITEM_CODES_FILE = "item_codes.parquet"


def centres_path(codes_dir: Path, modality: str) -> Path:
    return codes_dir / f"{modality}_centres.parquet"


def vector_column(vectors: np.ndarray, present: np.ndarray) -> pa.ListArray:
    """list<float32> column of the rows of ``vectors``, NULL where ``present`` is False."""
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    lengths = np.where(present, dim, 0).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = pa.array(np.ascontiguousarray(vectors[present], dtype=np.float32).ravel(), type=pa.float32())
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~present))


def _fixed_list_column(values: np.ndarray, type_: pa.DataType) -> pa.ListArray:
    n, k = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32) if n else np.zeros(1, np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=type_))


def write_centres(codes_dir: Path, modality: str, centres: np.ndarray) -> Path:
    """Write one modality's centres (row ``i`` is code ``i``)."""
    path = centres_path(codes_dir, modality)
    table = pa.table(
        {
            "code": pa.array(np.arange(len(centres), dtype=np.int32)),
            "vector": vector_column(centres, np.ones(len(centres), dtype=bool)),
        }
    )
    write_parquet_atomic(table, path)
    return path


def item_codes_rows(
    item_ids: Sequence[str], modality: str, codes: np.ndarray, distances: np.ndarray
) -> pa.Table:
    """One modality's rows of ``item_codes``: ``codes`` and ``distances`` are (items, k), nearest first."""
    return pa.Table.from_arrays(
        [
            pa.array(item_ids, pa.string()),
            pa.array([modality] * len(item_ids), pa.string()),
            _fixed_list_column(np.asarray(codes, dtype=np.int32), pa.int32()),
            _fixed_list_column(np.asarray(distances, dtype=np.float32), pa.float32()),
        ],
        schema=ITEM_CODES_SCHEMA,
    )


def write_item_codes(codes_dir: Path, parts: Iterable[pa.Table]) -> Path:
    """Write every modality's rows as ``item_codes.parquet`` (an empty table when there are none)."""
    path = codes_dir / ITEM_CODES_FILE
    write_parquet_atomic(pa.concat_tables([ITEM_CODES_SCHEMA.empty_table(), *parts]), path)
    return path
