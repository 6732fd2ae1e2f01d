"""Tiny items.parquet fixtures the embed and codes tests write themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.extract.staging import META_SCHEMA

ITEMS_SCHEMA = META_SCHEMA  # items.parquet has exactly the staged meta columns


def item(
    item_id: str, title: str | None = None, image_ref: str | None = None, **fields: Any
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "title": title,
        "brand": fields.get("brand"),
        "categories": fields.get("categories", []),
        "description": fields.get("description"),
        "image_ref": image_ref,
    }


def write_items(home: Path, dataset: str, rows: list[dict[str, Any]]) -> Path:
    path = home / "warehouse" / dataset / "items.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA), path)
    return path
