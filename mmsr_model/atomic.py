"""The one temp-file-and-rename write, for the model library and the pipeline alike.

Here rather than in ``pipeline`` because ``mmsr_model`` must not import the
pipeline; it imports nothing heavy, so the pipeline, DAG parsing and the CLI can
use it freely.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Let ``write`` fill a temporary sibling of ``path``, then rename it over ``path``.

    Readers and a crash see the old file or the new one, never half of one; a failed
    ``write`` leaves no temporary file behind. The name carries the process and
    thread, so concurrent writers of one path never share a temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
