"""GRU4Rec (Hidasi et al. 2016) as RecBole 1.2.1 builds it with the CE loss.

Embedding 64 -> dropout 0.3 -> GRU (hidden 128, 1 layer, no bias) -> linear back
to 64; readout at the last real item; scores are dot products with the
(shared) item embeddings; Xavier initialisation as in RecBole.
"""

from __future__ import annotations

import torch
from torch import nn

from mmsr_model.baselines.padded import PaddedBatch, PaddedSequenceModel, seeded_init
from mmsr_model.config import GRU4RecConfig


class GRU4Rec(PaddedSequenceModel):
    """Recurrent next-item model over the item history."""

    name = "gru4rec"

    config_class = GRU4RecConfig
    config: GRU4RecConfig

    def __init__(self, n_items: int, config: GRU4RecConfig | None = None) -> None:
        config = GRU4RecConfig() if config is None else config
        super().__init__(n_items, config, config.embedding_size)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            bias=False,
            batch_first=True,
        )
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        with seeded_init(config.seed):
            nn.init.xavier_normal_(self.item_embedding.weight)
            for param_name, weight in self.gru.named_parameters():
                if param_name.startswith("weight"):
                    nn.init.xavier_uniform_(weight)
            self.dense.reset_parameters()

    def forward(self, batch: PaddedBatch) -> torch.Tensor:
        items, lengths = batch
        # the recurrence runs in float32 even under CUDA autocast (cuDNN's reduced-precision
        # RNN support varies by version, and the GRU is a small share of the step)
        with torch.autocast(items.device.type, enabled=False):
            states, _ = self.gru(self.emb_dropout(self.item_embedding(items)).float())
        return self.gather_last(self.dense(states), lengths)
