"""Amazon 2023 (McAuley): reviews and meta as JSON lines keyed by ``parent_asin``.

Reviews: user_id, parent_asin, timestamp (milliseconds), rating. Meta: parent_asin,
title, store (-> brand), categories[], description[], features[], images[] of
{thumb, large, variant, hi_res}.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.stages.extract.formats import Adapter
from pipeline.stages.extract.formats.amazon2018 import review_row
from pipeline.stages.extract.rows import as_list, clean_list, clean_text, image_ref, json_object, require_str
from pipeline.stages.extract.staging import LineParser

REVIEW_KEYS = ("user_id", "parent_asin", "timestamp", "rating")


def _parse_review(line: str) -> Iterable[tuple[Any, ...]]:
    user, item, ts_ms, rating = review_row(json_object(line), keys=REVIEW_KEYS)
    return ((user, item, ts_ms // 1000, rating),)


def reviews(path: Path) -> LineParser:
    return _parse_review


def _image_candidates(images: list[Any]) -> list[Any]:
    """Every image's hi_res first, then every large (the listing's main image leads)."""
    dicts = [img for img in images if isinstance(img, dict)]
    return [img.get("hi_res") for img in dicts] + [img.get("large") for img in dicts]


def meta(path: Path) -> LineParser:
    base_dir = path.parent

    def parse(line: str) -> Iterable[tuple[Any, ...]]:
        record = json_object(line)
        return (
            (
                require_str(record, "parent_asin"),
                clean_text(record.get("title")),
                clean_text(record.get("store")),
                clean_list(as_list(record.get("categories"))),
                clean_text(as_list(record.get("description")) + as_list(record.get("features"))),
                image_ref(_image_candidates(as_list(record.get("images"))), base_dir),
            ),
        )

    return parse


ADAPTER = Adapter("amazon2023", reviews, meta)
