"""Codes stage: cluster each modality's item vectors into ``c`` modality codes.

Per modality present under ``embeddings/``: optional seeded PCA to
``codes_reduce_dim``, seeded MiniBatchKMeans with ``c`` clusters over the items that
have a vector, then each item links to its ``k`` nearest centres (nearest first).

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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
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
    modalities: dict[str, ModalityCodes] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ModalityCodes]:
    """``(centres in the input space, codes (n, k), distances (n, k), summary)``.

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
    space = vectors.astype(np.float64)
    pca = None
    if whiten or (reduce_dim is not None and reduce_dim < dim):
        components = min(reduce_dim or dim, n, dim)
        pca = PCA(n_components=components, whiten=whiten, random_state=seed)
        space = pca.fit_transform(space)

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

    if levels == 1:
        model = kmeans(0).fit(space)
        distances = np.sqrt(
            np.maximum(
                (space**2).sum(1)[:, None]
                - 2 * space @ model.cluster_centers_.T
                + (model.cluster_centers_**2).sum(1),
                0.0,
            )
        )
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        nearest = np.take_along_axis(distances, order, axis=1)
        centres = to_input_space(model.cluster_centers_, residual=False)
        inertia = float(model.inertia_)
    else:
        residual, codes, gaps, books = space, [], [], []
        for level in range(levels):
            model = kmeans(level).fit(residual)
            chosen = model.predict(residual)
            residual = residual - model.cluster_centers_[chosen]
            codes.append(chosen + level * c)
            gaps.append(np.linalg.norm(residual, axis=1))
            books.append(to_input_space(model.cluster_centers_, residual=level > 0))
        order, nearest, centres = np.stack(codes, 1), np.stack(gaps, 1), np.concatenate(books)
        inertia, k = float((residual**2).sum()), levels
    sizes = np.bincount(order[:, 0], minlength=c)
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
    return centres.astype(np.float32), order.astype(np.int32), nearest.astype(np.float32), summary


def run_codes(settings: Settings, dataset: str) -> CodesReport:
    """Cluster every embedded modality of ``dataset`` and write centres and item codes."""
    started = time.perf_counter()
    root = settings.dataset_dir(dataset)
    report = CodesReport(dataset)
    codes_dir = root / "codes"
    parts: list[pa.Table] = []
    sources = 0
    for modality in MODALITIES:
        source = root / "embeddings" / f"{modality}.parquet"
        stale_centres = centres_path(codes_dir, modality)
        if not source.is_file():
            if stale_centres.exists():
                log.info(
                    "%s: no %s embeddings any more, removing stale %s", dataset, modality, stale_centres.name
                )
                stale_centres.unlink()
            continue
        sources += 1
        table, vectors, present = read_vectors(source)
        if not present.any():
            log.warning("%s: no item has a %s vector: no %s codes", dataset, modality, modality)
            stale_centres.unlink(missing_ok=True)
            continue
        item_ids = pc.filter(table["item_id"], pa.array(present)).to_pylist()
        centres, codes, distances, summary = cluster(
            vectors[present],
            settings.codes_c,
            settings.codes_k,
            settings.codes_reduce_dim,
            settings.seed,
            whiten=settings.codes_whiten,
            levels=settings.codes_levels,
        )
        write_centres(codes_dir, modality, centres)
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
    if not sources:
        raise PipelineError(f"{root / 'embeddings'}: no text or image embeddings; run `mmsr embed` first")
    write_item_codes(codes_dir, parts)
    report.seconds = round(time.perf_counter() - started, 3)
    return report
