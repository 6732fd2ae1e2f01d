"""Amazon 2014 (McAuley): reviews JSON lines or a ``ratings_*.csv``; meta as Python literals.

The 2014 meta file holds one Python dict literal per line (single quotes), read with
``ast.literal_eval`` -- never ``eval``. Meta keys: asin, title, brand, categories
(a list of category paths), description (str), imUrl.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.stages.extract.formats import Adapter
from pipeline.stages.extract.formats.amazon2018 import review_row
from pipeline.stages.extract.rows import (
    RowError,
    as_list,
    clean_list,
    clean_text,
    image_ref,
    json_object,
    require_str,
)
from pipeline.stages.extract.staging import LineParser

RATINGS_FIELDS = ("user", "item", "rating", "ts")


def _parse_json_review(line: str) -> Iterable[tuple[Any, ...]]:
    return (review_row(json_object(line)),)


def _parse_rating(line: str) -> Iterable[tuple[Any, ...]]:
    """``user,item,rating,ts`` without a header (ids never contain commas)."""
    values = line.split(",")
    if len(values) != len(RATINGS_FIELDS):
        raise RowError(None, f"expected {len(RATINGS_FIELDS)} comma-separated fields, got {len(values)}")
    return (
        review_row(dict(zip(RATINGS_FIELDS, values, strict=True)), keys=("user", "item", "ts", "rating")),
    )


def reviews(path: Path) -> LineParser:
    name = path.name.removesuffix(".gz")
    return _parse_rating if name.endswith(".csv") else _parse_json_review


def meta(path: Path) -> LineParser:
    base_dir = path.parent

    def parse(line: str) -> Iterable[tuple[Any, ...]]:
        try:
            record = ast.literal_eval(line)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            raise RowError(None, f"not a Python dict literal: {exc}") from None
        if not isinstance(record, dict):
            raise RowError(None, f"expected a dict literal, got {type(record).__name__}")
        paths = as_list(record.get("categories"))
        return (
            (
                require_str(record, "asin"),
                clean_text(record.get("title")),
                clean_text(record.get("brand")),
                clean_list(name for path_ in paths for name in as_list(path_)),
                clean_text(record.get("description")),
                image_ref(as_list(record.get("imUrl")), base_dir),
            ),
        )

    return parse


ADAPTER = Adapter("amazon2014", reviews, meta)
