"""MMSR: item histories -> MSGraph -> HAN-GNN layers -> last-item state -> scores over all items.

Item nodes share the output item embeddings (scores are dot products with them).
Code nodes get trainable embeddings initialised from the modality's cluster centres,
projected to ``hidden_size`` by a fixed seeded random projection (distance-preserving,
so items that share a look or a description start close). With
``modality_nodes="raw"`` every item gets one node per modality whose state is its
feature vector through a trainable linear map. With ``item_content="add"`` each item's
vector, in the graph and in the scoring table alike, is its ID embedding plus a learned
projection of its content vectors (a learned vector stands in for a missing modality).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mmsr_model.base import SequentialRecommender
from mmsr_model.config import MMSRConfig
from mmsr_model.data import MODALITIES, SequenceData
from mmsr_model.device import model_device
from mmsr_model.graph import NODE_TYPES, GraphBatch, build_graphs
from mmsr_model.histories import Histories
from mmsr_model.layers import HANLayer

log = logging.getLogger(__name__)

#: a modality's content frame (:func:`fit_content_frame`): "mean", "axes" and "std" (None when unused)
ContentFrame = dict[str, np.ndarray | None]


class MMSR(SequentialRecommender):
    """The multimodal sequential recommender of docs/model.md."""

    name = "mmsr"
    config_class = MMSRConfig
    data_kwarg_names = ("item_codes", "code_centres", "item_features", "item_train_counts", "content_frames")
    has_modality_links = True
    item_tables = ("item_emb.weight",)
    #: files saved before a switch existed load as they were trained: a layer norm and residuals
    #: in every layer, the homogeneous attention aggregating states, every content dimension
    legacy_init_kwargs: ClassVar[dict[str, Any]] = {
        "norm": "layer",
        "residual": True,
        "homogeneous_values": "states",
        "content_dim": None,
    }
    config: MMSRConfig

    def __init__(
        self,
        n_items: int,
        config: MMSRConfig | None = None,
        *,
        item_codes: dict[str, np.ndarray] | None = None,
        code_centres: dict[str, np.ndarray] | None = None,
        item_features: dict[str, np.ndarray] | None = None,
        item_train_counts: np.ndarray | None = None,
        content_frames: dict[str, ContentFrame] | None = None,
    ) -> None:
        config = MMSRConfig() if config is None else config
        # modalities in node-type order, whatever order they were asked for in
        modalities = [m for m in NODE_TYPES[1:] if m in config.modalities]
        super().__init__(n_items, config.model_copy(update={"modalities": modalities}))
        config = self.config
        item_codes, code_centres, item_features = item_codes or {}, code_centres or {}, item_features or {}
        self.modalities = modalities
        self.modality_nodes, self.readout, self.modality_drop_p = (
            config.modality_nodes,
            config.readout,
            config.modality_drop_p,
        )
        self.score_scale, self.id_drop_p = config.score_scale, config.id_drop_p
        codes = config.modality_nodes == "codes"
        content = [m for m in modalities if config.item_content == "add" and m in item_features]
        self._data_kwargs = {
            "item_codes": {m: item_codes[m] for m in modalities if codes},
            "code_centres": {m: code_centres[m] for m in modalities if codes},
            "item_features": {m: item_features[m] for m in modalities if not codes or m in content},
        }
        content_only = bool(content) and config.cold_items == "content_only"
        if content_only:
            if item_train_counts is None:
                raise ValueError("cold_items='content_only' needs item_train_counts (from_data passes them)")
            self._data_kwargs["item_train_counts"] = np.asarray(item_train_counts, dtype=np.int64)
        hidden_size, seed = config.hidden_size, config.seed
        # graph "codes" per node type (buffers ``graph_codes_<type>``): real codes, or the item id
        # itself for raw feature nodes
        self._code_types: list[int] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.item_emb = nn.Embedding(n_items, hidden_size)
            nn.init.normal_(self.item_emb.weight, std=hidden_size**-0.5)
            self.pos_emb = nn.Embedding(config.max_len, hidden_size)
            nn.init.normal_(self.pos_emb.weight, std=hidden_size**-0.5)
            self.code_emb = nn.ModuleDict()
            self.feature_proj = nn.ModuleDict()
            for i, m in enumerate(modalities):
                ntype = NODE_TYPES.index(m)
                self._code_types.append(ntype)
                if codes:
                    graph_codes = self._check_codes(m, item_codes[m], code_centres[m])
                    self.code_emb[m] = nn.Embedding.from_pretrained(
                        _project_centres(code_centres[m], hidden_size, seed + i), freeze=False
                    )
                else:
                    features = np.asarray(item_features[m], dtype=np.float32)
                    present = ~np.isnan(features).any(axis=1)
                    graph_codes = np.where(present, np.arange(n_items), -1)[:, None]
                    self.register_buffer(
                        f"features_{m}", torch.from_numpy(np.nan_to_num(features)), persistent=False
                    )
                    self.feature_proj[m] = nn.Linear(features.shape[1], hidden_size)
                self.register_buffer(f"graph_codes_{m}", torch.from_numpy(graph_codes), persistent=False)
            self.layers = nn.ModuleList(HANLayer(config) for _ in range(config.num_layers))
            # items whose ID row counts at inference (cold_items="content_only": the trained ones)
            trained = torch.from_numpy(np.asarray(item_train_counts) > 0) if content_only else None
            self.register_buffer("id_used", trained, persistent=False)
            self.content_proj = nn.ModuleDict()
            self.content_missing = nn.ParameterDict()
            has_content = np.zeros(n_items, dtype=bool)
            given, norm, dim = content_frames or {}, config.content_norm, config.content_dim
            frames = {m: given.get(m) or fit_content_frame(item_features[m], norm, dim) for m in content}
            self._data_kwargs["content_frames"] = frames
            for m in content:
                vectors, present = content_vectors(item_features[m], config.content_norm, frames[m])
                has_content |= present
                self.register_buffer(f"content_{m}", torch.from_numpy(vectors), persistent=False)
                self.register_buffer(f"content_present_{m}", torch.from_numpy(present), persistent=False)
                self.content_proj[m] = nn.Linear(vectors.shape[1], hidden_size, bias=False)
                # content vectors have unit norm on average: projected, they start at the ID embeddings' scale
                nn.init.normal_(self.content_proj[m].weight, std=hidden_size**-0.5)
                self.content_missing[m] = nn.Parameter(torch.zeros(hidden_size))
            # items whose ID row training may drop (id_drop_p): those with some content to fall back on
            self.register_buffer("has_content", torch.from_numpy(has_content), persistent=False)
            if config.id_init == "content":
                self._init_ids_from_content([getattr(self, f"content_{m}").numpy() for m in content])
        self.dropout = nn.Dropout(config.dropout)
        self.readout_dropout = nn.Dropout(config.readout_dropout)
        if self.readout == "attention":
            self.attention_readout = AttentionReadout(hidden_size)
        self._dropped: dict[int, np.ndarray] = {}
        self._frozen: FrozenVectors | None = None
        self._train_drop_rng = np.random.default_rng(seed)
        # its own stream: batches (and their modality drops) are built in a background thread
        self._id_drop_rng = np.random.default_rng([seed, 1])

    def _init_ids_from_content(self, vectors: list[np.ndarray]) -> None:
        """ID rows of items with content := their content's top principal components (id_init)."""
        if not vectors:
            log.warning("MMSR id_init='content': no content vectors, ID embeddings start random")
            return
        start = content_init(
            np.concatenate(vectors, axis=1), self.has_content.numpy(), self.item_emb.embedding_dim
        )
        with torch.no_grad():
            self.item_emb.weight[self.has_content] = torch.from_numpy(start)

    def data_kwargs(self) -> dict[str, Any]:
        return self._data_kwargs

    def inherit_transforms(self, source: SequentialRecommender) -> None:
        """Project today's content with ``source``'s frames, so its content weights keep their meaning.

        A frame's centre and principal axes are fitted on the catalogue: refitted on a grown one,
        the axes turn (or flip sign) under the copied projection.
        """
        frames = source.data_kwargs().get("content_frames", {})
        features = self._data_kwargs["item_features"]
        for m in self.content_proj:
            vectors, _ = content_vectors(features[m], self.config.content_norm, frames[m])
            getattr(self, f"content_{m}").copy_(torch.from_numpy(vectors))
        self._data_kwargs["content_frames"] = {m: frames[m] for m in self.content_proj}

    def _check_codes(self, modality: str, codes: np.ndarray, centres: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] != self.n_items:
            raise ValueError(
                f"item_codes[{modality!r}] must be (n_items={self.n_items}, k), got {codes.shape}"
            )
        if codes.max(initial=-1) >= len(centres) or codes.min(initial=-1) < -1:
            raise ValueError(f"item_codes[{modality!r}] holds codes outside -1..{len(centres) - 1}")
        return codes

    @classmethod
    def from_data(cls, data: SequenceData, **params: Any) -> MMSR:
        """A fresh model for ``data``; modalities ``data`` does not carry are left out (logged)."""
        config = MMSRConfig.from_params(**params)
        raw = config.modality_nodes == "raw"
        available = [
            m
            for m in config.modalities
            if (m in data.item_features if raw else (m in data.item_codes and m in data.code_centres))
        ]
        if missing := sorted(set(config.modalities) - set(available)):
            log.info("MMSR: modalities %s absent from the data, not used", missing)
        log.info(
            "MMSR graph modalities: %s (%s nodes)", available or "none, ID-only", "raw" if raw else "code"
        )
        if config.item_content == "add":
            content = [m for m in available if m in data.item_features]
            log.info("MMSR item vectors: ID + content of %s", content or "no modality (ID only)")
        return cls(
            data.n_items,
            config.model_copy(update={"modalities": available}),
            item_codes=data.item_codes,
            code_centres=data.code_centres,
            item_features=data.item_features,
            item_train_counts=data.train_item_counts() if config.cold_items == "content_only" else None,
        )

    def random_streams(self) -> dict[str, np.random.Generator]:
        streams = {"train_modality_drop": self._train_drop_rng}
        return streams | {"train_id_drop": self._id_drop_rng} if self.id_drop_p > 0 else streams

    def warm_start_mismatch(self, source: SequentialRecommender) -> str | None:
        """Code embeddings mean something only against the centres they were trained on."""
        mine, theirs = self._data_kwargs["code_centres"], source.data_kwargs().get("code_centres", {})
        for m in self.modalities:
            if m in mine and (m not in theirs or not np.array_equal(mine[m], theirs[m])):
                return f"{m} code centres differ from the champion's (codes were rebuilt)"
        return None

    # --- graph batches ---
    def _drops(self) -> dict[int, torch.Tensor]:
        """Per node type, the items whose links this batch drops (drawn now, so in batch order)."""
        drop = {t: torch.from_numpy(mask) for t, mask in self._dropped.items()}
        if self.training and self.modality_drop_p > 0:
            for ntype in self._code_types:
                drop[ntype] = torch.from_numpy(
                    self._train_drop_rng.random(self.n_items) < self.modality_drop_p
                )
        return drop

    def _graphs(self, items: torch.Tensor, drops: dict[int, torch.Tensor]) -> GraphBatch:
        """The graph batch of padded histories ``items``, built on their device."""
        codes = {}
        for ntype in self._code_types:
            table = getattr(self, f"graph_codes_{NODE_TYPES[ntype]}").to(items.device)
            if ntype in drops:
                table = torch.where(drops[ntype].to(items.device)[:, None], -1, table)
            codes[ntype] = table
        return build_graphs(items, codes)

    def prepare(self, histories: Sequence[np.ndarray]) -> GraphBatch | PendingGraphs:
        packed = Histories.pack([np.asarray(h, dtype=np.int64) for h in histories])
        return self.prepare_histories(packed, torch.arange(len(packed)), packed.lengths)

    def prepare_histories(
        self, histories: Histories, users: torch.Tensor, ends: torch.Tensor
    ) -> GraphBatch | PendingGraphs:
        """The graph batch, built right away on the CPU; for a model on another device the padded
        histories only, which :meth:`batch_to` moves there and builds the graphs of."""
        pending = PendingGraphs(histories.windows(users, ends, self.max_len), self._drops())
        return self._graphs(pending.items, pending.drops) if model_device(self).type == "cpu" else pending

    def batch_to(self, batch: GraphBatch | PendingGraphs, device: torch.device) -> GraphBatch:
        if isinstance(batch, PendingGraphs):
            return self._graphs(batch.items.to(device, non_blocking=True), batch.drops)
        return batch.to(device)

    @contextmanager
    def drop_modality_links(self, modality: str, p: float, seed: int) -> Iterator[None]:
        """While active, a random fraction ``p`` of items loses its links of ``modality``.

        ``"both"`` drops both modalities of the SAME items. A modality the model does not
        use has no links to drop (logged).
        """
        if modality not in (*MODALITIES, "both"):
            raise ValueError(f"modality must be 'text', 'image' or 'both', got {modality!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        names = list(MODALITIES) if modality == "both" else [modality]
        if unused := [m for m in names if m not in self.modalities]:
            log.warning("drop_modality_links: model does not use %s, nothing to drop there", unused)
        mask = np.zeros(self.n_items, dtype=bool)
        mask[np.random.default_rng(seed).permutation(self.n_items)[: round(p * self.n_items)]] = True
        previous = self._dropped
        self._dropped = {**previous, **{NODE_TYPES.index(m): mask for m in names if m in self.modalities}}
        try:
            yield
        finally:
            self._dropped = previous

    # --- network ---
    def _node_states(self, batch: GraphBatch) -> torch.Tensor:
        values = batch.node_value.split(batch.type_counts)
        parts = [self._item_vectors(values[0])]
        for m in NODE_TYPES[1:]:
            ids = values[NODE_TYPES.index(m)]
            if m not in self.modalities:
                parts.append(self.item_emb.weight.new_zeros(0, self.item_emb.embedding_dim))
            elif self.modality_nodes == "codes":
                parts.append(self.code_emb[m](ids))
            else:
                parts.append(self.feature_proj[m](getattr(self, f"features_{m}")[ids]))
        h = torch.cat(parts)
        # position signal: mean position embedding over each node's occurrences
        pos = torch.zeros_like(h).index_add_(0, batch.occ_node, self.pos_emb(batch.occ_pos).to(h.dtype))
        count = torch.bincount(batch.occ_node, minlength=h.shape[0]).clamp_min(1).unsqueeze(-1)
        return h + pos / count

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        h = self._node_states(batch)
        n_item = batch.type_counts[0]
        # the last layer only computes the nodes the readout uses
        readout_rows = batch.last_node if self.readout == "last" else torch.arange(n_item, device=h.device)
        for i, layer in enumerate(self.layers):
            # node dropout on each layer's output (not its input), as the authors' implementation does
            h = self.dropout(layer(h, batch, rows=readout_rows if i == len(self.layers) - 1 else None))
        sample = batch.node_sample[:n_item]
        if self.readout == "mean":
            total = torch.zeros(batch.num_graphs, h.shape[1], dtype=h.dtype, device=h.device)
            total.index_add_(0, sample, h)
            h = total / torch.bincount(sample, minlength=batch.num_graphs).clamp_min(1).unsqueeze(-1)
        elif self.readout == "attention":
            h = self.attention_readout(h, sample, batch.last_node, batch.num_graphs)
        h = self.readout_dropout(h)
        return h if self.score_scale is None else self.score_scale * nn.functional.normalize(h, dim=-1)

    def _item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """ID embeddings plus projected content, of ``ids`` (None: every item)."""
        if (frozen := self._frozen) is not None and frozen.valid_for(self):
            return frozen.vectors if ids is None else frozen.vectors[ids]
        vectors = self.item_emb.weight if ids is None else self.item_emb(ids)
        if not self.training and self.id_used is not None:  # untrained ID rows out of scoring
            used = self.id_used if ids is None else self.id_used[ids]
            vectors = vectors * used[:, None].to(vectors.dtype)
        if self.training and self.id_drop_p > 0:  # drawn per item, afresh for the graph and the table
            dropped = torch.from_numpy(self._id_drop_rng.random(self.n_items) < self.id_drop_p)
            dropped = dropped.to(vectors.device) & self.has_content
            vectors = vectors * ~(dropped if ids is None else dropped[ids])[:, None]
        for m, proj in self.content_proj.items():
            content, present = getattr(self, f"content_{m}"), getattr(self, f"content_present_{m}")
            if ids is not None:
                content, present = content[ids], present[ids]
            if (dropped := self._dropped.get(NODE_TYPES.index(m))) is not None:
                kept = torch.from_numpy(~dropped).to(present.device)
                present = present & (kept if ids is None else kept[ids])
            vectors = vectors + fill_absent(proj(content), present, self.content_missing[m])
        return vectors

    @contextmanager
    def frozen_item_table(self) -> Iterator[torch.Tensor]:
        """The item table computed once, its unnormalised rows reused as the graph's item nodes
        (in eval mode, under the same dropped links), so content is projected once per pass."""
        previous = self._frozen
        self._frozen = None  # the table is computed afresh, not read from an outer one
        self._frozen = previous if self.training else FrozenVectors(self._item_vectors(), self._dropped)
        try:
            yield self.item_embeddings()
        finally:
            self._frozen = previous

    def item_embeddings(self) -> torch.Tensor:
        """The item table; unit rows when ``score_scale`` is set (scores = scaled cosines)."""
        return self.item_rows(None)

    def item_rows(self, ids: torch.Tensor | None) -> torch.Tensor:
        """Rows ``ids`` of the item table (None: all of it), computed for those rows only."""
        weight = self._item_vectors(ids)
        return weight if self.score_scale is None else nn.functional.normalize(weight, dim=-1)


@dataclass(frozen=True)
class FrozenVectors:
    """Every item's vector under one set of dropped links, valid while the weights do not change."""

    vectors: torch.Tensor
    dropped: dict[int, np.ndarray]

    def valid_for(self, model: MMSR) -> bool:
        """Only in eval mode (training draws ID dropout afresh) and under the same dropped links."""
        return not model.training and model._dropped is self.dropped


@dataclass(frozen=True)
class PendingGraphs:
    """Padded histories (``[B, max_len]``, -1 = padding) and this batch's dropped links, whose
    graphs are built on the device the model runs on."""

    items: torch.Tensor
    drops: dict[int, torch.Tensor]


def fit_content_frame(features: np.ndarray, norm: str, dim: int | None = None) -> ContentFrame:
    """The centre of the items' content vectors and, when ``dim`` is set or ``norm`` is
    "whiten", their top principal axes (as rows; whiten: with their standard deviations)."""
    x = np.asarray(features, dtype=np.float64)
    rows = x[~np.isnan(x).any(axis=1)]
    frame: ContentFrame = {
        "mean": rows.mean(axis=0) if len(rows) else np.zeros(x.shape[1]),
        "axes": None,
        "std": None,
    }
    rows = rows - frame["mean"]
    if norm == "whiten" and len(rows) > 1:
        singular, basis = _principal_axes(rows, dim)
        std = singular / np.sqrt(len(rows))
        keep = std > 1e-6 * std.max()
        frame["axes"], frame["std"] = basis[keep], std[keep]
    elif norm == "l2" and dim is not None and dim < rows.shape[1] and len(rows) > 1:
        frame["axes"] = _principal_axes(rows, dim)[1]
    return frame


def content_vectors(features: np.ndarray, norm: str, frame: ContentFrame) -> tuple[np.ndarray, np.ndarray]:
    """Content vectors in ``frame`` (:func:`fit_content_frame`): centred, on its axes when it has
    them, then L2-normalised or whitened (scaled to unit norm on average).

    Returns the vectors (zero rows where the item has none) and the mask of items that have one.
    """
    x = np.asarray(features, dtype=np.float64)
    present = ~np.isnan(x).any(axis=1)
    rows = x[present] - frame["mean"]
    if frame["axes"] is not None:
        rows = rows @ frame["axes"].T  # coordinates on the top axes
    if frame["std"] is not None:
        rows = rows / frame["std"] / np.sqrt(len(frame["std"]))
    if norm == "l2":
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(1e-12)
    out = np.zeros((len(x), rows.shape[1]), dtype=np.float32)
    out[present] = rows
    return out, present


def _principal_axes(rows: np.ndarray, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and principal axes (as rows) of centred ``rows``, the top ``dim`` (None: all)."""
    _, singular, basis = np.linalg.svd(rows, full_matrices=False)
    return singular[:dim], basis[:dim]


def content_init(vectors: np.ndarray, present: np.ndarray, dim: int) -> np.ndarray:
    """The ``present`` rows' top ``dim`` principal components (zero-padded when there are fewer), at
    the random ID start's scale (standard deviation ``dim ** -0.5`` per entry)."""
    rows = vectors[present].astype(np.float64)
    rows -= rows.mean(axis=0)
    basis = _principal_axes(rows, dim)[1]
    coords = np.zeros((len(rows), dim))
    coords[:, : len(basis)] = rows @ basis.T
    scale = coords.std()
    return (coords / scale * dim**-0.5 if scale > 0 else coords).astype(np.float32)


def _project_centres(centres: np.ndarray, dim: int, seed: int) -> torch.Tensor:
    """Centres through a seeded random projection, rescaled to the item embeddings' scale."""
    centres = np.asarray(centres, dtype=np.float64)
    proj = np.random.default_rng(seed).normal(size=(centres.shape[1], dim)) / np.sqrt(centres.shape[1])
    out = centres @ proj
    out -= out.mean(axis=0, keepdims=True)
    scale = out.std()
    out = out / scale * dim**-0.5 if scale > 0 else out
    return torch.from_numpy(out.astype(np.float32))


class AttentionReadout(nn.Module):
    """SR-GNN's hybrid session embedding: the last item's state ``s_l`` and
    ``s_g = sum_i a_i h_i`` with ``a_i = q . sigmoid(W_1 s_l + W_2 h_i)`` over the history's item
    nodes, joined by ``W_3 [s_l; s_g]``. A last-item readout sees the last item and its graph
    neighbours only; this one can weigh every item of the history.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.last = nn.Linear(hidden_size, hidden_size, bias=False)
        self.node = nn.Linear(hidden_size, hidden_size)
        self.weight = nn.Linear(hidden_size, 1, bias=False)
        self.join = nn.Linear(2 * hidden_size, hidden_size, bias=False)

    def forward(
        self, h: torch.Tensor, sample: torch.Tensor, last_node: torch.Tensor, num_graphs: int
    ) -> torch.Tensor:
        """``h``: the item nodes' states, ``sample``: each node's history; one state per history."""
        last = h[last_node]
        weights = self.weight(torch.sigmoid(self.last(last)[sample] + self.node(h)))
        pooled = torch.zeros(num_graphs, h.shape[1], dtype=h.dtype, device=h.device)
        pooled.index_add_(0, sample, (weights * h).to(h.dtype))
        return self.join(torch.cat([last, pooled], dim=-1))


def fill_absent(projected: torch.Tensor, present: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """``projected`` with every row not ``present`` replaced by the learned ``missing`` vector.

    Most items have content, so on a CPU the few absent rows are overwritten in place (the
    projection's backward does not read its output): a ``torch.where`` over the whole item
    table and its two backward passes cost several times more there. On other devices the
    row indices would wait on the device, so ``torch.where`` stays.
    """
    if projected.device.type != "cpu":
        return torch.where(present[:, None], projected, missing)
    projected = projected.to(torch.promote_types(projected.dtype, missing.dtype))
    absent = (~present).nonzero().squeeze(1)
    projected[absent] = missing.to(projected.dtype).expand(len(absent), -1)
    return projected
