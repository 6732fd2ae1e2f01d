"""Streams one raw file through a format adapter into a staging Parquet file.

Reading is line by line (plain or gzip) and rows are flushed in fixed-size Arrow
batches, so a multi-GB input never sits in memory. Unusable lines go to the reject
log with their 1-based line number; too many of them stop the run.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipeline.core.errors import PipelineError
from pipeline.stages.extract.rows import RowError

log = logging.getLogger(__name__)

LineParser = Callable[[str], Iterable[tuple[Any, ...]]]

REVIEW_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("item_id", pa.string()), ("ts", pa.int64()), ("rating", pa.float64())]
)
META_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("brand", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("description", pa.string()),
        ("image_ref", pa.string()),
    ]
)
BATCH_ROWS = 65_536
# Stop early when this many leading lines are all rejects: the file is in another format.
EARLY_ABORT_LINES = 1_000


@dataclass
class FileStats:
    """What reading one input file gave; part of the run report."""

    path: str
    role: str
    lines: int = 0
    rows: int = 0
    rejects: int = 0
    first_reject: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "role": self.role,
            "lines": self.lines,
            "rows": self.rows,
            "rejects": self.rejects,
        }


class RejectLog:
    """Appends one JSON line per malformed input line to ``rejects.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] = path.open("w", encoding="utf-8")

    def add(self, stats: FileStats, line_no: int, field_name: str | None, error: str) -> None:
        record = {"file": stats.path, "line": line_no, "field": field_name, "error": error}
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        stats.rejects += 1
        if stats.first_reject is None:
            stats.first_reject = record

    def close(self) -> None:
        self._fh.close()


def open_text(path: Path) -> IO[str]:
    """Open a plain or gzip text file (decided by the magic bytes, not the name)."""
    with path.open("rb") as fh:
        magic = fh.read(2)
    raw: IO[bytes] = gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; blank lines are not records."""
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield number, text


class _BatchWriter:
    """Column buffers flushed to a Parquet file every ``BATCH_ROWS`` rows."""

    def __init__(self, out: Path, schema: pa.Schema) -> None:
        self.schema = schema
        self._writer = pq.ParquetWriter(out, schema)
        self._columns: list[list[Any]] = [[] for _ in schema.names]

    def add_rows(self, rows: list[tuple[Any, ...]], line_no: int) -> None:
        """Append the rows one raw line gave, each tagged with that line's number."""
        for column, values in zip(self._columns, zip(*rows, strict=True), strict=False):
            column.extend(values)
        self._columns[-1].extend([line_no] * len(rows))
        if len(self._columns[0]) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._columns[0]:
            self._writer.write_batch(pa.record_batch(self._columns, schema=self.schema))
            self._columns = [[] for _ in self.schema.names]

    def close(self) -> None:
        self.flush()
        self._writer.close()


def with_line(schema: pa.Schema) -> pa.Schema:
    """Staged rows keep their source line: SQL uses it to keep the first of duplicates."""
    return schema.append(pa.field("line", pa.int64()))


def write_empty(out: Path, schema: pa.Schema) -> None:
    """A staged file with no rows, so the SQL reads the same inputs on every run."""
    pq.write_table(with_line(schema).empty_table(), out)


def stage_file(
    path: Path,
    role: str,
    parser: LineParser,
    schema: pa.Schema,
    out: Path,
    rejects: RejectLog,
    reject_threshold: float,
) -> FileStats:
    """Parse ``path`` with ``parser`` into ``out``; raise when the file is unusable."""
    if not path.is_file():
        raise PipelineError(f"{role} file not found: {path}")
    stats = FileStats(path=str(path), role=role)
    writer = _BatchWriter(out, with_line(schema))
    try:
        for number, line in tqdm(_numbered_lines(path), desc=f"read {path.name}", unit=" lines", leave=False):
            stats.lines += 1
            try:
                rows = list(parser(line))
            except RowError as exc:
                rejects.add(stats, number, exc.field, str(exc))
                if stats.lines == stats.rejects == EARLY_ABORT_LINES:
                    break
                continue
            writer.add_rows(rows, number)
            stats.rows += len(rows)
    except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip, unreadable file
        raise PipelineError(f"{role} file {path}: unreadable after line {stats.lines}: {exc}") from exc
    finally:
        writer.close()
    _check(stats, reject_threshold)
    log.info("staged %s: %d lines, %d rows, %d rejects", path, stats.lines, stats.rows, stats.rejects)
    return stats


def _check(stats: FileStats, reject_threshold: float) -> None:
    if stats.lines == 0:
        raise PipelineError(f"{stats.role} file {stats.path} is empty")
    if stats.rejects / stats.lines > reject_threshold:
        first = stats.first_reject or {}
        raise PipelineError(
            f"{stats.role} file {stats.path}: {stats.rejects} of {stats.lines} lines read are malformed "
            f"(threshold {reject_threshold:.2%}); first bad line {first.get('line')}: {first.get('error')} "
            "(is --format right?)"
        )
