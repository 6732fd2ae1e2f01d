import importlib.util

import numpy as np
import pytest
import torch
from seqdata import chain_data, loo_splits

from mmsr_model.data import SequenceData
from mmsr_model.evaluation import evaluate
from mmsr_model.registry import MODEL_NAMES, build_model, model_class
from mmsr_model.training import TrainConfig, config_for, train


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_baseline_learns_a_clear_sequential_pattern(name: str) -> None:
    data = chain_data(n_users=80, n_items=30)
    config = config_for(name, TrainConfig(max_epochs=12, patience=4, device="cpu"), lr=0.01, batch_size=64)
    model, history = train(config, data)
    test = evaluate(model, data, "test", exclude_seen=False)
    # random ranking gives HR@5 = 5/30; the chain i -> i+1 is learnable almost perfectly
    assert test["hr_at_5"] > 0.6, (test, history.epochs[-1])
    assert history.best_val["ndcg_at_10"] > 0.4


def test_popularity_counts_train_targets_and_their_histories() -> None:
    sequences = [np.array([0, 1, 2, 3]), np.array([2, 2, 4, 5, 1])]
    data = SequenceData(sequences=sequences, n_items=7, splits=loo_splits(sequences))
    model = build_model("pop", data)
    # train parts: [0, 1] and [2, 2, 4] (valid/test items are not counted)
    assert model.counts.tolist() == [1, 1, 2, 0, 1, 0, 0]
    scores = model.full_sort_predict(model.prepare([np.array([3])]))
    assert scores.tolist() == [[1, 1, 2, 0, 1, 0, 0]]
    assert not list(model.parameters())


def test_sasrec_is_causal_and_padding_does_not_leak() -> None:
    model = build_model("sasrec", chain_data(n_users=5, n_items=20), seed=3).eval()
    a, b = np.array([1, 2, 3, 4, 5]), np.array([1, 2, 3, 9, 11])
    states = model.encode(model.prepare([a, b]))
    torch.testing.assert_close(states[0, :3], states[1, :3])  # future items do not change earlier outputs
    assert not torch.allclose(states[0, 3:], states[1, 3:])
    short = np.array([7, 8])
    alone = model(model.prepare([short]))
    torch.testing.assert_close(model(model.prepare([short, a]))[0], alone[0], atol=1e-5, rtol=1e-5)


def test_gru4rec_readout_ignores_padding() -> None:
    model = build_model("gru4rec", chain_data(n_users=5, n_items=20), seed=3).eval()
    short, long = np.array([4, 5]), np.arange(12)
    torch.testing.assert_close(
        model(model.prepare([short, long]))[0], model(model.prepare([short]))[0], atol=1e-5, rtol=1e-5
    )


def test_histories_are_cut_to_max_len() -> None:
    model = build_model("sasrec", chain_data(n_users=5, n_items=20), max_len=4)
    items, lengths = model.prepare([np.arange(10), np.array([3])])
    assert items.tolist() == [[7, 8, 9, 10], [4, 0, 0, 0]]  # item i stored as i + 1, 0 = padding
    assert lengths.tolist() == [4, 1]


def test_sasrec_defaults_follow_recbole() -> None:
    model = build_model("sasrec", chain_data(n_users=5, n_items=20))
    kw = model.init_kwargs
    assert (kw["hidden_size"], kw["num_layers"], kw["num_heads"], kw["inner_size"]) == (64, 2, 2, 256)
    assert (kw["dropout"], kw["attn_dropout"], kw["layer_norm_eps"], kw["max_len"]) == (0.5, 0.5, 1e-12, 50)
    assert model_class("sasrec").default_train_overrides == {
        "lr": 0.001,
        "batch_size": 256,
        "label_smoothing": 0.0,
    }
    gru = build_model("gru4rec", chain_data(n_users=5, n_items=20)).init_kwargs
    assert (gru["embedding_size"], gru["hidden_size"], gru["num_layers"], gru["dropout"]) == (64, 128, 1, 0.3)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_registry_builds_every_model(name: str) -> None:
    if name == "mmsr" and importlib.util.find_spec("mmsr_model.mmsr") is None:
        pytest.skip("mmsr_model/mmsr.py not written yet")
    data = chain_data(n_users=8, n_items=15)
    model = build_model(name, data)
    assert model.name == name and model.n_items == 15
    scores = model.full_sort_predict(model.batch_to(model.prepare_samples(data, data.splits["test"]), "cpu"))
    assert scores.shape == (8, 15)


def test_registry_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'bert4rec'"):
        build_model("bert4rec", chain_data(n_users=5, n_items=10))
