"""The HAN-GNN layer: homogeneous and heterogeneous attention fused through an update gate.

Everything is sparse: one logit per edge by SDDMM, a segment softmax over each
destination's incoming edges (:func:`mmsr_model.sparse.segment_softmax`, in
float32 so autocast cannot overflow it) and the weighted sum of values by SpMM (see
:mod:`mmsr_model.sparse`). Nodes are ordered type-major (see
:class:`mmsr_model.graph.GraphBatch`), so the type-specific W_Q/W_K/W_V are three
matrix products on slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mmsr_model.config import MMSRArchitecture
from mmsr_model.graph import HOMO_RELATIONS, NODE_TYPES, GraphBatch
from mmsr_model.sparse import Pattern, sddmm, segment_softmax, spmm


class TypedLinear(nn.Module):
    """One linear map per node type, applied to type-major contiguous node slices."""

    def __init__(self, dim: int, n_types: int = len(NODE_TYPES)) -> None:
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_types))

    def forward(self, x: torch.Tensor, type_counts: tuple[int, ...]) -> torch.Tensor:
        return torch.cat([lin(part) for lin, part in zip(self.maps, x.split(type_counts), strict=True)])


@dataclass
class AttentionEdges:
    """The edges of one attention kind into ``n_dst`` destination rows, sorted by destination.

    ``logit`` is the SDDMM pattern (for the homogeneous attention its rows are
    ``dst * len(HOMO_RELATIONS) + rel``, one per relation vector), ``agg`` the SpMM one.
    """

    logit: Pattern
    agg: Pattern
    dst: torch.Tensor
    n_dst: int

    @classmethod
    def of_batch(cls, batch: GraphBatch) -> tuple[AttentionEdges, AttentionEdges]:
        """Homogeneous and heterogeneous edges into every node."""
        n = batch.num_nodes
        return (
            cls(batch.homo_logit, batch.homo_agg, batch.homo_index[1], n),
            cls(batch.hetero_agg, batch.hetero_agg, batch.hetero_index[1], n),
        )

    @classmethod
    def into_rows(cls, batch: GraphBatch, rows: torch.Tensor) -> tuple[AttentionEdges, AttentionEdges]:
        """Homogeneous and heterogeneous edges into ``rows`` only (destination i = ``rows[i]``)."""
        n, n_rel = batch.num_nodes, len(HOMO_RELATIONS)
        position = torch.full((n,), -1, dtype=torch.long, device=rows.device)
        position[rows] = torch.arange(len(rows), device=rows.device)

        def restrict(index: torch.Tensor, rel: torch.Tensor | None) -> AttentionEdges:
            src, dst = index[0], position[index[1]]
            keep = dst >= 0
            src, dst = src[keep], dst[keep]
            key = dst if rel is None else dst * n_rel + rel[keep]
            order = torch.argsort(key, stable=True)
            src, dst, key = src[order], dst[order], key[order]
            agg = Pattern.from_sorted(dst, src, len(rows), n)
            logit = agg if rel is None else Pattern.from_sorted(key, src, len(rows) * n_rel, n)
            return cls(logit, agg, dst, len(rows))

        return restrict(batch.homo_index, batch.homo_rel), restrict(batch.hetero_index, None)


def _aggregate(
    logits: torch.Tensor, values: torch.Tensor, edges: AttentionEdges, dropout: nn.Dropout
) -> torch.Tensor:
    """Softmax of ``logits`` over each destination's incoming edges, then sum of weighted values."""
    alpha = dropout(segment_softmax(logits.float(), edges.dst, edges.n_dst))
    return spmm(edges.agg, alpha, values)


class HANLayer(nn.Module):
    """One heterogeneous attentional layer (see docs/model.md), shaped by an MMSR config.

    ``update="async"``: path A runs the homogeneous attention and then the heterogeneous
    one on the updated states, path B the other order; a gate MLP scores both path
    outputs per node and mixes them (softmax over the two = ``gate="soft"``;
    ``gate="hard"`` picks one path, straight-through Gumbel while training, argmax in
    eval). ``update="sync"`` runs both attentions on the layer input and sums them.
    ``fusion="non_invasive"``: the second phase computes its attention from the
    intermediate states but aggregates the ORIGINAL values of the layer input (W_V of
    the input; the input states themselves for the homogeneous attention when
    ``homogeneous_values="states"``); ``"invasive"`` aggregates values of the
    intermediate states.
    A phase's output is its message alone, as in the authors' implementation (see
    :mod:`mmsr_model.config`): a node keeps its own state only through its self-loop.
    ``residual=True`` adds every message to the state instead, and ``norm="layer"``
    layer-norms the output; both are off by default because on Beauty they lowered
    validation NDCG (``benchmarks/results/quality.md``).
    ``homogeneous_values="projected"`` (default) makes the homogeneous attention aggregate W_V
    of its neighbours, as the authors' implementation does, so every message lies in the value
    space; ``"states"`` aggregates the states themselves (lower validation NDCG on Beauty).
    """

    def __init__(self, config: MMSRArchitecture) -> None:
        super().__init__()
        dim = config.hidden_size
        self.projected_homogeneous = config.homogeneous_values == "projected"
        self.dim, self.update, self.fusion = dim, config.update, config.fusion
        self.gate, self.residual = config.gate, config.residual
        self.w_q, self.w_k, self.w_v = TypedLinear(dim), TypedLinear(dim), TypedLinear(dim)
        self.a_homo = nn.Parameter(torch.empty(len(HOMO_RELATIONS), dim))
        nn.init.normal_(self.a_homo, std=dim**-0.5)
        self.gate_mlp = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.attn_dropout = nn.Dropout(config.attn_dropout)
        self.norm = nn.LayerNorm(dim) if config.norm == "layer" else nn.Identity()

    def homogeneous(self, x: torch.Tensor, values: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """Content attention e_ij = LeakyReLU(a_r . (x_i * x_j)) over self/out/in/both edges."""
        return self._homogeneous(x, x, values, AttentionEdges.of_batch(batch)[0])

    def heterogeneous(self, x: torch.Tensor, values: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """Key-value attention (q_i . k_j) / sqrt(d) over self + cross-modal edges."""
        q, k = self.w_q(x, batch.type_counts), self.w_k(x, batch.type_counts)
        return self._heterogeneous(q, k, values, AttentionEdges.of_batch(batch)[1])

    def _homogeneous(
        self, x_dst: torch.Tensor, x_src: torch.Tensor, values: torch.Tensor, edges: AttentionEdges
    ) -> torch.Tensor:
        x_a = (x_dst.unsqueeze(1) * self.a_homo.to(x_dst.dtype)).reshape(-1, x_dst.shape[1])  # row i*R+r
        logits = F.leaky_relu(sddmm(edges.logit, x_a, x_src), 0.2)
        return _aggregate(logits, values, edges, self.attn_dropout)

    def _heterogeneous(
        self, q: torch.Tensor, k: torch.Tensor, values: torch.Tensor, edges: AttentionEdges
    ) -> torch.Tensor:
        logits = sddmm(edges.logit, q, k) / math.sqrt(self.dim)
        return _aggregate(logits, values, edges, self.attn_dropout)

    def _add(self, state: torch.Tensor, message: torch.Tensor) -> torch.Tensor:
        """A phase's output: ``message`` on top of the residual ``state``, or alone."""
        return state + message if self.residual else message

    def forward(self, h: torch.Tensor, batch: GraphBatch, rows: torch.Tensor | None = None) -> torch.Tensor:
        """New states of all nodes, or only of ``rows`` (ITEM nodes: the readout of a last layer).

        Restricting to ``rows`` gives exactly those rows of the full output, but the second
        phases, the gate and the layer norm run for those rows only.
        """
        values = self.w_v(h, batch.type_counts)
        homo_values = values if self.projected_homogeneous else h
        if self.update == "sync":
            out = self._add(h, self.homogeneous(h, homo_values, batch) + self.heterogeneous(h, values, batch))
            return self.norm(out if rows is None else out[rows])
        invasive = self.fusion == "invasive"
        # first phases on every node: the second phases read them as neighbour states
        h_a = self._add(h, self.homogeneous(h, homo_values, batch))  # path A: sequential first
        h_b = self._add(h, self.heterogeneous(h, values, batch))  # path B: cross-modal first
        values_a = self.w_v(h_a, batch.type_counts) if invasive else values
        if invasive:
            values_b = self.w_v(h_b, batch.type_counts) if self.projected_homogeneous else h_b
        else:
            values_b = homo_values
        if rows is None:
            out_a = self._add(h_a, self.heterogeneous(h_a, values_a, batch))
            out_b = self._add(h_b, self.homogeneous(h_b, values_b, batch))
        else:
            homo_edges, hetero_edges = AttentionEdges.into_rows(batch, rows)
            q = self.w_q.maps[NODE_TYPES.index("item")](h_a[rows])
            k = self.w_k(h_a, batch.type_counts)
            out_a = self._add(h_a[rows], self._heterogeneous(q, k, values_a, hetero_edges))
            out_b = self._add(h_b[rows], self._homogeneous(h_b[rows], h_b, values_b, homo_edges))
        paths = torch.stack([out_a, out_b], dim=1)  # [N, 2, d]
        weights = self._gate_weights(self.gate_mlp(paths).squeeze(-1).float())
        return self.norm((weights.unsqueeze(-1).to(paths.dtype) * paths).sum(1))

    def _gate_weights(self, scores: torch.Tensor) -> torch.Tensor:
        if self.gate == "soft":
            return scores.softmax(-1)
        if self.training:
            return F.gumbel_softmax(scores, tau=1.0, hard=True, dim=-1)
        return F.one_hot(scores.argmax(-1), 2).to(scores.dtype)
