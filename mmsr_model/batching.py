"""Training samples and the order and batches an epoch visits them in.

Samples are the 'train' split's (user, position) pairs, which already hold every
prefix of the train part (prefix augmentation). Each epoch shuffles them with the
trainee's seeded generator; models that pad to the longest history in a batch also
get batches of similar length (:func:`length_bucketed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from mmsr_model.base import SequentialRecommender
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.device import DeviceStager
from mmsr_model.distributed import my_share


def train_samples(data: SequenceData, max_samples: int | None = None, seed: int = 0) -> TargetSet:
    """The 'train' split's samples; with ``max_samples`` a seeded subsample of them (smoke runs)."""
    if "train" not in data.splits or len(data.splits["train"]) == 0:
        raise ValueError("training needs a non-empty 'train' split")
    return subsample(data.splits["train"], max_samples, seed)


def subsample(targets: TargetSet, n: int | None, seed: int) -> TargetSet:
    """A seeded sample of ``n`` of ``targets`` in their order (all of them when ``n`` is None or larger)."""
    if n is None or n >= len(targets):
        return targets
    keep = np.sort(np.random.default_rng(seed).choice(len(targets), n, replace=False))
    return TargetSet(targets.users[keep], targets.positions[keep])


def epoch_order(
    model: SequentialRecommender,
    samples: TargetSet,
    batch_size: int,
    shuffler: np.random.Generator,
    bucket_by_length: bool | None = None,
) -> np.ndarray:
    """The sample order of one epoch: a shuffle, regrouped by length when the model pads
    (``bucket_by_length`` None: the model's ``batches_by_length``)."""
    order = shuffler.permutation(len(samples))
    if model.batches_by_length if bucket_by_length is None else bucket_by_length:
        lengths = np.minimum(samples.positions, model.max_len)
        order = length_bucketed(order, lengths, batch_size, shuffler)
    return order


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


def build_batch(
    model: SequentialRecommender, data: SequenceData, samples: TargetSet, idx: np.ndarray
) -> tuple[Any, torch.Tensor]:
    """The CPU batch of ``samples[idx]`` and its target items."""
    sub = TargetSet(samples.users[idx], samples.positions[idx])
    return model.prepare_samples(data, sub), torch.from_numpy(data.target_items(sub))


def batches(
    model: SequentialRecommender,
    data: SequenceData,
    samples: TargetSet,
    order: np.ndarray,
    batch_size: int,
    prefetch: bool,
    device: torch.device | None = None,
) -> Iterator[tuple[Any, torch.Tensor | None, float]]:
    """CPU batches in ``order``; with ``prefetch`` the next one is built while the caller steps.

    With ``prefetch`` and a CUDA ``device`` the worker also moves each batch there on a side
    stream (:class:`~mmsr_model.device.DeviceStager`): MMSR's graphs are then built on the GPU
    while the previous step runs, not at the start of the step that needs them.

    Each item is ``(batch, targets, fraction)``. Under data-parallel training the batch is
    this rank's share of the global batch and ``fraction`` its size relative to the global
    batch (``None, None`` when the share is empty: the last global batch may be smaller
    than the number of ranks); in one process ``fraction`` is 1.
    """
    stager = DeviceStager(device) if prefetch and device is not None and device.type == "cuda" else None

    def build(start: int) -> tuple[Any, torch.Tensor | None, float, torch.cuda.Event | None]:
        chunk = order[start : start + batch_size]
        share = my_share(chunk)
        batch, targets = build_batch(model, data, samples, share) if len(share) else (None, None)
        ready = None
        if stager is not None and batch is not None:
            (batch, targets), ready = stager.stage(
                lambda: (model.batch_to(batch, stager.device), targets.to(stager.device, non_blocking=True))
            )
        return batch, targets, len(share) / len(chunk), ready

    def adopted(
        item: tuple[Any, torch.Tensor | None, float, torch.cuda.Event | None],
    ) -> tuple[Any, Any, float]:
        batch, targets, fraction, ready = item
        if ready is not None:
            batch, targets = stager.adopt((batch, targets), ready)
        return batch, targets, fraction

    starts = range(0, len(order), batch_size)
    if not prefetch:
        yield from (adopted(build(start)) for start in starts)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as pool:
        pending = None
        for start in starts:
            upcoming = pool.submit(build, start)
            if pending is not None:
                yield adopted(pending.result())
            pending = upcoming
        if pending is not None:
            yield adopted(pending.result())
