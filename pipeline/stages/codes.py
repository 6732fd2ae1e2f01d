"""Codes stage: cluster each modality's item vectors into ``c`` modality codes.

Per modality present under ``embeddings/``: optional seeded PCA to
``codes_reduce_dim``, seeded MiniBatchKMeans with ``c`` clusters over the items that
have a vector, then each item links to its ``k`` nearest centres (nearest first).

The clustering is kept (``codes/<modality>_codebook.npz``, see
:mod:`pipeline.stages.codebook`): later nights only assign items, new ones included,
to the same centres, so code ids mean the same thing and the train stage can warm
start from the champion. A night clusters afresh when there is nothing to keep, the
clustering settings or an embedding dimension changed, ``full_retrain_every_days``
have passed since the last clustering, or ``warm_start`` is ``never``; the report
says which (``rebuilt``, ``reason``).

Where things live:
- ``codes/<modality>_centres.parquet``: the centres in the ORIGINAL embedding space
  (PCA centres are mapped back with ``inverse_transform``), so they share a space with
  the raw item vectors the model's raw-feature ablation reads, whatever the reduction.
- ``codes/item_codes.parquet``: ``distances`` are Euclidean, measured in the space
  k-means ran in (the PCA space when reduction is on); they order the codes.
Items with a missing modality get no row for it. ``c`` above the number of items is
clamped with a warning, and ``k`` to ``c``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.codebook import Codebook, codebook_path, read_state, write_state
from pipeline.stages.embed.store import read_vectors
from pipeline.warehouse.codes_table import centres_path, item_codes_rows, write_centres, write_item_codes

log = logging.getLogger(__name__)

MODALITIES = ("text", "image")
KMEANS_N_INIT = 3


@dataclass
class ModalityCodes:
    items: int
    c: int
    k: int
    dim: int
    cluster_dim: int
    inertia: float
    cluster_sizes: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    levels: int = 1


@dataclass
class CodesReport:
    dataset: str
    rebuilt: bool = True
    reason: str = ""
    modalities: dict[str, ModalityCodes] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "rebuilt": self.rebuilt,
            "reason": self.reason,
            "modalities": {m: asdict(r) for m, r in self.modalities.items()},
            "seconds": self.seconds,
        }


def cluster(
    vectors: np.ndarray,
    c: int,
    k: int,
    reduce_dim: int | None,
    seed: int,
    whiten: bool = False,
    levels: int = 1,
) -> tuple[np.ndarray, Codebook, np.ndarray, np.ndarray, ModalityCodes]:
    """``(centres in the input space, the fitted codebook, codes (n, k), distances (n, k), summary)``.

    One level: ``c`` k-means centres, each item linked to its ``k`` nearest. Several
    levels (a residual quantiser): level ``l`` clusters what the levels before it left
    unexplained into ``c`` more codes (numbered ``l * c ...``); each item links to its
    nearest code of every level, coarse first, so ``k`` is the number of levels.
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import PCA

    n, dim = vectors.shape
    notes: list[str] = []
    if c > n:
        notes.append(f"codes_c={c} > {n} items with vectors: clamped to c={n}")
        c = n
    if levels == 1 and k > c:
        notes.append(f"codes_k={k} > c={c}: clamped to k={c}")
        k = c
    for note in notes:
        log.warning("%s", note)
    x = vectors.astype(np.float64)
    pca, mean, projection = None, np.zeros(dim), None
    if whiten or (reduce_dim is not None and reduce_dim < dim):
        pca = PCA(n_components=min(reduce_dim or dim, n, dim), whiten=whiten, random_state=seed).fit(x)
        mean = pca.mean_
        projection = pca.components_.T / (np.sqrt(pca.explained_variance_) if whiten else 1.0)
    space = Codebook(mean, projection, np.zeros((0, 0)), 1, k).to_space(x)

    def kmeans(level: int) -> MiniBatchKMeans:
        return MiniBatchKMeans(
            n_clusters=c,
            random_state=seed + level,
            n_init=KMEANS_N_INIT,
            batch_size=max(1024, 3 * c),
            max_iter=200,
        )

    def to_input_space(points: np.ndarray, residual: bool) -> np.ndarray:
        """Cluster-space points back in the embedding space (a residual has no mean to add back)."""
        if pca is None:
            return points
        return pca.inverse_transform(points) - (pca.mean_ if residual else 0.0)

    residual, books = space, []
    for level in range(levels):
        model = kmeans(level).fit(residual)
        residual = residual - model.cluster_centers_[model.predict(residual)]
        books.append(model.cluster_centers_)
    k = levels if levels > 1 else k
    codebook = Codebook(mean, projection, np.concatenate(books), levels, k)
    codes, distances = codebook.assign(space)
    inertia = float((residual**2).sum()) if levels > 1 else float(model.inertia_)
    centres = np.concatenate([to_input_space(book, residual=level > 0) for level, book in enumerate(books)])
    sizes = np.bincount(codes[:, 0], minlength=c)
    summary = ModalityCodes(
        items=n,
        c=len(centres),
        k=k,
        dim=dim,
        cluster_dim=int(space.shape[1]),
        inertia=round(inertia, 4),
        cluster_sizes={"min": int(sizes.min()), "max": int(sizes.max()), "empty": int((sizes == 0).sum())},
        warnings=notes,
        levels=levels,
    )
    return centres.astype(np.float32), codebook, codes, distances, summary


def clustering_settings(settings: Settings) -> dict[str, Any]:
    """The settings a codebook depends on: a change means the kept one no longer applies."""
    return {
        "c": settings.codes_c,
        "k": settings.codes_k,
        "reduce_dim": settings.codes_reduce_dim,
        "whiten": settings.codes_whiten,
        "levels": settings.codes_levels,
        "seed": settings.seed,
    }


def rebuild_reason(settings: Settings, codes_dir: Path, dims: dict[str, int], run_date: date) -> str | None:
    """Why tonight must cluster afresh (new centres, so warm start trains cold); None: keep the codebooks."""
    if settings.warm_start == "never":
        return "warm_start is never: codes are clustered afresh every night"
    state = read_state(codes_dir)
    if state is None:
        return "no kept codebooks"
    if state.get("clustering") != clustering_settings(settings):
        return "the clustering settings changed"
    age = (run_date - date.fromisoformat(state["built_on"])).days
    if age >= settings.full_retrain_every_days:
        every = settings.full_retrain_every_days
        return f"full rebuild due: codebooks built {age} day(s) ago, full_retrain_every_days={every}"
    for modality, dim in dims.items():
        if state.get("dims", {}).get(modality) != dim or not codebook_path(codes_dir, modality).is_file():
            return f"no kept {modality} codebook of dimension {dim}"
        if not centres_path(codes_dir, modality).is_file():
            return f"{modality} centres are missing"
    return None


def _modality_vectors(root: Path, modality: str) -> tuple[list[str], np.ndarray] | None:
    """Ids and vectors of the items that have a ``modality`` vector; None when there are none."""
    source = root / "embeddings" / f"{modality}.parquet"
    stale_centres = centres_path(root / "codes", modality)
    if not source.is_file():
        if stale_centres.exists():
            log.info("%s: no %s embeddings any more, removing stale %s", root.name, modality, stale_centres)
            stale_centres.unlink()
        codebook_path(root / "codes", modality).unlink(missing_ok=True)
        return None
    table, vectors, present = read_vectors(source)
    if not present.any():
        log.warning("%s: no item has a %s vector: no %s codes", root.name, modality, modality)
        stale_centres.unlink(missing_ok=True)
        codebook_path(root / "codes", modality).unlink(missing_ok=True)
        return None
    return pc.filter(table["item_id"], pa.array(present)).to_pylist(), vectors[present]


def run_codes(settings: Settings, dataset: str, run_date: date | None = None) -> CodesReport:
    """Assign every embedded item of ``dataset`` to modality codes; write centres and item codes.

    The kept codebooks are used unless :func:`rebuild_reason` says otherwise; then each
    modality is clustered afresh and its codebook kept from ``run_date`` (default today).
    """
    started = time.perf_counter()
    run_date = run_date or datetime.now(UTC).date()
    root = settings.dataset_dir(dataset)
    codes_dir = root / "codes"
    if not any((root / "embeddings" / f"{m}.parquet").is_file() for m in MODALITIES):
        raise PipelineError(f"{root / 'embeddings'}: no text or image embeddings; run `mmsr embed` first")
    inputs = {m: found for m in MODALITIES if (found := _modality_vectors(root, m)) is not None}
    dims = {m: int(vectors.shape[1]) for m, (_, vectors) in inputs.items()}
    reason = rebuild_reason(settings, codes_dir, dims, run_date)
    report = CodesReport(dataset, rebuilt=reason is not None, reason=reason or "kept the codebooks")
    log.info("%s codes: %s", dataset, "clustering afresh: " + reason if reason else report.reason)
    parts: list[pa.Table] = []
    for modality, (item_ids, vectors) in inputs.items():
        if reason is None:
            codebook = Codebook.load(codebook_path(codes_dir, modality))
            codes, distances = codebook.assign(codebook.to_space(vectors))
            summary = _kept_summary(codebook, codes, distances)
        else:
            centres, codebook, codes, distances, summary = cluster(
                vectors,
                settings.codes_c,
                settings.codes_k,
                settings.codes_reduce_dim,
                settings.seed,
                whiten=settings.codes_whiten,
                levels=settings.codes_levels,
            )
            write_centres(codes_dir, modality, centres)
            codebook.save(codebook_path(codes_dir, modality))
        parts.append(item_codes_rows(item_ids, modality, codes, distances))
        report.modalities[modality] = summary
        log.info(
            "%s %s codes: %d items, c=%d, k=%d, inertia %.3f",
            dataset,
            modality,
            summary.items,
            summary.c,
            summary.k,
            summary.inertia,
        )
    write_item_codes(codes_dir, parts)
    if reason is not None:
        write_state(codes_dir, run_date, clustering_settings(settings), dims)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _kept_summary(codebook: Codebook, codes: np.ndarray, distances: np.ndarray) -> ModalityCodes:
    """The summary of a night that assigned items to a kept codebook: its inertia and cluster sizes."""
    left = distances[:, 0] if codebook.levels == 1 else distances[:, -1]
    sizes = np.bincount(codes[:, 0], minlength=len(codebook.centres) // codebook.levels)
    return ModalityCodes(
        items=len(codes),
        c=len(codebook.centres),
        k=codebook.k,
        dim=codebook.dim,
        cluster_dim=int(codebook.centres.shape[1]),
        inertia=round(float((left.astype(np.float64) ** 2).sum()), 4),
        cluster_sizes={"min": int(sizes.min()), "max": int(sizes.max()), "empty": int((sizes == 0).sum())},
        levels=codebook.levels,
    )
