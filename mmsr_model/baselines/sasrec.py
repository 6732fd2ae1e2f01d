"""SASRec (Kang & McAuley 2018) configured like RecBole 1.2.1's defaults.

Post-LN transformer blocks (2 layers, 2 heads, hidden 64, inner 256, GELU,
dropout 0.5 on hidden states and attention, LayerNorm eps 1e-12), learned
positional embeddings, causal + padding attention mask, normal(0, 0.02)
initialisation, full softmax cross-entropy over all items (the base class).
RecBole trains it with Adam lr 0.001; batch 256 is the issue's standard.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mmsr_model.baselines.padded import PaddedBatch, PaddedSequenceModel, seeded_init
from mmsr_model.config import SASRecConfig


class _SelfAttention(nn.Module):
    """Multi-head self-attention with residual + LayerNorm (RecBole's MultiHeadAttention)."""

    def __init__(self, hidden: int, heads: int, dropout: float, attn_dropout: float, eps: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden_size {hidden} is not a multiple of num_heads {heads}")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dense = nn.Linear(hidden, hidden)
        self.attn_dropout = attn_dropout
        self.out_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, length, hidden = x.shape
        return x.view(b, length, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )
        context = context.transpose(1, 2).reshape(x.shape)
        return self.norm(self.out_dropout(self.dense(context)) + x)


class _FeedForward(nn.Module):
    def __init__(self, hidden: int, inner: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.dense_1 = nn.Linear(hidden, inner)
        self.dense_2 = nn.Linear(inner, hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.dense_2(F.gelu(self.dense_1(x)))) + x)


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.attention = _SelfAttention(hidden, heads, dropout, attn_dropout, eps)
        self.feed_forward = _FeedForward(hidden, inner, dropout, eps)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.attention(x, allowed))


class SASRec(PaddedSequenceModel):
    """Causal self-attention over the item history; readout at the last real item."""

    name = "sasrec"

    config_class = SASRecConfig
    config: SASRecConfig

    def __init__(self, n_items: int, config: SASRecConfig | None = None) -> None:
        config = SASRecConfig() if config is None else config
        super().__init__(n_items, config, config.hidden_size)
        hidden_size, eps = config.hidden_size, config.layer_norm_eps
        self.position_embedding = nn.Embedding(config.max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            _Block(hidden_size, config.num_heads, config.inner_size, config.dropout, config.attn_dropout, eps)
            for _ in range(config.num_layers)
        )
        with seeded_init(config.seed):
            self.apply(lambda m: _init_weights(m, config.initializer_range))

    def encode(self, batch: PaddedBatch) -> torch.Tensor:
        """States of every position, ``[B, L, d]``; position t only sees positions <= t."""
        items, _ = batch
        length = items.shape[1]
        positions = torch.arange(length, device=items.device)
        x = self.dropout(self.norm(self.item_embedding(items) + self.position_embedding(positions)[None]))
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        allowed = (causal[None] & (items > 0)[:, None, :])[:, None]  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed)
        return x

    def forward(self, batch: PaddedBatch) -> torch.Tensor:
        return self.gather_last(self.encode(batch), batch[1])


def _init_weights(module: nn.Module, std: float) -> None:
    """RecBole's SASRec initialisation."""
    if isinstance(module, nn.Linear | nn.Embedding):
        module.weight.data.normal_(mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
