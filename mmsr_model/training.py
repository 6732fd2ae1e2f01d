"""The one training loop every model shares (MMSR and the baselines).

Each epoch optimises the full softmax cross-entropy with Adam over the train
samples (:mod:`mmsr_model.batching`, :mod:`mmsr_model.fitting`), then ranks the
'valid' split against all items; early stopping (:mod:`mmsr_model.early_stopping`)
watches ``config.eval_metric`` and the best epoch's weights are restored at the end
(or, with ``config.refit``, :func:`refit` trains a fresh model on train + valid for
that many epochs). With ``config.warm_start_from`` both start from an older model's
weights instead of random ones (:mod:`mmsr_model.warm_start`), and with
``config.warm_trained_upto`` both train on what that model has not learned plus a
replay of the rest (:mod:`mmsr_model.incremental`).
With ``config.checkpoint_dir`` the loop's state is saved after every epoch and a
rerun resumes after the last saved one (see :mod:`mmsr_model.checkpoint`).
Models without trainable parameters (Pop) get one "epoch" of validation only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmsr_model.base import SequentialRecommender
from mmsr_model.batching import subsample, train_samples
from mmsr_model.checkpoint import (
    CheckpointFile,
    LoopState,
    Trainee,
    checkpoint_file,
    load_checkpoint,
    other_runs,
    save_checkpoint,
)
from mmsr_model.config import TrainingConfig
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.device import resolve_device
from mmsr_model.distributed import from_main, is_main, sync_parameters
from mmsr_model.early_stopping import EarlyStopping, fresh_state
from mmsr_model.evaluation import evaluate
from mmsr_model.fitting import Autocast, fit_epoch, make_trainee
from mmsr_model.incremental import (
    has_unlearned,
    incremental_samples,
    lend_valid_targets,
    repeat_unlearned,
    with_unlearned_valid,
)
from mmsr_model.metrics import metric_names
from mmsr_model.objectives import LossKind, Objective
from mmsr_model.persistence import load_model
from mmsr_model.registry import build_model, model_class
from mmsr_model.seeding import seed_everything
from mmsr_model.warm_start import transfer_weights

log = logging.getLogger(__name__)

#: the training defaults, declared (with bounds and meaning) in :class:`mmsr_model.config.TrainingConfig`
_DEFAULTS = TrainingConfig()


@dataclass
class TrainConfig:
    """How to train one model; ``model_params`` go to the model's ``from_data``."""

    model: str = "mmsr"
    model_params: dict[str, Any] = field(default_factory=dict)
    lr: float = _DEFAULTS.lr
    weight_decay: float = _DEFAULTS.weight_decay
    batch_size: int = _DEFAULTS.batch_size
    max_epochs: int = _DEFAULTS.max_epochs
    patience: int = _DEFAULTS.patience
    eval_metric: str = _DEFAULTS.eval_metric
    eval_ks: tuple[int, ...] = (5, 10, 20)
    exclude_seen: bool = _DEFAULTS.exclude_seen
    seed: int = 2023
    loss: LossKind = _DEFAULTS.loss
    negatives: int = _DEFAULTS.negatives
    label_smoothing: float = _DEFAULTS.label_smoothing
    device: str = _DEFAULTS.device  # autocast (bf16, else fp16 + GradScaler) on CUDA; CPU stays float32
    max_train_samples: int | None = None  # seeded subsample of the train samples (smoke runs)
    max_valid_samples: int | None = _DEFAULTS.max_valid_samples
    prefetch: bool = True  # build the next batch in a background thread during the step
    time_budget_s: float | None = None  # stop after the epoch that passes this much training time
    # batch histories of similar length together (None: the model's ``batches_by_length``)
    bucket_by_length: bool | None = None
    # save the loop's state here after every epoch and resume from it (None: no checkpoints)
    checkpoint_dir: str | None = None
    # after early stopping, retrain from scratch on train + valid targets for the best epoch count
    refit: bool = False
    # a saved model (persistence format) whose weights seed selection and refit (None: cold start)
    warm_start_from: str | None = None
    # with warm_start_from: a .npy of that model's per-user ``trained_upto``; selection and refit then
    # train on what it did not learn plus ``replay_fraction`` of the rest (mmsr_model.incremental)
    warm_trained_upto: str | None = None
    replay_fraction: float = 0.1
    # with warm_trained_upto: each unlearned training sample appears this many times per epoch
    new_repeats: int = 1
    # with warm_trained_upto: when selection has no unlearned train sample, it trains on this seeded
    # share of the unlearned valid targets and validates on the rest (0: validates on all of them)
    lend_valid_share: float = 0.0


def config_for(model: str, base: TrainConfig, **changes: Any) -> TrainConfig:
    """``base`` for ``model`` with that model's ``default_train_overrides`` (then ``changes``) applied."""
    return replace(base, model=model, **{**model_class(model).default_train_overrides, **changes})


@dataclass
class TrainHistory:
    """Per-epoch records and the outcome of early stopping."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    stopped_by_budget: bool = False
    device: str = "cpu"
    n_train_samples: int = 0
    seconds: float = 0.0  # selection and refit together
    refit_epochs: int = 0  # epochs of the refit on train + valid (0: no refit)
    refit_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(
    config: TrainConfig,
    data: SequenceData,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> tuple[SequentialRecommender, TrainHistory]:
    """Train ``config.model`` on ``data``; return it with the best-on-validation weights.

    With ``config.refit`` the returned model is instead a fresh one trained on train
    and valid targets for the best epoch count (see :func:`refit`).
    """
    if config.eval_metric not in metric_names(config.eval_ks):
        raise ValueError(f"eval_metric {config.eval_metric!r} is not among {metric_names(config.eval_ks)}")
    if "valid" not in data.splits or len(data.splits["valid"]) == 0:
        raise ValueError("early stopping needs a non-empty 'valid' split")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = _initial_model(config, data, device)
    samples, selection_data = _training_share(config, data)
    history = TrainHistory(device=str(device), n_train_samples=len(samples))
    started = time.perf_counter()
    log.info("training %s on %d samples, %d items, device %s", model.name, len(samples), data.n_items, device)

    earlier_seconds = 0.0  # spent by the runs a checkpoint resumes
    if any(p.requires_grad for p in model.parameters()):
        earlier_seconds = _select_epochs(
            model, config, selection_data, samples, history, device, started, on_epoch_end
        )
    else:  # Pop: one "epoch" of validation only
        record = {"epoch": 1.0, **_validate(model, selection_data, config, device)}
        record["seconds"] = record["val_seconds"]
        _finish_epoch(record, history, on_epoch_end)
        history.best_epoch, history.best_val = 1, _val_part(record)
    if config.refit:
        model = refit(config, data, history)
    history.seconds = earlier_seconds + time.perf_counter() - started
    return model.eval(), history


def _select_epochs(
    model: SequentialRecommender,
    config: TrainConfig,
    data: SequenceData,
    samples: TargetSet,
    history: TrainHistory,
    device: torch.device,
    started: float,
    on_epoch_end: Callable[[dict[str, float]], None] | None,
) -> float:
    """Epochs until early stopping, resuming from ``config.checkpoint_dir``; leaves the best weights
    in ``model`` and the curve in ``history``. Returns the seconds the resumed runs had spent."""
    trainee, autocast = make_trainee(model, config.lr, config.weight_decay, config.seed, device)
    checkpoint = None
    if config.checkpoint_dir is not None:
        checkpoint = checkpoint_file(config.checkpoint_dir, asdict(config), data)
    stopping = EarlyStopping(
        _resume(checkpoint, trainee, history, on_epoch_end) or fresh_state(),
        config.patience,
        config.time_budget_s,
        started,
        config.eval_metric,
    )
    earlier_seconds = history.seconds
    history.stopped_early = stopping.patience_spent  # a resumed run early stopping had ended
    first = config.max_epochs + 1 if history.stopped_early else stopping.state.epoch + 1
    epochs_bar = tqdm(
        range(first, config.max_epochs + 1),
        desc=f"train {model.name}",
        unit="epoch",
        initial=min(first - 1, config.max_epochs),
        total=config.max_epochs,
    )
    for epoch in epochs_bar:
        epoch_start = time.perf_counter()
        train_loss = _fit_epoch(trainee, data, samples, config, epoch, device, autocast)
        record = {
            "epoch": float(epoch),
            "train_loss": train_loss,
            "train_seconds": time.perf_counter() - epoch_start,
        }
        record.update(_validate(model, data, config, device))
        record["seconds"] = time.perf_counter() - epoch_start
        _finish_epoch(record, history, on_epoch_end)
        score = record[f"val_{config.eval_metric}"]
        if stopping.record(epoch, score, model):
            history.best_epoch, history.best_val = epoch, _val_part(record)
        history.seconds = earlier_seconds + time.perf_counter() - started
        if checkpoint is not None and is_main():
            stopping.state.history = history.to_dict()
            save_checkpoint(checkpoint, trainee, stopping.state)
        epochs_bar.set_postfix(loss=f"{record['train_loss']:.4f}", **{config.eval_metric: f"{score:.4f}"})
        reason = from_main(stopping.stop_reason(epoch, history.best_epoch))  # the time budget is rank 0's
        if reason is not None:
            history.stopped_early, history.stopped_by_budget = reason == "patience", reason == "budget"
            break
    stopping.restore_best(model)
    log.info("best epoch %d of %d: %s", history.best_epoch, len(history.epochs), history.best_val)
    return earlier_seconds


def refit(config: TrainConfig, data: SequenceData, history: TrainHistory) -> SequentialRecommender:
    """A fresh model trained on the train and valid targets for ``history.best_epoch`` epochs.

    A warm run's refit starts from the same older weights as its selection did, so the
    epoch count it reuses was measured from the same starting point.

    Early stopping needs targets it does not train on, so the selected model never
    learns each user's most recent pre-test interaction, the one nearest to what it
    will be asked to predict. Validation has done its job once it has chosen the epoch
    count; the refit spends that count on all the data. ``history`` (the selection
    run's) gets ``refit_epochs`` and ``refit_samples``; it keeps the selection run's
    validation numbers: the refit model has seen those targets.
    """
    device = resolve_device(config.device)
    merged = data.with_valid_in_train()
    seed_everything(config.seed)
    model = _initial_model(config, merged, device)
    samples, _ = _training_share(config, merged)
    history.refit_samples = len(samples)
    if not any(p.requires_grad for p in model.parameters()):  # Pop: its counts now include valid targets
        return model.eval()
    trainee, autocast = make_trainee(model, config.lr, config.weight_decay, config.seed, device)
    log.info("refit %s on %d train + valid samples, %d epochs", model.name, len(samples), history.best_epoch)
    for epoch in tqdm(range(1, history.best_epoch + 1), desc=f"refit {model.name}", unit="epoch"):
        loss = _fit_epoch(trainee, merged, samples, config, epoch, device, autocast)
        history.refit_epochs = epoch
        log.info("refit epoch %d: train_loss %.5f", epoch, loss)
    return model.eval()


def _training_share(config: TrainConfig, data: SequenceData) -> tuple[TargetSet, SequenceData]:
    """The samples to train on and the data to validate on (``max_valid_samples`` of its targets)."""
    samples, validating = _warm_share(config, data)
    if "valid" in validating.splits and config.max_valid_samples is not None:
        valid = subsample(validating.splits["valid"], config.max_valid_samples, config.seed)
        validating = replace(validating, splits=dict(validating.splits, valid=valid))
    return samples, validating


def _warm_share(config: TrainConfig, data: SequenceData) -> tuple[TargetSet, SequenceData]:
    """All of the samples and valid targets, or a warm night's share of them."""
    samples = train_samples(data, config.max_train_samples, config.seed)
    if config.warm_trained_upto is None:
        return samples, data
    upto = np.load(config.warm_trained_upto)
    focused = incremental_samples(samples, upto, config.replay_fraction, config.seed)
    validating = data
    if "valid" in data.splits:  # selection (a refit trains on the valid targets too)
        validating = with_unlearned_valid(data, upto)
        nothing_new = not has_unlearned(focused, upto) and has_unlearned(validating.splits["valid"], upto)
        if (share := config.lend_valid_share) > 0 and nothing_new:
            focused, validating = lend_valid_targets(focused, validating, share, config.seed)
    return repeat_unlearned(focused, upto, config.new_repeats), validating


def _initial_model(config: TrainConfig, data: SequenceData, device: torch.device) -> SequentialRecommender:
    """A fresh model for ``data``, seeded with ``config.warm_start_from``'s weights when set.

    Rank 0 reads the file; ``sync_parameters`` hands its weights to the other ranks.
    A model without trainable weights (Pop) is rebuilt from the data every time.
    """
    model = build_model(config.model, data, **config.model_params).to(device)
    trainable = any(p.requires_grad for p in model.parameters())
    if config.warm_start_from is not None and trainable and is_main():
        transfer_weights(load_model(config.warm_start_from), model)
    sync_parameters(model)
    return model


def _fit_epoch(
    trainee: Trainee,
    data: SequenceData,
    samples: TargetSet,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    autocast: Autocast,
) -> float:
    return fit_epoch(
        trainee,
        data,
        samples,
        epoch,
        device,
        autocast,
        config.batch_size,
        config.bucket_by_length,
        config.prefetch,
        Objective(config.loss, config.negatives, config.label_smoothing),
    )


def _resume(
    checkpoint: CheckpointFile | None,
    trainee: Trainee,
    history: TrainHistory,
    on_epoch_end: Callable[[dict[str, float]], None] | None,
) -> LoopState | None:
    """The saved loop state with ``trainee`` and ``history`` restored; ``None`` for a fresh run."""
    if checkpoint is None:
        return None
    state = load_checkpoint(checkpoint, trainee)
    if state is None:
        for reason in other_runs(checkpoint):
            log.warning("not resuming %s", reason)
        log.info("checkpointing every epoch to %s", checkpoint.path)
        return None
    saved = TrainHistory(**state.history)
    history.epochs, history.best_epoch, history.best_val = saved.epochs, saved.best_epoch, saved.best_val
    history.seconds = saved.seconds
    log.info("resumed from %s after epoch %d (best epoch %d)", checkpoint.path, state.epoch, saved.best_epoch)
    if on_epoch_end is not None:  # a new tracking run gets the whole curve
        for record in history.epochs:
            on_epoch_end(dict(record))
    return state


def _validate(
    model: SequentialRecommender, data: SequenceData, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    start = time.perf_counter()
    # rank 0 evaluates for every rank (data-parallel), so all take the same early-stopping path
    ranked = None
    if is_main():
        ranked = evaluate(
            model, data, "valid", config.eval_ks, exclude_seen=config.exclude_seen, device=device
        )
    metrics = from_main(ranked)
    return {**{f"val_{k}": v for k, v in metrics.items()}, "val_seconds": time.perf_counter() - start}


def _val_part(record: dict[str, float]) -> dict[str, float]:
    return {
        k.removeprefix("val_"): v for k, v in record.items() if k.startswith("val_") and k != "val_seconds"
    }


def _finish_epoch(
    record: dict[str, float], history: TrainHistory, on_epoch_end: Callable[[dict[str, float]], None] | None
) -> None:
    history.epochs.append(record)
    log.info(
        "epoch %d: %s", int(record["epoch"]), {k: round(v, 5) for k, v in record.items() if k != "epoch"}
    )
    if on_epoch_end is not None:
        on_epoch_end(dict(record))
