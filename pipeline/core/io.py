"""Writes that readers never see half done: atomic files, and folders published file by file.

``write_atomically`` lives in ``mmsr_model.atomic`` because the model library must not
import the pipeline; everything else the pipeline writes goes through this module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmsr_model.atomic import write_atomically
from pipeline.core.errors import PipelineError

__all__ = [
    "fresh_staging_dir",
    "publish_folder",
    "write_atomically",
    "write_parquet_atomic",
    "write_text_atomic",
]


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so readers never see a half-written file."""
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so readers never see a half-written file."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def fresh_staging_dir(parent: Path, name: str) -> Path:
    """An empty folder ``parent/<name>.<pid>`` to build output in before publishing it.

    Staging folders of the same name left by a killed run are removed first. ``parent``
    must be on the target's filesystem so that publishing is a rename.
    """
    for stale in parent.glob(f"{name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    path = parent / f"{name}.{os.getpid()}"
    path.mkdir(parents=True)
    return path


def publish_folder(staging: Path, target: Path, names: Collection[str] | None = None) -> None:
    """Move ``staging``'s files into ``target``, one atomic rename each, then remove ``staging``.

    Readers of ``target`` see every file old or new, never half written, and ``target``
    never disappears. Without ``names``, ``target`` ends up holding exactly the staged
    files (older ones are removed); with ``names``, only those files move and the rest of
    ``target`` stays (a folder that several stages write into).
    """
    moving = sorted(p.name for p in staging.iterdir()) if names is None else sorted(names)
    missing = [name for name in moving if not (staging / name).is_file()]
    if missing:
        raise PipelineError(f"output incomplete in {staging}: missing {', '.join(missing)}")
    if names is None and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
        return
    target.mkdir(parents=True, exist_ok=True)
    for name in moving:
        os.replace(staging / name, target / name)
    if names is None:
        for old in target.iterdir():
            if old.name not in moving:
                old.unlink()
    shutil.rmtree(staging, ignore_errors=True)
