"""Train stage: warehouse -> trained MMSR -> one MLflow run + a registered pyfunc version.

Everything a later reader needs to trust or reproduce a model goes into the run:
all settings as params, the input fingerprint, per-epoch curves, final and
baseline metrics, and the artifacts. A run that fails before registration never
reaches the promotion gate, so it cannot touch ``champion``.

Tonight's start, warm from the champion's weights or cold, is decided first
(:mod:`pipeline.stages.train.warm`) and tagged on the run.

Training checkpoints every epoch under the dataset's ``checkpoints/`` folder, so a
retried task (Airflow retries a crashed stage) or a rerun of ``mmsr train`` resumes
after the last finished epoch instead of starting over; a run that gets through
promotion removes the folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import mlflow
import yaml

from mmsr_model.base import SequentialRecommender
from mmsr_model.data import SequenceData
from mmsr_model.distributed import describe, from_main, is_main
from mmsr_model.evaluation import evaluate
from mmsr_model.incremental import trained_upto
from mmsr_model.training import TrainConfig, TrainHistory, train
from pipeline.core.config import Settings
from pipeline.serving.registry import log_pyfunc, registered_name, setup_mlflow
from pipeline.stages.promote import run_promote
from pipeline.stages.train.config import EVAL_KS, train_config
from pipeline.stages.train.warm import COLD, WARM, WarmPlan, log_warm_artifacts, plan_warm_start
from pipeline.warehouse.dataset import dataset_fingerprint, load_sequence_data
from pipeline.warehouse.model_runs import upsert_model_run

log = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """What one training run produced (printed by ``mmsr train``)."""

    dataset: str
    run_id: str
    registered_model: str
    model_version: int
    best_epoch: int
    epochs: int
    stopped_early: bool
    stopped_by_budget: bool
    train_seconds: float
    fingerprint: str
    val: dict[str, float]
    test: dict[str, float]
    warm_start: str = COLD
    warm_start_reason: str = ""
    warm_start_from: int | None = None
    refit_epochs: int = 0
    samples_processed: int = 0
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    promotion: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flat_params(settings: Settings, dataset: str) -> dict[str, str]:
    """All settings as flat ``a.b`` MLflow params (other datasets' entries left out)."""
    dumped = settings.model_dump(mode="json", exclude={"datasets"})
    dumped["dataset"] = dataset
    dumped["dataset_source"] = settings.datasets.get(dataset, {})
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, list | dict) else str(value)

    walk("", dumped)
    return flat


def _epoch_logger(prefix: str = "") -> Any:
    """``on_epoch_end`` callback: per-epoch numbers as MLflow metrics stepped by epoch."""

    def on_epoch_end(row: dict[str, Any]) -> None:
        metrics = {
            f"{prefix}epoch_{key}": float(value)
            for key, value in row.items()
            if key != "epoch" and isinstance(value, int | float)
        }
        mlflow.log_metrics(metrics, step=int(row["epoch"]))

    return on_epoch_end


def _test_metrics(model: Any, data: SequenceData, config: TrainConfig) -> dict[str, float]:
    """Test-split metrics of the trained model, ranked as it was validated (``exclude_seen``).

    Validation metrics come from the training history instead: they are the selected
    epoch's, and a refit model has trained on the valid targets.
    """
    from mmsr_model.device import resolve_device

    device = resolve_device(config.device)
    return evaluate(model, data, split="test", ks=EVAL_KS, exclude_seen=config.exclude_seen, device=device)


def _learning_curve(history: TrainHistory, eval_metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history.epochs]
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [row.get("train_loss") for row in history.epochs], marker="o")
    loss_ax.set(title="train loss", xlabel="epoch")
    val_ax.plot(epochs, [row.get(f"val_{eval_metric}") for row in history.epochs], marker="o")
    val_ax.axvline(history.best_epoch, color="grey", linestyle="--", label="best epoch")
    val_ax.set(title=f"validation {eval_metric}", xlabel="epoch")
    val_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def metrics_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per model/split, one column per metric."""
    columns = sorted({key for metrics in rows.values() for key in metrics})
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [
        f"| {name} | " + " | ".join(f"{metrics.get(c, float('nan')):.4f}" for c in columns) + " |"
        for name, metrics in rows.items()
    ]
    return "\n".join(lines) + "\n"


def _log_artifacts(
    settings: Settings, dataset: str, history: TrainHistory, table: dict[str, dict[str, float]]
) -> None:
    root = settings.dataset_dir(dataset)
    with tempfile.TemporaryDirectory(prefix="mmsr-train-") as tmp:
        out = Path(tmp)
        (out / "config.yaml").write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
        (out / "metrics.md").write_text(metrics_table(table))
        (out / "history.json").write_text(json.dumps(history.epochs, indent=1, default=float))
        _learning_curve(history, settings.model.eval_metric, out / "learning_curve.png")
        mlflow.log_artifacts(str(out))
    mlflow.log_artifact(str(root / "item_index.parquet"), "data")
    if (root / "codes").is_dir():
        mlflow.log_artifacts(str(root / "codes"), "codebooks")


def night_config(settings: Settings, name: str, plan: WarmPlan, checkpoints: Path) -> TrainConfig:
    """``name``'s training configuration tonight: the warm schedule when the plan seeds it."""
    config = replace(train_config(settings, name), checkpoint_dir=str(checkpoints))
    if name not in plan.weights:
        return config
    return replace(
        config,
        warm_start_from=plan.weights[name],
        warm_trained_upto=plan.trained_upto,
        replay_fraction=settings.warm_replay_fraction,
        new_repeats=settings.warm_new_repeats,
        lend_valid_share=settings.warm_lend_valid_share,
        lr=config.lr * settings.warm_lr_scale,
        max_epochs=settings.warm_max_epochs,
        patience=min(config.patience, settings.warm_patience),
    )


def samples_processed(history: TrainHistory) -> int:
    """Training samples the run stepped through, selection and refit: a load-independent cost."""
    return history.n_train_samples * len(history.epochs) + history.refit_samples * history.refit_epochs


def _train_baselines(
    settings: Settings, data: SequenceData, plan: WarmPlan, checkpoints: Path
) -> tuple[dict[str, dict[str, float]], list[SequentialRecommender]]:
    """Each enabled baseline trained on the same split; its test metrics logged with its prefix."""
    results: dict[str, dict[str, float]] = {}
    models = []
    for name in settings.baselines:
        log.info("training baseline %s", name)
        config = night_config(settings, name, plan, checkpoints)
        model, _ = train(config, data, on_epoch_end=_epoch_logger(f"{name}_"))
        test = _test_metrics(model, data, config)
        mlflow.log_metrics({f"{name}_test_{key}": value for key, value in test.items()})
        results[name] = test
        models.append(model)
    return results, models


def _train_as_worker(settings: Settings, dataset: str, data: SequenceData, plan: WarmPlan) -> dict[str, Any]:
    """A data-parallel rank other than 0: the same training calls as rank 0, nothing logged or written."""
    checkpoints = settings.dataset_dir(dataset) / "checkpoints"
    for name in ("mmsr", *settings.baselines):
        train(night_config(settings, name, plan, checkpoints), data)
    return {"dataset": dataset, "worker": describe()}


def run_train(
    settings: Settings, dataset: str, promote: bool = True, run_date: date | None = None
) -> TrainReport | dict[str, Any]:
    """Train MMSR (and the baselines), log + register it, then run the promotion gate.

    ``run_date`` (default today) drives the full-retrain schedule of warm starts. Under
    data-parallel training (``train_processes`` > 1) rank 0 does all of this and hands
    its warm-start plan to the other ranks, which only take part in the training calls.
    """
    run_date = run_date or datetime.now(UTC).date()
    data, index = load_sequence_data(settings, dataset)
    checkpoints = settings.dataset_dir(dataset) / "checkpoints"
    plan = None
    if is_main():
        setup_mlflow(settings, dataset)
        params = {name: train_config(settings, name).model_params for name in ("mmsr", *settings.baselines)}
        plan = plan_warm_start(settings, dataset, data, index, run_date, params)
    plan = from_main(plan)
    if not is_main():
        return _train_as_worker(settings, dataset, data, plan)
    fingerprint = dataset_fingerprint(settings, dataset)
    config = night_config(settings, "mmsr", plan, checkpoints)
    started = time.perf_counter()
    with mlflow.start_run(run_name=f"{dataset}-{datetime.now(UTC):%Y%m%dT%H%M%S}") as run:
        mlflow.log_params(flat_params(settings, dataset))
        mlflow.log_params(
            {
                f"data.{name}.{key}": value
                for name, entry in fingerprint["files"].items()
                for key, value in entry.items()
            }
        )
        mlflow.set_tags({"dataset": dataset, "dataset_fingerprint": fingerprint["sha256"], **plan.tags()})
        model, history = train(config, data, on_epoch_end=_epoch_logger())
        train_seconds = time.perf_counter() - started
        final = {"valid": history.best_val, "test": _test_metrics(model, data, config)}
        mlflow.log_metrics({f"val_{key}": value for key, value in final["valid"].items()})
        mlflow.log_metrics({f"test_{key}": value for key, value in final["test"].items()})
        mlflow.log_metrics(
            {
                "best_epoch": history.best_epoch,
                "refit_epochs": history.refit_epochs,
                "train_seconds": train_seconds,
                "samples_processed": samples_processed(history),
            }
        )
        baselines, baseline_models = _train_baselines(settings, data, plan, checkpoints)
        table = {"mmsr valid": final["valid"], "mmsr test": final["test"]}
        table |= {f"{name} test": metrics for name, metrics in baselines.items()}
        _log_artifacts(settings, dataset, history, table)
        log_warm_artifacts(
            [model, *baseline_models], settings.dataset_dir(dataset), trained_upto(data, config.refit)
        )
        version = log_pyfunc(model, settings.dataset_dir(dataset) / "item_index.parquet", dataset)
    report = TrainReport(
        dataset=dataset,
        run_id=run.info.run_id,
        registered_model=registered_name(dataset),
        model_version=version,
        best_epoch=history.best_epoch,
        epochs=len(history.epochs),
        stopped_early=history.stopped_early,
        stopped_by_budget=history.stopped_by_budget,
        train_seconds=round(train_seconds, 2),
        fingerprint=fingerprint["sha256"],
        val=final["valid"],
        test=final["test"],
        warm_start=plan.mode,
        warm_start_reason=plan.reason,
        warm_start_from=plan.source_version if plan.mode == WARM else None,
        refit_epochs=history.refit_epochs,
        samples_processed=samples_processed(history),
        baselines=baselines,
    )
    upsert_model_run(
        settings,
        dataset,
        version,
        {
            "run_id": report.run_id,
            "registered_model": report.registered_model,
            "trained_at": datetime.now(UTC),
            "dataset_fingerprint": report.fingerprint,
            "best_epoch": report.best_epoch,
            "epochs": report.epochs,
            "train_seconds": report.train_seconds,
            "warm_start": report.warm_start,
            "warm_start_from": report.warm_start_from,
            **{f"val_{k}": v for k, v in report.val.items()},
            **{f"test_{k}": v for k, v in report.test.items()},
            **{f"{b}_test_{k}": v for b, metrics in baselines.items() for k, v in metrics.items()},
            "promotion": "pending",
        },
    )
    if promote:
        report.promotion = run_promote(settings, dataset, version).to_dict()
    shutil.rmtree(checkpoints, ignore_errors=True)
    return report
