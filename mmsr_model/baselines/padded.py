"""Shared plumbing of the ID-sequence baselines (SASRec, GRU4Rec), after RecBole.

Histories are right-padded (first item at position 0, as RecBole does) to the
longest history in the batch, with item ``i`` stored as ``i + 1`` and 0 as
padding; the state of the last real position is the readout. Output item
embeddings are the input embeddings without the padding row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mmsr_model.base import SequentialRecommender
from mmsr_model.config import ModelConfig

PaddedBatch = tuple[torch.Tensor, torch.Tensor]


def pad_right(histories: Sequence[np.ndarray], max_len: int) -> PaddedBatch:
    """``(items [B, L] with 0 = padding, lengths [B])`` for the last ``max_len`` items of each history."""
    clipped = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    lengths = np.fromiter((h.shape[0] for h in clipped), dtype=np.int64, count=len(clipped))
    if lengths.size == 0 or lengths.min() < 1:
        raise ValueError("every history must hold at least one item")
    items = np.zeros((len(clipped), int(lengths.max())), dtype=np.int64)
    rows = np.repeat(np.arange(len(clipped)), lengths)
    cols = np.arange(rows.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items[rows, cols] = np.concatenate(clipped) + 1
    return torch.from_numpy(items), torch.from_numpy(lengths)


class PaddedSequenceModel(SequentialRecommender):
    """Base of models that read a padded item-id tensor and score by dot product."""

    batches_by_length = True
    #: both baselines train as RecBole publishes them: Adam at 0.001, batches of 256, plain
    #: cross-entropy (MMSR's label smoothing was validated for MMSR alone)
    default_train_overrides: ClassVar[dict[str, Any]] = {
        "lr": 0.001,
        "batch_size": 256,
        "label_smoothing": 0.0,
    }
    #: row 0 is padding, item i is row i + 1: an older model's rows are still a prefix
    item_tables = ("item_embedding.weight",)

    def __init__(self, n_items: int, config: ModelConfig, embedding_size: int) -> None:
        super().__init__(n_items, config)
        self.item_embedding = nn.Embedding(n_items + 1, embedding_size, padding_idx=0)

    def prepare(self, histories: Sequence[np.ndarray]) -> PaddedBatch:
        return pad_right(histories, self.max_len)

    def batch_to(self, batch: PaddedBatch, device: torch.device) -> PaddedBatch:
        items, lengths = batch
        return items.to(device, non_blocking=True), lengths.to(device, non_blocking=True)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_embedding.weight[1:]

    @staticmethod
    def gather_last(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``states[b, lengths[b] - 1]`` for every row: the readout of the last real item."""
        index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
        return states.gather(1, index).squeeze(1)


@contextmanager
def seeded_init(seed: int | None) -> Iterator[None]:
    """Weight initialisation inside draws from ``seed`` without touching the global RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
