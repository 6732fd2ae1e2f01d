"""Field helpers the format adapters share: one place decides what a usable value is.

A line that cannot give a required value raises :class:`RowError`; the staging loop
turns that into a reject record naming the file, the line and the field.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_TAG = re.compile(r"<[/!]?[A-Za-z][^<>]*(?:>|$)")  # a tag, or one cut off at the end of the value
_TAG_TAIL = re.compile(r'^[^<>]*"\s*/?>')  # a tag's tail cut off at the start: ' Magazines" />'
_SPACE = re.compile(r"\s+")


class RowError(ValueError):
    """One raw line is unusable; ``field`` names the offending key (None: the whole line)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


def json_object(line: str) -> dict[str, Any]:
    """Decode one JSON-lines record, insisting on an object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RowError(None, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict):
        raise RowError(None, f"expected a JSON object, got {type(record).__name__}")
    return record


def require_str(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(key, f"missing required field {key!r}")
    if not isinstance(value, str | int):
        raise RowError(key, f"field {key!r} must be a string, got {type(value).__name__}")
    return str(value).strip()


def require_int(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    if value is None or value == "":
        raise RowError(key, f"missing required field {key!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RowError(key, f"field {key!r} is not an integer: {value!r}") from None


def optional_float(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RowError(key, f"field {key!r} is not a number: {value!r}") from None


def as_list(value: Any) -> list[Any]:
    """Raw list fields sometimes hold a bare string (or nothing): always a list."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def clean_text(value: Any) -> str | None:
    """Plain text from a raw field: HTML tags (even cut-off ones) and entities removed.

    Lists are joined with spaces because 2018/2023 descriptions are lists of paragraphs.
    Returns None for values that end up empty so "no text" is one thing downstream.
    """
    if value is None:
        return None
    if isinstance(value, list | tuple):
        parts = [clean_text(v) for v in value]
        joined = " ".join(p for p in parts if p)
        return joined or None
    text = html.unescape(str(value))
    if "<" in text or ">" in text:
        text = _TAG_TAIL.sub(" ", _TAG.sub(" ", text))
    text = _SPACE.sub(" ", text).strip()
    return text or None


def clean_list(values: Iterable[Any]) -> list[str]:
    """Cleaned, de-duplicated strings in first-seen order (category paths repeat names)."""
    out: list[str] = []
    for value in values:
        text = clean_text(value)
        if text and text not in out:
            out.append(text)
    return out


def image_ref(candidates: Iterable[Any], base_dir: Path) -> str | None:
    """The first usable image reference: URLs as they are, file paths resolved.

    Relative paths are taken relative to the meta file (how the demo data refers to
    its JPEGs); a path to a file that does not exist counts as no image.
    """
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate.strip():
            continue
        ref = candidate.strip()
        if ref.startswith(("http://", "https://")):
            return ref
        path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
        if path.is_file():
            return str(path.resolve())
    return None
