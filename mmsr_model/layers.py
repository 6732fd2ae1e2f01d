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
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from mmsr_model.config import MMSRArchitecture
from mmsr_model.graph import HOMO_RELATIONS, NODE_TYPES, GraphBatch
from mmsr_model.sparse import Pattern, sddmm, segment_softmax, spmm

#: devices on which a layer restricted to readout rows runs its first phases only for the nodes
#: its second phases read: on a CPU that saves arithmetic (Beauty: 4-5x fewer first-phase edges);
#: on a GPU the arithmetic is small and the restriction's index work adds host syncs to a step
#: that is bound by launches and syncs already (benchmarks/results/speed.md)
PRUNED_DEVICES = frozenset({"cpu"})


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
    #: of a restriction: the batch's edges these are (by index), out of ``n_all``
    kept: torch.Tensor | None = None
    n_all: int = 0

    @classmethod
    def of_batch(cls, batch: GraphBatch) -> tuple[AttentionEdges, AttentionEdges]:
        """Homogeneous and heterogeneous edges into every node."""
        n = batch.num_nodes
        return (
            cls(batch.homo_logit, batch.homo_agg, batch.homo_index[1], n),
            cls(batch.hetero_agg, batch.hetero_agg, batch.hetero_index[1], n),
        )

    @classmethod
    def into_rows(
        cls,
        batch: GraphBatch,
        rows: torch.Tensor,
        sources: torch.Tensor | None = None,
        same_stream: bool = False,
    ) -> tuple[AttentionEdges, AttentionEdges]:
        """Homogeneous and heterogeneous edges into ``rows`` only (destination i = ``rows[i]``).

        When ``rows`` are ascending node ids on the CPU (the readout rows and the read nodes of
        :func:`mmsr_model.graph.build_graphs`' batches are), the kept edges keep the batch's
        (destination, relation, source) order and need no sort (on CUDA the check would wait for
        the device). With
        ``sources`` (ascending node ids holding every source of those edges), source j is
        node ``sources[j]``. With ``same_stream`` each edge set records which of the batch's
        edges it kept, so that dropout draws the mask of the unrestricted edges (a restriction
        that stands in for the full computation then draws the same random numbers).
        """
        n, n_rel = batch.num_nodes, len(HOMO_RELATIONS)
        position = _positions(rows, n)
        in_order = not rows.is_cuda and bool((rows[1:] > rows[:-1]).all())
        source_position = None if sources is None else _positions(sources, n)

        def restrict(index: torch.Tensor, rel: torch.Tensor | None) -> AttentionEdges:
            kept = (position[index[1]] >= 0).nonzero().squeeze(1)
            src, dst = index[0][kept], position[index[1][kept]]
            key = dst if rel is None else dst * n_rel + rel[kept]
            if not in_order:
                order = torch.argsort(key, stable=True)
                src, dst, key, kept = src[order], dst[order], key[order], kept[order]
            n_src = n
            if source_position is not None:
                src, n_src = source_position[src], len(sources)
            agg = Pattern.from_sorted(dst, src, len(rows), n_src)
            logit = agg if rel is None else Pattern.from_sorted(key, src, len(rows) * n_rel, n_src)
            if not same_stream:
                return cls(logit, agg, dst, len(rows))
            return cls(logit, agg, dst, len(rows), kept, index.shape[1])

        return restrict(batch.homo_index, batch.homo_rel), restrict(batch.hetero_index, None)


def _positions(nodes: torch.Tensor, n: int) -> torch.Tensor:
    """``position[nodes[i]] = i``, -1 for every other of the ``n`` nodes."""
    position = torch.full((n,), -1, dtype=torch.long, device=nodes.device)
    position[nodes] = torch.arange(len(nodes), device=nodes.device)
    return position


def type_counts_of(batch: GraphBatch, nodes: torch.Tensor) -> tuple[int, ...]:
    """How many of the ascending node ids ``nodes`` are of each type (nodes are type-major)."""
    ends = torch.tensor(batch.type_counts, device=nodes.device).cumsum(0)
    return tuple(torch.searchsorted(nodes, ends).diff(prepend=ends.new_zeros(1)).tolist())


class NodeSubset(NamedTuple):
    """Ascending node ids of a batch and how many of them are of each type."""

    nodes: torch.Tensor
    type_counts: tuple[int, ...]


def read_by_second_phase(batch: GraphBatch, rows: torch.Tensor) -> NodeSubset:
    """``rows`` and every node with an edge into them: the only nodes whose first-phase states a
    second phase restricted to ``rows`` reads."""
    is_row = torch.zeros(batch.num_nodes, dtype=torch.bool, device=rows.device)
    is_row[rows] = True
    read = is_row.clone()
    for index in (batch.homo_index, batch.hetero_index):
        read[index[0][is_row[index[1]]]] = True
    nodes = read.nonzero().squeeze(1)
    return NodeSubset(nodes, type_counts_of(batch, nodes))


def _aggregate(
    logits: torch.Tensor, values: torch.Tensor, edges: AttentionEdges, dropout: nn.Dropout
) -> torch.Tensor:
    """Softmax of ``logits`` over each destination's incoming edges, then sum of weighted values."""
    alpha = segment_softmax(logits.float(), edges.dst, edges.n_dst)
    return spmm(edges.agg, _edge_dropout(alpha, edges, dropout), values)


def _edge_dropout(alpha: torch.Tensor, edges: AttentionEdges, dropout: nn.Dropout) -> torch.Tensor:
    """``dropout(alpha)``; for a restriction, the kept edges' entries of the mask the unrestricted
    edges would draw, so that restricting leaves the random stream and every result unchanged."""
    if edges.kept is None or not dropout.training or dropout.p == 0:
        return dropout(alpha)
    mask = torch.empty(edges.n_all, dtype=alpha.dtype, device=alpha.device).bernoulli_(1 - dropout.p)
    return alpha * mask[edges.kept].div_(1 - dropout.p)


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

        Restricting to ``rows`` gives exactly those rows of the full output (in training the
        second phases draw attention dropout for their own edges only), but the second phases,
        the gate and the layer norm run for those rows only. On a device in ``PRUNED_DEVICES``
        the first phases run only for the nodes the second ones read (on Beauty about a fifth
        of a batch's nodes and edges), drawing the random numbers they would draw unpruned.
        """
        values = self.w_v(h, batch.type_counts)
        homo_values = values if self.projected_homogeneous else h
        pruned = rows is not None and h.device.type in PRUNED_DEVICES
        if self.update == "sync":
            if not pruned:
                out = self._add(
                    h, self.homogeneous(h, homo_values, batch) + self.heterogeneous(h, values, batch)
                )
                return self.norm(out if rows is None else out[rows])
            homo_edges, hetero_edges = AttentionEdges.into_rows(batch, rows, same_stream=True)
            homo = self._homogeneous(h[rows], h, homo_values, homo_edges)
            q = self.w_q.maps[NODE_TYPES.index("item")](h[rows])
            hetero = self._heterogeneous(q, self.w_k(h, batch.type_counts), values, hetero_edges)
            return self.norm(self._add(h[rows], homo + hetero))
        read = read_by_second_phase(batch, rows) if pruned else None
        h_a, h_b = self._first_phases(h, values, homo_values, batch, read)
        out_a, out_b = self._second_phases(h_a, h_b, values, homo_values, batch, rows, read)
        paths = torch.stack([out_a, out_b], dim=1)  # [N, 2, d]
        weights = self._gate_weights(self.gate_mlp(paths).squeeze(-1).float())
        return self.norm((weights.unsqueeze(-1).to(paths.dtype) * paths).sum(1))

    def _first_phases(
        self,
        h: torch.Tensor,
        values: torch.Tensor,
        homo_values: torch.Tensor,
        batch: GraphBatch,
        read: NodeSubset | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Path A's homogeneous and path B's heterogeneous phase: the states of every node, or of
        the nodes ``read`` only (in that order)."""
        if read is None:
            h_a = self._add(h, self.homogeneous(h, homo_values, batch))
            return h_a, self._add(h, self.heterogeneous(h, values, batch))
        homo_edges, hetero_edges = AttentionEdges.into_rows(batch, read.nodes, same_stream=True)
        h_read = h[read.nodes]
        h_a = self._add(h_read, self._homogeneous(h_read, h, homo_values, homo_edges))
        q, k = self.w_q(h_read, read.type_counts), self.w_k(h, batch.type_counts)
        return h_a, self._add(h_read, self._heterogeneous(q, k, values, hetero_edges))

    def _second_phases(
        self,
        h_a: torch.Tensor,
        h_b: torch.Tensor,
        values: torch.Tensor,
        homo_values: torch.Tensor,
        batch: GraphBatch,
        rows: torch.Tensor | None,
        read: NodeSubset | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Path A's heterogeneous and path B's homogeneous phase into every node or into ``rows``;
        ``read``: the nodes whose states ``h_a`` and ``h_b`` hold, when not all of them."""
        counts = batch.type_counts if read is None else read.type_counts
        if self.fusion == "invasive":
            values_a = self.w_v(h_a, counts)
            values_b = self.w_v(h_b, counts) if self.projected_homogeneous else h_b
        else:
            values_a, values_b = (
                (values, homo_values) if read is None else (values[read.nodes], homo_values[read.nodes])
            )
        if rows is None:
            out_a = self._add(h_a, self.heterogeneous(h_a, values_a, batch))
            return out_a, self._add(h_b, self.homogeneous(h_b, values_b, batch))
        if read is None:
            homo_edges, hetero_edges = AttentionEdges.into_rows(batch, rows)
            at = rows
        else:  # rows are among the ascending read nodes: their positions there by bisection
            homo_edges, hetero_edges = AttentionEdges.into_rows(batch, rows, read.nodes)
            at = torch.searchsorted(read.nodes, rows)
        q = self.w_q.maps[NODE_TYPES.index("item")](h_a[at])
        out_a = self._add(h_a[at], self._heterogeneous(q, self.w_k(h_a, counts), values_a, hetero_edges))
        return out_a, self._add(h_b[at], self._homogeneous(h_b[at], h_b, values_b, homo_edges))

    def _gate_weights(self, scores: torch.Tensor) -> torch.Tensor:
        if self.gate == "soft":
            return scores.softmax(-1)
        if self.training:
            return F.gumbel_softmax(scores, tau=1.0, hard=True, dim=-1)
        return F.one_hot(scores.argmax(-1), 2).to(scores.dtype)
