"""The one contract every model follows (after RecBole), so training, evaluation,
inference and persistence never special-case a model.

``prepare`` turns raw histories into a model-specific CPU batch (a graph batch
for MMSR, a padded tensor for SASRec); ``batch_to`` moves it to a device;
``forward`` returns one state per history; scores are dot products with the item
embeddings. ``init_kwargs`` holds everything needed to rebuild the module
(JSON-able values and numpy arrays) so ``persistence`` can save and load it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mmsr_model.data import SequenceData, TargetSet


class SequentialRecommender(nn.Module, ABC):
    """Base class: next-item prediction over ``n_items`` items."""

    #: registry name used by persistence (e.g. "mmsr", "sasrec")
    name: str = ""
    #: TrainConfig fields this model is trained with by default (e.g. SASRec's lr 0.001, batch 256);
    #: ``training.config_for`` applies them
    default_train_overrides: ClassVar[dict[str, Any]] = {}
    #: whether training should batch histories of similar length together: worth it for models
    #: that pad every history to the batch's longest (SASRec, GRU4Rec), pointless for graphs
    batches_by_length: ClassVar[bool] = False
    #: constructor arguments that files saved before the argument existed lack, with the value
    #: those models had; needed only where today's default differs (persistence fills them in)
    legacy_init_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, n_items: int, max_len: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.max_len = max_len
        self.init_kwargs: dict[str, Any] = {}

    @abstractmethod
    def prepare(self, histories: Sequence[np.ndarray]) -> Any:
        """Build a CPU batch from item-id histories (each non-empty, chronological)."""

    def prepare_samples(self, data: SequenceData, targets: TargetSet) -> Any:
        """Build a batch for (user, position) samples; models may override to use caches."""
        return self.prepare(data.histories(targets, self.max_len))

    @abstractmethod
    def batch_to(self, batch: Any, device: torch.device) -> Any:
        """Move a batch from ``prepare`` to ``device``."""

    @abstractmethod
    def forward(self, batch: Any) -> torch.Tensor:
        """One state per history, shape ``[B, d]``."""

    @abstractmethod
    def item_embeddings(self) -> torch.Tensor:
        """Output embeddings of all items, shape ``[n_items, d]``."""

    def random_streams(self) -> dict[str, np.random.Generator]:
        """Random generators the model draws from while training (a checkpoint saves their state)."""
        return {}

    def full_sort_predict(self, batch: Any) -> torch.Tensor:
        """Scores over all items, shape ``[B, n_items]``."""
        return self.forward(batch) @ self.item_embeddings().T

    def calculate_loss(self, batch: Any, targets: torch.Tensor) -> torch.Tensor:
        """Full softmax cross-entropy over all items."""
        return nn.functional.cross_entropy(self.full_sort_predict(batch).float(), targets)
