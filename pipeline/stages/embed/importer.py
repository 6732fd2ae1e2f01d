"""Precomputed features (``--import-features``) instead of running an encoder.

Accepted files:
- Parquet with ``item_id`` and either a list column ``vector`` or numeric columns
  (taken in file order as the vector components);
- NumPy ``NAME.npy`` (a 2-D numeric matrix) with ``NAME.ids.txt`` beside it: one item
  id per line, line i naming row i.
Vectors are stored as given (not re-normalised). encoder_id is
``import:<file name>:<sha256 prefix of the file(s)>`` so a changed file is re-imported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import PipelineError
from pipeline.stages.embed.store import read_vectors


def ids_file(npy: Path) -> Path:
    return npy.with_suffix(".ids.txt")


def _encoder_id(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return f"import:{paths[0].name}:{digest.hexdigest()[:12]}"


def _check_ids(path: Path, ids: list[str | None], first_line: int) -> list[str]:
    seen: dict[str, int] = {}
    for row, item in enumerate(ids):
        where = f"{path}: {'line' if first_line else 'row'} {row + first_line}"
        if item is None or not str(item).strip():
            raise PipelineError(f"{where}, field item_id: empty item id")
        if item in seen:
            raise PipelineError(f"{where}, field item_id: duplicate item id {item!r} (first at {seen[item]})")
        seen[item] = row + first_line
    return [str(i) for i in ids]


def _check_finite(path: Path, ids: list[str], matrix: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        raise PipelineError(
            f"{path}: row {int(bad[0])} (item {ids[bad[0]]!r}), field vector: NaN or infinite value"
        )


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    if "item_id" not in table.column_names:
        raise PipelineError(f"{path}: field item_id: column not found")
    ids = _check_ids(path, table["item_id"].to_pylist(), first_line=0)
    if "vector" in table.column_names:
        if table["vector"].null_count:
            row = table["vector"].is_null().to_pylist().index(True)
            raise PipelineError(f"{path}: row {row}, field vector: null vector")
        _, matrix, _ = read_vectors(path)
        return ids, matrix
    numeric = [
        name
        for name in table.column_names
        if name != "item_id"
        and (pa.types.is_integer(table[name].type) or pa.types.is_floating(table[name].type))
    ]
    if not numeric:
        raise PipelineError(f"{path}: needs a list column 'vector' or numeric feature columns beside item_id")
    matrix = np.column_stack([table[c].to_numpy(zero_copy_only=False).astype(np.float32) for c in numeric])
    return ids, matrix


def _read_npy(path: Path) -> tuple[list[str], np.ndarray]:
    names = ids_file(path)
    if not names.is_file():
        raise PipelineError(f"{path}: item ids file {names} not found (one item id per line, row order)")
    try:
        matrix = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise PipelineError(f"{path}: not a plain NumPy array file ({exc})") from exc
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise PipelineError(f"{path}: expected a 2-D numeric matrix, got shape {matrix.shape} {matrix.dtype}")
    lines = names.read_text(encoding="utf-8").splitlines()
    ids = _check_ids(names, [line.strip() for line in lines], first_line=1)
    if len(ids) != matrix.shape[0]:
        raise PipelineError(f"{names}: {len(ids)} ids but {path.name} has {matrix.shape[0]} rows")
    return ids, np.asarray(matrix, dtype=np.float32)  # no second copy when it already is float32


def read_features(path: Path) -> tuple[list[str], np.ndarray, str]:
    """``(item ids, float32 matrix, encoder_id)`` of a features file, validated."""
    if not path.is_file():
        raise PipelineError(f"{path}: features file not found")
    if path.suffix == ".npy":
        ids, matrix = _read_npy(path)
        encoder_id = _encoder_id(path, ids_file(path))
    elif path.suffix == ".parquet":
        ids, matrix = _read_parquet(path)
        encoder_id = _encoder_id(path)
    else:
        raise PipelineError(f"{path}: unsupported features file (expected .parquet, or .npy with .ids.txt)")
    if matrix.shape[1] == 0:
        raise PipelineError(f"{path}: feature vectors are empty")
    _check_finite(path, ids, matrix)
    return ids, matrix, encoder_id
