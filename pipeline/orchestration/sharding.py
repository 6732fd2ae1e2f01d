"""Fan-out of embed and recommend over ``settings.shards`` shards, without changing the stages.

A shard is a workspace: a small ``MMSR_HOME`` at ``<home>/shards/<dataset>/<i>-of-<n>``
whose ``warehouse/<dataset>/`` holds the shard's slice of the stage's input (items for
embed, users for recommend; user ids re-densified 0..m-1 as the data layout requires)
and symbolic links to every other table. The unchanged stage function runs there in a
fresh interpreter (same MLflow tracking URI and the shared encoder cache), and the
combine step merges the shards' outputs into the real dataset with one atomic rename,
so readers see either the old or the new output, never a mix. Items and users are
assigned to shards by a stable hash of their external id, so shards are reproducible.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.core.io import fresh_staging_dir, publish_folder, write_parquet_atomic
from pipeline.orchestration.isolated import run_stage_isolated

log = logging.getLogger(__name__)

#: files each sharded stage reads in a sliced form; everything else is linked
_SLICED = {
    "embed": ("items.parquet",),
    "recommend": ("user_index.parquet", "sequences.parquet", "splits.parquet"),
}
#: the stage's own output folders inside warehouse/<dataset>/ (never linked into a shard)
_OUTPUT_DIRS = {"embed": ("embeddings",), "recommend": ("pending", "recommendations", "health")}


def shard_of(keys: pa.ChunkedArray | pa.Array, shards: int) -> np.ndarray:
    """Stable shard number of every external id (CRC32, independent of Python's hash seed)."""
    return np.fromiter((zlib.crc32(str(k).encode()) % shards for k in keys.to_pylist()), dtype=np.int64)


def workspace_tag(stage: str, args: dict[str, Any]) -> str:
    """One workspace per stage and modality, so embed_text and embed_image shards run side by side."""
    return f"{stage}-{args['modality']}" if stage == "embed" else stage


def shard_settings(settings: Settings, dataset: str, tag: str, shard: int, shards: int) -> Settings:
    """Settings of a shard workspace: its own home under ``<home>/shards``, the real MLflow store."""
    values = settings.model_dump()
    home = settings.home / "shards" / dataset / tag / f"{shard}-of-{shards}"
    values.update(home=home, mlflow_tracking_uri=settings.tracking_uri)
    return Settings(**values)


def _slice_items(source: Path, target: Path, shard: int, shards: int, modality: str) -> None:
    items = pq.read_table(source / "items.parquet")
    write_parquet_atomic(
        items.filter(pa.array(shard_of(items["item_id"], shards) == shard)), target / "items.parquet"
    )
    previous = source / "embeddings" / f"{modality}.parquet"
    if previous.is_file():  # keeps the stage's incremental cache working per shard
        (target / "embeddings").mkdir(exist_ok=True)
        table = pq.read_table(previous)
        write_parquet_atomic(
            table.filter(pa.array(shard_of(table["item_id"], shards) == shard)),
            target / "embeddings" / previous.name,
        )


def _slice_users(source: Path, target: Path, shard: int, shards: int) -> None:
    index = pq.read_table(source / "user_index.parquet")
    index = index.filter(pa.array(shard_of(index["user_id"], shards) == shard)).sort_by("user_idx")
    old = index["user_idx"].to_numpy()
    remap = pa.array(np.arange(len(old), dtype=np.int32))
    write_parquet_atomic(
        index.set_column(index.schema.get_field_index("user_idx"), "user_idx", remap),
        target / "user_index.parquet",
    )
    for name in ("sequences.parquet", "splits.parquet"):
        table = pq.read_table(source / name)
        table = table.filter(pc.is_in(table["user_idx"], value_set=pa.array(old)))
        new_idx = np.searchsorted(old, table["user_idx"].to_numpy())
        column = pa.array(new_idx.astype(np.int32))
        write_parquet_atomic(
            table.set_column(table.schema.get_field_index("user_idx"), "user_idx", column), target / name
        )


def prepare_workspace(
    settings: Settings, stage: str, dataset: str, shard: int, shards: int, args: dict[str, Any]
) -> Settings:
    """Build (or rebuild) shard ``shard``'s workspace for ``stage`` and return its settings."""
    if stage not in _SLICED:
        raise PipelineError(f"stage {stage!r} cannot be sharded; only {sorted(_SLICED)}")
    source = settings.dataset_dir(dataset).resolve()
    if not source.is_dir():
        raise PipelineError(f"{source} is missing: run extract for dataset {dataset!r} first")
    sub = shard_settings(settings, dataset, workspace_tag(stage, args), shard, shards)
    if sub.home.exists():
        shutil.rmtree(sub.home)
    target = sub.dataset_dir(dataset)
    target.mkdir(parents=True)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    sub.cache_dir.symlink_to(settings.cache_dir.resolve(), target_is_directory=True)
    skip = {*_SLICED[stage], *_OUTPUT_DIRS[stage]}
    for entry in source.iterdir():
        if entry.name not in skip and not entry.name.startswith("."):
            (target / entry.name).symlink_to(entry)
    if stage == "embed":
        _slice_items(source, target, shard, shards, args["modality"])
    else:
        _slice_users(source, target, shard, shards)
    return sub


def run_shard(
    settings: Settings, stage: str, dataset: str, shard: int, shards: int, args: dict[str, Any]
) -> dict[str, Any]:
    """Run ``stage`` on one shard in a fresh interpreter; returns the stage's report."""
    sub = prepare_workspace(settings, stage, dataset, shard, shards, args)
    log.info("%s shard %d/%d in %s", stage, shard + 1, shards, sub.home)
    return {"shard": shard, **run_stage_isolated(sub, stage, dataset, args)}


def _combine_embed(settings: Settings, dataset: str, shards: int, modality: str) -> dict[str, Any]:
    parts = []
    for shard in range(shards):
        sub = shard_settings(settings, dataset, f"embed-{modality}", shard, shards)
        path = sub.dataset_dir(dataset) / "embeddings" / f"{modality}.parquet"
        if not path.is_file():
            raise PipelineError(f"{path} is missing: embed shard {shard} of {shards} did not finish")
        parts.append(pq.read_table(path))
    merged = pa.concat_tables(parts, promote_options="permissive")
    items = pq.read_table(settings.dataset_dir(dataset) / "items.parquet", columns=["item_id"])
    order = pc.index_in(items["item_id"], value_set=merged["item_id"])
    if order.null_count:
        raise PipelineError(f"embed shards of {dataset!r} lack {order.null_count} item(s) of items.parquet")
    out_dir = settings.dataset_dir(dataset) / "embeddings"
    out_dir.mkdir(exist_ok=True)
    write_parquet_atomic(merged.take(order), out_dir / f"{modality}.parquet")
    return {"modality": modality, "rows": len(items), "shards": shards}


def _combine_recommend(settings: Settings, dataset: str, shards: int, run_date: str) -> dict[str, Any]:
    final = settings.pending_partition(dataset, date.fromisoformat(run_date))
    staging = fresh_staging_dir(settings.staging_dir(dataset), f"recommendations-{run_date}")
    rows = 0
    for shard in range(shards):
        sub = shard_settings(settings, dataset, "recommend", shard, shards)
        folder = sub.pending_partition(dataset, date.fromisoformat(run_date))
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if not files:
            raise PipelineError(
                f"{folder} has no Parquet file: recommend shard {shard} of {shards} did not finish"
            )
        for n, path in enumerate(files):
            rows += pq.read_metadata(path).num_rows
            shutil.copyfile(path, staging / f"part-{shard}-{n}.parquet")
    publish_folder(staging, final)
    return {"run_date": run_date, "rows": rows, "shards": shards, "path": str(final)}


def combine_shards(
    settings: Settings, stage: str, dataset: str, shards: int, args: dict[str, Any]
) -> dict[str, Any]:
    """Merge every shard's output of ``stage`` into the real dataset atomically."""
    if stage == "embed":
        return _combine_embed(settings, dataset, shards, args["modality"])
    if stage == "recommend":
        return _combine_recommend(settings, dataset, shards, args["run_date"])
    raise PipelineError(f"stage {stage!r} cannot be sharded; only {sorted(_SLICED)}")
