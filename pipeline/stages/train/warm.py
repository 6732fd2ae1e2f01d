"""Whether tonight's training starts warm from the champion, and from which weights.

A warm night seeds MMSR and every trainable baseline with the weights a source model's
training run saved (its ``warm/`` artifacts): the champion's, or with ``warm_from:
chain_cold`` those of the cold model the champion's chain began with, so that warm nights
do not fine-tune each other's fine-tuning. It then trains the short schedule
(``warm_max_epochs``, ``warm_patience``) with early stopping on validation; with
``model.refit`` the refit also starts from those weights and runs the selected epoch
count on train + valid. Both train only on the samples the source has not learned
plus a ``warm_replay_fraction`` of the rest, and validation uses only the valid
targets it has not learned (:mod:`mmsr_model.incremental`; the run's
``trained_upto.npy`` says what it learned). Pop has no weights: it is counted afresh
every night.

Warm needs: ``warm_start: auto``; a source whose run carries the warm artifacts and
the date of the cold run its chain began with (with ``chain_cold``, that cold model still
registered); fewer than ``full_retrain_every_days``
days since that cold run; no warm model since that fell below its chain's cold model at
the gate (:mod:`pipeline.stages.promote`); today's user and item id maps extending the source's
(append-only, as extract writes them); and weights that fit today's models (same
hyper-parameters, same code centres, see :mod:`mmsr_model.warm_start`). Any check
that fails, and any error on the way, gives a cold night with the reason logged and
tagged on the MLflow run; the promotion gate judges a warm model like any other.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from mmsr_model.base import SequentialRecommender
from mmsr_model.data import SequenceData
from mmsr_model.persistence import load_model, save_model
from mmsr_model.registry import build_model
from mmsr_model.warm_start import IncompatibleWeights, check_transfer
from pipeline.core.config import Settings
from pipeline.serving.registry import (
    FULL_RETRAIN_TAG,
    WARM_DRIFT_TAG,
    chain_cold_version,
    current_champion,
    registered_name,
)
from pipeline.warehouse.dataset import DatasetIndex

log = logging.getLogger(__name__)

WARM, COLD = "warm", "cold"
#: the run artifact folder holding every trainable model's weights and the id maps
ARTIFACTS = "warm"
INDEX_FILES = ("user_index.parquet", "item_index.parquet")
#: per user, one past the last target position the run's models learned (mmsr_model.incremental)
TRAINED_UPTO = "trained_upto.npy"


class WarmUnavailable(Exception):
    """A warm start is not possible tonight; the message is the logged reason."""


@dataclass(frozen=True)
class WarmPlan:
    """Tonight's start: warm from ``source_version``'s ``weights``, or cold, and why."""

    mode: str
    reason: str
    full_retrain_date: date
    source_version: int | None = None
    weights: dict[str, str] = field(default_factory=dict)  # model name -> local weights file
    trained_upto: str | None = None  # local copy of the source run's TRAINED_UPTO

    def tags(self) -> dict[str, str]:
        """What the MLflow run records about its start."""
        return {
            "warm_start": self.mode,
            "warm_start_reason": self.reason,
            "warm_start_from_version": str(self.source_version) if self.mode == WARM else "none",
            FULL_RETRAIN_TAG: self.full_retrain_date.isoformat(),
        }


def plan_warm_start(
    settings: Settings,
    dataset: str,
    data: SequenceData,
    index: DatasetIndex,
    run_date: date,
    model_params: dict[str, dict[str, object]],
) -> WarmPlan:
    """Tonight's plan (MLflow set up); ``model_params``: each model to train and its parameters."""
    try:
        if settings.warm_start == "never":
            raise WarmUnavailable("warm_start is never")
        plan = _warm_plan(settings, dataset, data, index, run_date, model_params)
    except WarmUnavailable as exc:
        plan = WarmPlan(COLD, str(exc), run_date)
    except Exception as exc:  # a broken champion must cost a warm start, never the night
        log.exception("warm start check failed")
        plan = WarmPlan(COLD, f"warm start check failed: {type(exc).__name__}: {exc}", run_date)
    log.info("%s: training %s: %s", dataset, plan.mode, plan.reason)
    return plan


def _warm_plan(
    settings: Settings,
    dataset: str,
    data: SequenceData,
    index: DatasetIndex,
    run_date: date,
    model_params: dict[str, dict[str, object]],
) -> WarmPlan:
    client = MlflowClient()
    version = current_champion(client, dataset)
    if version is None:
        raise WarmUnavailable("no champion")
    name = registered_name(dataset)
    newest = client.search_model_versions(
        f"name = '{name}'", max_results=1, order_by=["version_number DESC"]
    )[0]
    if newest.tags.get(WARM_DRIFT_TAG) == "true":
        raise WarmUnavailable(
            f"v{newest.version} drifted below its chain's cold model at the gate: full retrain"
        )
    run = client.get_run(client.get_model_version(name, str(version)).run_id)
    started = run.data.tags.get(FULL_RETRAIN_TAG)
    if started is None:
        raise WarmUnavailable(f"champion v{version}'s run has no {FULL_RETRAIN_TAG} tag (no warm artifacts)")
    age = (run_date - date.fromisoformat(started)).days
    if age >= settings.full_retrain_every_days:
        raise WarmUnavailable(
            f"full retrain due: last one {age} day(s) ago, "
            f"full_retrain_every_days={settings.full_retrain_every_days}"
        )
    source, origin = version, f"champion v{version}"
    if settings.warm_from == "chain_cold" and run.data.tags.get("warm_start") == WARM:
        source = chain_cold_version(client, dataset, version)
        if source is None:
            raise WarmUnavailable(
                f"champion v{version}'s chain has no promoted cold version left (warm_from)"
            )
        origin = f"v{source}, the cold model of champion v{version}'s chain"
    run_id = client.get_model_version(name, str(source)).run_id
    folder = settings.dataset_dir(dataset) / "checkpoints" / "warm" / f"v{source}"
    if not folder.is_dir():  # a retried task finds its download (and so its checkpoints) again
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=folder.parent) as tmp:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACTS, dst_path=tmp)
            shutil.move(str(Path(tmp) / ARTIFACTS), folder)
    for kind, ids in (("user", index.user_ids), ("item", index.item_ids)):
        _check_extends(folder / f"{kind}_index.parquet", f"{kind}_id", ids, origin)
    if not (folder / TRAINED_UPTO).is_file():
        raise WarmUnavailable(f"{origin}: its run has no {TRAINED_UPTO}")
    weights: dict[str, str] = {}
    for name, params in model_params.items():
        fresh = build_model(name, data, **params)
        if not any(p.requires_grad for p in fresh.parameters()):
            continue
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise WarmUnavailable(f"{origin}: its run has no {name} weights")
        try:
            check_transfer(load_model(path), fresh)
        except IncompatibleWeights as exc:
            raise WarmUnavailable(str(exc)) from exc
        weights[name] = str(path)
    reason = f"from {origin}, last full retrain {started}"
    upto = str(folder / TRAINED_UPTO)
    return WarmPlan(WARM, reason, date.fromisoformat(started), source, weights, upto)


def _check_extends(path: Path, column: str, today: np.ndarray, origin: str) -> None:
    """Today's ids must start with the source's, in the same order (its rows are indexed by them)."""
    if not path.is_file():
        raise WarmUnavailable(f"{origin}: its run has no {path.name}")
    before = np.asarray(pq.read_table(path, columns=[column])[column].to_pylist(), dtype=object)
    if len(before) > len(today):
        raise WarmUnavailable(
            f"{path.name}: {len(before)} ids at {origin}, {len(today)} today (id map shrank)"
        )
    if not np.array_equal(before, today[: len(before)]):
        raise WarmUnavailable(f"{path.name}: today's ids renumber those of {origin} (id map not append-only)")


def log_warm_artifacts(
    models: Sequence[SequentialRecommender], dataset_dir: Path, trained_upto: np.ndarray
) -> None:
    """Save every trainable model, the id maps and what the models learned (``trained_upto``, per
    user) as this run's ``warm/`` artifacts (the next night's seed).

    The index files are sorted by their idx, so row ``i`` is id ``i``.
    """
    with tempfile.TemporaryDirectory(prefix="mmsr-warm-") as tmp:
        out = Path(tmp)
        np.save(out / TRAINED_UPTO, trained_upto)
        for model in models:
            if any(p.requires_grad for p in model.parameters()):
                save_model(model, out / f"{model.name}.pt")
        for name in INDEX_FILES:
            idx = name.replace("_index.parquet", "_idx")
            pq.write_table(pq.read_table(dataset_dir / name).sort_by(idx), out / name)
        mlflow.log_artifacts(str(out), ARTIFACTS)
