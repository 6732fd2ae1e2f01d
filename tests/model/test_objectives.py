"""Training objectives: full softmax (the default path unchanged), label smoothing, sampled softmax."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from seqdata import chain_data

from mmsr_model.evaluation import evaluate
from mmsr_model.mmsr import MMSR
from mmsr_model.objectives import Objective
from mmsr_model.registry import build_model
from mmsr_model.training import TrainConfig, train


@pytest.fixture
def sasrec_batch() -> tuple:
    data = chain_data(n_users=20, n_items=15)
    torch.manual_seed(0)
    model = build_model("sasrec", data, hidden_size=8, num_layers=1, seed=0).eval()  # no dropout
    targets = data.splits["train"]
    batch = model.prepare_samples(data, targets)
    return model, batch, torch.from_numpy(data.target_items(targets))


def test_full_softmax_is_the_models_own_loss_and_smoothing_is_torchs(sasrec_batch: tuple) -> None:
    model, batch, targets = sasrec_batch
    rng = np.random.default_rng(0)
    torch.testing.assert_close(
        Objective().loss(model, batch, targets, rng), model.calculate_loss(batch, targets)
    )
    smoothed = Objective(label_smoothing=0.1).loss(model, batch, targets, rng)
    expected = torch.nn.functional.cross_entropy(model.full_sort_predict(batch), targets, label_smoothing=0.1)
    torch.testing.assert_close(smoothed, expected)
    assert (
        rng.bit_generator.state == np.random.default_rng(0).bit_generator.state
    )  # full softmax draws nothing


def test_sampled_softmax_scores_the_target_against_drawn_negatives(sasrec_batch: tuple) -> None:
    model, batch, targets = sasrec_batch
    rng = np.random.default_rng(3)
    drawn = torch.from_numpy(np.random.default_rng(3).integers(model.n_items, size=5))
    loss = Objective("sampled_softmax", negatives=5).loss(model, batch, targets, rng)
    scores = model.full_sort_predict(batch)
    logits = torch.cat([scores.gather(1, targets[:, None]), scores[:, drawn]], dim=1)
    logits[:, 1:] = logits[:, 1:].masked_fill(drawn[None, :] == targets[:, None], float("-inf"))
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))
    torch.testing.assert_close(loss, expected)


def test_every_objective_learns_the_chain_and_is_reproducible() -> None:
    data = chain_data(n_users=80, n_items=30)
    base = TrainConfig(
        model="sasrec",
        model_params={"hidden_size": 16, "num_layers": 1},
        batch_size=32,
        max_epochs=6,
        label_smoothing=0.0,
    )
    for config in (
        replace(base, loss="sampled_softmax", negatives=8),
        replace(base, label_smoothing=0.1),
    ):
        model, history = train(replace(config, device="cpu"), data)
        _, again = train(replace(config, device="cpu"), data)
        assert [r["train_loss"] for r in history.epochs] == [r["train_loss"] for r in again.epochs]
        assert evaluate(model, data, "test", (5,), exclude_seen=False)["hr_at_5"] > 0.5  # random: 5 / 30


@pytest.mark.parametrize("params", [{}, {"id_drop_p": 0.5, "score_scale": 5.0}])
def test_sampled_softmax_computes_only_the_scored_rows_of_a_content_table(params: dict) -> None:
    """MMSR's table is ID + projected content: the sampled loss projects the drawn rows only,
    with the values (and the ID-dropout draw) of indexing the whole table."""
    data = chain_data(n_users=20, n_items=15)
    data.item_features["text"] = np.random.default_rng(0).normal(size=(15, 6))
    data.item_features["text"][4] = np.nan  # an item without content: the learned stand-in
    model = MMSR.from_data(data, hidden_size=8, modality_nodes="raw", modalities=["text"], seed=0, **params)
    ids = torch.tensor([4, 0, 14, 4])
    torch.testing.assert_close(model.eval().item_rows(ids), model.item_embeddings()[ids])
    model.train()
    targets = data.splits["train"]
    batch, target_items = model.prepare_samples(data, targets), torch.from_numpy(data.target_items(targets))

    def seeded() -> None:
        model._id_drop_rng = np.random.default_rng(7)
        torch.manual_seed(0)

    seeded()
    sampled = Objective("sampled_softmax", negatives=6)
    loss = sampled.loss(model, batch, target_items, np.random.default_rng(1))
    seeded()
    states, table = model(batch), model.item_embeddings()
    drawn = torch.from_numpy(np.random.default_rng(1).integers(15, size=6))
    logits = torch.cat([(states * table[target_items]).sum(-1, keepdim=True), states @ table[drawn].T], dim=1)
    logits[:, 1:] = logits[:, 1:].masked_fill(drawn[None, :] == target_items[:, None], float("-inf"))
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(len(target_items), dtype=torch.long))
    torch.testing.assert_close(loss, expected)
