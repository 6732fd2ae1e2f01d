"""Tiny items.parquet fixtures the embed and codes tests write themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("brand", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("description", pa.string()),
        ("image_ref", pa.string()),
    ]
)


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
