"""Stamped MSGraphs: the full graph of every sequence, each part stamped with its first position.

The graph of a prefix ``seq[:t]`` is then the parts stamped ``< t`` (see
:mod:`mmsr_model.graph`, which selects prefixes and batches them). Building runs in
named phases, each vectorised over all sequences at once: positions, occurrences
(items and their codes), nodes (unique (graph, type, value)), transitions between
consecutive positions, and cross-modal pairs inside one position.

Node types and relations are named here (:class:`NodeType`, :class:`HomoRel`,
:class:`HeteroRel`); the tuples ``NODE_TYPES`` / ``HOMO_RELATIONS`` /
``HETERO_RELATIONS`` give their names in index order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


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
