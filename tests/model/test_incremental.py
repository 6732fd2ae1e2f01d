"""A warm night's share of the data: what the older model has not learned, plus a seeded replay."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.incremental import (
    incremental_samples,
    lend_valid_targets,
    repeat_unlearned,
    trained_upto,
    with_unlearned_valid,
)
from mmsr_model.persistence import save_model
from mmsr_model.registry import build_model
from mmsr_model.training import TrainConfig, train
from tests.seqdata import chain_data, loo_splits

GRU = {"embedding_size": 8, "hidden_size": 8, "max_len": 6, "seed": 1}
GROWN = (0, 3, 7)  # users with one more interaction tonight
NEW_USERS = 2


def _nights(new_users: int = NEW_USERS) -> tuple[SequenceData, SequenceData]:
    """Night 0 (the chain data) and night 1: three users one item longer, ``new_users`` new users."""
    before = chain_data(n_users=20, n_items=30)
    sequences = [s.copy() for s in before.sequences]
    for user in GROWN:
        sequences[user] = np.append(sequences[user], (sequences[user][-1] + 1) % 30)
    sequences += [np.arange(start, start + 6) % 30 for start in range(new_users)]
    return before, SequenceData(sequences=sequences, n_items=30, splits=loo_splits(sequences))


def _pairs(targets: TargetSet) -> set[tuple[int, int]]:
    return set(zip(targets.users.tolist(), targets.positions.tolist(), strict=True))


def test_trained_upto_is_one_past_the_last_learned_target() -> None:
    data = chain_data(n_users=20)
    lengths = np.array([len(s) for s in data.sequences])
    assert np.array_equal(trained_upto(data, with_valid=False), lengths - 2)  # train ends before valid
    assert np.array_equal(trained_upto(data, with_valid=True), lengths - 1)  # a refit also learned valid


def test_after_a_refit_champion_only_the_new_targets_and_new_users_are_unlearned() -> None:
    before, tonight = _nights()
    upto = trained_upto(before, with_valid=True)
    merged = tonight.with_valid_in_train().splits["train"]
    new_users = range(len(before.sequences), len(tonight.sequences))
    expected = {(u, len(tonight.sequences[u]) - 2) for u in GROWN}
    expected |= {(u, p) for u in new_users for p in range(1, len(tonight.sequences[u]) - 1)}
    assert _pairs(incremental_samples(merged, upto, 0.0, seed=1)) == expected
    # selection's train split: the grown users' new train target is last night's valid one, learned
    train_new = _pairs(incremental_samples(tonight.splits["train"], upto, 0.0, seed=1))
    assert {u for u, _ in train_new} == set(new_users)
    valid = with_unlearned_valid(tonight, upto).splits["valid"]
    assert set(valid.users.tolist()) == {*GROWN, *new_users}
    assert len(tonight.splits["valid"]) == len(tonight.sequences)  # the input is left alone


def test_the_replay_is_a_seeded_share_of_the_learned_samples() -> None:
    before, tonight = _nights()
    upto = trained_upto(before, with_valid=True)
    merged = tonight.with_valid_in_train().splits["train"]
    new = _pairs(incremental_samples(merged, upto, 0.0, seed=1))
    learned = _pairs(merged) - new
    share = incremental_samples(merged, upto, 0.25, seed=1)
    replayed = _pairs(share) - new
    assert new <= _pairs(share) and replayed <= learned
    assert len(replayed) == round(0.25 * len(learned))
    assert _pairs(incremental_samples(merged, upto, 0.25, seed=1)) == _pairs(share)
    assert _pairs(incremental_samples(merged, upto, 0.25, seed=2)) != _pairs(share)
    assert len(incremental_samples(merged, upto, 1.0, seed=1)) == len(merged)


def test_a_night_with_nothing_new_still_trains_and_validates(caplog: pytest.LogCaptureFixture) -> None:
    data = chain_data(n_users=20)
    upto = trained_upto(data, with_valid=True)
    assert len(incremental_samples(data.splits["train"], upto, 0.0, seed=1)) == 1
    caplog.set_level(logging.WARNING, logger="mmsr_model.incremental")
    assert with_unlearned_valid(data, upto) is data
    assert "validating on all of them" in caplog.text


def _warm_from(before: SequenceData, folder: Path, cold: TrainConfig) -> tuple[TrainConfig, np.ndarray]:
    """``cold`` warm-started from a champion of ``before`` (saved with its ``trained_upto``
    in ``folder``) with a replay of 0.2, and that ``trained_upto``."""
    upto = trained_upto(before, with_valid=True)
    np.save(folder / "upto.npy", upto)
    champion = save_model(build_model("gru4rec", before, **GRU), folder / "champion.pt")
    warm = replace(
        cold, warm_start_from=str(champion), warm_trained_upto=str(folder / "upto.npy"), replay_fraction=0.2
    )
    return warm, upto


def test_a_warm_run_steps_through_its_share_in_selection_and_refit(tmp_path, caplog) -> None:  # noqa: ANN001
    before, tonight = _nights()
    config = TrainConfig(model="gru4rec", model_params=GRU, max_epochs=1, refit=True, seed=3)
    warm, upto = _warm_from(before, tmp_path, config)
    caplog.set_level(logging.INFO, logger="mmsr_model.incremental")
    _, history = train(warm, tonight)
    selection = incremental_samples(tonight.splits["train"], upto, 0.2, seed=3)
    refit = incremental_samples(tonight.with_valid_in_train().splits["train"], upto, 0.2, seed=3)
    assert (history.n_train_samples, history.refit_samples) == (len(selection), len(refit))
    assert f"validating on {len(GROWN) + NEW_USERS} of {len(tonight.sequences)} valid targets" in caplog.text
    _, cold = train(config, tonight)
    assert cold.n_train_samples == len(tonight.splits["train"])


def test_lent_valid_targets_are_a_seeded_share_that_leaves_one_to_validate_on() -> None:
    data = chain_data(n_users=20)
    samples = data.splits["train"]
    train, rest = lend_valid_targets(samples, data, 0.25, seed=1)
    lent = _pairs(train) - _pairs(samples)
    assert len(train) == len(samples) + len(lent) and len(lent) == 5
    assert lent | _pairs(rest.splits["valid"]) == _pairs(data.splits["valid"])
    assert not lent & _pairs(rest.splits["valid"])
    assert _pairs(lend_valid_targets(samples, data, 0.25, seed=1)[0]) == _pairs(train)
    assert _pairs(lend_valid_targets(samples, data, 0.25, seed=2)[0]) != _pairs(train)
    assert len(lend_valid_targets(samples, data, 0.99, seed=1)[1].splits["valid"]) == 1


@pytest.mark.parametrize(("new_users", "lends"), [(0, True), (NEW_USERS, False)])
def test_a_selection_with_nothing_new_to_train_on_borrows_unlearned_valid_targets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, new_users: int, lends: bool
) -> None:
    """After a refit champion only new users have unlearned train samples; with none, valid ones are lent."""
    before, tonight = _nights(new_users)
    config, upto = _warm_from(
        before, tmp_path, TrainConfig(model="gru4rec", model_params=GRU, max_epochs=1, seed=3)
    )
    caplog.set_level(logging.INFO, logger="mmsr_model.incremental")
    _, history = train(replace(config, lend_valid_share=0.5), tonight)
    selection = incremental_samples(tonight.splits["train"], upto, 0.2, seed=3)
    unlearned_valid = len(GROWN) + new_users
    lent = round(0.5 * unlearned_valid) if lends else 0
    assert history.n_train_samples == len(selection) + lent
    assert ("selection trains on" in caplog.text) is lends
    _, without = train(config, tonight)
    assert without.n_train_samples == len(selection)


def test_unlearned_samples_repeat_and_learned_ones_do_not() -> None:
    before, tonight = _nights()
    upto = trained_upto(before, with_valid=True)
    merged = tonight.with_valid_in_train().splits["train"]
    share = incremental_samples(merged, upto, 0.25, seed=1)
    new = _pairs(incremental_samples(merged, upto, 0.0, seed=1))
    repeated = repeat_unlearned(share, upto, 3)
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(repeated.users.tolist(), repeated.positions.tolist(), strict=True):
        counts[pair] = counts.get(pair, 0) + 1
    assert counts == {pair: 3 if pair in new else 1 for pair in _pairs(share)}
    assert repeat_unlearned(share, upto, 1) is share


def test_a_warm_run_steps_through_its_new_samples_repeatedly_in_selection_and_refit(tmp_path: Path) -> None:
    before, tonight = _nights()
    config = TrainConfig(model="gru4rec", model_params=GRU, max_epochs=1, refit=True, seed=3)
    warm, upto = _warm_from(before, tmp_path, config)
    _, once = train(warm, tonight)
    _, thrice = train(replace(warm, new_repeats=3), tonight)
    merged = tonight.with_valid_in_train().splits["train"]
    new_in_selection = len(incremental_samples(tonight.splits["train"], upto, 0.0, seed=3))
    new_in_refit = len(incremental_samples(merged, upto, 0.0, seed=3))
    assert thrice.n_train_samples == once.n_train_samples + 2 * new_in_selection
    assert thrice.refit_samples == once.refit_samples + 2 * new_in_refit
