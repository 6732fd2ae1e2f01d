"""The numpy graph builder the torch builder replaced, kept only as the reference of the equivalence tests.

Stamped full-sequence graphs (every node and edge stamped with its first position),
prefix selection by masks, and the type-major reordering, exactly as they built
every ``GraphBatch`` before :func:`mmsr_model.graph.build_graphs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.graph import (
    CROSS_RELATION,
    HOMO_RELATIONS,
    NODE_TYPES,
    GraphBatch,
    HeteroRel,
    HomoRel,
    NodeType,
)
from mmsr_model.sparse import Pattern

NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class StampedGraphs:
    """Full-sequence graphs of ``G`` sequences, every part stamped with its first position.

    ``*_ptr`` arrays are CSR offsets per graph; node references are global rows of
    the node arrays, which are sorted by (graph, type, value).
    """

    node_ptr: np.ndarray
    node_type: np.ndarray
    node_value: np.ndarray
    node_first: np.ndarray
    seq_ptr: np.ndarray  # offsets of each sequence's positions in item_node_at
    item_node_at: np.ndarray  # node row of the item at every position
    occ_ptr: np.ndarray
    occ_node: np.ndarray
    occ_pos: np.ndarray
    trans_ptr: np.ndarray
    trans_src: np.ndarray
    trans_dst: np.ndarray
    trans_first: np.ndarray
    trans_rev_first: np.ndarray  # first position of the reverse transition, NEVER if none
    cross_ptr: np.ndarray
    cross_a: np.ndarray  # node of the lower type (item before image before text)
    cross_b: np.ndarray
    cross_rel: np.ndarray  # HeteroRel of a -> b; b -> a is cross_rel + 1
    cross_first: np.ndarray


@dataclass(frozen=True)
class _Positions:
    """Every position of every sequence, flattened."""

    seq_ptr: np.ndarray  # offsets of each sequence in ``item``
    item: np.ndarray  # item id at each position
    graph: np.ndarray  # sequence index of each position
    pos: np.ndarray  # index of the position inside its sequence


@dataclass(frozen=True)
class _Occurrences:
    """Every (graph, type, value, position) a node occurs at: the items first, then each type's codes."""

    graph: np.ndarray
    type: np.ndarray
    value: np.ndarray
    pos: np.ndarray
    #: per code type: which (position, slot) cells hold a code, and where their occurrences start
    code_slots: dict[int, tuple[np.ndarray, int]]


@dataclass(frozen=True)
class _Nodes:
    """Unique (graph, type, value) nodes, sorted by that key, and the node of each occurrence."""

    graph: np.ndarray
    type: np.ndarray
    value: np.ndarray
    first: np.ndarray  # position of the first occurrence
    of_occurrence: np.ndarray


def _positions(sequences: Sequence[np.ndarray]) -> _Positions:
    n_graphs = len(sequences)
    lens = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=n_graphs)
    if n_graphs and lens.min() == 0:
        raise ValueError("every history must hold at least one item")
    seq_ptr = np.concatenate(([0], np.cumsum(lens)))
    item = np.concatenate(sequences).astype(np.int64) if n_graphs else np.zeros(0, np.int64)
    graph = np.repeat(np.arange(n_graphs), lens)
    return _Positions(seq_ptr, item, graph, np.arange(len(item)) - seq_ptr[graph])


def _occurrences(at: _Positions, codes: Mapping[int, np.ndarray]) -> _Occurrences:
    n_pos = len(at.item)
    graphs, types, values, positions = [at.graph], [np.zeros(n_pos, np.int64)], [at.item], [at.pos]
    code_slots: dict[int, tuple[np.ndarray, int]] = {}
    offset = n_pos
    for ntype in sorted(codes):
        slot_codes = np.asarray(codes[ntype], dtype=np.int64)[at.item]  # (positions, k)
        valid = slot_codes >= 0
        code_slots[ntype] = (valid, offset)
        k = slot_codes.shape[1]
        n_valid = int(valid.sum())
        graphs.append(np.repeat(at.graph, k)[valid.ravel()])
        types.append(np.full(n_valid, ntype, np.int64))
        values.append(slot_codes[valid])
        positions.append(np.repeat(at.pos, k)[valid.ravel()])
        offset += n_valid
    graph, ntype, value, pos = (np.concatenate(x) for x in (graphs, types, values, positions))
    return _Occurrences(graph, ntype, value, pos, code_slots)


def _nodes(occ: _Occurrences) -> _Nodes:
    n_values = int(occ.value.max()) + 1 if len(occ.value) else 1
    n_types = len(NodeType)
    key = (occ.graph * n_types + occ.type) * n_values + occ.value
    order = np.lexsort((occ.pos, key))
    key_sorted = key[order]
    head = np.ones(len(key_sorted), dtype=bool)
    head[1:] = key_sorted[1:] != key_sorted[:-1]
    node_key = key_sorted[head]
    of_occurrence = np.empty(len(key), np.int64)
    of_occurrence[order] = np.cumsum(head) - 1
    return _Nodes(
        graph=node_key // (n_values * n_types),
        type=(node_key // n_values) % n_types,
        value=node_key % n_values,
        first=occ.pos[order][head],
        of_occurrence=of_occurrence,
    )


def _slot_nodes(occ: _Occurrences, occ_node: np.ndarray) -> dict[int, np.ndarray]:
    """Per code type, the node row of every (position, slot) cell; -1 where the item has no such code."""
    slot_node: dict[int, np.ndarray] = {}
    for ntype, (valid, offset) in occ.code_slots.items():
        grid = np.full(valid.shape, -1, np.int64)
        grid[valid] = occ_node[offset : offset + int(valid.sum())]
        slot_node[ntype] = grid
    return slot_node


def _all_pairs(a: np.ndarray, b: np.ndarray, stamp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (a slot, b slot) pair of each row where both hold a node, with the row's stamp.

    ``a`` is ``(rows, ka)``, ``b`` is ``(rows, kb)``, -1 = no node.
    """
    a, b = a[:, :, None], b[:, None, :]
    shape = np.broadcast_shapes(a.shape, b.shape)
    ok = (a >= 0) & (b >= 0)
    return (
        np.broadcast_to(a, shape)[ok],
        np.broadcast_to(b, shape)[ok],
        np.broadcast_to(stamp[:, None, None], shape)[ok],
    )


def _dedup_pairs(
    a: np.ndarray, b: np.ndarray, first: np.ndarray, n_nodes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs sorted by (a, b), each with its minimum stamp."""
    key = a * n_nodes + b
    order = np.lexsort((first, key))
    key, first = key[order], first[order]
    head = np.ones(len(key), dtype=bool)
    head[1:] = key[1:] != key[:-1]
    key = key[head]
    return key // n_nodes, key % n_nodes, first[head]


def _transitions(
    at: _Positions, item_node_at: np.ndarray, slot_node: dict[int, np.ndarray], n_nodes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct moves from position i-1 to i (items, and every code of one item to every code of
    the next), stamped i; a move from a node to itself adds nothing beyond its self-loop.

    Returns source, destination, stamp, and the stamp of the reverse move (``NEVER`` if none).
    """
    nxt = np.flatnonzero(at.pos > 0)
    stamp = at.pos[nxt]
    srcs, dsts, firsts = [item_node_at[nxt - 1]], [item_node_at[nxt]], [stamp]
    for grid in slot_node.values():
        src, dst, first = _all_pairs(grid[nxt - 1], grid[nxt], stamp)
        srcs.append(src)
        dsts.append(dst)
        firsts.append(first)
    src, dst, first = (np.concatenate(x) for x in (srcs, dsts, firsts))
    moving = src != dst
    src, dst, first = _dedup_pairs(src[moving], dst[moving], first[moving], n_nodes)
    fwd_key = src * n_nodes + dst
    rev_key = dst * n_nodes + src
    hit = np.searchsorted(fwd_key, rev_key).clip(max=max(len(fwd_key) - 1, 0))
    found = fwd_key[hit] == rev_key if len(fwd_key) else np.zeros(0, bool)
    rev_first = np.where(found, first[hit] if len(fwd_key) else 0, NEVER)
    return src, dst, first, rev_first


def _cross_pairs(
    at: _Positions,
    item_node_at: np.ndarray,
    slot_node: dict[int, np.ndarray],
    node_type: np.ndarray,
    n_nodes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct cross-modal pairs inside one position: item with each of its codes, and each image
    code with each text code of the same item; stamped with the position.

    Returns node a (the lower type), node b, the ``HeteroRel`` of a -> b, and the stamp.
    """
    a_parts, b_parts, first_parts = [], [], []
    for grid in slot_node.values():
        ok = grid >= 0
        a_parts.append(np.broadcast_to(item_node_at[:, None], grid.shape)[ok])
        b_parts.append(grid[ok])
        first_parts.append(np.broadcast_to(at.pos[:, None], grid.shape)[ok])
    if NodeType.IMAGE in slot_node and NodeType.TEXT in slot_node:
        image, text, first = _all_pairs(slot_node[NodeType.IMAGE], slot_node[NodeType.TEXT], at.pos)
        a_parts.append(image)
        b_parts.append(text)
        first_parts.append(first)
    if not a_parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    a, b, first = (np.concatenate(x) for x in (a_parts, b_parts, first_parts))
    cross_a, cross_b, cross_first = _dedup_pairs(a, b, first, n_nodes)
    # the relation follows from the node types of the pair
    relation_of = np.zeros((len(NodeType), len(NodeType)), np.int64)
    for (type_a, type_b), rel in CROSS_RELATION.items():
        relation_of[type_a, type_b] = rel
    return cross_a, cross_b, relation_of[node_type[cross_a], node_type[cross_b]], cross_first


def _ptr(graph_of_row: np.ndarray, n_graphs: int) -> np.ndarray:
    return np.searchsorted(graph_of_row, np.arange(n_graphs + 1)).astype(np.int64)


def build_stamped(sequences: Sequence[np.ndarray], codes: Mapping[int, np.ndarray]) -> StampedGraphs:
    """Stamped full graphs of ``sequences``; ``codes[type]`` is ``(n_items, k)`` with -1 = none.

    ``type`` is a :class:`NodeType` (``IMAGE`` or ``TEXT``); empty ``codes`` gives ID-only graphs.
    """
    n_graphs = len(sequences)
    at = _positions(sequences)
    occ = _occurrences(at, codes)
    nodes = _nodes(occ)
    n_nodes = len(nodes.type)
    item_node_at = nodes.of_occurrence[: len(at.item)]  # item occurrences come first
    slot_node = _slot_nodes(occ, nodes.of_occurrence)
    trans_src, trans_dst, trans_first, trans_rev_first = _transitions(at, item_node_at, slot_node, n_nodes)
    cross_a, cross_b, cross_rel, cross_first = _cross_pairs(at, item_node_at, slot_node, nodes.type, n_nodes)
    occ_graph = nodes.graph[nodes.of_occurrence]
    occ_order = np.argsort(occ_graph, kind="stable")
    return StampedGraphs(
        node_ptr=_ptr(nodes.graph, n_graphs),
        node_type=nodes.type,
        node_value=nodes.value,
        node_first=nodes.first,
        seq_ptr=at.seq_ptr,
        item_node_at=item_node_at,
        occ_ptr=_ptr(occ_graph[occ_order], n_graphs),
        occ_node=nodes.of_occurrence[occ_order],
        occ_pos=occ.pos[occ_order],
        trans_ptr=_ptr(nodes.graph[trans_src], n_graphs),
        trans_src=trans_src,
        trans_dst=trans_dst,
        trans_first=trans_first,
        trans_rev_first=trans_rev_first,
        cross_ptr=_ptr(nodes.graph[cross_a], n_graphs),
        cross_a=cross_a,
        cross_b=cross_b,
        cross_rel=cross_rel,
        cross_first=cross_first,
    )


def from_arrays(
    homo: np.ndarray, hetero: np.ndarray, type_counts: tuple[int, int, int], **rest: object
) -> GraphBatch:
    """Sort the ``[3, E]`` (src, dst, rel) edge arrays as the old builder did and derive their patterns."""
    n = sum(type_counts)
    n_rel = len(HOMO_RELATIONS)
    homo = homo[:, np.argsort(homo[1] * n_rel + homo[2], kind="stable")]
    hetero = hetero[:, np.argsort(hetero[1], kind="stable")]
    ho, he = torch.from_numpy(np.ascontiguousarray(homo)), torch.from_numpy(np.ascontiguousarray(hetero))
    return GraphBatch(
        type_counts=type_counts,
        homo_index=ho[:2],
        homo_rel=ho[2],
        hetero_index=he[:2],
        hetero_rel=he[2],
        homo_logit=Pattern.from_sorted(ho[1] * n_rel + ho[2], ho[0], n * n_rel, n),
        homo_agg=Pattern.from_sorted(ho[1], ho[0], n, n),
        hetero_agg=Pattern.from_sorted(he[1], he[0], n, n),
        **rest,  # type: ignore[arg-type]
    )


def _ranges(ptr: np.ndarray, graphs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the CSR blocks ``graphs`` concatenated, their sample index, and block starts."""
    starts = ptr[graphs]
    lens = ptr[graphs + 1] - starts
    block = np.cumsum(lens) - lens
    sample = np.repeat(np.arange(len(graphs)), lens)
    rows = np.arange(int(lens.sum())) - block[sample] + starts[sample]
    return rows, sample, block


@dataclass
class _Part:
    """Selected graphs in sample-major node order, before the type-major reordering."""

    node_type: np.ndarray
    node_value: np.ndarray
    node_sample: np.ndarray
    occ_node: np.ndarray
    occ_pos: np.ndarray
    homo: np.ndarray  # [3, E] src, dst, rel
    hetero: np.ndarray
    last_node: np.ndarray  # per sample of this part
    samples: np.ndarray  # the batch positions of this part's samples


def _select(sg: StampedGraphs, graphs: np.ndarray, t: np.ndarray, samples: np.ndarray) -> _Part:
    """The prefix ``[:t[i]]`` of stamped graph ``graphs[i]``, for every i."""
    rows, sample, block = _ranges(sg.node_ptr, graphs)
    keep = sg.node_first[rows] < t[sample]
    new_id = np.cumsum(keep) - 1  # position in the selected rows -> compact node id
    base = block - sg.node_ptr[graphs]  # global row + base[sample] = position in rows

    def node_id(global_rows: np.ndarray, of_sample: np.ndarray) -> np.ndarray:
        return new_id[global_rows + base[of_sample]]

    e, es, _ = _ranges(sg.trans_ptr, graphs)
    te = t[es]
    live = sg.trans_first[e] < te
    e, es = e[live], es[live]
    both = sg.trans_rev_first[e] < te[live]
    src, dst = node_id(sg.trans_src[e], es), node_id(sg.trans_dst[e], es)
    rel_fwd = np.where(both, int(HomoRel.BOTH), int(HomoRel.OUT))
    n_sel = int(keep.sum())
    loops = np.arange(n_sel)
    homo = np.concatenate(
        [
            np.stack([loops, loops, np.full(n_sel, int(HomoRel.SELF), np.int64)]),
            np.stack([src, dst, rel_fwd]),
            np.stack([dst[~both], src[~both], np.full(int((~both).sum()), int(HomoRel.IN))]),
        ],
        axis=1,
    )

    c, cs, _ = _ranges(sg.cross_ptr, graphs)
    live = sg.cross_first[c] < t[cs]
    c, cs = c[live], cs[live]
    a, b, rel = node_id(sg.cross_a[c], cs), node_id(sg.cross_b[c], cs), sg.cross_rel[c]
    hetero = np.concatenate(
        [
            np.stack([loops, loops, np.full(n_sel, int(HeteroRel.SELF), np.int64)]),
            np.stack([a, b, rel]),
            np.stack([b, a, rel + 1]),  # each reverse relation follows its forward one
        ],
        axis=1,
    )

    o, os_, _ = _ranges(sg.occ_ptr, graphs)
    live = sg.occ_pos[o] < t[os_]
    o, os_ = o[live], os_[live]
    last = node_id(sg.item_node_at[sg.seq_ptr[graphs] + t - 1], np.arange(len(graphs)))
    return _Part(
        node_type=sg.node_type[rows[keep]],
        node_value=sg.node_value[rows[keep]],
        node_sample=samples[sample[keep]],
        occ_node=node_id(sg.occ_node[o], os_),
        occ_pos=t[os_] - 1 - sg.occ_pos[o],
        homo=homo,
        hetero=hetero,
        last_node=last,
        samples=samples,
    )


def _finish(parts: list[_Part], num_graphs: int) -> GraphBatch:
    """Concatenate parts and reorder nodes type-major into one :class:`GraphBatch`."""
    offsets = np.cumsum([0] + [len(p.node_type) for p in parts])[:-1]
    node_type = np.concatenate([p.node_type for p in parts])
    order = np.argsort(node_type, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))

    def node_refs(name: str) -> np.ndarray:
        return rank[np.concatenate([getattr(p, name) + off for p, off in zip(parts, offsets, strict=True)])]

    def edges(name: str) -> np.ndarray:
        e = np.concatenate(
            [getattr(p, name) + np.array([[off], [off], [0]]) for p, off in zip(parts, offsets, strict=True)],
            axis=1,
        )
        return np.concatenate([rank[e[:2]], e[2:]])

    last_node = np.empty(num_graphs, np.int64)
    last_node[np.concatenate([p.samples for p in parts])] = node_refs("last_node")
    counts = np.bincount(node_type, minlength=len(NODE_TYPES))
    return from_arrays(
        edges("homo"),
        edges("hetero"),
        (int(counts[0]), int(counts[1]), int(counts[2])),
        node_value=torch.from_numpy(np.concatenate([p.node_value for p in parts])[order]),
        node_sample=torch.from_numpy(np.concatenate([p.node_sample for p in parts])[order]),
        occ_node=torch.from_numpy(node_refs("occ_node")),
        occ_pos=torch.from_numpy(np.concatenate([p.occ_pos for p in parts])),
        last_node=torch.from_numpy(last_node),
        num_graphs=num_graphs,
    )


def build_batch(histories: Sequence[np.ndarray], codes: Mapping[int, np.ndarray]) -> GraphBatch:
    """The MSGraphs of arbitrary ``histories`` (direct route, used for inference)."""
    sg = build_stamped(histories, codes)
    n = len(histories)
    lens = np.diff(sg.seq_ptr)
    return _finish([_select(sg, np.arange(n), lens, np.arange(n))], n)


class GraphCache:
    """Stamped full-sequence graphs of one :class:`SequenceData`: prefixes by masks, windows directly."""

    def __init__(self, data: SequenceData, codes: Mapping[int, np.ndarray], max_len: int) -> None:
        self.data, self.codes, self.max_len = data, codes, max_len
        self.stamped = build_stamped(data.sequences, codes)

    def batch(self, targets: TargetSet) -> GraphBatch:
        users = np.asarray(targets.users, dtype=np.int64)
        positions = np.asarray(targets.positions, dtype=np.int64)
        samples = np.arange(len(users))
        prefix = positions <= self.max_len
        parts = [_select(self.stamped, users[prefix], positions[prefix], samples[prefix])]
        if not prefix.all():
            windowed = samples[~prefix]
            histories = [
                self.data.sequences[u][p - self.max_len : p]
                for u, p in zip(users[windowed].tolist(), positions[windowed].tolist(), strict=True)
            ]
            sg = build_stamped(histories, self.codes)
            parts.append(
                _select(sg, np.arange(len(histories)), np.full(len(histories), self.max_len), windowed)
            )
        return _finish(parts, len(users))
