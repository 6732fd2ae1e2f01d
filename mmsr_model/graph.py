"""MSGraph building: padded item histories -> one sparse graph batch, in torch on their device.

:func:`build_graphs` is vectorised over the whole batch (no loop over histories, nodes or
edges) and builds every tensor on the device the histories are on, so on CUDA a training
step never waits for the CPU to build its graph. Nodes are ordered type-major, then by
history, then by value; edges are sorted by (destination, relation, source).

Conventions of the MSGraph (the MMSR paper's modality-enriched sequence graph):

* node types ``item``, ``image``, ``text``; item nodes are the UNIQUE items of the
  history, code nodes the unique codes of those items ("raw" modality nodes are
  simply codes whose value is the item id);
* edges point from the node that sends the message (``src``) to the node that
  aggregates it (``dst``). A transition ``u -> v`` (``v`` right after ``u``) gives the
  forward edge ``u -> v`` typed ``out`` and the reverse edge ``v -> u`` typed ``in``;
  when ``v -> u`` also occurs both edges are typed ``both``. Repeats of the same node
  (``u -> u``) add nothing beyond the self-loop;
* cross-modal edges link an item with its codes and an item's image codes with its
  text codes, each direction its own type;
* positions are counted from the END of the history (the last item has position 0),
  so the signal generalises across history lengths; a node's position signal is the
  mean over all its occurrences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np
import torch

from mmsr_model.sparse import Pattern


class NodeType(IntEnum):
    """Node types, in the type-major order nodes of a batch follow."""

    ITEM = 0
    IMAGE = 1
    TEXT = 2


class HomoRel(IntEnum):
    """Relations of the homogeneous (sequential) attention, one attention vector each."""

    SELF = 0
    OUT = 1  # u -> v where v directly followed u
    IN = 2  # the reverse edge of an OUT transition
    BOTH = 3  # u -> v and v -> u both occurred


class HeteroRel(IntEnum):
    """Relations of the heterogeneous (cross-modal) attention; each reverse is the forward + 1."""

    SELF = 0
    ITEM_TO_IMAGE = 1
    IMAGE_TO_ITEM = 2
    ITEM_TO_TEXT = 3
    TEXT_TO_ITEM = 4
    IMAGE_TO_TEXT = 5
    TEXT_TO_IMAGE = 6


NODE_TYPES = tuple(t.name.lower() for t in NodeType)
HOMO_RELATIONS = tuple(r.name.lower() for r in HomoRel)
HETERO_RELATIONS = tuple(r.name.lower().replace("_to_", "->") for r in HeteroRel)
#: the 10 edge types of the graph ("self" is shared by both attentions)
EDGE_TYPES = tuple(dict.fromkeys(HOMO_RELATIONS + HETERO_RELATIONS))
#: the relation of a cross-modal pair (a, b), keyed by (type of a, type of b) with a of the lower type
CROSS_RELATION = {
    (NodeType.ITEM, NodeType.IMAGE): HeteroRel.ITEM_TO_IMAGE,
    (NodeType.ITEM, NodeType.TEXT): HeteroRel.ITEM_TO_TEXT,
    (NodeType.IMAGE, NodeType.TEXT): HeteroRel.IMAGE_TO_TEXT,
}


@dataclass
class GraphBatch:
    """A batch of ``num_graphs`` MSGraphs as flat tensors (nodes ordered type-major).

    ``type_counts[i]`` nodes of ``NODE_TYPES[i]`` follow each other, so node
    projections are three slices; ``node_value`` is the item id or code id.
    """

    node_value: torch.Tensor
    node_sample: torch.Tensor
    type_counts: tuple[int, int, int]
    occ_node: torch.Tensor
    occ_pos: torch.Tensor
    homo_index: torch.Tensor  # [2, E] (src, dst), sorted by (dst, rel)
    homo_rel: torch.Tensor
    hetero_index: torch.Tensor  # sorted by dst
    hetero_rel: torch.Tensor
    last_node: torch.Tensor
    num_graphs: int
    homo_logit: Pattern  # rows dst * len(HOMO_RELATIONS) + rel: one row per (node, relation vector)
    homo_agg: Pattern  # rows dst
    hetero_agg: Pattern

    @property
    def num_nodes(self) -> int:
        return sum(self.type_counts)

    def to(self, device: torch.device) -> GraphBatch:
        moved = {
            f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor | Pattern) else v)
            for f in fields(self)
        }
        return GraphBatch(**moved)


def build_graphs(items: torch.Tensor, codes: Mapping[int, torch.Tensor]) -> GraphBatch:
    """The MSGraphs of the histories ``items`` ``[B, L]``, left-padded with -1 (last item in the last column).

    ``codes[t]`` is ``(n_items, k)`` with -1 = no code, for a :class:`NodeType` ``t`` (``IMAGE`` or
    ``TEXT``); empty ``codes`` gives ID-only graphs. Every tensor is built on ``items``' device.
    """
    n_graphs, width = items.shape
    valid = items >= 0
    lengths = valid.sum(1)
    if n_graphs == 0 or int(lengths.min()) < 1:
        raise ValueError("every history must hold at least one item")
    sample, col = valid.nonzero(as_tuple=True)  # every position, history-major
    item = items[sample, col]
    pos = col - (width - lengths)[sample]  # index inside its history
    slots = {t: codes[t][item] for t in sorted(codes)}  # (positions, k) code of each slot, -1 = none
    n_values = 1 + int(torch.stack([item.max(), *(c.max() for c in slots.values() if c.numel())]).max())
    occ = _occurrences(sample, pos, item, slots, n_graphs, n_values)
    node_key, node_of = torch.unique(occ.key, sorted=True, return_inverse=True)
    n_nodes = node_key.shape[0]
    node_type = node_key // (n_graphs * n_values)
    counts = torch.bincount(node_type, minlength=len(NodeType)).tolist()
    item_node = node_of[: item.shape[0]]  # item occurrences come first
    grids = {}
    for t, (ok, start) in occ.code_cells.items():
        grids[t] = torch.full_like(slots[t], -1).masked_scatter_(ok, node_of[start:])
    homo = _homo_edges(pos, item_node, grids, n_nodes)
    hetero = _hetero_edges(item_node, grids, node_type, n_nodes)
    n_homo = len(HomoRel)
    return GraphBatch(
        node_value=node_key % n_values,
        node_sample=(node_key // n_values) % n_graphs,
        type_counts=(counts[0], counts[1], counts[2]),
        occ_node=node_of[occ.order],
        occ_pos=((lengths - 1)[occ.sample] - occ.pos)[occ.order],
        homo_index=homo[:2],
        homo_rel=homo[2],
        hetero_index=hetero[:2],
        hetero_rel=hetero[2],
        last_node=item_node[lengths.cumsum(0) - 1],
        num_graphs=n_graphs,
        homo_logit=Pattern.from_sorted(homo[1] * n_homo + homo[2], homo[0], n_nodes * n_homo, n_nodes),
        homo_agg=Pattern.from_sorted(homo[1], homo[0], n_nodes, n_nodes),
        hetero_agg=Pattern.from_sorted(hetero[1], hetero[0], n_nodes, n_nodes),
    )


@dataclass(frozen=True)
class _Occurrences:
    """Every (history, type, value) occurrence: the items, then each code type's filled slots."""

    key: torch.Tensor  # (type, history, value) as one sortable number: the node order
    sample: torch.Tensor
    pos: torch.Tensor
    order: torch.Tensor  # history-major order (then type, position, slot): the position signal's order
    code_cells: dict[int, tuple[torch.Tensor, int]]  # per code type: filled slots, first occurrence


def _occurrences(
    sample: torch.Tensor,
    pos: torch.Tensor,
    item: torch.Tensor,
    slots: Mapping[int, torch.Tensor],
    n_graphs: int,
    n_values: int,
) -> _Occurrences:
    keys, samples, positions = [sample * n_values + item], [sample], [pos]
    code_cells = {}
    start = item.shape[0]
    for t, slot in slots.items():
        ok = slot >= 0
        s = sample[:, None].expand_as(slot)[ok]
        keys.append((t * n_graphs + s) * n_values + slot[ok])
        samples.append(s)
        positions.append(pos[:, None].expand_as(slot)[ok])
        code_cells[t] = (ok, start)
        start += s.shape[0]
    all_samples = torch.cat(samples)
    return _Occurrences(
        key=torch.cat(keys),
        sample=all_samples,
        pos=torch.cat(positions),
        order=torch.sort(all_samples, stable=True).indices,
        code_cells=code_cells,
    )


def _all_pairs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (a slot, b slot) pair of each row where both hold a node.

    ``a`` is ``(rows, ka)``, ``b`` is ``(rows, kb)``, -1 = no node.
    """
    a, b = a[:, :, None], b[:, None, :]
    ok = (a >= 0) & (b >= 0)
    return a.expand_as(ok)[ok], b.expand_as(ok)[ok]


def _distinct(a: torch.Tensor, b: torch.Tensor, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct (a, b) pairs, sorted."""
    pair = a * n_nodes + b
    if pair.is_cpu:  # numpy's int64 sort is several times faster than torch.unique's on the CPU
        ordered = np.sort(pair.numpy())
        keep = np.empty(ordered.shape[0], dtype=bool)
        keep[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
        pair = torch.from_numpy(ordered[keep])
    else:
        pair = torch.unique(pair, sorted=True)
    return pair // n_nodes, pair % n_nodes


def _sorted_edges(
    src: list[torch.Tensor], dst: list[torch.Tensor], rel: list[torch.Tensor], n_rel: int, n_nodes: int
) -> torch.Tensor:
    """``[3, E]`` (src, dst, rel) sorted by (dst, rel, src): the order the sparse patterns need.

    The edges are distinct, so their keys are too and every sort gives the same order; on the
    CPU numpy's (a SIMD quicksort, several times faster than ``torch.argsort`` for int64).
    """
    edges = torch.stack([torch.cat(src), torch.cat(dst), torch.cat(rel)])
    key = (edges[1] * n_rel + edges[2]) * n_nodes + edges[0]
    order = torch.from_numpy(np.argsort(key.numpy())) if key.is_cpu else torch.argsort(key)
    return edges[:, order]


def _homo_edges(
    pos: torch.Tensor, item_node: torch.Tensor, grids: Mapping[int, torch.Tensor], n_nodes: int
) -> torch.Tensor:
    """Self-loops and the typed transitions between consecutive positions (items, and every code of
    one item to every code of the next); a move from a node to itself adds nothing."""
    nxt = (pos > 0).nonzero().squeeze(1)
    srcs, dsts = [item_node[nxt - 1]], [item_node[nxt]]
    for grid in grids.values():
        src, dst = _all_pairs(grid[nxt - 1], grid[nxt])
        srcs.append(src)
        dsts.append(dst)
    src, dst = torch.cat(srcs), torch.cat(dsts)
    moving = src != dst
    src, dst = _distinct(src[moving], dst[moving], n_nodes)
    fwd, rev = src * n_nodes + dst, dst * n_nodes + src  # fwd is sorted
    hit = torch.searchsorted(fwd, rev).clamp(max=max(fwd.shape[0] - 1, 0))
    both = fwd[hit] == rev if fwd.shape[0] else torch.zeros_like(fwd, dtype=torch.bool)
    loops = torch.arange(n_nodes, device=pos.device)
    one_way = ~both
    return _sorted_edges(
        [loops, src, dst[one_way]],
        [loops, dst, src[one_way]],
        [
            torch.full_like(loops, int(HomoRel.SELF)),
            torch.where(both, int(HomoRel.BOTH), int(HomoRel.OUT)),
            torch.full_like(dst[one_way], int(HomoRel.IN)),
        ],
        len(HomoRel),
        n_nodes,
    )


def _hetero_edges(
    item_node: torch.Tensor, grids: Mapping[int, torch.Tensor], node_type: torch.Tensor, n_nodes: int
) -> torch.Tensor:
    """Self-loops and the cross-modal pairs inside one position (an item and each of its codes, each
    image code and each text code of the same item), both directions typed."""
    a_parts, b_parts = [], []
    for grid in grids.values():
        ok = grid >= 0
        a_parts.append(item_node[:, None].expand_as(grid)[ok])
        b_parts.append(grid[ok])
    if NodeType.IMAGE in grids and NodeType.TEXT in grids:
        image, text = _all_pairs(grids[NodeType.IMAGE], grids[NodeType.TEXT])
        a_parts.append(image)
        b_parts.append(text)
    loops = torch.arange(n_nodes, device=item_node.device)
    a, b = _distinct(torch.cat([loops[:0], *a_parts]), torch.cat([loops[:0], *b_parts]), n_nodes)
    relation_of = torch.zeros(len(NodeType), len(NodeType), dtype=torch.int64, device=loops.device)
    for (type_a, type_b), rel in CROSS_RELATION.items():
        relation_of[type_a, type_b] = int(rel)
    rel = relation_of[node_type[a], node_type[b]]
    return _sorted_edges(
        [loops, a, b],
        [loops, b, a],
        [torch.full_like(loops, int(HeteroRel.SELF)), rel, rel + 1],  # each reverse follows its forward
        len(HeteroRel),
        n_nodes,
    )


def describe(batch: GraphBatch) -> list[dict[str, object]]:
    """Each graph in readable form: nodes ``(type, value)``, typed edges, mean positions.

    For tests and debugging; order-independent, so two batches can be compared.
    """
    types = np.repeat(np.arange(len(NODE_TYPES)), batch.type_counts)
    names = [(NODE_TYPES[t], int(v)) for t, v in zip(types, batch.node_value.tolist(), strict=True)]
    sample = batch.node_sample.numpy()
    pos_sum = np.zeros(batch.num_nodes)
    pos_cnt = np.zeros(batch.num_nodes)
    np.add.at(pos_sum, batch.occ_node.numpy(), batch.occ_pos.numpy())
    np.add.at(pos_cnt, batch.occ_node.numpy(), 1)
    out: list[dict[str, object]] = [
        {"nodes": set(), "edges": set(), "positions": {}, "last": names[int(batch.last_node[g])]}
        for g in range(batch.num_graphs)
    ]
    for i, name in enumerate(names):
        out[sample[i]]["nodes"].add(name)  # type: ignore[union-attr]
        out[sample[i]]["positions"][name] = pos_sum[i] / pos_cnt[i]  # type: ignore[index]
    for index, rel, rel_names in (
        (batch.homo_index, batch.homo_rel, HOMO_RELATIONS),
        (batch.hetero_index, batch.hetero_rel, HETERO_RELATIONS),
    ):
        for s, d, r in zip(index[0].tolist(), index[1].tolist(), rel.tolist(), strict=True):
            if sample[s] != sample[d]:
                raise AssertionError(f"edge {names[s]} -> {names[d]} crosses graphs")
            out[sample[s]]["edges"].add((names[s], names[d], rel_names[r]))  # type: ignore[union-attr]
    return out
