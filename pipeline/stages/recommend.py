"""Recommend stage: the champion scores every user; one date's top-K lands atomically as a candidate.

The partition is written to a staging folder and moved, once complete, to
``pending/run_date=DAY/``: outside ``recommendations/``, which analysts' views read.
The publish stage's health gate moves it there only if the night looks sane
(``pipeline.stages.publish.publish_night``). A rerun replaces that date only.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient
from tqdm.auto import tqdm

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.core.io import fresh_staging_dir, publish_folder
from pipeline.serving.registry import current_champion, load_registered, registered_name, setup_mlflow
from pipeline.warehouse.dataset import load_histories

if TYPE_CHECKING:
    from mmsr_model.histories import Histories

log = logging.getLogger(__name__)

PART_NAME = "part-0.parquet"
SCHEMA = pa.schema(
    [
        ("run_date", pa.date32()),
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("model_name", pa.string()),
        ("model_version", pa.int32()),
    ]
)


@dataclass
class RecommendReport:
    dataset: str
    run_date: date
    model_name: str
    model_version: int
    k: int
    users: int
    users_skipped: int
    rows: int
    seconds: float
    users_per_s: float
    path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _block_table(
    user_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray, item_ids: np.ndarray, constants: dict[str, Any]
) -> pa.Table:
    """One block of users' top-K as rows (vectorised; -inf = fewer than K candidates)."""
    k = ids.shape[1]
    keep = np.isfinite(scores).ravel()
    n = int(keep.sum())
    return pa.table(
        {
            "run_date": pa.array([constants["run_date"]] * n, pa.date32()),
            "user_id": pa.array(np.repeat(user_ids, k)[keep], pa.string()),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), len(user_ids))[keep]),
            "item_id": pa.array(item_ids[ids.ravel()[keep]], pa.string()),
            "score": pa.array(scores.ravel()[keep].astype(np.float32)),
            "model_name": pa.array([constants["model_name"]] * n, pa.string()),
            "model_version": pa.array(np.full(n, constants["model_version"], dtype=np.int32)),
        },
        schema=SCHEMA,
    )


def _champion_histories(histories: Histories, item_idx: dict[str, int], item_ids: np.ndarray) -> Histories:
    """``histories`` in the champion's dense ids, items unknown to the champion dropped (vectorised)."""
    from mmsr_model.histories import Histories

    # current dense ids -> the champion's dense ids (-1: item unknown to the champion)
    to_champion = np.fromiter((item_idx.get(i, -1) for i in item_ids), np.int64, len(item_ids))
    mapped = to_champion[histories.items.numpy()]
    known = mapped >= 0
    lengths = histories.lengths.numpy()
    user_of = np.repeat(np.arange(len(lengths)), lengths)
    return Histories.from_lengths(mapped[known], np.bincount(user_of[known], minlength=len(lengths)))


def _load_champion(settings: Settings, dataset: str) -> tuple[Any, int]:
    setup_mlflow(settings, dataset)
    version = current_champion(MlflowClient(), dataset)
    if version is None:
        raise PipelineError(
            f"no champion model for {registered_name(dataset)!r} in {settings.tracking_uri}: "
            f"run `mmsr train --dataset {dataset}` first"
        )
    wrapper = load_registered(f"models:/{registered_name(dataset)}/{version}").unwrap_python_model()
    return wrapper, version


def run_recommend(settings: Settings, dataset: str, run_date: date | None, k: int | None) -> RecommendReport:
    """Write ``pending/run_date=YYYY-MM-DD/part-0.parquet`` for every user with history (publish gates it)."""
    import torch

    from mmsr_model.device import resolve_device
    from mmsr_model.histories import Histories

    started = time.perf_counter()
    run_date = run_date or datetime.now(UTC).date()
    k = k or settings.recommend_k
    index, sequences = load_histories(settings, dataset)
    wrapper, version = _load_champion(settings, dataset)
    wrapper.device = resolve_device(settings.model.device)
    histories = _champion_histories(Histories.pack(sequences), wrapper.item_idx, index.item_ids)
    users = np.flatnonzero(histories.lengths.numpy() > 0)
    if users.size == 0:
        raise PipelineError(
            f"dataset {dataset!r}: no user has an interaction the champion knows; nothing written"
        )
    constants = {"run_date": run_date, "model_name": registered_name(dataset), "model_version": version}
    staging = fresh_staging_dir(settings.staging_dir(dataset), f"recommendations-{run_date.isoformat()}")
    rows = 0
    try:
        with pq.ParquetWriter(staging / PART_NAME, SCHEMA) as writer:
            step = settings.recommend_batch_users
            for start in tqdm(range(0, users.size, step), desc=f"recommend {dataset}"):
                chunk = users[start : start + step]
                ids, scores = wrapper.top_k(histories.select(torch.from_numpy(chunk)), k, exclude_seen=True)
                table = _block_table(index.user_ids[chunk], ids, scores, wrapper.item_ids, constants)
                writer.write_table(table)
                rows += table.num_rows
        target = settings.pending_partition(dataset, run_date)
        publish_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    report = RecommendReport(
        dataset=dataset,
        run_date=run_date,
        model_name=registered_name(dataset),
        model_version=version,
        k=k,
        users=int(users.size),
        users_skipped=len(sequences) - int(users.size),
        rows=rows,
        seconds=round(seconds, 2),
        users_per_s=round(users.size / seconds, 1),
        path=str(target / PART_NAME),
    )
    log.info("%s: %d users -> %s (%.1f users/s)", dataset, report.users, report.path, report.users_per_s)
    return report
