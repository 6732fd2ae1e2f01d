"""Most-popular baseline: every user gets the items seen most often in training.

Counts are taken once in ``from_data`` (no gradient training): every item
occurrence in the train part of each sequence, i.e. the train samples' targets
and their histories. It fits the model contract with 1-d states: the user state
is 1 and the item "embedding" is its count, so scores are the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmsr_model.base import SequentialRecommender
from mmsr_model.config import PopularityConfig
from mmsr_model.data import SequenceData, TargetSet


class Popularity(SequentialRecommender):
    """Scores every item by its training count, whatever the history."""

    name = "pop"
    config_class = PopularityConfig

    def __init__(self, n_items: int, config: PopularityConfig | None = None) -> None:
        super().__init__(n_items, PopularityConfig() if config is None else config)
        self.register_buffer("counts", torch.zeros(n_items, dtype=torch.float32))

    @classmethod
    def from_data(cls, data: SequenceData, **params: Any) -> Popularity:
        model = super().from_data(data, **params)
        model.counts.copy_(torch.from_numpy(data.train_item_counts().astype(np.float32)))
        return model

    def prepare(self, histories: Sequence[np.ndarray]) -> int:
        return len(histories)

    def prepare_samples(self, data: SequenceData, targets: TargetSet) -> int:
        return len(targets)

    def batch_to(self, batch: int, device: torch.device) -> int:
        return batch

    def forward(self, batch: int) -> torch.Tensor:
        return torch.ones(batch, 1, device=self.counts.device)

    def item_embeddings(self) -> torch.Tensor:
        return self.counts[:, None]
