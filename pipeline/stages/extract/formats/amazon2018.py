"""Amazon 2018 (McAuley): reviews and meta as JSON lines.

Reviews: reviewerID, asin, unixReviewTime (s), overall. Meta: asin, title, brand,
category[], description[], feature[], imageURLHighRes[], imageURL[] (the demo data
puts local file paths there, relative to the meta file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.stages.extract.formats import Adapter
from pipeline.stages.extract.rows import (
    as_list,
    clean_list,
    clean_text,
    image_ref,
    json_object,
    optional_float,
    require_int,
    require_str,
)
from pipeline.stages.extract.staging import LineParser


def review_row(
    record: Mapping[str, Any],
    keys: tuple[str, str, str, str] = ("reviewerID", "asin", "unixReviewTime", "overall"),
) -> tuple[str, str, int, float | None]:
    """(user, item, ts, rating) from ``record``; ``keys`` name those fields in the raw format.

    The defaults are the 2014/2018 review keys (the two releases share them).
    """
    user, item, ts, rating = keys
    return (
        require_str(record, user),
        require_str(record, item),
        require_int(record, ts),
        optional_float(record, rating),
    )


def _parse_review(line: str) -> Iterable[tuple[Any, ...]]:
    return (review_row(json_object(line)),)


def reviews(path: Path) -> LineParser:
    return _parse_review


def meta(path: Path) -> LineParser:
    base_dir = path.parent

    def parse(line: str) -> Iterable[tuple[Any, ...]]:
        record = json_object(line)
        return (
            (
                require_str(record, "asin"),
                clean_text(record.get("title")),
                clean_text(record.get("brand")),
                clean_list(as_list(record.get("category"))),
                clean_text(as_list(record.get("description")) + as_list(record.get("feature"))),
                image_ref(as_list(record.get("imageURLHighRes")) + as_list(record.get("imageURL")), base_dir),
            ),
        )

    return parse


ADAPTER = Adapter("amazon2018", reviews, meta)
