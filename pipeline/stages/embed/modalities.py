"""One function per way of filling a modality: encode text, encode images, import a file.

Each hashes every item's encoder input, reuses the previous Parquet's rows whose
hash and encoder_id still match, computes only the rest, and writes the whole
modality file again (tmp + rename). Models are loaded only when something is left
to compute, so a no-change rerun costs hashing and one Parquet write.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipeline.core.config import Settings
from pipeline.stages.embed.image_decode import ImageFiles, collate
from pipeline.stages.embed.image_models import ImageEncoder, build_image_encoder, image_encoder_id
from pipeline.stages.embed.image_source import hash_sources, parse_ref, resolve_sources
from pipeline.stages.embed.importer import read_features
from pipeline.stages.embed.items import item_texts
from pipeline.stages.embed.runtime import inference, pick_device
from pipeline.stages.embed.store import Previous, content_hash, merge, plan_reuse, write_embeddings
from pipeline.stages.embed.text import encode_texts, load_text_model, text_encoder_id

log = logging.getLogger(__name__)


@dataclass
class ModalityReport:
    """What one modality's run did; ``missing`` counts every item's reason, reused ones included."""

    encoder_id: str
    path: str
    items: int = 0
    reused: int = 0
    computed: int = 0
    embedded: int = 0
    dim: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _finish(
    report: ModalityReport,
    out: Path,
    items: pa.Table,
    hashes: list[str],
    previous: Previous | None,
    reuse: list[int | None],
    computed: tuple[np.ndarray, list[str | None]],
    started: float,
) -> ModalityReport:
    emb = merge(items["item_id"].to_pylist(), hashes, report.encoder_id, previous, reuse, computed)
    write_embeddings(emb, out)
    report.items = len(emb.item_ids)
    report.reused = sum(r is not None for r in reuse)
    report.computed = report.items - report.reused
    report.embedded = sum(m is None for m in emb.missing)
    report.dim = int(emb.vectors.shape[1])
    report.missing = emb.missing_counts()
    report.seconds = round(time.perf_counter() - started, 3)
    log.info(
        "%s: %d items, %d reused, %d computed, %d embedded, missing %s",
        out.name,
        report.items,
        report.reused,
        report.computed,
        report.embedded,
        report.missing or "none",
    )
    return report


def embed_text(settings: Settings, items: pa.Table, out: Path) -> ModalityReport:
    started = time.perf_counter()
    report = ModalityReport(encoder_id=text_encoder_id(settings), path=str(out))
    texts = item_texts(items, settings.text_max_chars)
    hashes = [content_hash(t) for t in texts]
    previous = Previous.load(out)
    reuse = plan_reuse(previous, report.encoder_id, items["item_id"].to_pylist(), hashes)
    todo = [texts[i] for i, row in enumerate(reuse) if row is None]
    missing: list[str | None] = [None if t else "no_text" for t in todo]
    vectors = np.zeros((len(todo), 0), dtype=np.float32)
    wanted = [t for t in todo if t]
    if wanted:
        device = pick_device()
        report.device = str(device)
        model = load_text_model(settings, device)
        encoded = encode_texts(model, wanted, settings.embed_batch_size)
        vectors = np.full((len(todo), encoded.shape[1]), np.nan, dtype=np.float32)
        vectors[[i for i, t in enumerate(todo) if t]] = encoded
    return _finish(report, out, items, hashes, previous, reuse, (vectors, missing), started)


def encode_image_files(
    encoder: ImageEncoder, paths: list[Path], settings: Settings, device: torch.device
) -> tuple[np.ndarray, list[str | None]]:
    """Decode (in ``embed_workers`` DataLoader workers) and encode every file, batched."""
    vectors = np.full((len(paths), encoder.dim), np.nan, dtype=np.float32)
    missing: list[str | None] = [None] * len(paths)
    workers = settings.embed_workers
    if workers and multiprocessing.current_process().daemon:
        log.warning("running in a daemon process (no children allowed): decoding images in-process")
        workers = 0
    loader = DataLoader(
        ImageFiles(paths, encoder.preprocess),
        batch_size=settings.embed_batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    with inference(device):
        for batch in tqdm(
            loader, desc="embed images", unit="batch", disable=len(paths) <= settings.embed_batch_size
        ):
            for row, reason in batch["failed"]:
                missing[row] = reason
            if batch["pixels"] is not None:
                pixels = batch["pixels"].to(device, non_blocking=True)
                vectors[batch["rows"]] = encoder.encode(pixels).cpu().numpy()
    return vectors, missing


def embed_images(settings: Settings, items: pa.Table, out: Path) -> ModalityReport:
    started = time.perf_counter()
    report = ModalityReport(encoder_id=image_encoder_id(settings), path=str(out))
    sources = [parse_ref(ref) for ref in items["image_ref"].to_pylist()]
    hashes = hash_sources(sources)
    previous = Previous.load(out)
    reuse = plan_reuse(previous, report.encoder_id, items["item_id"].to_pylist(), hashes)
    todo = [sources[i] for i, row in enumerate(reuse) if row is None]
    resolved = resolve_sources(todo, settings)
    missing: list[str | None] = [r.missing for r in resolved]
    vectors = np.zeros((len(todo), 0), dtype=np.float32)
    readable = [i for i, r in enumerate(resolved) if r.path is not None]
    if readable:
        device = pick_device()
        report.device = str(device)
        encoder = build_image_encoder(settings, device)
        encoded, reasons = encode_image_files(encoder, [resolved[i].path for i in readable], settings, device)
        vectors = np.full((len(todo), encoder.dim), np.nan, dtype=np.float32)
        vectors[readable] = encoded
        for i, reason in zip(readable, reasons, strict=True):
            missing[i] = reason
    return _finish(report, out, items, hashes, previous, reuse, (vectors, missing), started)


def import_feature_file(items: pa.Table, features: Path, out: Path) -> ModalityReport:
    started = time.perf_counter()
    ids, matrix, encoder_id = read_features(features)
    report = ModalityReport(encoder_id=encoder_id, path=str(out))
    row_of = {item: i for i, item in enumerate(ids)}
    item_ids = items["item_id"].to_pylist()
    rows = [row_of.get(item) for item in item_ids]
    extra = len(ids) - sum(r is not None for r in rows)
    if extra:
        log.warning("%s: %d feature rows name items not in items.parquet (ignored)", features, extra)
    hashes = [content_hash(matrix[r].tobytes()) if r is not None else content_hash("absent") for r in rows]
    vectors = np.full((len(item_ids), matrix.shape[1]), np.nan, dtype=np.float32)
    present = [i for i, r in enumerate(rows) if r is not None]
    vectors[present] = matrix[[rows[i] for i in present]]
    missing: list[str | None] = [None if r is not None else "not_in_import" for r in rows]
    return _finish(report, out, items, hashes, None, [None] * len(item_ids), (vectors, missing), started)
