"""The extract run report: what was read, rejected, kept, and how long each phase took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.stages.extract.staging import FileStats


@dataclass
class ExtractReport:
    """Returned by ``run_extract`` and written as ``report.json`` beside the tables."""

    dataset: str
    format: str
    output_dir: str
    kcore: int
    split: str
    files: list[FileStats] = field(default_factory=list)
    rejects: int = 0
    interactions_read: int = 0
    duplicates_dropped: int = 0
    kcore_rounds: int = 0
    interactions: int = 0
    users: int = 0
    items: int = 0
    catalogue_only_items: int = 0
    items_with_meta: int = 0
    items_with_local_image: int = 0
    items_with_image_ref: int = 0
    new_users: int = 0
    new_items: int = 0
    split_rows: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Record the wall time of one phase under ``timings_s[phase]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[phase] = round(time.perf_counter() - start, 3)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = [f.to_dict() for f in self.files]
        return out
