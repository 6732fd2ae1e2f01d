"""Atomic Parquet and text writes (``mmsr_model.atomic.write_atomically`` underneath)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmsr_model.atomic import write_atomically


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so readers never see a half-written file."""
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so readers never see a half-written file."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
