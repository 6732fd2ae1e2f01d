"""Where extract writes, and how it replaces the previous run without ever half-writing it.

The whole output is built in a temporary folder beside ``warehouse/<dataset>/``; only
when every table is written does each extract-owned file move into place with
``os.replace``. Folders that later stages keep in the dataset folder (embeddings/,
codes/, recommendations/) are never touched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.errors import PipelineError

TABLES = ("interactions", "items", "user_index", "item_index", "sequences", "splits")
# report.json moves last: its presence with a new timestamp marks a complete swap.
OUTPUT_FILES = tuple(f"{t}.parquet" for t in TABLES) + ("rejects.jsonl", "report.json")
INDEX_SCHEMA = pa.schema([("kind", pa.string()), ("id", pa.string()), ("idx", pa.int32())])
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_dataset_name(dataset: str) -> None:
    """Dataset names become folder names: no separators, no leading dot."""
    if not _NAME.match(dataset):
        raise PipelineError(f"invalid dataset name {dataset!r}: use letters, digits, '_', '-', '.'")


def previous_index(out_dir: Path, dest: Path) -> dict[str, int]:
    """Write the previous run's id maps as one (kind, id, idx) Parquet; return ids per kind.

    A corrupt previous index must stop the run: silently renumbering would shift every
    id the trained model and the published recommendations rely on.
    """
    parts = []
    counts: dict[str, int] = {}
    for kind in ("user", "item"):
        path = out_dir / f"{kind}_index.parquet"
        if not path.is_file():
            continue
        table = pq.read_table(path)
        id_col, idx_col = f"{kind}_id", f"{kind}_idx"
        if {id_col, idx_col} - set(table.column_names):
            raise PipelineError(f"{path}: expected columns {id_col}, {idx_col}; got {table.column_names}")
        idx = table[idx_col].cast(pa.int64())
        n = table.num_rows
        dense = n == 0 or (
            pc.min(idx).as_py() == 0 and pc.max(idx).as_py() == n - 1 and pc.count_distinct(idx).as_py() == n
        )
        if not dense or pc.count_distinct(table[id_col]).as_py() != n or table[id_col].null_count:
            raise PipelineError(
                f"{path}: ids must be unique and {idx_col} dense 0..{n - 1}; refusing to renumber"
            )
        counts[kind] = n
        parts.append(
            pa.table(
                {
                    "kind": pa.array([kind] * n, pa.string()),
                    "id": table[id_col].cast(pa.string()),
                    "idx": idx,
                },
                schema=INDEX_SCHEMA,
            )
        )
    table = pa.concat_tables(parts) if parts else INDEX_SCHEMA.empty_table()
    pq.write_table(table, dest)
    return counts


def local_images(images: Path | None, dest: Path) -> None:
    """Write (item_id, path) for ``<item_id>.jpg|.jpeg|.png`` in ``images`` (jpg preferred)."""
    found: dict[str, str] = {}
    if images is not None:
        for suffix in (".png", ".jpeg", ".jpg"):  # later suffixes win
            for path in images.glob(f"*{suffix}"):
                if path.is_file():
                    found[path.stem] = str(path.resolve())
    ids = sorted(found)
    pq.write_table(pa.table({"item_id": pa.array(ids, pa.string()), "path": [found[i] for i in ids]}), dest)
