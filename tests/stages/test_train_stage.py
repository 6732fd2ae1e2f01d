"""Train stage: warehouse loading, the MLflow run it logs, and the whole nightly cycle after it."""

from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from tiny_warehouse import TINY_MODEL, tiny_settings, write_tiny_warehouse

from pipeline.core.errors import PipelineError
from pipeline.serving.registry import registered_name
from pipeline.stages.publish import publish_night
from pipeline.stages.recommend import run_recommend
from pipeline.stages.train import run as train_stage
from pipeline.stages.train.run import TrainReport, run_train
from pipeline.warehouse.dataset import dataset_fingerprint, load_sequence_data
from pipeline.warehouse.model_runs import read_model_runs


def test_load_sequence_data_follows_the_layout(mmsr_home: Path) -> None:
    settings = tiny_settings(mmsr_home)
    root = write_tiny_warehouse(settings)
    data, index = load_sequence_data(settings, "tiny")
    sequences = pq.read_table(root / "sequences.parquet").to_pylist()
    assert data.n_items == 40 and len(data.sequences) == 60
    assert [s.tolist() for s in data.sequences] == [row["items"] for row in sequences]
    assert index.user_ids[7] == "tiny-U007" and index.item_idx["tiny-I003"] == 3
    # every user: leave-one-out test = last item, valid = second to last
    assert sorted(data.splits["test"].positions.tolist()) == sorted(len(s) - 1 for s in data.sequences)
    assert len(data.splits["train"]) == sum(len(s) - 3 for s in data.sequences)
    # image codes exist for even items only: odd items carry -1 (missing modality)
    assert data.item_codes["image"].shape == (40, 2)
    assert (data.item_codes["image"][1::2] == -1).all() and (data.item_codes["image"][0::2] >= 0).all()
    assert data.code_centres["text"].shape == (4, 8) and data.code_centres["text"].dtype == np.float32


def test_bad_split_row_names_file_row_and_field(mmsr_home: Path) -> None:
    settings = tiny_settings(mmsr_home)
    root = write_tiny_warehouse(settings)
    splits = pq.read_table(root / "splits.parquet").to_pylist()
    splits[5]["target_pos"] = 999
    pq.write_table(pa.Table.from_pylist(splits), root / "splits.parquet")
    with pytest.raises(PipelineError, match=r"splits\.parquet: row 5, field target_pos"):
        load_sequence_data(settings, "tiny")


def test_missing_warehouse_is_a_clear_error(mmsr_home: Path) -> None:
    with pytest.raises(PipelineError, match="mmsr extract"):
        load_sequence_data(tiny_settings(mmsr_home), "nope")


def test_fingerprint_tracks_content(mmsr_home: Path) -> None:
    settings = tiny_settings(mmsr_home)
    write_tiny_warehouse(settings)
    first = dataset_fingerprint(settings, "tiny")
    assert first["files"]["sequences.parquet"]["rows"] == 60
    assert "codes/item_codes.parquet" in first["files"]
    assert dataset_fingerprint(settings, "tiny") == first
    write_tiny_warehouse(settings, seed=1)
    second = dataset_fingerprint(settings, "tiny")
    assert second["sha256"] != first["sha256"]
    assert second["files"]["sequences.parquet"]["sha256"] != first["files"]["sequences.parquet"]["sha256"]


@pytest.mark.slow
def test_content_aware_items_train_register_and_serve(mmsr_home: Path) -> None:
    settings = tiny_settings(mmsr_home, model={**TINY_MODEL, "item_content": "add", "max_epochs": 2})
    write_tiny_warehouse(settings, text_vectors=True)
    report = run_train(settings, "tiny")
    run = MlflowClient(settings.tracking_uri).get_run(report.run_id)
    assert run.data.params["model.item_content"] == "add"
    served = run_recommend(settings, "tiny", date(2024, 1, 2), 5)
    assert served.rows == 60 * 5 and served.model_version == report.model_version


@pytest.mark.slow
def test_train_stage_runs_data_parallel_under_torchrun(mmsr_home: Path) -> None:
    from pipeline.orchestration.isolated import run_stage_isolated

    settings = tiny_settings(mmsr_home, train_processes=2, model={**TINY_MODEL, "max_epochs": 2})
    write_tiny_warehouse(settings)
    report = run_stage_isolated(
        settings, "train", "tiny", {"promote": False, "run_date": None}
    )  # as `mmsr train` sends it
    assert report["model_version"] == 1 and report["epochs"] == 2  # rank 0's report
    run = MlflowClient(settings.tracking_uri).get_run(report["run_id"])
    assert run.data.params["train_processes"] == "2"
    assert len(MlflowClient(settings.tracking_uri).search_runs([run.info.experiment_id])) == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, TrainReport, Path]:
    """One real training run (tiny MMSR + Pop) into a SQLite registry, run from a scratch cwd."""
    workdir = tmp_path_factory.mktemp("cwd")
    settings = tiny_settings(tmp_path_factory.mktemp("train") / "home")
    write_tiny_warehouse(settings)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        report = run_train(settings, "tiny")
    finally:
        os.chdir(cwd)
    return settings, report, workdir


@pytest.mark.slow
def test_run_is_logged_registered_and_promoted(trained: tuple) -> None:
    settings, report, workdir = trained
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(report.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["model.hidden_size"] == "16" and params["model.modalities"] == '["text", "image"]'
    assert params["data.sequences.parquet.rows"] == "60"
    assert run.data.tags["dataset_fingerprint"] == report.fingerprint
    for name in (
        "val_hr_at_10",
        "val_ndcg_at_10",
        "test_ndcg_at_10",
        "test_mrr_at_20",
        "pop_test_ndcg_at_10",
    ):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["test_ndcg_at_10"] == pytest.approx(report.test["ndcg_at_10"])
    curve = client.get_metric_history(report.run_id, "epoch_train_loss")
    assert [m.step for m in curve] == list(range(1, report.epochs + 1))
    assert len(client.get_metric_history(report.run_id, "epoch_val_ndcg_at_10")) == report.epochs
    artifacts = {a.path for a in client.list_artifacts(report.run_id)}
    assert {
        "config.yaml",
        "metrics.md",
        "learning_curve.png",
        "history.json",
        "data",
        "codebooks",
    } <= artifacts
    codebooks = {a.path for a in client.list_artifacts(report.run_id, "codebooks")}
    assert "codebooks/item_codes.parquet" in codebooks
    # registered, and as the first version promoted straight to champion
    name = registered_name("tiny")
    assert report.model_version == 1 and report.promotion["promoted"]
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 1
    tags = client.get_model_version(name, "1").tags
    assert tags["promotion_decision"] == "promoted"
    # refit by default: the gate compares on test, the targets the refit model has not trained on
    assert float(tags["challenger_test_ndcg_at_10"]) == pytest.approx(report.promotion["challenger_value"])
    assert tags["promotion_split"] == "test" and report.promotion["split"] == "test"
    # the gate's pyfunc evaluation on external ids agrees with the library's own evaluation
    assert report.promotion["challenger_value"] == pytest.approx(report.test["ndcg_at_10"], abs=1e-6)
    # ... and validation is the selected epoch's, as logged during training
    assert metrics["refit_epochs"] == metrics["best_epoch"] == report.best_epoch >= 1
    curve_val = client.get_metric_history(report.run_id, "epoch_val_ndcg_at_10")
    best = next(m.value for m in curve_val if m.step == report.best_epoch)
    assert report.val["ndcg_at_10"] == pytest.approx(best) == pytest.approx(metrics["val_ndcg_at_10"])
    # MLflow's exported URI must not leak into later Settings of this process (other homes)
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    # everything under MMSR_HOME: no ./mlruns in the working directory
    assert not any(workdir.iterdir())
    assert (settings.mlflow_artifacts / "tiny").is_dir()
    assert not (settings.dataset_dir("tiny") / "checkpoints").exists()  # a finished run leaves none
    runs = read_model_runs(settings, "tiny")
    assert runs[0]["model_version"] == 1 and runs[0]["promotion"] == "promoted"
    assert runs[0]["run_id"] == report.run_id and runs[0]["test_ndcg_at_10"] == pytest.approx(
        report.test["ndcg_at_10"]
    )


@pytest.mark.slow
def test_a_retried_train_task_resumes_after_the_last_finished_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_settings(tmp_path / "home", model={**TINY_MODEL, "patience": 10})
    write_tiny_warehouse(settings)
    log_epoch = train_stage._epoch_logger

    def dies_in_epoch_3(prefix: str = "") -> object:
        def on_epoch_end(row: dict) -> None:
            if row["epoch"] == 3:
                raise RuntimeError("worker lost")
            log_epoch(prefix)(row)

        return on_epoch_end

    monkeypatch.setattr(train_stage, "_epoch_logger", dies_in_epoch_3)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_train(settings, "tiny")
    assert len(list((settings.dataset_dir("tiny") / "checkpoints").glob("mmsr-*.pt"))) == 1
    monkeypatch.setattr(train_stage, "_epoch_logger", log_epoch)
    with caplog.at_level(logging.INFO, logger="mmsr_model.training"):
        report = run_train(settings, "tiny")
    assert "after epoch 2" in caplog.text and report.epochs == TINY_MODEL["max_epochs"]
    # the new MLflow run holds the whole curve: the two resumed epochs are logged again
    curve = MlflowClient(settings.tracking_uri).get_metric_history(report.run_id, "epoch_train_loss")
    assert [m.step for m in curve] == list(range(1, report.epochs + 1))
    assert not (settings.dataset_dir("tiny") / "checkpoints").exists()


@pytest.mark.slow
def test_without_refit_the_served_model_is_the_selected_one_and_the_gate_compares_on_valid(
    tmp_path: Path,
) -> None:
    settings = tiny_settings(tmp_path / "home", model={**TINY_MODEL, "refit": False}, baselines=[])
    write_tiny_warehouse(settings)
    report = run_train(settings, "tiny")
    client = MlflowClient(settings.tracking_uri)
    assert client.get_run(report.run_id).data.metrics["refit_epochs"] == 0
    assert report.promotion["split"] == "valid"
    assert report.promotion["challenger_value"] == pytest.approx(report.val["ndcg_at_10"], abs=1e-6)
    tags = client.get_model_version(registered_name("tiny"), "1").tags
    assert tags["promotion_split"] == "valid" and "challenger_valid_ndcg_at_10" in tags


@pytest.mark.slow
def test_trained_model_beats_popularity_on_the_chain_signal(trained: tuple) -> None:
    _, report, _ = trained
    assert report.test["ndcg_at_10"] > report.baselines["pop"]["ndcg_at_10"] + 0.1


@pytest.mark.slow
def test_failed_training_never_touches_champion(trained: tuple) -> None:
    settings, _, _ = trained
    # Settings reject an unknown metric up front; model_copy skips validation so the
    # failure happens inside the MLflow run, as an error deep in training would.
    broken = settings.model_copy(
        update={"model": settings.model.model_copy(update={"eval_metric": "bogus_at_10"})}
    )
    with pytest.raises(ValueError, match="bogus"):
        run_train(broken, "tiny")
    client = MlflowClient(settings.tracking_uri)
    assert int(client.get_model_version_by_alias(registered_name("tiny"), "champion").version) == 1
    assert len(client.search_model_versions(f"name='{registered_name('tiny')}'")) == 1
    last = client.search_runs([client.get_experiment_by_name(registered_name("tiny")).experiment_id])[0]
    assert last.info.status == "FAILED"


@pytest.mark.slow
def test_full_cycle_recommend_publish_query(trained: tuple) -> None:
    settings, report, _ = trained
    rec = run_recommend(settings, "tiny", date(2026, 1, 2), 5)
    assert rec.model_version == report.model_version and rec.users == 60
    published = publish_night(settings, "tiny", date(2026, 1, 2))
    health = published["health"]  # the served version's test metrics come from model_runs
    assert health["gate_passed"] and health["test_ndcg_at_10"] == pytest.approx(report.test["ndcg_at_10"])
    db = settings.analytics_db
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT rank, item_id, title, model_version FROM recs_for_user(?)", ["tiny-U003"]
        ).fetchall()
        runs = con.execute(
            "SELECT model_version, promotion FROM model_runs WHERE dataset = 'tiny'"
        ).fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert all(title == f"Title of {item}" and version == 1 for _, item, title, version in rows)
    assert runs == [(1, "promoted")]
