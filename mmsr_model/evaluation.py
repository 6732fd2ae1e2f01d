"""Full-ranking evaluation: every item is a candidate, no sampled negatives.

The rank of a target is 1 + the number of items with a strictly higher score,
plus tied items with a lower id (deterministic tie-break, the same order
``inference.top_k`` recommends in). With ``exclude_seen`` the items of the
sample's full history are removed from the candidates, except the target
itself (a repeat purchase still counts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mmsr_model.base import SequentialRecommender
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.device import place_model
from mmsr_model.inference import block_rows, mask_seen, ordered_top_k
from mmsr_model.metrics import metrics_from_ranks, target_ranks

log = logging.getLogger(__name__)

#: history-length buckets of the breakdown (inclusive bounds; None = open)
HISTORY_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 2), (3, 5), (6, 10), (11, 20), (21, None))
#: buckets of the target item's training count (``SequenceData.train_item_counts``; 0 is ``cold``):
#: content is meant to pay where an item's ID row has had few updates
POPULARITY_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 4), (5, 19), (20, 99), (100, None))
MISSING_MODALITY_PS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _split(data: SequenceData, split: str) -> TargetSet:
    if split not in data.splits or len(data.splits[split]) == 0:
        raise ValueError(f"split {split!r} has no samples (splits: {sorted(data.splits)})")
    return data.splits[split]


def sample_ranks(
    model: SequentialRecommender,
    data: SequenceData,
    targets: TargetSet,
    *,
    exclude_seen: bool,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """The full-ranking rank (1-based) of every sample's target.

    ``exclude_seen`` has no default: the two protocols give different figures (see
    the module docstring), so every caller states which one it reports.
    """
    ranks, _ = _ranks_and_lists(
        model, data, targets, exclude_seen=exclude_seen, k=0, batch_size=batch_size, device=device
    )
    return ranks


@torch.no_grad()
def _ranks_and_lists(
    model: SequentialRecommender,
    data: SequenceData,
    targets: TargetSet,
    *,
    exclude_seen: bool,
    k: int,
    batch_size: int,
    device: str | torch.device | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's target rank and its top-``k`` list (``int64 [N, min(k, n_items)]``, -1 where
    fewer candidates are left), in one scoring pass."""
    k = min(k, model.n_items)
    dev = place_model(model, device)
    was_training = model.training
    model.eval()
    ranks = np.empty(len(targets), dtype=np.int64)
    lists = np.full((len(targets), k), -1, dtype=np.int64)
    batch_size = block_rows(batch_size, model.n_items)
    packed = data.packed()
    all_users, all_positions = (
        torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (targets.users, targets.positions)
    )
    try:
        with model.frozen_item_table() as table:  # once: the weights do not change while scoring
            for start in tqdm(range(0, len(targets), batch_size), desc="evaluate", unit="batch", leave=False):
                users, ends = all_users[start : start + batch_size], all_positions[start : start + batch_size]
                batch = model.batch_to(model.prepare_histories(packed, users, ends), dev)
                scores = model.full_sort_predict(batch, table).float()
                items = packed.at(users, ends).to(dev)
                if exclude_seen:
                    target_scores = scores.gather(1, items[:, None])
                    mask_seen(scores, *packed.seen(users, ends))
                    scores.scatter_(1, items[:, None], target_scores)
                ranks[start : start + len(users)] = target_ranks(scores, items).cpu().numpy()
                if k:
                    values, ids = ordered_top_k(scores, k)
                    lists[start : start + len(users)] = (
                        ids.masked_fill(values == float("-inf"), -1).cpu().numpy()
                    )
    finally:
        model.train(was_training)
    return ranks, lists


def evaluate(
    model: SequentialRecommender,
    data: SequenceData,
    split: str = "test",
    ks: Iterable[int] = (5, 10, 20),
    *,
    exclude_seen: bool,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """HR/MRR/NDCG@K of ``split`` ranked against all items."""
    ranks = sample_ranks(
        model, data, _split(data, split), exclude_seen=exclude_seen, batch_size=batch_size, device=device
    )
    return metrics_from_ranks(ranks, tuple(ks))


def evaluate_breakdown(
    model: SequentialRecommender,
    data: SequenceData,
    split: str = "test",
    ks: Iterable[int] = (5, 10, 20),
    *,
    exclude_seen: bool,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics per group: ``all``, ``cold``/``warm`` target items, ``hist_<lo>_<hi>`` history lengths,
    ``pop_<lo>_<hi>`` the target's training count; ``all`` also has ``coverage_at_<k>``, the share of
    the catalogue that appears in some sample's top-k list (content can win NDCG by recommending
    the popular items more often).

    A target is cold when it occurs in no training sample (neither as target nor
    in a history). History length is the full length before the target (not
    truncated to ``max_len``). Each group also has ``n_samples``; empty groups
    are left out.
    """
    targets = _split(data, split)
    ks = tuple(ks)
    ranks, lists = _ranks_and_lists(
        model, data, targets, exclude_seen=exclude_seen, k=max(ks), batch_size=batch_size, device=device
    )
    counts = data.train_item_counts()[data.target_items(targets)]
    cold = counts == 0
    groups: dict[str, np.ndarray] = {"all": np.ones(len(targets), dtype=bool), "cold": cold, "warm": ~cold}
    groups |= _bucketed("hist", targets.positions, HISTORY_BUCKETS)
    groups |= _bucketed("pop", counts, POPULARITY_BUCKETS)
    results = {
        name: {"n_samples": float(mask.sum()), **metrics_from_ranks(ranks[mask], ks)}
        for name, mask in groups.items()
        if mask.any()
    }
    for k in ks:
        recommended = np.unique(lists[:, :k])
        results["all"][f"coverage_at_{k}"] = float((recommended >= 0).sum() / model.n_items)
    return results


def _bucketed(
    prefix: str, values: np.ndarray, buckets: Sequence[tuple[int, int | None]]
) -> dict[str, np.ndarray]:
    """``<prefix>_<lo>_<hi>`` (``<prefix>_<lo>_plus`` when open) -> the samples whose value lies in it."""
    top = np.iinfo(np.int64).max
    return {
        f"{prefix}_{lo}_{'plus' if hi is None else hi}": (values >= lo)
        & (values <= (top if hi is None else hi))
        for lo, hi in buckets
    }


def evaluate_missing_modality(
    model: SequentialRecommender,
    data: SequenceData,
    ps: Sequence[float] = MISSING_MODALITY_PS,
    modalities: Sequence[str] = ("image", "text", "both"),
    split: str = "test",
    ks: Iterable[int] = (5, 10, 20),
    seed: int = 2023,
    *,
    exclude_seen: bool,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> list[dict]:
    """Metrics with a fraction ``p`` of items' modality links dropped at evaluation time.

    Rows: ``{"modality", "p", <metrics>}``, led by the intact model (modality
    "none", p 0). Models without modality links (``has_modality_links`` false: the
    baselines) and modalities the data lacks are skipped with a logged note.
    """
    if not model.has_modality_links:
        log.warning("%s has no modality links: missing-modality evaluation skipped", model.name)
        return []
    present = [m for m in modalities if m == "both" or m in data.item_codes]
    for m in sorted(set(modalities) - set(present)):
        log.warning("modality %r absent from the data: missing-modality evaluation skipped for it", m)
    ks = tuple(ks)
    options = {"exclude_seen": exclude_seen, "batch_size": batch_size, "device": device}
    rows = [{"modality": "none", "p": 0.0, **evaluate(model, data, split, ks, **options)}]
    for modality in present:
        for p in ps:
            with model.drop_modality_links(modality, p, seed):
                metrics = evaluate(model, data, split, ks, **options)
            rows.append({"modality": modality, "p": float(p), **metrics})
            log.info("missing %s p=%.1f: %s", modality, p, metrics)
    return rows
