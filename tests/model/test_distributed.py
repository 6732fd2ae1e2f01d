"""Data-parallel training: 2 gloo processes on the CPU match one process with the same global batch."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from seqdata import chain_data

from mmsr_model.evaluation import evaluate
from mmsr_model.training import TrainConfig, train

#: losses agree to float summation order; metrics may flip a near-tie rank on this tiny set
LOSS_RTOL, METRIC_ATOL = 1e-4, 0.02

CONFIGS = {
    "mmsr": TrainConfig(
        model="mmsr",
        model_params={"hidden_size": 16, "dropout": 0.0, "attn_dropout": 0.0, "modalities": ["text"]},
        batch_size=33,  # odd: the two ranks get 17 and 16 samples of a batch
        max_epochs=3,
        patience=5,
        refit=True,
        device="cpu",
    ),
    "sasrec": TrainConfig(
        model="sasrec",
        model_params={"hidden_size": 16, "num_layers": 1, "dropout": 0.0, "attn_dropout": 0.0},
        batch_size=33,
        max_epochs=3,
        device="cpu",
    ),
}


def _data():  # noqa: ANN202
    return chain_data(n_users=60, n_items=25, text_codes=6)


def _outcome(config: TrainConfig) -> dict:
    model, history = train(config, _data())
    return {
        "losses": [r["train_loss"] for r in history.epochs],
        "best_epoch": history.best_epoch,
        "test": evaluate(model, _data(), "test", (5, 10), exclude_seen=True),
    }


def _first_step_gradients(config: TrainConfig) -> dict[str, list]:
    """Gradients after one step over the first global batch (Adam hides a uniform scale error)."""
    from mmsr_model import distributed
    from mmsr_model.batching import build_batch, train_samples
    from mmsr_model.fitting import make_trainee, train_step
    from mmsr_model.registry import build_model

    data = _data()
    torch.manual_seed(0)
    model = build_model(config.model, data, **config.model_params)
    trainee, autocast = make_trainee(model, 0.0, 0.0, config.seed, torch.device("cpu"))
    chunk = torch.arange(config.batch_size).numpy()
    share = distributed.my_share(chunk)
    batch, targets = build_batch(model, data, train_samples(data), share)
    train_step(trainee, batch, targets, torch.device("cpu"), autocast, share=len(share) / len(chunk))
    return {n: p.grad.flatten().tolist() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, size: int, init: str, name: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        outcome = {**_outcome(CONFIGS[name]), "gradients": _first_step_gradients(CONFIGS[name])}
        if rank == 0:
            Path(out).write_text(json.dumps(outcome))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_gloo_processes_match_one_process(name: str, tmp_path: Path) -> None:
    out = tmp_path / "rank0.json"
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", name, str(out)), nprocs=2, join=True)
    parallel = json.loads(out.read_text())
    single = _outcome(replace(CONFIGS[name], prefetch=True))
    gradients = _first_step_gradients(CONFIGS[name])
    assert parallel["gradients"].keys() == gradients.keys()
    for param, values in gradients.items():
        torch.testing.assert_close(
            torch.tensor(parallel["gradients"][param]), torch.tensor(values), msg=param
        )
    assert parallel["best_epoch"] == single["best_epoch"]
    assert parallel["losses"] == pytest.approx(single["losses"], rel=LOSS_RTOL)
    for metric, value in single["test"].items():
        assert parallel["test"][metric] == pytest.approx(value, abs=METRIC_ATOL), metric
