"""Modality codes: shapes, nearest-first order, missing items, clamping, PCA, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.codes import run_codes
from pipeline.stages.embed.store import Embeddings, content_hash, write_embeddings


def blobs(n_per: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated groups of vectors and each vector's group."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim)) * 10
    labels = np.repeat(np.arange(3), n_per)
    return (centres[labels] + rng.normal(size=(labels.size, dim))).astype(np.float32), labels


def write_modality(home: Path, modality: str, vectors: np.ndarray, missing: list[str | None]) -> list[str]:
    ids = [f"item{i:03d}" for i in range(len(missing))]
    emb = Embeddings(ids, "test:enc", [content_hash(i) for i in ids], vectors, missing)
    write_embeddings(emb, home / "warehouse" / "shop" / "embeddings" / f"{modality}.parquet")
    return ids


@pytest.fixture
def shop(mmsr_home: Path) -> tuple[np.ndarray, list[str]]:
    vectors, labels = blobs(10, 8, seed=0)
    full = np.vstack([vectors, np.full((2, 8), np.nan, dtype=np.float32)])
    ids = write_modality(mmsr_home, "text", full, [None] * 30 + ["no_text", "no_text"])
    image = full.copy()
    write_modality(mmsr_home, "image", image, [None] * 20 + ["no_image"] * 12)
    return labels, ids


def codes_dir(home: Path) -> Path:
    return home / "warehouse" / "shop" / "codes"


def test_codes_shapes_order_and_missing(mmsr_home: Path, shop: tuple[np.ndarray, list[str]]) -> None:
    labels, ids = shop
    report = run_codes(Settings(codes_c=3, codes_k=2), "shop")
    assert {m: (r.items, r.c, r.k) for m, r in report.modalities.items()} == {
        "text": (30, 3, 2),
        "image": (20, 3, 2),
    }
    table = pq.read_table(codes_dir(mmsr_home) / "item_codes.parquet")
    assert [f.name for f in table.schema] == ["item_id", "modality", "codes", "distances"]
    text = table.filter(pc.equal(table["modality"], "text"))
    assert text["item_id"].to_pylist() == ids[:30]  # the two items without text get no row
    assert table.filter(pc.equal(table["modality"], "image")).num_rows == 20
    codes = np.array(text["codes"].to_pylist())
    distances = np.array(text["distances"].to_pylist())
    assert codes.shape == (30, 2) and (np.diff(distances, axis=1) >= 0).all()
    for group in range(3):  # one group, one nearest code, and no code shared across groups
        assert len(set(codes[labels == group, 0])) == 1
    assert len(set(codes[:, 0])) == 3
    centres = pq.read_table(codes_dir(mmsr_home) / "text_centres.parquet")
    assert centres["code"].to_pylist() == [0, 1, 2]
    assert np.array(centres["vector"].to_pylist()).shape == (3, 8)


def test_codes_are_deterministic_for_a_seed(mmsr_home: Path, shop: object) -> None:
    settings = Settings(codes_c=5, codes_k=3)
    run_codes(settings, "shop")
    first = pq.read_table(codes_dir(mmsr_home) / "item_codes.parquet")
    first_centres = pq.read_table(codes_dir(mmsr_home) / "image_centres.parquet")
    run_codes(settings, "shop")
    assert pq.read_table(codes_dir(mmsr_home) / "item_codes.parquet").equals(first)
    assert pq.read_table(codes_dir(mmsr_home) / "image_centres.parquet").equals(first_centres)


def test_clamping_warns_and_never_crashes(
    mmsr_home: Path, shop: object, caplog: pytest.LogCaptureFixture
) -> None:
    report = run_codes(Settings(codes_c=25, codes_k=30), "shop")
    image = report.modalities["image"]
    assert (image.c, image.k) == (20, 20) and len(image.warnings) == 2
    assert (report.modalities["text"].c, report.modalities["text"].k) == (25, 25)
    assert "clamped to c=20" in caplog.text


def test_pca_reduction_keeps_centres_in_the_embedding_space(mmsr_home: Path, shop: object) -> None:
    report = run_codes(Settings(codes_c=3, codes_k=1, codes_reduce_dim=2), "shop")
    assert report.modalities["text"].cluster_dim == 2
    centres = np.array(pq.read_table(codes_dir(mmsr_home) / "text_centres.parquet")["vector"].to_pylist())
    assert centres.shape == (3, 8)


def test_stale_modality_is_dropped_and_no_embeddings_is_an_error(mmsr_home: Path, shop: object) -> None:
    run_codes(Settings(codes_c=3), "shop")
    (mmsr_home / "warehouse" / "shop" / "embeddings" / "image.parquet").unlink()
    report = run_codes(Settings(codes_c=3), "shop")
    assert set(report.modalities) == {"text"}
    assert not (codes_dir(mmsr_home) / "image_centres.parquet").exists()
    assert set(pq.read_table(codes_dir(mmsr_home) / "item_codes.parquet")["modality"].to_pylist()) == {"text"}
    with pytest.raises(PipelineError, match="mmsr embed"):
        run_codes(Settings(), "other")


def test_modality_without_any_vector_gets_no_codes(mmsr_home: Path) -> None:
    write_modality(mmsr_home, "image", np.full((2, 0), np.nan, dtype=np.float32), ["no_image", "no_image"])
    report = run_codes(Settings(), "shop")
    assert report.modalities == {}
    assert pq.read_table(codes_dir(mmsr_home) / "item_codes.parquet").num_rows == 0


def test_residual_levels_give_one_code_per_level_from_separate_codebooks(
    mmsr_home: Path, shop: tuple[np.ndarray, list[str]]
) -> None:
    from pipeline.warehouse.dataset import DatasetIndex, _read_codes

    report = run_codes(Settings(codes_c=3, codes_levels=2, codes_whiten=True), "shop")
    text = report.modalities["text"]
    assert (text.c, text.k, text.levels) == (6, 2, 2)
    table = pq.read_table(codes_dir(mmsr_home) / "item_codes.parquet")
    codes = np.array(table.filter(pc.equal(table["modality"], "text"))["codes"].to_pylist())
    assert set(codes[:, 0]) <= {0, 1, 2} and set(codes[:, 1]) <= {3, 4, 5}
    distances = np.array(table.filter(pc.equal(table["modality"], "text"))["distances"].to_pylist())
    assert distances[:, 1].mean() <= distances[:, 0].mean()  # each level explains more
    centres = pq.read_table(codes_dir(mmsr_home) / "text_centres.parquet")
    assert centres.num_rows == 6 and len(centres["vector"][0].as_py()) == 8
    # the graph's reader takes the codes as they are
    ids = table.filter(pc.equal(table["modality"], "text"))["item_id"].to_pylist()
    index = DatasetIndex(dataset="shop", user_ids=np.array([]), item_ids=np.array(ids))
    item_codes, code_centres = _read_codes(codes_dir(mmsr_home), index)
    assert item_codes["text"].shape == (30, 2) and code_centres["text"].shape == (6, 8)


def test_later_nights_keep_the_centres_assign_new_items_and_rebuild_on_schedule(mmsr_home: Path) -> None:
    from datetime import date, timedelta

    vectors, _ = blobs(10, 8, seed=0)
    day = date(2026, 3, 1)
    settings = Settings(codes_c=3, codes_k=2, full_retrain_every_days=7, warm_start="auto")
    write_modality(mmsr_home, "text", vectors, [None] * 24 + ["no_text"] * 6)
    assert run_codes(settings, "shop", day).rebuilt
    centres = pq.read_table(codes_dir(mmsr_home) / "text_centres.parquet")
    first = pq.read_table(codes_dir(mmsr_home) / "item_codes.parquet")

    grown = np.vstack([vectors, vectors[:3] + 0.01])  # 6 items gain a text vector, 3 are new
    write_modality(mmsr_home, "text", grown, [None] * 33)
    report = run_codes(settings, "shop", day + timedelta(days=6))
    assert (report.rebuilt, report.reason) == (False, "kept the codebooks")
    assert pq.read_table(codes_dir(mmsr_home) / "text_centres.parquet").equals(centres)
    table = pq.read_table(codes_dir(mmsr_home) / "item_codes.parquet")
    assert table.slice(0, 24).equals(first)  # known items keep their codes
    codes = np.array(table["codes"].to_pylist())
    centre_vectors = np.array(centres["vector"].to_pylist())
    nearest = np.linalg.norm(grown[:, None] - centre_vectors[None], axis=2).argsort(axis=1)[:, :2]
    assert (codes == nearest).all()  # every item, new ones included, on its nearest kept centres

    report = run_codes(settings, "shop", day + timedelta(days=7))
    assert report.rebuilt and "full rebuild due: codebooks built 7 day(s) ago" in report.reason
    assert not run_codes(settings, "shop", day + timedelta(days=8)).rebuilt
    assert (
        "settings changed"
        in run_codes(Settings(codes_c=4, warm_start="auto"), "shop", day + timedelta(days=8)).reason
    )
    assert run_codes(Settings(codes_c=3, codes_k=2, warm_start="never"), "shop", day).rebuilt


def test_the_stage_runner_builds_codebooks_on_the_nights_date(mmsr_home: Path, shop: object) -> None:
    """A backfilled night (the DAG's run_date) dates the codebooks, not the wall clock."""
    from pipeline.orchestration.stages import run_stage
    from pipeline.stages.codebook import read_state

    run_stage(Settings(codes_c=3, codes_k=2), "codes", "shop", {"run_date": "2024-05-01"})
    state = read_state(codes_dir(mmsr_home))
    assert state is not None and state["built_on"] == "2024-05-01"
