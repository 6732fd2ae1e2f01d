import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from seqdata import chain_data
from toy_models import DRIFT_CONFIG, drift_data, train_drift

from mmsr_model import batching, training
from mmsr_model.evaluation import evaluate
from mmsr_model.training import TrainConfig, config_for, train


def test_early_stopping_restores_the_best_epochs_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    train_drift(monkeypatch)
    seen: list[dict[str, float]] = []
    model, history = train(DRIFT_CONFIG, drift_data(), on_epoch_end=seen.append)
    # w after each epoch: 0.5, 1, 1.5, 2, 2.5, 3 -> target rank 3, 3, 2, 1, 2, 3 -> stop after 2 bad epochs
    assert [round(r["val_mrr_at_5"], 4) for r in history.epochs] == [0.3333, 0.3333, 0.5, 1.0, 0.5, 0.3333]
    assert history.stopped_early and history.best_epoch == 4
    assert history.best_val["mrr_at_5"] == 1.0
    assert model.w.item() == pytest.approx(2.0, abs=1e-4)  # epoch 4's weight, not the last (3.0)
    assert seen == history.epochs and {"train_loss", "seconds", "val_hr_at_10"} <= set(seen[0])


def test_time_budget_stops_after_the_first_epoch_that_passes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    train_drift(monkeypatch)
    model, history = train(replace(DRIFT_CONFIG, patience=5, time_budget_s=0.0), drift_data())
    assert len(history.epochs) == 1 and history.best_epoch == 1
    assert history.stopped_by_budget and not history.stopped_early


def test_same_seed_gives_identical_runs() -> None:
    data = chain_data(n_users=40, n_items=20)
    config = TrainConfig(
        model="sasrec",
        model_params={"hidden_size": 16, "num_layers": 1},
        batch_size=32,
        max_epochs=2,
        device="cpu",
    )
    (model_a, hist_a), (model_b, hist_b) = train(config, data), train(config, data)
    assert [r["train_loss"] for r in hist_a.epochs] == [r["train_loss"] for r in hist_b.epochs]
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    (_, hist_c) = train(replace(config, seed=config.seed + 1), data)
    assert hist_c.epochs[0]["train_loss"] != hist_a.epochs[0]["train_loss"]
    (_, hist_d) = train(replace(config, prefetch=False), data)  # same batches, same order
    assert [r["train_loss"] for r in hist_d.epochs] == [r["train_loss"] for r in hist_a.epochs]


def test_refit_retrains_from_scratch_on_train_and_valid_for_the_best_epoch_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train_drift(monkeypatch)
    # batches of 2: the 3 train samples take 2 steps an epoch, train + valid (6) take 3
    config = replace(DRIFT_CONFIG, batch_size=2)
    selected, history = train(config, drift_data())
    # w after each epoch: 1, 2, 3, 4 -> best epoch 2, stopped after 2 bad epochs
    assert history.best_epoch == 2 and len(history.epochs) == 4
    assert selected.w.item() == pytest.approx(2.0, abs=1e-4) and history.refit_epochs == 0

    refit, refit_history = train(replace(config, refit=True), drift_data())
    assert refit.w.item() == pytest.approx(3.0, abs=1e-4)  # a fresh w, 2 epochs x 3 steps
    assert (refit_history.refit_epochs, refit_history.refit_samples) == (2, 6)
    # selection is unchanged and its validation numbers are kept: the refit model has seen valid
    assert refit_history.best_val == history.best_val and refit_history.best_epoch == 2


def test_refit_of_popularity_counts_the_valid_targets() -> None:
    data = chain_data(n_users=30, n_items=20)
    merged = data.with_valid_in_train()
    assert "valid" not in merged.splits and merged.splits["test"] is data.splits["test"]
    assert len(merged.splits["train"]) == len(data.splits["train"]) + len(data.splits["valid"])
    model, history = train(TrainConfig(model="pop", refit=True), data)
    assert torch.equal(model.counts, torch.from_numpy(merged.train_item_counts()).float())
    assert not torch.equal(model.counts, torch.from_numpy(data.train_item_counts()).float())
    assert history.best_val == evaluate(
        train(TrainConfig(model="pop"), data)[0], data, "valid", exclude_seen=True
    )


def test_models_without_parameters_get_one_validation_epoch() -> None:
    data = chain_data(n_users=30, n_items=20)
    model, history = train(TrainConfig(model="pop", max_epochs=50), data)
    assert len(history.epochs) == 1 and history.best_epoch == 1
    assert history.best_val == evaluate(model, data, "valid", exclude_seen=True)


def test_validation_ranks_only_items_outside_the_history_unless_told_otherwise() -> None:
    # Pop ranks the chain's most frequent items first, and many of them are in the valid histories
    data = chain_data(n_users=30, n_items=20)
    model, masked = train(TrainConfig(model="pop"), data)
    _, every = train(TrainConfig(model="pop", exclude_seen=False), data)
    assert masked.best_val == evaluate(model, data, "valid", exclude_seen=True)
    assert every.best_val == evaluate(model, data, "valid", exclude_seen=False)
    assert masked.best_val["hr_at_5"] > every.best_val["hr_at_5"]


def test_max_valid_samples_validates_each_epoch_on_one_seeded_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    data = chain_data(n_users=40, n_items=20)
    validated: list[tuple] = []
    validate = training._validate

    def recording(model, data, config, device):  # noqa: ANN001, ANN202
        targets = data.splits["valid"]
        validated.append((tuple(targets.users), tuple(targets.positions)))
        return validate(model, data, config, device)

    monkeypatch.setattr(training, "_validate", recording)
    config = TrainConfig(model="gru4rec", max_epochs=3, patience=5, max_valid_samples=15, device="cpu")
    train(config, data)
    train(replace(config, model="pop"), data)
    assert len(validated) == 4 and len(set(validated)) == 1 and len(validated[0][0]) == 15
    valid = data.splits["valid"]
    assert set(zip(*validated[0], strict=True)) <= set(zip(valid.users, valid.positions, strict=True))
    validated.clear()
    train(replace(config, max_valid_samples=None, max_epochs=1), data)
    assert len(validated[0][0]) == len(valid)


def test_config_for_applies_model_defaults_then_changes() -> None:
    base = TrainConfig(lr=0.002, batch_size=128, max_epochs=3)
    sasrec = config_for("sasrec", base)
    assert (sasrec.model, sasrec.lr, sasrec.batch_size, sasrec.max_epochs) == ("sasrec", 0.001, 256, 3)
    assert config_for("gru4rec", base, batch_size=64).batch_size == 64
    assert config_for("pop", base).lr == 0.002


def test_max_train_samples_and_bad_settings() -> None:
    data = chain_data(n_users=30, n_items=20)
    _, history = train(TrainConfig(model="gru4rec", max_epochs=1, max_train_samples=25, device="cpu"), data)
    assert history.n_train_samples == 25
    with pytest.raises(ValueError, match="eval_metric 'ndcg_at_50'"):
        train(TrainConfig(model="pop", eval_metric="ndcg_at_50"), data)


def test_mmsr_trains_in_the_harness() -> None:
    pytest.importorskip("mmsr_model.mmsr")
    data = chain_data(n_users=60, n_items=30, text_codes=5)
    params = {"hidden_size": 32, "modalities": ["text"]}
    config = TrainConfig(
        model="mmsr", model_params=params, lr=0.01, batch_size=64, max_epochs=3, device="cpu"
    )
    model, history = train(config, data)
    assert model.name == "mmsr" and len(history.epochs) == 3
    assert evaluate(model, data, "test", exclude_seen=False)["hr_at_5"] > 0.5  # random: 5/30


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_trains_with_mixed_precision_on_cuda(name: str) -> None:
    data = chain_data(n_users=80, n_items=30)
    config = config_for(name, TrainConfig(max_epochs=12, patience=4, device="cuda"), lr=0.01, batch_size=64)
    model, history = train(config, data)
    assert history.device.startswith("cuda") and next(model.parameters()).is_cuda
    assert all(math.isfinite(r["train_loss"]) for r in history.epochs)
    assert evaluate(model, data, "test", exclude_seen=False)["hr_at_5"] > 0.6


def test_length_buckets_keep_every_sample_once_and_group_similar_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 51, size=1000)
    order = rng.permutation(1000)
    bucketed = batching.length_bucketed(
        order, lengths, batch_size=10, rng=np.random.default_rng(1), pool_batches=20
    )
    assert sorted(bucketed.tolist()) == list(range(1000))
    spread = [np.ptp(lengths[batch]) for batch in np.split(bucketed, 100)]
    random_spread = [np.ptp(lengths[batch]) for batch in np.split(order, 100)]
    assert np.mean(spread) < np.mean(random_spread) / 5
    again = batching.length_bucketed(
        order, lengths, batch_size=10, rng=np.random.default_rng(1), pool_batches=20
    )
    assert np.array_equal(bucketed, again)


def test_padded_baselines_bucket_by_length_and_mmsr_does_not() -> None:
    from mmsr_model.registry import model_class

    assert model_class("sasrec").batches_by_length and model_class("gru4rec").batches_by_length
    assert not model_class("mmsr").batches_by_length


def test_tensors_in_finds_every_tensor_of_a_nested_batch() -> None:
    """The CUDA prefetch marks each of a batch's tensors as used by the step's stream: all of them."""
    from dataclasses import dataclass

    from mmsr_model.device import tensors_in

    @dataclass
    class Inner:
        a: torch.Tensor
        n: int

    t = [torch.zeros(1), torch.ones(2), torch.full((3,), 2.0), torch.arange(4)]
    found = list(tensors_in((Inner(t[0], 3), [t[1], {"x": t[2]}], "label", t[3])))
    assert [id(x) for x in found] == [id(x) for x in t]
