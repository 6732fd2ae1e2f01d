"""Seed a fresh model with an older one's weights: the warm start of a nightly retrain.

The older model was trained on an earlier night of the same dataset, whose item ids
are a prefix of today's (the id maps are append-only). Every weight with the same
shape is copied; an item table (``item_tables``) gets the older rows for the items
it knew and keeps its fresh, seeded rows for the new items. Anything else (another
model or configuration, a shape that does not line up, code centres that moved) is
an :class:`IncompatibleWeights`, which the caller turns into a cold start.
"""

from __future__ import annotations

import logging

import torch

from mmsr_model.base import SequentialRecommender

log = logging.getLogger(__name__)


class IncompatibleWeights(ValueError):
    """The older model's weights cannot seed this one; the message says why."""


def check_transfer(source: SequentialRecommender, target: SequentialRecommender) -> None:
    """Raise :class:`IncompatibleWeights` unless ``source`` can seed ``target``."""
    if source.name != target.name:
        raise IncompatibleWeights(f"champion is a {source.name}, this run trains a {target.name}")
    if source.config != target.config:
        raise IncompatibleWeights(f"{target.name} hyper-parameters differ from the champion's")
    if source.n_items > target.n_items:
        raise IncompatibleWeights(
            f"{target.name}: champion knows {source.n_items} items, today has {target.n_items} "
            "(id map shrank)"
        )
    if reason := target.warm_start_mismatch(source):
        raise IncompatibleWeights(f"{target.name}: {reason}")
    old, new = source.state_dict(), target.state_dict()
    if set(old) != set(new):
        only_one = sorted(set(old) ^ set(new))
        raise IncompatibleWeights(f"{target.name}: weights {only_one} exist on one side only")
    for key, tensor in new.items():
        before = old[key]
        grows = key in target.item_tables and before.shape[1:] == tensor.shape[1:]
        if before.shape != tensor.shape and not (grows and before.shape[0] <= tensor.shape[0]):
            raise IncompatibleWeights(
                f"{target.name}: {key} is {tuple(before.shape)} in the champion, {tuple(tensor.shape)} now"
            )


@torch.no_grad()
def transfer_weights(source: SequentialRecommender, target: SequentialRecommender) -> int:
    """Copy ``source``'s weights into ``target`` (item tables: the known rows only).

    Returns the number of new items, whose rows keep ``target``'s fresh initialisation.
    """
    check_transfer(source, target)
    state = target.state_dict()
    for key, tensor in source.state_dict().items():
        rows = state[key][: tensor.shape[0]] if tensor.dim() else state[key]
        rows.copy_(tensor.to(rows.device, rows.dtype))
    target.inherit_transforms(source)
    new_items = target.n_items - source.n_items
    log.info("warm start %s: %d known items copied, %d new fresh", target.name, source.n_items, new_items)
    return new_items
