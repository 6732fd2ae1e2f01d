"""What a warm night trains on: the samples an older model has not learned, plus a replay of the rest.

A warm start already knows every interaction its older model trained on. Stepping
through all of them again every night costs as much as a cold epoch and teaches
little; stepping through only the new ones lets the model drift towards the latest
users and forget the rest. So a warm night trains on every sample whose target the
older model has not trained on, plus a seeded random ``replay_fraction`` of the
older ones, and validates only on the valid targets the older model has not
trained on (a refit older model has learned last night's valid targets, so they
no longer measure anything). With :func:`repeat_unlearned` the new samples appear
several times per epoch: a night's few new interactions are otherwise a small share
of each epoch's steps.

After a refit older model, the selection run can have nothing new to train on: an
active user's new interaction only moves an already learned target into train, and
the unlearned ones are all valid targets, which the refit will then train on. Such a
selection run would choose the refit's epoch count on the replay alone.
:func:`lend_valid_targets` moves a seeded share of those valid targets into its
training, so the count is chosen on the kind of samples the refit learns.

What a model trained on is one number per user, ``trained_upto``: its targets were
positions ``< trained_upto[user]``. Users beyond the array's end are new (0). Histories
only grow at the end, so this is all a later night needs.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from mmsr_model.data import SequenceData, TargetSet

log = logging.getLogger(__name__)


def trained_upto(data: SequenceData, with_valid: bool) -> np.ndarray:
    """Per user, one past the last target position a model trained on ``data`` learned.

    ``with_valid``: the model was refit on train + valid targets.
    """
    upto = np.zeros(len(data.sequences), dtype=np.int64)
    for name in ("train", "valid") if with_valid else ("train",):
        targets = data.splits[name]
        np.maximum.at(upto, targets.users, targets.positions + 1)
    return upto


def _unlearned(targets: TargetSet, upto: np.ndarray) -> np.ndarray:
    """Mask of the samples whose target position the older model did not train on."""
    known = np.zeros(len(targets), dtype=np.int64)
    old_user = targets.users < len(upto)
    known[old_user] = upto[targets.users[old_user]]
    return targets.positions >= known


def incremental_samples(samples: TargetSet, upto: np.ndarray, replay_fraction: float, seed: int) -> TargetSet:
    """Every unlearned sample and a seeded ``replay_fraction`` of the learned ones (at least one sample)."""
    new = _unlearned(samples, upto)
    learned = np.flatnonzero(~new)
    n_replay = round(replay_fraction * len(learned))
    if n_replay == 0 and not new.any() and len(learned):
        n_replay = 1
    replay = np.random.default_rng(seed).choice(learned, n_replay, replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(new), replay]))
    log.info("incremental samples: %d new, %d of %d learned replayed", int(new.sum()), n_replay, len(learned))
    return TargetSet(samples.users[keep], samples.positions[keep])


def repeat_unlearned(samples: TargetSet, upto: np.ndarray, repeats: int) -> TargetSet:
    """``samples`` with every unlearned one ``repeats`` times, so that an epoch of a warm night
    steps through tonight's interactions as often as the replay's larger share (1: once)."""
    if repeats == 1:
        return samples
    times = np.where(_unlearned(samples, upto), repeats, 1)
    log.info("unlearned samples repeated %d times: %d samples per epoch", repeats, int(times.sum()))
    return TargetSet(np.repeat(samples.users, times), np.repeat(samples.positions, times))


def has_unlearned(targets: TargetSet, upto: np.ndarray) -> bool:
    """Whether any of ``targets`` is at a position the older model did not train on."""
    return bool(_unlearned(targets, upto).any())


def with_unlearned_valid(data: SequenceData, upto: np.ndarray) -> SequenceData:
    """``data`` validating on the valid targets the older model did not train on (all when none is left)."""
    valid = data.splits["valid"]
    fresh = _unlearned(valid, upto)
    if not fresh.any():
        log.warning("every valid target was trained on by the older model: validating on all of them")
        return data
    log.info("validating on %d of %d valid targets (the unlearned ones)", int(fresh.sum()), len(valid))
    unlearned = TargetSet(valid.users[fresh], valid.positions[fresh])
    return replace(data, splits=dict(data.splits, valid=unlearned))


def lend_valid_targets(
    samples: TargetSet, data: SequenceData, share: float, seed: int
) -> tuple[TargetSet, SequenceData]:
    """``samples`` plus a seeded ``share`` of ``data``'s valid targets, and ``data`` validating on the rest.

    At least one target stays valid, so the run can still be early-stopped.
    """
    valid = data.splits["valid"]
    n_lent = min(round(share * len(valid)), len(valid) - 1)
    lent = np.zeros(len(valid), dtype=bool)
    lent[np.random.default_rng(seed).choice(len(valid), n_lent, replace=False)] = True
    log.info(
        "selection trains on %d of %d unlearned valid targets and validates on the rest", n_lent, len(valid)
    )
    train = TargetSet(
        np.concatenate([samples.users, valid.users[lent]]),
        np.concatenate([samples.positions, valid.positions[lent]]),
    )
    kept = TargetSet(valid.users[~lent], valid.positions[~lent])
    return train, replace(data, splits=dict(data.splits, valid=kept))
