"""Toy models for harness tests: every history gets the same state, the item table decides the scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from mmsr_model import training
from mmsr_model.base import SequentialRecommender
from mmsr_model.config import ModelConfig
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.training import TrainConfig

#: w after each epoch: 0.5, 1, 1.5, 2, 2.5, 3 -> target rank 3, 3, 2, 1, 2, 3 (plain cross-entropy
#: trains through the model's own ``calculate_loss``; smoothing would score the table instead; the
#: rivals are ranked even where a history holds them)
DRIFT_CONFIG = TrainConfig(
    model="drift",
    lr=0.5,
    batch_size=8,
    max_epochs=20,
    patience=2,
    eval_metric="mrr_at_5",
    label_smoothing=0.0,
    exclude_seen=False,
)


class ScoreOnly(SequentialRecommender):
    """Every history gets the state ``[1]``, so ``item_embeddings`` (one column) are the scores."""

    def prepare(self, histories: Sequence[np.ndarray]) -> int:
        return len(histories)

    def batch_to(self, batch: int, device: torch.device) -> int:
        return batch

    def forward(self, batch: int) -> torch.Tensor:
        return torch.ones(batch, 1)


class Drift(ScoreOnly):
    """One weight w that every step pushes up by ~lr (Adam on loss -w).

    The validation target (item 0) scores -(w - 2)^2 against fixed rivals at -0.1
    and -0.5, so validation improves until w = 2 and degrades after it.
    """

    name = "drift"

    def __init__(self) -> None:
        super().__init__(4, ModelConfig())
        self.w = nn.Parameter(torch.zeros(()))

    def item_embeddings(self) -> torch.Tensor:
        rivals = torch.tensor([-0.1, -0.5, -10.0])
        return torch.cat([-((self.w - 2) ** 2)[None], rivals])[:, None]

    def calculate_loss(self, batch: int, targets: torch.Tensor) -> torch.Tensor:
        return -self.w


def drift_data() -> SequenceData:
    sequences = [np.array([1, 2, 0], dtype=np.int64) for _ in range(3)]
    users = np.arange(3, dtype=np.int64)
    splits = {"train": TargetSet(users, np.ones(3, dtype=np.int64)), "valid": TargetSet(users, np.full(3, 2))}
    return SequenceData(sequences=sequences, n_items=4, splits=splits)


def train_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``training.train`` build a fresh ``Drift`` whatever the config names."""
    monkeypatch.setattr(training, "build_model", lambda name, data, **params: Drift())
