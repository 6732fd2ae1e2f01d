"""Which lines of a stage child's output reach the parent's log.

A stage child writes two kinds of lines: log records, and tqdm redraws. Read from a
pipe, every redraw (tqdm's ``\\r``) arrives as its own line, together with the cursor
escapes of nested bars; relayed one for one they made a demo run's Airflow log 923
lines long, mostly bars. Log records always pass; bar frames pass at most once per
interval, so a long stage still shows it is moving.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

#: terminal control sequences (tqdm's cursor-up ``ESC[A`` for nested bars)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: a tqdm frame in its default format: ``desc:  42%|███   | 42/100 [...]``
_PROGRESS_FRAME = re.compile(r"(?:^|:\s*)\d{1,3}%\|")


class ChildOutputFilter:
    """Cleans one child's lines and thins its progress-bar frames to one per ``progress_every_s``."""

    def __init__(self, progress_every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = progress_every_s
        self._clock = clock
        self._last_frame: float | None = None

    def relay(self, raw: str) -> str | None:
        """The line to log for ``raw``, or None for a blank line or a frame inside the interval."""
        line = _ANSI_ESCAPE.sub("", raw).strip()
        if not line:
            return None
        if not _PROGRESS_FRAME.search(line):
            return line
        now = self._clock()
        if self._last_frame is not None and now - self._last_frame < self._every:
            return None
        self._last_frame = now
        return line
