"""The one training loop every model shares (MMSR and the baselines).

Samples are the 'train' split's (user, position) pairs, which already hold every
prefix of the train part (prefix augmentation). Each epoch shuffles them with a
seeded generator, optimises the full softmax cross-entropy with Adam, then ranks
the 'valid' split against all items; early stopping watches
``config.eval_metric`` and the best epoch's weights are restored at the end (or,
with ``config.refit``, a fresh model is trained on train + valid for that many epochs).
With ``config.checkpoint_dir`` the loop's state is saved after every epoch and a
rerun resumes after the last saved one (see :mod:`mmsr_model.checkpoint`).
Models without trainable parameters (Pop) get one "epoch" of validation only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmsr_model.base import SequentialRecommender
from mmsr_model.checkpoint import LoopState, Trainee, checkpoint_path, load_checkpoint, save_checkpoint
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.device import resolve_device
from mmsr_model.evaluation import evaluate
from mmsr_model.metrics import metric_names
from mmsr_model.registry import build_model, model_class
from mmsr_model.seeding import seed_everything

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How to train one model; ``model_params`` go to the model's ``from_data``."""

    model: str = "mmsr"
    model_params: dict[str, Any] = field(default_factory=dict)
    lr: float = 0.002
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 100
    patience: int = 8
    eval_metric: str = "ndcg_at_10"
    eval_ks: tuple[int, ...] = (5, 10, 20)
    eval_batch_size: int = 512
    seed: int = 2023
    device: str = "auto"
    amp: bool = True  # autocast (bf16, else fp16 + GradScaler) only on CUDA; CPU stays float32
    log_every: int = 0  # log the running loss every N steps; 0 = once per epoch
    max_train_samples: int | None = None  # seeded subsample of the train samples (smoke runs)
    prefetch: bool = True  # build the next batch in a background thread during the step
    time_budget_s: float | None = None  # stop after the epoch that passes this much training time
    # batch histories of similar length together (None: the model's ``batches_by_length``)
    bucket_by_length: bool | None = None
    # save the loop's state here after every epoch and resume from it (None: no checkpoints)
    checkpoint_dir: str | None = None
    # after early stopping, retrain from scratch on train + valid targets for the best epoch count
    refit: bool = False


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
    and valid targets for the best epoch count (see :func:`_refit`).
    """
    if config.eval_metric not in metric_names(config.eval_ks):
        raise ValueError(f"eval_metric {config.eval_metric!r} is not among {metric_names(config.eval_ks)}")
    if "valid" not in data.splits or len(data.splits["valid"]) == 0:
        raise ValueError("early stopping needs a non-empty 'valid' split")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = build_model(config.model, data, **config.model_params).to(device)
    samples = _train_samples(data, config)
    history = TrainHistory(device=str(device), n_train_samples=len(samples))
    started = time.perf_counter()
    log.info("training %s on %d samples, %d items, device %s", model.name, len(samples), data.n_items, device)

    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        record = {"epoch": 1.0, **_validate(model, data, config, device)}
        record["seconds"] = record["val_seconds"]
        _finish_epoch(record, history, on_epoch_end)
        history.best_epoch, history.best_val = 1, _val_part(record)
        if config.refit:
            model = _refit(config, data, history, device)
        history.seconds = time.perf_counter() - started
        return model.eval(), history

    trainee, autocast = _trainee(model, trainable, config, device)
    checkpoint = None
    if config.checkpoint_dir is not None:
        checkpoint = checkpoint_path(config.checkpoint_dir, asdict(config), data)
    state = _resume(checkpoint, trainee, history, on_epoch_end) or LoopState(
        epoch=0, best_score=-math.inf, bad_epochs=0, best_state=None, history={}
    )
    earlier_seconds = history.seconds
    history.stopped_early = state.bad_epochs >= config.patience  # a resumed run early stopping had ended
    first = config.max_epochs + 1 if history.stopped_early else state.epoch + 1
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
        train_seconds = time.perf_counter() - epoch_start
        record = {
            "epoch": float(epoch),
            "train_loss": train_loss,
            "train_seconds": train_seconds,
        }
        record.update(_validate(model, data, config, device))
        record["seconds"] = time.perf_counter() - epoch_start
        _finish_epoch(record, history, on_epoch_end)
        score = record[f"val_{config.eval_metric}"]
        if score > state.best_score:
            state.best_score, state.bad_epochs = score, 0
            state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            history.best_epoch, history.best_val = epoch, _val_part(record)
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        history.seconds = earlier_seconds + time.perf_counter() - started
        if checkpoint is not None:
            state.history = history.to_dict()
            save_checkpoint(checkpoint, trainee, state)
        epochs_bar.set_postfix(loss=f"{record['train_loss']:.4f}", **{config.eval_metric: f"{score:.4f}"})
        if state.bad_epochs >= config.patience:
            history.stopped_early = True
            log.info(
                "early stop after epoch %d: no %s gain for %d epochs",
                epoch,
                config.eval_metric,
                state.bad_epochs,
            )
            break
        if config.time_budget_s is not None and time.perf_counter() - started >= config.time_budget_s:
            history.stopped_by_budget = True
            log.warning(
                "time budget of %.0f s spent after epoch %d; keeping best epoch %d",
                config.time_budget_s,
                epoch,
                history.best_epoch,
            )
            break
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    log.info("best epoch %d of %d: %s", history.best_epoch, len(history.epochs), history.best_val)
    if config.refit:
        model = _refit(config, data, history, device)
    history.seconds = earlier_seconds + time.perf_counter() - started
    return model.eval(), history


def _refit(
    config: TrainConfig, data: SequenceData, history: TrainHistory, device: torch.device
) -> SequentialRecommender:
    """A fresh model trained on the train and valid targets for ``history.best_epoch`` epochs.

    Early stopping needs targets it does not train on, so the selected model never
    learns each user's most recent pre-test interaction, the one nearest to what it
    will be asked to predict. Validation has done its job once it has chosen the epoch
    count; the refit spends that count on all the data. The history keeps the
    selection run's validation numbers: the refit model has seen those targets.
    """
    merged = data.with_valid_in_train()
    seed_everything(config.seed)
    model = build_model(config.model, merged, **config.model_params).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    samples = _train_samples(merged, config)
    history.refit_samples = len(samples)
    if not trainable:  # Pop: its counts now include the valid targets
        return model
    trainee, autocast = _trainee(model, trainable, config, device)
    log.info("refit %s on %d train + valid samples, %d epochs", model.name, len(samples), history.best_epoch)
    for epoch in tqdm(range(1, history.best_epoch + 1), desc=f"refit {model.name}", unit="epoch"):
        loss = _fit_epoch(trainee, merged, samples, config, epoch, device, autocast)
        history.refit_epochs = epoch
        log.info("refit epoch %d: train_loss %.5f", epoch, loss)
    return model


def _resume(
    path: Path | None,
    trainee: Trainee,
    history: TrainHistory,
    on_epoch_end: Callable[[dict[str, float]], None] | None,
) -> LoopState | None:
    """The saved loop state with ``trainee`` and ``history`` restored; ``None`` for a fresh run."""
    if path is None:
        return None
    state = load_checkpoint(path, trainee)
    if state is None:
        log.info("checkpointing every epoch to %s", path)
        return None
    saved = TrainHistory(**state.history)
    history.epochs, history.best_epoch, history.best_val = saved.epochs, saved.best_epoch, saved.best_val
    history.seconds = saved.seconds
    log.info("resumed from %s after epoch %d (best epoch %d)", path, state.epoch, saved.best_epoch)
    if on_epoch_end is not None:  # a new tracking run gets the whole curve
        for record in history.epochs:
            on_epoch_end(dict(record))
    return state


def _trainee(
    model: SequentialRecommender,
    trainable: list[torch.nn.Parameter],
    config: TrainConfig,
    device: torch.device,
) -> tuple[Trainee, Callable[[], Any]]:
    """A fresh optimiser, loss scaler and seeded shuffler for ``model``, and its autocast context."""
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    autocast, scaler = _mixed_precision(config, device)
    return Trainee(model, optimizer, scaler, np.random.default_rng(config.seed)), autocast


def _fit_epoch(
    trainee: Trainee,
    data: SequenceData,
    samples: TargetSet,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    autocast: Callable[[], Any],
) -> float:
    """One optimisation pass over ``samples`` in the shuffler's order; the mean loss."""
    model, optimizer, scaler = trainee.model, trainee.optimizer, trainee.scaler
    model.train()
    order = trainee.shuffler.permutation(len(samples))
    if model.batches_by_length if config.bucket_by_length is None else config.bucket_by_length:
        lengths = np.minimum(samples.positions, model.max_len)
        order = length_bucketed(order, lengths, config.batch_size, trainee.shuffler)
    batches = _batches(model, data, samples, order, config.batch_size, config.prefetch)
    steps_bar = tqdm(
        batches,
        total=math.ceil(len(order) / config.batch_size),
        desc=f"epoch {epoch}",
        unit="batch",
        leave=False,
    )
    loss_sum, steps = 0.0, 0
    for batch, targets in steps_bar:
        with autocast():
            loss = model.calculate_loss(model.batch_to(batch, device), targets.to(device, non_blocking=True))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{model.name}: loss is {loss.item()} at epoch {epoch}, step {steps + 1}"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.item()
        steps += 1
        steps_bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
        if config.log_every and steps % config.log_every == 0:
            log.info("epoch %d step %d: loss %.4f", epoch, steps, loss_sum / steps)
    return loss_sum / max(steps, 1)


def _train_samples(data: SequenceData, config: TrainConfig) -> TargetSet:
    if "train" not in data.splits or len(data.splits["train"]) == 0:
        raise ValueError("training needs a non-empty 'train' split")
    samples = data.splits["train"]
    if config.max_train_samples is not None and config.max_train_samples < len(samples):
        keep = np.sort(
            np.random.default_rng(config.seed).choice(len(samples), config.max_train_samples, replace=False)
        )
        samples = TargetSet(samples.users[keep], samples.positions[keep])
    return samples


def length_bucketed(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 64
) -> np.ndarray:
    """``order`` regrouped so each batch holds histories of similar length, batches in random order.

    Padded models pay for the longest history in a batch; with random batches that is
    almost always ``max_len`` although the median Beauty prefix has 4 items. Sorting
    within pools of ``pool_batches`` random batches (not globally) keeps every batch a
    random draw among similar lengths, and the batches are then shuffled as a whole.
    """
    pool = batch_size * pool_batches
    regrouped = np.concatenate(
        [
            chunk[np.argsort(lengths[chunk], kind="stable")]
            for chunk in np.split(order, range(pool, len(order), pool))
        ]
    )
    batches = np.split(regrouped, range(batch_size, len(regrouped), batch_size))
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


def _batches(
    model: SequentialRecommender,
    data: SequenceData,
    samples: TargetSet,
    order: np.ndarray,
    batch_size: int,
    prefetch: bool,
) -> Iterator[tuple[Any, torch.Tensor]]:
    """CPU batches in ``order``; with ``prefetch`` the next one is built while the caller steps."""

    def build(start: int) -> tuple[Any, torch.Tensor]:
        idx = order[start : start + batch_size]
        sub = TargetSet(samples.users[idx], samples.positions[idx])
        return model.prepare_samples(data, sub), torch.from_numpy(data.target_items(sub))

    starts = range(0, len(order), batch_size)
    if not prefetch:
        yield from map(build, starts)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as pool:
        pending = None
        for start in starts:
            upcoming = pool.submit(build, start)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


def _validate(
    model: SequentialRecommender, data: SequenceData, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    start = time.perf_counter()
    metrics = evaluate(model, data, "valid", config.eval_ks, batch_size=config.eval_batch_size, device=device)
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


def _mixed_precision(
    config: TrainConfig, device: torch.device
) -> tuple[Callable[[], Any], torch.amp.GradScaler]:
    """bf16 autocast on CUDA when supported, else fp16 with loss scaling; nothing on CPU."""
    if not (config.amp and device.type == "cuda"):
        return nullcontext, torch.amp.GradScaler("cuda", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    log.info("mixed precision: autocast %s", dtype)
    return (
        lambda: torch.autocast("cuda", dtype=dtype),
        torch.amp.GradScaler("cuda", enabled=dtype == torch.float16),
    )
