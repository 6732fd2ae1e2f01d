"""GRU4Rec (Hidasi et al. 2016) as RecBole 1.2.1 builds it with the CE loss.

Embedding 64 -> dropout 0.3 -> GRU (hidden 128, 1 layer, no bias) -> linear back
to 64; readout at the last real item; scores are dot products with the
(shared) item embeddings; Xavier initialisation as in RecBole.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mmsr_model.baselines.padded import PaddedBatch, PaddedSequenceModel, seeded_init
from mmsr_model.data import SequenceData


class GRU4Rec(PaddedSequenceModel):
    """Recurrent next-item model over the item history."""

    name = "gru4rec"
    default_train_overrides: ClassVar[dict[str, Any]] = {"lr": 0.001, "batch_size": 256}

    def __init__(
        self,
        n_items: int,
        max_len: int = 50,
        embedding_size: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.3,
        seed: int | None = None,
    ) -> None:
        super().__init__(n_items, max_len, embedding_size)
        self.init_kwargs = {
            "n_items": n_items,
            "max_len": max_len,
            "embedding_size": embedding_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "dropout": dropout,
            "seed": seed,
        }
        self.emb_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers=num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(hidden_size, embedding_size)
        with seeded_init(seed):
            nn.init.xavier_normal_(self.item_embedding.weight)
            for param_name, weight in self.gru.named_parameters():
                if param_name.startswith("weight"):
                    nn.init.xavier_uniform_(weight)
            self.dense.reset_parameters()

    @classmethod
    def from_data(cls, data: SequenceData, **params: Any) -> GRU4Rec:
        return cls(n_items=data.n_items, **params)

    def forward(self, batch: PaddedBatch) -> torch.Tensor:
        items, lengths = batch
        # the recurrence runs in float32 even under CUDA autocast (cuDNN's reduced-precision
        # RNN support varies by version, and the GRU is a small share of the step)
        with torch.autocast(items.device.type, enabled=False):
            states, _ = self.gru(self.emb_dropout(self.item_embedding(items)).float())
        return self.gather_last(self.dense(states), lengths)
