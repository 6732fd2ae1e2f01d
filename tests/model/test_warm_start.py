"""Warm start of a model from an older one: known item rows copied, new rows fresh, mismatches refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mmsr_model.data import SequenceData
from mmsr_model.registry import build_model
from mmsr_model.training import TrainConfig, train
from mmsr_model.warm_start import IncompatibleWeights, transfer_weights
from tests.seqdata import chain_data

PARAMS = {
    "mmsr": {"hidden_size": 8, "max_len": 6, "seed": 1},
    "sasrec": {"hidden_size": 8, "num_heads": 2, "inner_size": 16, "max_len": 6, "seed": 1},
    "gru4rec": {"embedding_size": 8, "hidden_size": 8, "max_len": 6, "seed": 1},
}


def _data(n_items: int) -> SequenceData:
    """The chain data with a text modality: four code centres that stay put as items are added."""
    return chain_data(n_items=n_items, text_codes=4)


def _content_data(n_items: int) -> SequenceData:
    """``_data`` with text vectors: an item keeps its vector as items are added, and the
    later items lie off the first ones' centre and axes."""
    data = _data(n_items)
    vectors = np.random.default_rng(3).normal(size=(24, 6))
    vectors[20:] = 4.0 * vectors[20:] + 3.0
    data.item_features["text"] = vectors[:n_items]
    return data


def _trained_like(name: str, n_items: int, seed: int = 0):  # noqa: ANN202
    """A model whose weights differ from a fresh one's (as a trained champion's do)."""
    model = build_model(name, _data(n_items), **PARAMS[name])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return model


@pytest.mark.parametrize("name", ["mmsr", "sasrec", "gru4rec"])
def test_known_item_rows_are_copied_and_new_rows_stay_fresh(name: str) -> None:
    champion = _trained_like(name, n_items=20)
    fresh = build_model(name, _data(24), **PARAMS[name])
    target = build_model(name, _data(24), **PARAMS[name])
    assert transfer_weights(champion, target) == 4
    table = target.item_tables[0]
    old, new, init = champion.state_dict(), target.state_dict(), fresh.state_dict()
    rows = old[table].shape[0]  # the padded baselines' row 0 is padding, so rows = items + 1
    assert torch.equal(new[table][:rows], old[table])
    assert torch.equal(new[table][rows:], init[table][rows:])
    for key, tensor in old.items():
        if key != table:
            assert torch.equal(new[key], tensor), key


@pytest.mark.parametrize("frame", [{}, {"content_dim": 3}, {"content_norm": "whiten"}])
def test_warm_model_reads_content_in_the_champions_frame(frame: dict, tmp_path) -> None:  # noqa: ANN001
    """Refitted on a grown catalogue, the content's centre and axes move; the copied content
    projection must keep reading the known items' content as the champion did, and so must
    the model that is saved and served."""
    from mmsr_model.persistence import load_model, save_model

    params = {**PARAMS["mmsr"], **frame}
    champion = build_model("mmsr", _content_data(20), **params)
    target = build_model("mmsr", _content_data(24), **params)
    assert not torch.allclose(target.content_text[:20], champion.content_text, atol=1e-3)
    transfer_weights(champion, target)
    torch.testing.assert_close(target.content_text[:20], champion.content_text, rtol=0, atol=1e-6)
    assert target.content_text[20:].abs().sum() > 0  # new items: in the same frame
    served = load_model(save_model(target, tmp_path / "warm.pt"))
    assert torch.equal(served.content_text, target.content_text)


def test_mismatches_are_refused_with_a_reason() -> None:
    champion = _trained_like("mmsr", n_items=20)
    with pytest.raises(IncompatibleWeights, match="id map shrank"):
        transfer_weights(champion, build_model("mmsr", _data(16), **PARAMS["mmsr"]))
    wider = {**PARAMS["mmsr"], "hidden_size": 16}
    with pytest.raises(IncompatibleWeights, match="hyper-parameters"):
        transfer_weights(champion, build_model("mmsr", _data(20), **wider))
    with pytest.raises(IncompatibleWeights, match="champion is a mmsr"):
        transfer_weights(champion, build_model("sasrec", _data(20), **PARAMS["sasrec"]))
    moved = _data(20)
    moved.code_centres["text"] = moved.code_centres["text"] + 1.0
    with pytest.raises(IncompatibleWeights, match="text code centres differ"):
        transfer_weights(champion, build_model("mmsr", moved, **PARAMS["mmsr"]))


def test_training_starts_from_the_warm_weights(tmp_path) -> None:  # noqa: ANN001
    from mmsr_model.persistence import save_model

    champion = _trained_like("gru4rec", n_items=20)
    path = save_model(champion, tmp_path / "champion.pt")
    data = _data(24)
    seen: list[np.ndarray] = []
    config_cold = TrainConfig(model="gru4rec", model_params=PARAMS["gru4rec"], max_epochs=1)
    for c in (replace(config_cold, warm_start_from=str(path)), config_cold):
        model, history = train(c, data)
        seen.append(model.item_embedding.weight.detach().numpy()[:21])
        assert len(history.epochs) == 1
    before = champion.item_embedding.weight.detach().numpy()
    # one epoch moves the weights a little: the warm model stays near the champion, the cold one does not
    assert np.abs(seen[0] - before).mean() < 0.5 * np.abs(seen[1] - before).mean()
