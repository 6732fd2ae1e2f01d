"""Ranking metrics from the rank of the one relevant item per sample.

Ranks are 1-based. Tie-break: items are ordered by score, then by lower item id
(the same order ``inference.top_k`` recommends in), so a metric is exactly what
the recommendation list would have shown. NDCG is the standard one: with one
relevant item the ideal DCG is 1, so NDCG@K = 1 / log2(rank + 1) when rank <= K.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

METRIC_KINDS = ("hr", "mrr", "ndcg")


def metric_names(ks: Iterable[int]) -> list[str]:
    """Names like ``hr_at_10`` (MLflow refuses '@')."""
    return [f"{kind}_at_{k}" for k in ks for kind in METRIC_KINDS]


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of ``targets[b]`` among ``scores[b]`` (``[B, n_items]``): 1 + items ahead of it.

    An item is ahead when its score is strictly higher, or equal with a lower id.
    """
    target_scores = scores.gather(1, targets[:, None])
    ids = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > target_scores) | ((scores == target_scores) & (ids[None, :] < targets[:, None]))
    return ahead.sum(dim=1) + 1


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int] = (5, 10, 20)) -> dict[str, float]:
    """HR@K, MRR@K and NDCG@K averaged over samples (empty input gives NaN)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr_at_{k}"] = _mean(hit.astype(np.float64))
        out[f"mrr_at_{k}"] = _mean(np.where(hit, 1.0 / ranks, 0.0))
        out[f"ndcg_at_{k}"] = _mean(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0))
    return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")
