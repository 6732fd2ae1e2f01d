"""A tiny warehouse written straight from the README "Data layout" contract (pyarrow, no extract).

Users walk items i -> i+1 (mod n_items) from a random start, a signal any
sequential model learns in a few epochs; text codes cover every item, image
codes only the even ones (a real missing-modality case).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.config import Settings
from pipeline.stages.promote import PromotionDecision
from pipeline.warehouse.codes_table import item_codes_rows, write_centres, write_item_codes

TINY_MODEL = {
    "hidden_size": 16,
    "lr": 0.02,
    "max_epochs": 4,
    "patience": 2,
    "batch_size": 64,
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "max_len": 10,
    "device": "cpu",
}


def tiny_settings(home: Path, **overrides: object) -> Settings:
    """Settings for fast tests: tiny MMSR, Pop as the only baseline, CPU."""
    values: dict[str, object] = {"home": home, "model": dict(TINY_MODEL), "baselines": ["pop"]}
    return Settings(**(values | overrides))


def _loo_splits(sequences: list[np.ndarray]) -> pa.Table:
    rows: dict[str, list] = {"user_idx": [], "split": [], "target_pos": []}
    for user, seq in enumerate(sequences):
        n = len(seq)
        targets = [(p, "train") for p in range(1, n - 2)] + [(n - 2, "valid"), (n - 1, "test")]
        for pos, split in targets:
            rows["user_idx"].append(user)
            rows["split"].append(split)
            rows["target_pos"].append(pos)
    return pa.table(
        {
            "user_idx": pa.array(rows["user_idx"], pa.int32()),
            "split": pa.array(rows["split"], pa.string()),
            "target_pos": pa.array(rows["target_pos"], pa.int32()),
        }
    )


def _codes(root: Path, item_ids: list[str], c: int = 4, dim: int = 8) -> None:
    rng = np.random.default_rng(1)
    folder = root / "codes"
    parts = []
    for modality in ("text", "image"):
        write_centres(folder, modality, rng.normal(size=(c, dim)).astype(np.float32))
        ids = [item for i, item in enumerate(item_ids) if modality == "text" or i % 2 == 0]
        positions = np.array([item_ids.index(item) for item in ids])
        codes = np.stack([positions % c, (positions + 1) % c], axis=1)
        parts.append(item_codes_rows(ids, modality, codes, np.tile([0.1, 0.2], (len(ids), 1))))
    write_item_codes(folder, parts)


def write_tiny_warehouse(
    settings: Settings,
    dataset: str = "tiny",
    n_users: int = 60,
    n_items: int = 40,
    seed: int = 0,
    codes: bool = True,
    text_vectors: bool = False,
) -> Path:
    """Write every table of the data layout for one synthetic dataset; return its folder."""
    rng = np.random.default_rng(seed)
    root = settings.dataset_dir(dataset)
    root.mkdir(parents=True, exist_ok=True)
    user_ids = [f"{dataset}-U{u:03d}" for u in range(n_users)]
    item_ids = [f"{dataset}-I{i:03d}" for i in range(n_items)]
    sequences = [(rng.integers(n_items) + np.arange(rng.integers(5, 11))) % n_items for _ in range(n_users)]
    pq.write_table(
        pa.table({"user_id": user_ids, "user_idx": pa.array(range(n_users), pa.int32())}),
        root / "user_index.parquet",
    )
    pq.write_table(
        pa.table({"item_id": item_ids, "item_idx": pa.array(range(n_items), pa.int32())}),
        root / "item_index.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "user_idx": pa.array(range(n_users), pa.int32()),
                "user_id": user_ids,
                "items": pa.array([s.tolist() for s in sequences], pa.list_(pa.int32())),
                "ts": pa.array([list(range(len(s))) for s in sequences], pa.list_(pa.int64())),
            }
        ),
        root / "sequences.parquet",
    )
    pq.write_table(_loo_splits(sequences), root / "splits.parquet")
    pq.write_table(
        pa.table(
            {
                "user_id": [user_ids[u] for u, s in enumerate(sequences) for _ in s],
                "item_id": [item_ids[i] for s in sequences for i in s.tolist()],
                "ts": pa.array([t for s in sequences for t in range(len(s))], pa.int64()),
                "rating": pa.array([5.0 for s in sequences for _ in s], pa.float64()),
            }
        ),
        root / "interactions.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": item_ids,
                "title": [f"Title of {i}" for i in item_ids],
                "brand": ["Acme"] * n_items,
                "categories": pa.array([["Beauty", "Skin"]] * n_items, pa.list_(pa.string())),
                "description": [f"About {i}" for i in item_ids],
                "image_ref": [f"/images/{i}.jpg" if n % 2 == 0 else None for n, i in enumerate(item_ids)],
            }
        ),
        root / "items.parquet",
    )
    if codes:
        _codes(root, item_ids)
    if text_vectors:
        _text_embeddings(root, item_ids)
    return root


def _text_embeddings(root: Path, item_ids: list[str], dim: int = 12) -> None:
    """Seeded text vectors in the embed stage's layout; the last item has none."""
    from pipeline.stages.embed.store import Embeddings, content_hash, write_embeddings

    vectors = np.random.default_rng(2).normal(size=(len(item_ids), dim)).astype(np.float32)
    missing: list[str | None] = [None] * (len(item_ids) - 1) + ["no_text"]
    vectors[-1] = np.nan
    hashes = [content_hash(i) for i in item_ids]
    write_embeddings(
        Embeddings(item_ids, "test:enc", hashes, vectors, missing), root / "embeddings" / "text.parquet"
    )


def register_untrained(settings: Settings, dataset: str = "tiny") -> PromotionDecision:
    """Log + register a freshly initialised (near-random) MMSR and run the gate on it.

    A fast champion for tests that only need one, and a deliberately bad
    challenger for the gate.
    """
    import mlflow

    from mmsr_model.registry import build_model
    from pipeline.serving.registry import log_pyfunc, setup_mlflow
    from pipeline.stages.promote import run_promote
    from pipeline.stages.train.config import train_config
    from pipeline.warehouse.dataset import load_sequence_data

    data, _ = load_sequence_data(settings, dataset)
    model = build_model("mmsr", data, **train_config(settings).model_params)
    setup_mlflow(settings, dataset)
    with mlflow.start_run(run_name="untrained"):
        version = log_pyfunc(model, settings.dataset_dir(dataset) / "item_index.parquet", dataset)
    return run_promote(settings, dataset, version)
