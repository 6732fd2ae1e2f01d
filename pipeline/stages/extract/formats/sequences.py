"""Pre-built sequences: ``user_sequence.txt`` (``user item item ...``) and ``item_text.txt``.

These files carry no timestamps, only order, so ``ts`` is the 0-based position in the
user's line; ratings are NULL. ``item_text.txt`` lines are ``ID text``: the text
becomes the title.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.stages.extract.formats import Adapter
from pipeline.stages.extract.rows import RowError, clean_text
from pipeline.stages.extract.staging import LineParser


def _parse_sequence(line: str) -> Iterable[tuple[Any, ...]]:
    user, *items = line.split()
    if not items:
        raise RowError("items", f"user {user!r} has no items")
    return [(user, item, position, None) for position, item in enumerate(items)]


def _parse_item_text(line: str) -> Iterable[tuple[Any, ...]]:
    item, _, text = line.strip().partition(" ")
    return ((item, clean_text(text), None, None, None, None),)


def reviews(path: Path) -> LineParser:
    return _parse_sequence


def meta(path: Path) -> LineParser:
    return _parse_item_text


ADAPTER = Adapter("sequences", reviews, meta)
