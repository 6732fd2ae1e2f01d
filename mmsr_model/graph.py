"""MSGraph building: one sparse graph batch for many item histories, no loops over nodes or edges.

Every graph is first built "stamped" (:func:`build_stamped`): nodes, transitions and
cross-modal pairs of a whole sequence, each stamped with the position where it first
appears. The graph of the prefix ``seq[:t]`` is then a set of masks ``stamp < t``
(:func:`select`). Inference histories are stamped and selected at their full length;
training samples are prefixes of the users' sequences, so :class:`GraphCache` stamps
every user's full sequence once and answers each batch with masks and index
arithmetic only. Both routes go through the same :func:`select`, so they give the
same graphs by construction (tests check it anyway).

Conventions (the spec's MSGraph):

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

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.sparse import Pattern

NODE_TYPES = ("item", "image", "text")
HOMO_RELATIONS = ("self", "out", "in", "both")
HETERO_RELATIONS = (
    "self",
    "item->image",
    "image->item",
    "item->text",
    "text->item",
    "image->text",
    "text->image",
)
#: the spec's 10 edge types ("self" is shared by both attentions)
EDGE_TYPES = tuple(dict.fromkeys(HOMO_RELATIONS + HETERO_RELATIONS))

_NEVER = np.iinfo(np.int64).max


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
    trans_rev_first: np.ndarray  # first position of the reverse transition, _NEVER if none
    cross_ptr: np.ndarray
    cross_a: np.ndarray  # node of the lower type (item before image before text)
    cross_b: np.ndarray
    cross_rel: np.ndarray  # HETERO_RELATIONS index of a -> b; b -> a is cross_rel + 1
    cross_first: np.ndarray


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

    @classmethod
    def from_arrays(
        cls, homo: np.ndarray, hetero: np.ndarray, type_counts: tuple[int, int, int], **rest: object
    ) -> GraphBatch:
        """Sort the ``[3, E]`` (src, dst, rel) edge arrays and derive their sparse patterns."""
        n = sum(type_counts)
        n_rel = len(HOMO_RELATIONS)
        homo = homo[:, np.argsort(homo[1] * n_rel + homo[2], kind="stable")]
        hetero = hetero[:, np.argsort(hetero[1], kind="stable")]
        ho, he = torch.from_numpy(np.ascontiguousarray(homo)), torch.from_numpy(np.ascontiguousarray(hetero))
        return cls(
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

    @property
    def num_nodes(self) -> int:
        return sum(self.type_counts)

    def to(self, device: torch.device) -> GraphBatch:
        moved = {
            f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor | Pattern) else v)
            for f in fields(self)
        }
        return GraphBatch(**moved)


def _ranges(ptr: np.ndarray, graphs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the CSR blocks ``graphs`` concatenated, their sample index, and block starts."""
    starts = ptr[graphs]
    lens = ptr[graphs + 1] - starts
    block = np.cumsum(lens) - lens
    sample = np.repeat(np.arange(len(graphs)), lens)
    rows = np.arange(int(lens.sum())) - block[sample] + starts[sample]
    return rows, sample, block


def _ptr(graph_of_row: np.ndarray, n_graphs: int) -> np.ndarray:
    return np.searchsorted(graph_of_row, np.arange(n_graphs + 1)).astype(np.int64)


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


def build_stamped(sequences: Sequence[np.ndarray], codes: Mapping[int, np.ndarray]) -> StampedGraphs:
    """Stamped full graphs of ``sequences``; ``codes[type]`` is ``(n_items, k)`` with -1 = none.

    ``type`` is the index in ``NODE_TYPES`` (1 image, 2 text); empty ``codes`` gives
    ID-only graphs.
    """
    n_graphs = len(sequences)
    lens = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=n_graphs)
    if n_graphs and lens.min() == 0:
        raise ValueError("every history must hold at least one item")
    seq_ptr = np.concatenate(([0], np.cumsum(lens)))
    flat = np.concatenate(sequences).astype(np.int64) if n_graphs else np.zeros(0, np.int64)
    n_pos = len(flat)
    graph_of = np.repeat(np.arange(n_graphs), lens)
    pos = np.arange(n_pos) - seq_ptr[graph_of]

    # occurrences (graph, type, value, position): items first, then each modality's codes
    parts_g, parts_t, parts_v, parts_p = [graph_of], [np.zeros(n_pos, np.int64)], [flat], [pos]
    code_slots: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # type -> (valid mask, occurrence offset)
    offset = n_pos
    for ntype in sorted(codes):
        c = np.asarray(codes[ntype], dtype=np.int64)[flat]  # (P, k)
        valid = c >= 0
        code_slots[ntype] = (valid, offset)
        k = c.shape[1]
        parts_g.append(np.repeat(graph_of, k)[valid.ravel()])
        parts_t.append(np.full(int(valid.sum()), ntype, np.int64))
        parts_v.append(c[valid])
        parts_p.append(np.repeat(pos, k)[valid.ravel()])
        offset += int(valid.sum())
    occ_g, occ_t, occ_v, occ_p = (np.concatenate(x) for x in (parts_g, parts_t, parts_v, parts_p))

    n_values = int(occ_v.max()) + 1 if len(occ_v) else 1
    key = (occ_g * len(NODE_TYPES) + occ_t) * n_values + occ_v
    order = np.lexsort((occ_p, key))
    key_sorted = key[order]
    head = np.ones(len(key_sorted), dtype=bool)
    head[1:] = key_sorted[1:] != key_sorted[:-1]
    node_of_sorted = np.cumsum(head) - 1
    node_key = key_sorted[head]
    node_first = occ_p[order][head]
    node_value = node_key % n_values
    node_type = (node_key // n_values) % len(NODE_TYPES)
    node_graph = node_key // (n_values * len(NODE_TYPES))
    n_nodes = len(node_key)
    occ_node = np.empty(len(key), np.int64)
    occ_node[order] = node_of_sorted
    item_node_at = occ_node[:n_pos]

    # node rows of every code slot (P, k), -1 where the item has no such code
    slot_node: dict[int, np.ndarray] = {}
    for ntype, (valid, off) in code_slots.items():
        grid = np.full(valid.shape, -1, np.int64)
        grid[valid] = occ_node[off : off + int(valid.sum())]
        slot_node[ntype] = grid

    # homogeneous transitions: position i-1 -> i inside one sequence, stamped i
    nxt = np.flatnonzero(pos > 0)
    t_src, t_dst, t_first = [item_node_at[nxt - 1]], [item_node_at[nxt]], [pos[nxt]]
    for grid in slot_node.values():
        s, d = grid[nxt - 1][:, :, None], grid[nxt][:, None, :]
        ok = (s >= 0) & (d >= 0)
        shape = np.broadcast_shapes(s.shape, d.shape)
        t_src.append(np.broadcast_to(s, shape)[ok])
        t_dst.append(np.broadcast_to(d, shape)[ok])
        t_first.append(np.broadcast_to(pos[nxt][:, None, None], shape)[ok])
    src, dst, first = (np.concatenate(x) for x in (t_src, t_dst, t_first))
    moving = src != dst
    trans_src, trans_dst, trans_first = _dedup_pairs(src[moving], dst[moving], first[moving], n_nodes)
    fwd_key = trans_src * n_nodes + trans_dst
    rev_key = trans_dst * n_nodes + trans_src
    hit = np.searchsorted(fwd_key, rev_key).clip(max=max(len(fwd_key) - 1, 0))
    found = fwd_key[hit] == rev_key if len(fwd_key) else np.zeros(0, bool)
    trans_rev_first = np.where(found, trans_first[hit] if len(fwd_key) else 0, _NEVER)

    # cross-modal pairs inside one position: item <-> codes, image code <-> text code
    c_a, c_b, c_rel, c_first = [], [], [], []
    for ntype, grid in slot_node.items():
        ok = grid >= 0
        c_a.append(np.broadcast_to(item_node_at[:, None], grid.shape)[ok])
        c_b.append(grid[ok])
        c_rel.append(np.full(int(ok.sum()), HETERO_RELATIONS.index(f"item->{NODE_TYPES[ntype]}")))
        c_first.append(np.broadcast_to(pos[:, None], grid.shape)[ok])
    if len(slot_node) == 2:
        img, txt = slot_node[1][:, :, None], slot_node[2][:, None, :]
        shape = np.broadcast_shapes(img.shape, txt.shape)
        ok = (img >= 0) & (txt >= 0)
        c_a.append(np.broadcast_to(img, shape)[ok])
        c_b.append(np.broadcast_to(txt, shape)[ok])
        c_rel.append(np.full(int(ok.sum()), HETERO_RELATIONS.index("image->text")))
        c_first.append(np.broadcast_to(pos[:, None, None], shape)[ok])
    if c_a:
        a, b, first = (np.concatenate(x) for x in (c_a, c_b, c_first))
        cross_a, cross_b, cross_first = _dedup_pairs(a, b, first, n_nodes)
        # the relation follows from the node types of the pair
        type_pair = node_type[cross_a] * len(NODE_TYPES) + node_type[cross_b]
        rel_of_pair = np.zeros(len(NODE_TYPES) ** 2, np.int64)
        rel_of_pair[[1, 2, 5]] = [
            HETERO_RELATIONS.index(r) for r in ("item->image", "item->text", "image->text")
        ]
        cross_rel = rel_of_pair[type_pair]
    else:
        cross_a = cross_b = cross_first = cross_rel = np.zeros(0, np.int64)

    occ_graph = node_graph[occ_node]
    occ_order = np.argsort(occ_graph, kind="stable")
    return StampedGraphs(
        node_ptr=_ptr(node_graph, n_graphs),
        node_type=node_type,
        node_value=node_value,
        node_first=node_first,
        seq_ptr=seq_ptr,
        item_node_at=item_node_at,
        occ_ptr=_ptr(occ_graph[occ_order], n_graphs),
        occ_node=occ_node[occ_order],
        occ_pos=occ_p[occ_order],
        trans_ptr=_ptr(node_graph[trans_src], n_graphs),
        trans_src=trans_src,
        trans_dst=trans_dst,
        trans_first=trans_first,
        trans_rev_first=trans_rev_first,
        cross_ptr=_ptr(node_graph[cross_a], n_graphs),
        cross_a=cross_a,
        cross_b=cross_b,
        cross_rel=cross_rel,
        cross_first=cross_first,
    )


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
    rel_fwd = np.where(both, HOMO_RELATIONS.index("both"), HOMO_RELATIONS.index("out"))
    n_sel = int(keep.sum())
    loops = np.arange(n_sel)
    homo = np.concatenate(
        [
            np.stack([loops, loops, np.zeros(n_sel, np.int64)]),
            np.stack([src, dst, rel_fwd]),
            np.stack([dst[~both], src[~both], np.full(int((~both).sum()), HOMO_RELATIONS.index("in"))]),
        ],
        axis=1,
    )

    c, cs, _ = _ranges(sg.cross_ptr, graphs)
    live = sg.cross_first[c] < t[cs]
    c, cs = c[live], cs[live]
    a, b, rel = node_id(sg.cross_a[c], cs), node_id(sg.cross_b[c], cs), sg.cross_rel[c]
    hetero = np.concatenate(
        [
            np.stack([loops, loops, np.zeros(n_sel, np.int64)]),
            np.stack([a, b, rel]),
            np.stack([b, a, rel + 1]),
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
    return GraphBatch.from_arrays(
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
    """Stamped full-sequence graphs of one :class:`SequenceData`, for prefix samples.

    A sample ``(user, p)`` whose history is a true prefix (``p <= max_len``) is read
    from the cache with masks; a longer user's history is a sliding window, whose
    nodes and edges are not "first seen before p", so those few samples are built
    directly and merged into the same batch.
    """

    def __init__(self, data: SequenceData, codes: Mapping[int, np.ndarray], max_len: int) -> None:
        self._data = weakref.ref(data)
        self._n_sequences = len(data.sequences)
        self.codes = codes
        self.max_len = max_len
        self.stamped = build_stamped(data.sequences, codes)

    def serves(self, data: SequenceData, codes: Mapping[int, np.ndarray]) -> bool:
        """Whether this cache was built for exactly this data object and these codes."""
        return self._data() is data and self.codes is codes and self._n_sequences == len(data.sequences)

    def batch(self, targets: TargetSet) -> GraphBatch:
        users = np.asarray(targets.users, dtype=np.int64)
        positions = np.asarray(targets.positions, dtype=np.int64)
        if len(users) and positions.min() < 1:
            raise ValueError("every sample needs at least one history item (position >= 1)")
        samples = np.arange(len(users))
        prefix = positions <= self.max_len
        parts = [_select(self.stamped, users[prefix], positions[prefix], samples[prefix])]
        if not prefix.all():
            data = self._data()
            assert data is not None
            windowed = samples[~prefix]
            histories = [
                data.sequences[u][p - self.max_len : p]
                for u, p in zip(users[windowed].tolist(), positions[windowed].tolist(), strict=True)
            ]
            sg = build_stamped(histories, self.codes)
            parts.append(
                _select(sg, np.arange(len(histories)), np.full(len(histories), self.max_len), windowed)
            )
        return _finish(parts, len(users))


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
