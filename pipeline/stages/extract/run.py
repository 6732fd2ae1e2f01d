"""``run_extract``: raw files -> the warehouse tables of one dataset.

Phases: stage (adapters stream raw lines to Parquet, rejects logged), transform
(DuckDB SQL from ``pipeline/sql/extract_*.sql``: dedupe, k-core, ids, sequences, splits),
write (each table into a temp folder), swap (files renamed into place).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import duckdb

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.core.io import fresh_staging_dir, publish_folder
from pipeline.stages.extract.formats import Adapter, get_adapter
from pipeline.stages.extract.output import (
    OUTPUT_FILES,
    TABLES,
    check_dataset_name,
    local_images,
    previous_index,
)
from pipeline.stages.extract.report import ExtractReport
from pipeline.stages.extract.staging import META_SCHEMA, REVIEW_SCHEMA, RejectLog, stage_file, write_empty
from pipeline.warehouse.queries import load_sql

log = logging.getLogger(__name__)


def run_extract(
    settings: Settings,
    dataset: str,
    fmt: str,
    reviews: Path,
    meta: Path | None = None,
    images: Path | None = None,
) -> ExtractReport:
    """Extract one dataset into ``warehouse/<dataset>/``; on any error the previous output stays."""
    check_dataset_name(dataset)
    adapter = get_adapter(fmt)
    reviews, meta, images = _checked_inputs(reviews, meta, images)
    out_dir = settings.dataset_dir(dataset)
    report = ExtractReport(
        dataset=dataset, format=fmt, output_dir=str(out_dir), kcore=settings.kcore, split=settings.split
    )
    tmp = fresh_staging_dir(out_dir.parent, f".{out_dir.name}.extract-tmp")
    work = tmp / "work"
    work.mkdir()
    try:
        with report.timed("stage"):
            _stage(settings, adapter, reviews, meta, tmp, work, report)
            prev_counts = previous_index(out_dir, work / "prev_index.parquet")
            local_images(images, work / "images.parquet")
        con = duckdb.connect(str(work / "extract.duckdb"))
        try:
            with report.timed("transform"):
                _transform(con, settings, work, report, has_meta=meta is not None)
                _count(con, report, prev_counts)
            with report.timed("write"):
                for table in TABLES:
                    con.execute(load_sql(f"extract_write_{table}"), {"path": str(tmp / f"{table}.parquet")})
        finally:
            con.close()
        shutil.rmtree(work)
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        publish_folder(tmp, out_dir, OUTPUT_FILES)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "extracted %s: %d interactions, %d users, %d items -> %s",
        dataset,
        report.interactions,
        report.users,
        report.items,
        out_dir,
    )
    return report


def _checked_inputs(
    reviews: Path, meta: Path | None, images: Path | None
) -> tuple[Path, Path | None, Path | None]:
    """Fail on a missing input before spending time on reading a large reviews file."""
    for role, path in (("reviews", reviews), ("meta", meta)):
        if path is not None and not Path(path).is_file():
            raise PipelineError(f"{role} file not found: {path}")
    if images is not None and not Path(images).is_dir():
        raise PipelineError(f"images folder not found: {images}")
    return Path(reviews), meta and Path(meta), images and Path(images)


def _stage(
    settings: Settings,
    adapter: Adapter,
    reviews: Path,
    meta: Path | None,
    tmp: Path,
    work: Path,
    report: ExtractReport,
) -> None:
    """Raw files -> staged Parquet in ``work``; rejects go to ``tmp/rejects.jsonl``."""
    rejects = RejectLog(tmp / "rejects.jsonl")
    try:
        report.files.append(
            stage_file(
                reviews,
                "reviews",
                adapter.reviews(reviews),
                REVIEW_SCHEMA,
                work / "reviews.parquet",
                rejects,
                settings.reject_threshold,
            )
        )
        if meta is None:
            write_empty(work / "meta.parquet", META_SCHEMA)
        else:
            report.files.append(
                stage_file(
                    meta,
                    "meta",
                    adapter.meta(meta),
                    META_SCHEMA,
                    work / "meta.parquet",
                    rejects,
                    settings.reject_threshold,
                )
            )
    finally:
        rejects.close()
    report.rejects = sum(f.rejects for f in report.files)
    report.interactions_read = report.files[0].rows


def _transform(
    con: duckdb.DuckDBPyConnection, settings: Settings, work: Path, report: ExtractReport, *, has_meta: bool
) -> None:
    """Dedupe, meta, k-core, ids, sequences, items: tables inside the work database."""
    (deduped,) = con.execute(
        load_sql("extract_dedupe"), {"reviews": str(work / "reviews.parquet")}
    ).fetchone()
    report.duplicates_dropped = report.interactions_read - deduped
    if deduped == 0:
        raise PipelineError(f"reviews file {report.files[0].path} gave no interactions")
    con.execute(load_sql("extract_meta"), {"meta": str(work / "meta.parquet")})
    if has_meta:
        covered, reviewed = con.execute(load_sql("extract_meta_coverage")).fetchone()
        if covered == 0:
            raise PipelineError(
                f"meta file {report.files[1].path} describes none of the {reviewed} reviewed items "
                "(wrong file, or ids in another form?)"
            )
    if settings.kcore > 1:
        while True:
            (deleted,) = con.execute(load_sql("extract_kcore_step"), {"k": settings.kcore}).fetchone()
            if deleted == 0:
                break
            report.kcore_rounds += 1
            log.info(
                "k-core %d round %d: dropped %d interactions", settings.kcore, report.kcore_rounds, deleted
            )
    con.execute(load_sql("extract_catalogue"), {"enabled": settings.catalogue_items})
    con.execute(load_sql("extract_index"), {"prev_index": str(work / "prev_index.parquet")})
    con.execute(load_sql("extract_sequences"))
    con.execute(load_sql("extract_items"), {"images": str(work / "images.parquet")})
    con.execute(load_sql("extract_splits"), {"split": settings.split})


def _count(con: duckdb.DuckDBPyConnection, report: ExtractReport, prev_counts: dict[str, int]) -> None:
    """Fill the report's counts; an empty result after the k-core is an error."""
    row = con.execute(load_sql("extract_counts")).fetchone()
    cols = [d[0] for d in con.description]
    counts = dict(zip(cols, row, strict=True))
    if counts["interactions"] == 0:
        raise PipelineError(
            f"k-core {report.kcore} leaves no interactions; lower MMSR_KCORE (0 turns the filter off)"
        )
    for name in (
        "interactions",
        "users",
        "items",
        "catalogue_only_items",
        "items_with_meta",
        "items_with_local_image",
        "items_with_image_ref",
    ):
        setattr(report, name, int(counts[name]))
    report.new_users = int(counts["user_index_size"]) - prev_counts.get("user", 0)
    report.new_items = int(counts["item_index_size"]) - prev_counts.get("item", 0)
    report.split_rows = {
        split: int(n) for split, n in con.execute(load_sql("extract_split_counts")).fetchall()
    }
