"""Resumable training: a run cut short and resumed must equal one that never stopped."""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from seqdata import chain_data
from toy_models import DRIFT_CONFIG, drift_data, train_drift

from mmsr_model.checkpoint import FORMAT_VERSION, checkpoint_file
from mmsr_model.training import TrainConfig, TrainHistory, train

# dropout and training-time modality and ID drops make every random stream matter
MMSR_CONFIG = TrainConfig(
    model="mmsr",
    model_params={"hidden_size": 16, "dropout": 0.3, "modality_drop_p": 0.3, "id_drop_p": 0.3},
    batch_size=32,
    max_epochs=3,
    patience=10,
    device="cpu",
)


def _learning_curve(history: TrainHistory) -> list[dict[str, float]]:
    """Epoch records without the wall-clock fields."""
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history.epochs]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    data = chain_data(n_users=60, n_items=20, text_codes=6)
    data.item_features["text"] = np.random.default_rng(1).normal(size=(20, 8))  # content: ID rows drop
    whole_model, whole = train(MMSR_CONFIG, data)

    cut = replace(MMSR_CONFIG, checkpoint_dir=str(tmp_path), time_budget_s=0.0)
    _, first = train(cut, data)
    assert len(first.epochs) == 1 and first.stopped_by_budget

    seen: list[dict[str, float]] = []
    resumed_model, resumed = train(replace(MMSR_CONFIG, checkpoint_dir=str(tmp_path)), data, seen.append)
    assert _learning_curve(resumed) == _learning_curve(whole)
    assert resumed.best_epoch == whole.best_epoch and resumed.best_val == whole.best_val
    _assert_same_weights(resumed_model, whole_model)
    assert [r["epoch"] for r in seen] == [1.0, 2.0, 3.0]  # the saved epoch is replayed to the callback
    assert resumed.seconds >= first.seconds


def test_a_finished_run_is_not_retrained_and_can_be_extended(tmp_path: Path) -> None:
    data = chain_data(n_users=60, n_items=20, text_codes=6)
    config = replace(MMSR_CONFIG, checkpoint_dir=str(tmp_path))
    model, history = train(config, data)

    again_model, again = train(config, data)
    assert _learning_curve(again) == _learning_curve(history)
    _assert_same_weights(again_model, model)

    _, longer = train(replace(config, max_epochs=4), data)
    _, straight = train(replace(MMSR_CONFIG, max_epochs=4), data)
    assert len(longer.epochs) == 4
    assert _learning_curve(longer) == _learning_curve(straight)


def test_a_finished_run_resumed_with_refit_goes_straight_to_the_same_refit(tmp_path: Path) -> None:
    data = chain_data(n_users=60, n_items=20, text_codes=6)
    straight_model, straight = train(replace(MMSR_CONFIG, refit=True), data)
    config = replace(MMSR_CONFIG, checkpoint_dir=str(tmp_path))
    selected_model, selected = train(config, data)

    refit_model, refit = train(replace(config, refit=True), data)
    assert _learning_curve(refit) == _learning_curve(selected) == _learning_curve(straight)
    assert refit.refit_epochs == selected.best_epoch == straight.refit_epochs
    _assert_same_weights(refit_model, straight_model)
    with pytest.raises(AssertionError):
        _assert_same_weights(refit_model, selected_model)


def test_a_run_early_stopping_ended_stays_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_drift(monkeypatch)
    config = replace(DRIFT_CONFIG, checkpoint_dir=str(tmp_path))
    _, history = train(config, drift_data())
    assert history.stopped_early and len(history.epochs) == 6

    model, again = train(config, drift_data())
    assert again.stopped_early and len(again.epochs) == 6 and again.best_epoch == 4
    assert model.w.item() == pytest.approx(2.0, abs=1e-4)  # the best epoch's weight, restored

    _, patient = train(replace(config, patience=3), drift_data())  # more patience: one more epoch
    assert len(patient.epochs) == 7 and patient.stopped_early


def test_new_learning_settings_or_data_start_a_new_file(tmp_path: Path) -> None:
    data = chain_data(n_users=60, n_items=20, text_codes=6)
    fields = vars(replace(MMSR_CONFIG, checkpoint_dir=str(tmp_path)))
    path = checkpoint_file(tmp_path, fields, data).path
    assert path.parent == tmp_path and path.name.startswith("mmsr-")
    for run_control in ({"max_epochs": 50}, {"patience": 1}, {"time_budget_s": 60.0}, {"device": "cuda"}):
        assert checkpoint_file(tmp_path, fields | run_control, data).path == path
    for learning in ({"lr": 0.01}, {"seed": 7}, {"model_params": {"hidden_size": 32}}, {"batch_size": 8}):
        assert checkpoint_file(tmp_path, fields | learning, data).path != path
    # a setting added later keys only when set: files of runs written before it still resume
    for later, value in (("max_valid_samples", 10), ("new_repeats", 3)):
        before = {k: v for k, v in fields.items() if k != later}
        assert checkpoint_file(tmp_path, before, data).path == path
        assert checkpoint_file(tmp_path, fields | {later: value}, data).path != path
    # runs written before exclude_seen validated on every item: only exclude_seen=False resumes them
    unmasked = {k: v for k, v in fields.items() if k != "exclude_seen"}
    assert fields["exclude_seen"] and checkpoint_file(tmp_path, unmasked, data).path != path
    assert checkpoint_file(tmp_path, fields | {"exclude_seen": False}, data).path == (
        checkpoint_file(tmp_path, unmasked, data).path
    )
    for content_dim, same in ((None, True), (8, False)):
        params = fields["model_params"] | {"content_dim": content_dim}
        assert (checkpoint_file(tmp_path, fields | {"model_params": params}, data).path == path) is same
    other = chain_data(n_users=60, n_items=20, text_codes=6)
    other.sequences[0] = other.sequences[0][::-1].copy()
    assert checkpoint_file(tmp_path, fields, other).path != path
    recoded = chain_data(n_users=60, n_items=20, text_codes=6)
    recoded.item_codes["text"] = np.roll(recoded.item_codes["text"], 1, axis=0)
    assert checkpoint_file(tmp_path, fields, recoded).path != path


def test_a_fresh_start_beside_other_files_says_why_it_did_not_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = chain_data(n_users=60, n_items=20, text_codes=6)
    config = replace(MMSR_CONFIG, checkpoint_dir=str(tmp_path), max_epochs=1)
    train(config, data)
    (first,) = tmp_path.glob("*.pt")
    train(replace(config, lr=0.01, seed=7), data)
    (second,) = set(tmp_path.glob("*.pt")) - {first}
    payload = torch.load(second, weights_only=True)
    del payload["key"]  # as an earlier version wrote it
    torch.save(payload, second)
    (tmp_path / "mmsr-0000000000000000.pt").write_bytes(b"not a checkpoint")
    other = chain_data(n_users=60, n_items=20, text_codes=6)
    other.sequences[0] = other.sequences[0][::-1].copy()
    caplog.set_level(logging.WARNING, logger="mmsr_model.training")
    train(replace(config, lr=0.01), other)
    assert f"not resuming {first.name}: other settings lr and data" in caplog.text
    assert f"not resuming {second.name}: written without its settings" in caplog.text
    assert "mmsr-0000000000000000.pt: unreadable" in caplog.text
    caplog.clear()
    train(config, data)  # its own file: resumes, no warning
    assert "not resuming" not in caplog.text


def test_an_unknown_file_format_is_refused_with_its_path(tmp_path: Path) -> None:
    data = chain_data(n_users=60, n_items=20, text_codes=6)
    config = replace(MMSR_CONFIG, checkpoint_dir=str(tmp_path), max_epochs=1)
    train(config, data)
    (path,) = tmp_path.glob("*.pt")
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(ValueError, match=f"{path.name}.*delete the file"):
        train(config, data)
