"""The raw formats ``mmsr extract --format`` understands, one adapter module each.

An adapter only turns one raw line into normalised rows (``staging.REVIEW_SCHEMA``
and ``staging.META_SCHEMA``); every transform after that is SQL in ``sql/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.stages.extract.staging import LineParser


@dataclass(frozen=True)
class Adapter:
    """Line parsers for one format; each factory gets the file it will parse."""

    name: str
    reviews: Callable[[Path], LineParser]
    meta: Callable[[Path], LineParser]


def get_adapter(fmt: str) -> Adapter:
    """The adapter for ``fmt``; a PipelineError lists the known formats otherwise."""
    from pipeline.stages.extract.formats import amazon2014, amazon2018, amazon2023, sequences

    adapters = {
        a.name: a for a in (amazon2014.ADAPTER, amazon2018.ADAPTER, amazon2023.ADAPTER, sequences.ADAPTER)
    }
    if fmt not in adapters:
        raise PipelineError(f"unknown format {fmt!r}; expected one of {', '.join(sorted(adapters))}")
    return adapters[fmt]
