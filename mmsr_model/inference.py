"""Top-K recommendations for many users: block-wise full scoring, no Python loop per user.

Histories are packed (:class:`mmsr_model.histories.Histories`), so a block's model
inputs and its seen items are index arithmetic; seen items are masked to -inf by one
scatter into the block's score matrix. Ties are broken deterministically with the lower
item id first (the order the evaluation metrics assume too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mmsr_model.base import SequentialRecommender
from mmsr_model.device import place_model
from mmsr_model.histories import Histories

log = logging.getLogger(__name__)

#: the largest float32 score matrix one block may hold: rows per block shrink as the catalogue grows
SCORE_BLOCK_BYTES = 256 * 2**20
#: users per scoring block by device type: on a CPU a smaller block keeps the score matrix and the
#: graph's per-node tensors nearer the caches (Beauty, one thread, beside two training runs: 512
#: users scored 1.2-1.4x faster than 1,024, 256 about 1.1x); on an H200 a block's graph and launch
#: costs are nearly fixed, so larger blocks pay (Beauty, default model: 4,096 users scored 2.0-2.4x
#: faster than 1,024; benchmarks/results/speed.md)
BLOCK_USERS = {"cpu": 512, "cuda": 4096}
DEFAULT_BLOCK_USERS = 1024


def block_rows(batch_size: int, n_items: int) -> int:
    """Rows per scoring block: ``batch_size``, fewer when its float32 scores pass ``SCORE_BLOCK_BYTES``."""
    return max(1, min(batch_size, SCORE_BLOCK_BYTES // (4 * n_items)))


def mask_seen(scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> None:
    """Set ``scores[rows[i], items[i]] = -inf`` for every ``i``, in place (one scatter)."""
    scores[rows.to(scores.device), items.to(scores.device)] = float("-inf")


def ordered_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best items per row, ordered by score then lower item id.

    ``torch.topk`` is fast but picks arbitrarily among ties; rows whose k-th
    score is tied with an item outside the top k (the (k+1)-th best score equals the
    k-th) are re-done with a stable sort.
    """
    values, ids = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    if values.shape[1] > k:
        tied = values[:, k] == values[:, k - 1]
        values, ids = values[:, :k], ids[:, :k]
    else:
        tied = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    ids, order = ids.sort(dim=1)
    values, order = values.gather(1, order).sort(dim=1, descending=True, stable=True)
    ids = ids.gather(1, order)
    ambiguous = tied.nonzero().squeeze(1)
    if ambiguous.numel():
        full_values, full_ids = scores[ambiguous].sort(dim=1, descending=True, stable=True)
        values[ambiguous] = full_values[:, :k]
        ids[ambiguous] = full_ids[:, :k]
    return values, ids


@torch.no_grad()
def top_k(
    model: SequentialRecommender,
    histories: Histories | Sequence[np.ndarray],
    k: int,
    exclude_seen: bool = True,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Item ids ``int64 [U, k]`` and scores ``float32 [U, k]`` for every history.

    Each history must be non-empty; the model sees its last ``max_len`` items
    while ``exclude_seen`` masks every item of the full history. When fewer than
    ``k`` items are left unmasked the tail holds masked items with score -inf.
    Users are scored in blocks of ``batch_size`` (None: ``BLOCK_USERS`` of the device; fewer
    when the block's score matrix would pass ``SCORE_BLOCK_BYTES``).
    """
    if not 1 <= k <= model.n_items:
        raise ValueError(f"k={k} must be between 1 and the number of items ({model.n_items})")
    if not isinstance(histories, Histories):
        histories = Histories.pack([np.asarray(h, dtype=np.int64) for h in histories])
    lengths = histories.lengths
    if len(histories) and int(lengths.min()) == 0:
        raise ValueError("top_k needs a non-empty history for every user")
    dev = place_model(model, device)
    was_training = model.training
    model.eval()
    ids_out = np.empty((len(histories), k), dtype=np.int64)
    scores_out = np.empty((len(histories), k), dtype=np.float32)
    batch_size = block_rows(batch_size or BLOCK_USERS.get(dev.type, DEFAULT_BLOCK_USERS), model.n_items)
    try:
        with model.frozen_item_table() as table:  # once: the weights do not change while scoring
            for start in tqdm(range(0, len(histories), batch_size), desc="top_k", unit="batch", leave=False):
                users = torch.arange(start, min(start + batch_size, len(histories)))
                ends = lengths[users]
                scores = model.full_sort_predict(
                    model.batch_to(model.prepare_histories(histories, users, ends), dev), table
                )
                scores = scores.float()
                if exclude_seen:
                    mask_seen(scores, *histories.seen(users, ends))
                values, ids = ordered_top_k(scores, k)
                ids_out[start : start + len(users)] = ids.cpu().numpy()
                scores_out[start : start + len(users)] = values.cpu().numpy()
    finally:
        model.train(was_training)
    log.info("scored %d users (k=%d, exclude_seen=%s) on %s", len(histories), k, exclude_seen, dev)
    return ids_out, scores_out
