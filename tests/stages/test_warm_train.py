"""Warm nights of the train stage: seeded from the champion run's weights, or cold with a logged reason."""

from __future__ import annotations

import logging
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from mmsr_model.incremental import incremental_samples, trained_upto
from pipeline.core.config import Settings
from pipeline.serving.registry import registered_name, setup_mlflow
from pipeline.stages import promote
from pipeline.stages.train.config import train_config
from pipeline.stages.train.run import TrainReport, night_config, run_train
from pipeline.stages.train.warm import WarmPlan, plan_warm_start
from pipeline.warehouse.codes_table import write_centres
from pipeline.warehouse.dataset import load_sequence_data
from tests.tiny_warehouse import tiny_settings, write_tiny_warehouse

NIGHT_0 = date(2026, 3, 1)


def _settings(home: Path, **overrides: object) -> Settings:
    values = {"warm_start": "auto", "warm_max_epochs": 2, "warm_patience": 1} | overrides
    return tiny_settings(home, baselines=["pop", "gru4rec"], **values)


@pytest.fixture(scope="module")
def night_0(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainReport]:
    """A champion trained cold on 40 items; tests copy this home and grow its data."""
    home = tmp_path_factory.mktemp("warm") / "home"
    settings = _settings(home)
    write_tiny_warehouse(settings, n_items=40)
    return home, run_train(settings, "tiny", run_date=NIGHT_0)


def _next_night(night_0: tuple[Path, TrainReport], tmp_path: Path, **overrides: object) -> Settings:
    """A copy of night 0's home whose data grew by 4 items and 6 users (id maps extended)."""
    home = tmp_path / "home"
    shutil.copytree(night_0[0], home)
    settings = _settings(home, **overrides)
    write_tiny_warehouse(settings, n_items=44, n_users=66)
    return settings


def _plan(settings: Settings, run_date: date):  # noqa: ANN202
    data, index = load_sequence_data(settings, "tiny")
    setup_mlflow(settings, "tiny")
    params = {name: train_config(settings, name).model_params for name in ("mmsr", *settings.baselines)}
    return plan_warm_start(settings, "tiny", data, index, run_date, params)


@pytest.mark.slow
def test_a_grown_night_trains_warm_from_the_champion_and_tags_the_run(night_0: tuple, tmp_path: Path) -> None:
    _, cold = night_0
    assert (cold.warm_start, cold.warm_start_reason, cold.model_version) == ("cold", "no champion", 1)
    settings = _next_night(night_0, tmp_path)
    report = run_train(settings, "tiny", run_date=NIGHT_0 + timedelta(days=1))
    assert (report.warm_start, report.warm_start_from) == ("warm", 1)
    assert report.epochs <= 2 and report.refit_epochs == report.best_epoch
    assert report.samples_processed > 0 and report.promotion is not None  # the gate still decides
    # the champion's run says what it learned; tonight steps through what it did not, plus a replay
    tonight, _ = load_sequence_data(settings, "tiny")
    client = MlflowClient(settings.tracking_uri)
    upto = np.load(client.download_artifacts(cold.run_id, "warm/trained_upto.npy", str(tmp_path)))
    night_0_data, _ = load_sequence_data(tiny_settings(night_0[0]), "tiny")
    assert np.array_equal(upto, trained_upto(night_0_data, with_valid=True))
    share = incremental_samples(tonight.splits["train"], upto, settings.warm_replay_fraction, settings.seed)
    merged = tonight.with_valid_in_train().splits["train"]
    refit_share = incremental_samples(merged, upto, settings.warm_replay_fraction, settings.seed)
    assert report.samples_processed == len(share) * report.epochs + len(refit_share) * report.refit_epochs
    assert len(refit_share) < 0.5 * len(merged)
    tags = MlflowClient(settings.tracking_uri).get_run(report.run_id).data.tags
    assert tags["warm_start"] == "warm" and tags["warm_start_from_version"] == "1"
    assert tags["full_retrain_date"] == NIGHT_0.isoformat()  # the chain's cold night, for the schedule
    assert tags["warm_start_reason"].startswith("from champion v1")
    cold_tags = MlflowClient(settings.tracking_uri).get_run(cold.run_id).data.tags
    assert (cold_tags["warm_start"], cold_tags["warm_start_from_version"]) == ("cold", "none")


def _renumber(settings: Settings) -> None:
    path = settings.dataset_dir("tiny") / "item_index.parquet"
    table = pq.read_table(path)
    ids = table["item_id"].to_pylist()
    ids[0], ids[1] = ids[1], ids[0]
    pq.write_table(table.set_column(0, "item_id", pa.array(ids)), path)


def _move_centres(settings: Settings) -> None:
    codes = settings.dataset_dir("tiny") / "codes"
    write_centres(codes, "text", np.random.default_rng(7).normal(size=(4, 8)).astype(np.float32))


def _drop_trained_upto(settings: Settings) -> None:
    """The champion's warm artifacts, as a retried task finds them downloaded, without trained_upto.npy."""
    client = MlflowClient(settings.tracking_uri)
    run_id = client.get_model_version(registered_name("tiny"), "1").run_id
    folder = settings.dataset_dir("tiny") / "checkpoints" / "warm"
    folder.mkdir(parents=True)
    Path(client.download_artifacts(run_id, "warm", str(folder))).rename(folder / "v1")
    (folder / "v1" / "trained_upto.npy").unlink()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "overrides", "days", "reason"),
    [
        (None, {"warm_start": "never"}, 1, "warm_start is never"),
        (None, {}, 7, "full retrain due: last one 7 day(s) ago"),
        (None, {"model": {"hidden_size": 8}}, 1, "mmsr hyper-parameters differ"),
        (_renumber, {}, 1, "item_index.parquet: today's ids renumber"),
        (_move_centres, {}, 1, "text code centres differ from the champion's (codes were rebuilt)"),
        (_drop_trained_upto, {}, 1, "champion v1: its run has no trained_upto.npy"),
    ],
)
def test_each_failed_check_falls_back_to_cold_with_its_reason(
    night_0: tuple,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    change,
    overrides,
    days,
    reason,  # noqa: ANN001
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.stages.train.warm")
    settings = _next_night(night_0, tmp_path, **overrides)
    if change is not None:
        change(settings)
    plan = _plan(settings, NIGHT_0 + timedelta(days=days))
    assert plan.mode == "cold" and reason in plan.reason and not plan.weights
    assert reason in caplog.text


@pytest.mark.slow
def test_a_shrunk_id_map_or_a_broken_champion_trains_cold_without_crashing(
    night_0: tuple, tmp_path: Path
) -> None:
    settings = _next_night(night_0, tmp_path)
    write_tiny_warehouse(settings, n_items=36)
    assert "id map shrank" in _plan(settings, NIGHT_0 + timedelta(days=1)).reason
    write_tiny_warehouse(settings, n_items=44, n_users=66)
    downloaded = settings.dataset_dir("tiny") / "checkpoints" / "warm" / "v1" / "mmsr.pt"
    downloaded.write_bytes(b"not a model")  # the champion's weights file is broken
    report = run_train(settings, "tiny", promote=False, run_date=NIGHT_0 + timedelta(days=1))
    assert report.warm_start == "cold" and "warm start check failed" in report.warm_start_reason
    assert report.epochs > 0


@pytest.mark.slow
@pytest.mark.parametrize(("warm_value", "drifted"), [(0.48, False), (0.47, True)])
def test_a_warm_model_that_drifts_below_its_chains_cold_model_is_held_back_and_the_next_night_is_cold(
    night_0: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm_value: float, drifted: bool
) -> None:
    """With the chain's cold v1 at 0.5 on the gate split, tolerance 0.05 puts the floor at 0.475."""
    settings = _next_night(night_0, tmp_path, warm_drift_tolerance=0.05, promotion_margin=0.0)
    night_1 = run_train(settings, "tiny", promote=False, run_date=NIGHT_0 + timedelta(days=1))
    assert night_1.warm_start == "warm"
    first = f"models:/{registered_name('tiny')}/1"
    monkeypatch.setattr(promote, "evaluate_version", lambda uri, *_: 0.5 if uri == first else warm_value)
    decision = promote.run_promote(settings, "tiny", night_1.model_version)
    assert (decision.chain_cold_version, decision.chain_cold_value) == (1, 0.5)
    assert not decision.promoted  # 0.47 and 0.48 do not beat the champion (v1) either
    assert ("the next night trains cold" in decision.reason) == drifted
    tags = MlflowClient(settings.tracking_uri).get_model_version(registered_name("tiny"), "2").tags
    assert tags["warm_drift"] == str(drifted).lower() and tags["chain_cold_version"] == "1"
    plan = _plan(settings, NIGHT_0 + timedelta(days=2))
    assert (plan.mode == "cold") == drifted
    if drifted:
        assert plan.reason == "v2 drifted below its chain's cold model at the gate: full retrain"


@pytest.mark.slow
def test_warm_from_chain_cold_starts_every_warm_night_from_the_chains_cold_model(
    night_0: tuple, tmp_path: Path
) -> None:
    """Night 1 trains warm from v1 (cold) and its v2 is served; night 2 starts from v1 again, not v2."""
    settings = _next_night(night_0, tmp_path, warm_from="chain_cold")
    night_1 = run_train(settings, "tiny", promote=False, run_date=NIGHT_0 + timedelta(days=1))
    assert (night_1.warm_start, night_1.warm_start_from, night_1.model_version) == ("warm", 1, 2)
    client = MlflowClient(settings.tracking_uri)
    name = registered_name("tiny")
    client.set_registered_model_alias(name, "champion", "2")
    night_2 = NIGHT_0 + timedelta(days=2)

    chained = _plan(settings.model_copy(update={"warm_from": "champion"}), night_2)
    assert (chained.mode, chained.source_version) == ("warm", 2)
    anchored = _plan(settings, night_2)
    assert (anchored.mode, anchored.source_version, anchored.full_retrain_date) == ("warm", 1, NIGHT_0)
    assert anchored.reason == "from v1, the cold model of champion v2's chain, last full retrain 2026-03-01"
    assert Path(anchored.weights["mmsr"]).parent.name == "v1"
    assert anchored.tags()["warm_start_from_version"] == "1"
    # tonight trains on everything the cold model has not learned: the champion's trained_upto is v1's
    night_0_data, _ = load_sequence_data(tiny_settings(night_0[0]), "tiny")
    assert np.array_equal(np.load(anchored.trained_upto), trained_upto(night_0_data, with_valid=True))

    client.delete_model_version(name, "1")
    gone = _plan(settings, night_2)
    assert gone.mode == "cold"
    assert gone.reason == "champion v2's chain has no promoted cold version left (warm_from)"


def test_a_warm_night_trains_at_the_scaled_learning_rate_on_the_warm_schedule(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, warm_lr_scale=0.25, warm_replay_fraction=0.3, warm_lend_valid_share=0.4, warm_new_repeats=3
    )
    cold = WarmPlan(mode="cold", reason="no champion", full_retrain_date=NIGHT_0)
    warm = WarmPlan(
        mode="warm",
        reason="from champion v1",
        full_retrain_date=NIGHT_0,
        source_version=1,
        weights={"mmsr": "mmsr.pt"},
        trained_upto="trained_upto.npy",
    )
    base = night_config(settings, "mmsr", cold, tmp_path)
    tonight = night_config(settings, "mmsr", warm, tmp_path)
    assert base.warm_start_from is None and base.lr == train_config(settings, "mmsr").lr
    assert tonight.lr == pytest.approx(0.25 * base.lr)
    assert (tonight.warm_start_from, tonight.warm_trained_upto) == ("mmsr.pt", "trained_upto.npy")
    schedule = (tonight.replay_fraction, tonight.lend_valid_share, tonight.max_epochs, tonight.patience)
    assert schedule == (0.3, 0.4, 2, 1) and (tonight.new_repeats, base.new_repeats) == (3, 1)
    baseline = night_config(settings, "gru4rec", warm, tmp_path)  # no weights in the plan: cold
    assert baseline == night_config(settings, "gru4rec", cold, tmp_path)
