"""MSGraph building: one sparse graph batch for many item histories, no loops over nodes or edges.

Every graph is first built "stamped" (:func:`mmsr_model.stamped.build_stamped`): nodes, transitions and
cross-modal pairs of a whole sequence, each stamped with the position where it first
appears. The graph of the prefix ``seq[:t]`` is then a set of masks ``stamp < t``
(:func:`select`). Inference histories are stamped and selected at their full length;
training samples are prefixes of the users' sequences, so :class:`GraphCache` stamps
every user's full sequence once and answers each batch with masks and index
arithmetic only. Both routes go through the same :func:`select`, so they give the
same graphs by construction (tests check it anyway).

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

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.sparse import Pattern
from mmsr_model.stamped import (
    EDGE_TYPES,
    HETERO_RELATIONS,
    HOMO_RELATIONS,
    NODE_TYPES,
    HeteroRel,
    HomoRel,
    NodeType,
    StampedGraphs,
    build_stamped,
)

__all__ = [
    "EDGE_TYPES",
    "HETERO_RELATIONS",
    "HOMO_RELATIONS",
    "NODE_TYPES",
    "GraphBatch",
    "GraphCache",
    "HeteroRel",
    "HomoRel",
    "NodeType",
    "StampedGraphs",
    "build_batch",
    "build_stamped",
    "describe",
]


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
