"""What a training step minimises: softmax cross-entropy over all items or over sampled negatives.

``full_softmax`` (the default) scores every item, as the evaluation ranks them.
``sampled_softmax`` scores the target against ``negatives`` items drawn uniformly
(shared by the batch; a draw that hits a row's own target is masked out), which costs
``negatives`` instead of ``n_items`` dot products per sample and computes only the scored
items' rows of the item table (``item_rows``); with uniform draws the sampling correction
is a constant and drops out. ``label_smoothing`` spreads that share of each target's
probability over the other scored items. The negatives come from the trainee's seeded
shuffler, so a checkpoint resumes the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mmsr_model.base import SequentialRecommender

LossKind = Literal["full_softmax", "sampled_softmax"]


@dataclass(frozen=True)
class Objective:
    kind: LossKind = "full_softmax"
    negatives: int = 256
    label_smoothing: float = 0.0

    def loss(
        self, model: SequentialRecommender, batch: Any, targets: torch.Tensor, rng: np.random.Generator
    ) -> torch.Tensor:
        """The batch's mean loss (``batch`` and ``targets`` already on the model's device)."""
        if self.kind == "full_softmax":
            if self.label_smoothing == 0.0:
                return model.calculate_loss(batch, targets)
            scores = model.full_sort_predict(batch).float()
            return nn.functional.cross_entropy(scores, targets, label_smoothing=self.label_smoothing)
        states = model(batch)
        drawn = torch.from_numpy(rng.integers(model.n_items, size=self.negatives)).to(targets.device)
        # one call: a model that draws per table (MMSR's ID dropout) draws once for both
        target_rows, drawn_rows = model.item_rows(torch.cat([targets, drawn])).split(
            [len(targets), len(drawn)]
        )
        positive = (states * target_rows).sum(-1, keepdim=True)
        negative = (states @ drawn_rows.T).masked_fill(drawn[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive, negative], dim=1).float()
        first = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
        return nn.functional.cross_entropy(logits, first, label_smoothing=self.label_smoothing)


FULL_SOFTMAX = Objective()
