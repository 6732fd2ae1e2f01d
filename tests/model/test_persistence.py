import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from seqdata import chain_data

from mmsr_model.persistence import _decode, _encode, load_model, save_model
from mmsr_model.registry import MODEL_NAMES, build_model


def _scores(model, data) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.full_sort_predict(model.prepare_samples(data, data.splits["test"]))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_round_trip_gives_identical_scores(name: str, tmp_path: Path) -> None:
    if name == "mmsr" and importlib.util.find_spec("mmsr_model.mmsr") is None:
        pytest.skip("mmsr_model/mmsr.py not written yet")
    data = chain_data(n_users=12, n_items=25, text_codes=4)  # MMSR keeps the code arrays in init_kwargs
    model = build_model(name, data, **({} if name == "pop" else {"seed": 5, "hidden_size": 16}))
    with torch.no_grad():  # move away from the initialisation so a re-init would be caught
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = save_model(model, tmp_path / "sub" / "model.pt")
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert repr(loaded.init_kwargs) == repr(model.init_kwargs)
    assert torch.equal(_scores(model, data), _scores(loaded, data))
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, no leftovers
    torch.load(path, weights_only=True)  # the file needs no unpickling of arbitrary objects


def test_numpy_arrays_in_init_kwargs_survive(tmp_path: Path) -> None:
    kwargs = {
        "codes": {"text": np.arange(6, dtype=np.int64).reshape(3, 2)},
        "mods": ["text"],
        "d": np.float32(2),
    }
    decoded = _decode(_encode(kwargs))
    np.testing.assert_array_equal(decoded["codes"]["text"], kwargs["codes"]["text"])
    assert decoded["codes"]["text"].dtype == np.int64 and decoded["mods"] == ["text"] and decoded["d"] == 2.0


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    torch.save({"format_version": 99, "name": "pop"}, path)
    with pytest.raises(ValueError, match="format 99"):
        load_model(path)


@pytest.mark.parametrize(
    ("switch", "old_value"),
    [("norm", "layer"), ("residual", True), ("homogeneous_values", "states"), ("content_dim", None)],
)
def test_mmsr_saved_before_a_switch_existed_loads_as_it_was_trained(
    tmp_path: Path, switch: str, old_value: object
) -> None:
    """Old files lack the switch; today's default differs, so loading must use the old value."""
    data = chain_data(n_users=12, n_items=25, text_codes=4)
    data.item_features["text"] = np.random.default_rng(0).normal(size=(25, 80))  # more axes than kept
    model = build_model("mmsr", data, seed=5, hidden_size=16, **{switch: old_value})
    path = save_model(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    del payload["init_kwargs"][switch]  # what the library wrote before the switch existed
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.init_kwargs[switch] == old_value
    assert torch.equal(_scores(model, data), _scores(loaded, data))
