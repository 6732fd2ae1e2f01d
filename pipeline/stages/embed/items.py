"""Reading items.parquet and turning an item into the text the encoder sees."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.errors import PipelineError
from pipeline.stages.extract.rows import clean_text

ITEM_FIELDS = ("item_id", "title", "brand", "categories", "description", "image_ref")


def read_items(path: Path) -> pa.Table:
    """The item table with every field embedding needs; duplicate or null ids are an error."""
    if not path.is_file():
        raise PipelineError(f"{path}: items table not found; run `mmsr extract` for this dataset first")
    table = pq.read_table(path)
    absent = [f for f in ITEM_FIELDS if f not in table.column_names]
    if absent:
        raise PipelineError(f"{path}: missing field(s) {absent}")
    table = table.select(list(ITEM_FIELDS))
    ids = table["item_id"]
    if ids.null_count:
        row = pc.index(pc.is_null(ids), True).as_py()
        raise PipelineError(f"{path}: row {row}, field item_id: null item id")
    counts = pc.value_counts(ids)
    dupes = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dupes):
        raise PipelineError(f"{path}: field item_id: duplicate item id {dupes[0]['values'].as_py()!r}")
    return table


def item_text(
    title: str | None,
    brand: str | None,
    categories: list[str] | None,
    description: str | None,
    max_chars: int,
) -> str:
    """``"<title>. Brand: <brand>. Categories: <a>, <b>. <description>"``, HTML-free and capped.

    Title first so that the length cap (and the encoder's own token limit) cuts the
    description, the least specific part, rather than the title.
    """
    parts = []
    if text := clean_text(title):
        parts.append(text)
    if text := clean_text(brand):
        parts.append(f"Brand: {text}")
    cats = [c for c in (clean_text(c) for c in categories or []) if c]
    if cats:
        parts.append("Categories: " + ", ".join(dict.fromkeys(cats)))
    if text := clean_text(description):
        parts.append(text)
    return cap_text(". ".join(parts), max_chars)


def cap_text(text: str, max_chars: int) -> str:
    """Cut to ``max_chars`` at a word boundary when one is near the end."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars * 0.8 else cut


def item_texts(items: pa.Table, max_chars: int) -> list[str]:
    cols = [items[f].to_pylist() for f in ("title", "brand", "categories", "description")]
    return [item_text(*row, max_chars=max_chars) for row in zip(*cols, strict=True)]
