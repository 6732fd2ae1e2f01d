"""The embeddings Parquet: one row per item, read back for incremental reruns.

A modality's result is kept in memory as a dense ``(n_items, dim)`` float32 matrix
plus a ``missing`` reason per row (``None`` = the row has a vector), which is what
reuse, import and the codes stage all want. On disk it is the README contract:
item_id, encoder_id, content_hash, vector list<float32> (NULL when missing), missing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import PipelineError
from pipeline.core.io import write_atomically
from pipeline.warehouse.codes_table import vector_column

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("encoder_id", pa.string()),
        ("content_hash", pa.string()),
        ("vector", pa.list_(pa.float32())),
        ("missing", pa.string()),
    ]
)

#: missing reasons worth another try on the next run even when nothing changed
#: (the network may be back, downloads may be switched on).
RETRY_REASONS = frozenset({"download_disabled", "timeout", "unreachable", "http_error"})


def content_hash(data: bytes | str) -> str:
    """128-bit BLAKE2b of an encoder input: cheap, and collisions are not a concern here."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass
class Embeddings:
    """One modality's vectors for every item, in items.parquet order."""

    item_ids: list[str]
    encoder_id: str
    hashes: list[str]
    vectors: np.ndarray
    missing: list[str | None]

    def missing_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(m for m in self.missing if m is not None).items()))


#: rows per Parquet row group: the vectors are converted and written a slice at a time, so
#: writing never holds a second whole copy of a million items' vectors
WRITE_CHUNK_ROWS = 65_536


def write_embeddings(emb: Embeddings, path: Path) -> None:
    present = np.array([m is None for m in emb.missing], dtype=bool)

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            for start in range(0, max(len(emb.item_ids), 1), WRITE_CHUNK_ROWS):
                rows = slice(start, start + WRITE_CHUNK_ROWS)
                part = pa.Table.from_arrays(
                    [
                        pa.array(emb.item_ids[rows], pa.string()),
                        pa.array([emb.encoder_id] * len(emb.item_ids[rows]), pa.string()),
                        pa.array(emb.hashes[rows], pa.string()),
                        vector_column(emb.vectors[rows], present[rows]),
                        pa.array(emb.missing[rows], pa.string()),
                    ],
                    schema=SCHEMA,
                )
                writer.write_table(part)

    write_atomically(path, write)


def read_vectors(path: Path) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``(table, vectors (n, dim) float32 with NaN rows for missing, present mask)``."""
    table = pq.read_table(path)
    missing_fields = {"item_id", "vector"} - set(table.column_names)
    if missing_fields:
        raise PipelineError(f"{path}: missing field(s) {sorted(missing_fields)}")
    column = table["vector"].combine_chunks()
    present = column.is_valid().to_numpy(zero_copy_only=False)
    lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    dims = set(lengths[present].tolist())
    if len(dims) > 1:
        raise PipelineError(f"{path}: field vector: rows have different lengths {sorted(dims)}")
    dim = dims.pop() if dims else 0
    vectors = np.full((table.num_rows, dim), np.nan, dtype=np.float32)
    if dim:
        flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        vectors[present] = flat.reshape(-1, dim)
    return table, vectors, present


@dataclass
class Previous:
    """What the last run wrote, indexed by item id, for reuse decisions."""

    encoder_id: str | None
    rows: dict[str, int]
    hashes: list[str]
    vectors: np.ndarray
    missing: list[str | None]

    @classmethod
    def load(cls, path: Path) -> Previous | None:
        if not path.is_file():
            return None
        try:
            table, vectors, _ = read_vectors(path)
        except (PipelineError, pa.ArrowException, OSError) as exc:
            log.warning("previous embeddings at %s unreadable (%s): recomputing everything", path, exc)
            return None
        encoders = set(table["encoder_id"].to_pylist())
        return cls(
            encoder_id=encoders.pop() if len(encoders) == 1 else None,
            rows={item: i for i, item in enumerate(table["item_id"].to_pylist())},
            hashes=table["content_hash"].to_pylist(),
            vectors=vectors,
            missing=table["missing"].to_pylist(),
        )

    def reusable(self, encoder_id: str, item_id: str, digest: str) -> int | None:
        """Row of the previous result to reuse for this item, or None to (re)compute it."""
        if self.encoder_id != encoder_id:
            return None
        row = self.rows.get(item_id)
        if row is None or self.hashes[row] != digest or self.missing[row] in RETRY_REASONS:
            return None
        return row


def plan_reuse(
    previous: Previous | None, encoder_id: str, item_ids: list[str], hashes: list[str]
) -> list[int | None]:
    """Per item: the previous row to reuse, or None when it must be (re)computed."""
    if previous is None:
        return [None] * len(item_ids)
    return [
        previous.reusable(encoder_id, item, digest) for item, digest in zip(item_ids, hashes, strict=True)
    ]


def merge(
    item_ids: list[str],
    hashes: list[str],
    encoder_id: str,
    previous: Previous | None,
    reuse: list[int | None],
    computed: tuple[np.ndarray, list[str | None]],
) -> Embeddings:
    """Previous rows where ``reuse`` says so, else the next row of ``computed`` (in item order)."""
    new_vectors, new_missing = computed
    if any(m is None for m in new_missing) or previous is None:
        dim = new_vectors.shape[1] if new_vectors.ndim == 2 else 0
    else:
        dim = previous.vectors.shape[1]
    vectors = np.full((len(item_ids), dim), np.nan, dtype=np.float32)
    missing: list[str | None] = []
    fresh = 0
    for i, row in enumerate(reuse):
        if row is not None and previous is not None:
            if previous.missing[row] is None:
                vectors[i] = previous.vectors[row]
            missing.append(previous.missing[row])
            continue
        reason = new_missing[fresh]
        if reason is None:
            vectors[i] = new_vectors[fresh]
        missing.append(reason)
        fresh += 1
    return Embeddings(item_ids, encoder_id, hashes, vectors, missing)
