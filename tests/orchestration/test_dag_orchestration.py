"""The helpers the DAG tasks call: run_date, dataset configs, the fresh-interpreter runner, shards."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.config import load_settings
from pipeline.core.errors import PipelineError
from pipeline.core.io import write_parquet_atomic
from pipeline.orchestration.datasets import dataset_configs
from pipeline.orchestration.isolated import StageCrashed, run_stage_isolated
from pipeline.orchestration.sharding import (
    combine_shards,
    prepare_workspace,
    shard_of,
    shard_settings,
    workspace_tag,
)
from pipeline.orchestration.steps import resolve_run_date


def test_run_date_param_then_logical_date_then_run_after() -> None:
    logical = datetime(2024, 5, 2, 23, 30, tzinfo=UTC)
    after = datetime(2024, 6, 1, 2, 0, tzinfo=UTC)
    assert resolve_run_date("2024-01-31", logical, after) == date(2024, 1, 31)
    assert resolve_run_date(None, logical, after) == date(2024, 5, 2)
    assert resolve_run_date("", None, after) == date(2024, 6, 1)
    with pytest.raises(PipelineError, match="not a YYYY-MM-DD"):
        resolve_run_date("yesterday", logical, after)


def test_demo_dataset_only_when_nothing_configured_or_asked(
    monkeypatch: pytest.MonkeyPatch, mmsr_home: Path
) -> None:
    monkeypatch.delenv("MMSR_DEMO", raising=False)
    assert list(dataset_configs(load_settings())) == ["demo"]
    assert dataset_configs(load_settings())["demo"]["reviews"] == str(mmsr_home / "demo/raw/reviews.json.gz")
    configured = {"beauty": {"format": "sequences", "reviews": "/x"}}
    assert list(dataset_configs(load_settings(datasets=configured))) == ["beauty"]
    monkeypatch.setenv("MMSR_DEMO", "1")
    assert list(dataset_configs(load_settings(datasets=configured))) == ["beauty", "demo"]


def test_isolated_stage_reraises_pipeline_error_with_its_message() -> None:
    settings = load_settings(datasets={"x": {"format": "amazon2018", "reviews": "/x"}})
    with pytest.raises(PipelineError, match="dataset 'nope' is not configured"):
        run_stage_isolated(settings, "extract", "nope")


def test_isolated_stage_crash_is_not_a_pipeline_error(tmp_path: Path) -> None:
    settings = load_settings(
        datasets={"x": {"format": "amazon2018", "reviews": str(tmp_path / "missing.json")}}
    )
    with pytest.raises(StageCrashed, match="exited with code"):
        run_stage_isolated(settings, "promote", "x", {})  # no 'version': a KeyError in the child


def _write(table: dict, path: Path) -> None:
    write_parquet_atomic(pa.table(table), path)


def test_recommend_shards_redensify_users_and_combine_atomically(mmsr_home: Path) -> None:
    settings = load_settings()
    ds = settings.dataset_dir("d")
    users = [f"u{i}" for i in range(10)]
    _write({"user_id": users, "user_idx": pa.array(range(10), pa.int32())}, ds / "user_index.parquet")
    seqs = {"user_idx": pa.array(range(10), pa.int32()), "user_id": users, "items": [[0, 1, 2]] * 10}
    _write(seqs, ds / "sequences.parquet")
    _write(
        {"user_idx": pa.array(range(10), pa.int32()), "split": ["test"] * 10, "target_pos": [2] * 10},
        ds / "splits.parquet",
    )
    _write(
        {"item_id": ["a", "b", "c"], "item_idx": pa.array([0, 1, 2], pa.int32())}, ds / "item_index.parquet"
    )
    expected = shard_of(pa.array(users), 2)
    for shard in range(2):
        sub = prepare_workspace(settings, "recommend", "d", shard, 2, {"run_date": "2024-05-01"})
        index = pq.read_table(sub.dataset_dir("d") / "user_index.parquet")
        assert index["user_id"].to_pylist() == [u for u, s in zip(users, expected, strict=True) if s == shard]
        assert index["user_idx"].to_pylist() == list(range(len(index)))
        assert pq.read_table(sub.dataset_dir("d") / "splits.parquet")["user_idx"].to_pylist() == list(
            range(len(index))
        )
        assert (sub.dataset_dir("d") / "item_index.parquet").is_symlink()
        # what the recommend stage would write in the workspace
        out = sub.dataset_dir("d") / "pending" / "run_date=2024-05-01" / "part-0.parquet"
        _write({"user_id": index["user_id"], "rank": [1] * len(index)}, out)
    old = ds / "pending" / "run_date=2024-05-01" / "part-0.parquet"
    _write({"user_id": ["stale"], "rank": [1]}, old)
    report = combine_shards(settings, "recommend", "d", 2, {"run_date": "2024-05-01"})
    merged = pq.read_table(ds / "pending" / "run_date=2024-05-01")  # the candidate the gate checks
    assert report["rows"] == 10 and sorted(merged["user_id"].to_pylist()) == sorted(users)
    assert not old.exists()


def test_embed_shards_merge_in_items_order_and_refuse_gaps(mmsr_home: Path) -> None:
    settings = load_settings()
    ds = settings.dataset_dir("d")
    items = [f"i{i}" for i in range(12)]
    _write({"item_id": items, "title": items}, ds / "items.parquet")
    for shard in range(3):
        sub = prepare_workspace(settings, "embed", "d", shard, 3, {"modality": "text"})
        mine = pq.read_table(sub.dataset_dir("d") / "items.parquet")["item_id"].to_pylist()
        vectors = [[float(items.index(i))] for i in mine]
        _write(
            {"item_id": mine[::-1], "vector": vectors[::-1]},
            sub.dataset_dir("d") / "embeddings" / "text.parquet",
        )
    combine_shards(settings, "embed", "d", 3, {"modality": "text"})
    merged = pq.read_table(ds / "embeddings" / "text.parquet")
    assert merged["item_id"].to_pylist() == items
    assert np.array(merged["vector"].to_pylist()).ravel().tolist() == list(range(12))
    sub = shard_settings(settings, "d", workspace_tag("embed", {"modality": "text"}), 1, 3)
    (sub.dataset_dir("d") / "embeddings" / "text.parquet").unlink()
    with pytest.raises(PipelineError, match="did not finish"):
        combine_shards(settings, "embed", "d", 3, {"modality": "text"})
    assert pq.read_table(ds / "embeddings" / "text.parquet").num_rows == 12


def test_nightly_without_airflow_runs_the_dag_order_and_passes_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict]] = []

    def fake_stage(settings: object, stage: str, dataset: str, args: dict) -> dict:
        calls.append((stage, args))
        return {"model_version": 7} if stage == "train" else {"stage": stage}

    monkeypatch.setattr("pipeline.orchestration.nightly.run_stage", fake_stage)
    from pipeline.orchestration.nightly import run_nightly

    report = run_nightly(load_settings(), "d", date(2024, 5, 1))
    assert [stage for stage, _ in calls] == [
        "extract", "embed", "embed", "codes", "train", "promote", "recommend", "publish", "report",
    ]  # fmt: skip
    assert calls[1][1] == {"modality": "text"} and calls[2][1] == {"modality": "image"}
    night = {"run_date": "2024-05-01"}  # codes and train keep a backfill's date for their schedules
    assert calls[3][1] == night and calls[4][1] == {"promote": False, **night}
    assert calls[5][1] == {"version": 7}
    assert calls[6][1] == calls[7][1] == calls[8][1] == night
    assert list(report.to_dict()["stages"]) == [
        "extract", "embed_text", "embed_image", "codes", "train", "promote", "recommend", "publish_analytics",
        "report",
    ]  # fmt: skip
