"""Recommend stage and `mmsr show`: atomic partitions, determinism, fault injection, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from graph_reference import build_batch
from rich.console import Console
from tiny_warehouse import TINY_MODEL, register_untrained, tiny_settings, write_tiny_warehouse
from typer.testing import CliRunner

from mmsr_model.graph import NODE_TYPES
from mmsr_model.histories import Histories
from mmsr_model.inference import ordered_top_k
from pipeline.app.cli import app
from pipeline.app.show import show_user
from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.publish import publish_night
from pipeline.stages.recommend import SCHEMA, _block_table, _champion_histories, _load_champion, run_recommend
from pipeline.warehouse.dataset import load_histories

pytestmark = pytest.mark.slow
YESTERDAY, TODAY = date(2026, 3, 1), date(2026, 3, 2)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A registered (untrained: scoring only needs a model) champion over the tiny warehouse."""
    settings = tiny_settings(tmp_path_factory.mktemp("recommend") / "home", recommend_batch_users=16)
    write_tiny_warehouse(settings)
    register_untrained(settings)
    return settings


def test_writes_top_k_for_every_user(champion: Settings) -> None:
    report = run_recommend(champion, "tiny", YESTERDAY, 5)
    table = pq.read_table(champion.pending_partition("tiny", YESTERDAY) / "part-0.parquet")
    assert table.schema == SCHEMA
    assert report.users == 60 and report.rows == table.num_rows == 300
    rows = table.to_pylist()
    assert {r["run_date"] for r in rows} == {YESTERDAY}
    assert {(r["model_name"], r["model_version"]) for r in rows} == {("mmsr-tiny", 1)}
    index, sequences = load_histories(champion, "tiny")
    by_user: dict[str, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row)
    assert set(by_user) == set(index.user_ids.tolist())
    for user, recs in by_user.items():
        assert [r["rank"] for r in recs] == [1, 2, 3, 4, 5]
        scores = [r["score"] for r in recs]
        assert scores == sorted(scores, reverse=True)
        seen = set(index.item_ids[sequences[int(user[-3:])]].tolist())
        assert not seen & {r["item_id"] for r in recs}, user


def test_table_equals_per_user_scoring_through_the_replaced_graph_builder(champion: Settings) -> None:
    """Block-wise graphs, scoring and seen-item masking give the very rows of one graph batch from
    the replaced numpy builder, masked user by user."""
    run_recommend(champion, "tiny", YESTERDAY, 5)
    table = pq.read_table(champion.pending_partition("tiny", YESTERDAY) / "part-0.parquet")
    wrapper, _ = _load_champion(champion, "tiny")
    model = wrapper.model.eval()
    index, sequences = load_histories(champion, "tiny")
    assert wrapper.item_ids.tolist() == index.item_ids.tolist()  # the champion's ids are the warehouse's
    codes = {NODE_TYPES.index(m): getattr(model, f"graph_codes_{m}").numpy() for m in model.modalities}
    assert codes  # the graphs carry code nodes
    with torch.no_grad():
        scores = model.full_sort_predict(build_batch([s[-model.max_len :] for s in sequences], codes))
    for row, seen in enumerate(sequences):
        scores[row, torch.from_numpy(seen)] = float("-inf")
    values, ids = ordered_top_k(scores, 5)
    assert table["user_id"].to_pylist() == np.repeat(index.user_ids, 5).tolist()
    assert table["item_id"].to_pylist() == wrapper.item_ids[ids.numpy().ravel()].tolist()
    assert table["score"].to_pylist() == values.numpy().ravel().tolist()


def test_champion_histories_drop_unknown_items_and_keep_users() -> None:
    histories = Histories.pack([np.array([0, 1, 2]), np.array([3]), np.array([2, 3, 0])])
    mapped = _champion_histories(histories, {"a": 5, "c": 1}, np.array(["a", "b", "c", "d"]))
    assert mapped.lengths.tolist() == [2, 0, 2]
    assert mapped.items.tolist() == [5, 1, 1, 5]


def test_rerun_same_date_is_identical_and_leaves_other_dates(champion: Settings) -> None:
    run_recommend(champion, "tiny", YESTERDAY, 5)
    yesterday = (champion.pending_partition("tiny", YESTERDAY) / "part-0.parquet").read_bytes()
    run_recommend(champion, "tiny", TODAY, 5)
    first = pq.read_table(champion.pending_partition("tiny", TODAY))
    run_recommend(champion, "tiny", TODAY, 5)
    second = pq.read_table(champion.pending_partition("tiny", TODAY))
    assert first.equals(second)
    today_files = champion.pending_partition("tiny", TODAY).iterdir()
    assert [p.name for p in today_files] == ["part-0.parquet"]
    yesterday_part = champion.pending_partition("tiny", YESTERDAY) / "part-0.parquet"
    assert yesterday_part.read_bytes() == yesterday


#: runs the ``mmsr`` CLI in a process that dies (SIGKILL) right after the first block is written
KILLED_AFTER_FIRST_BLOCK = """
import os, signal, sys
import pyarrow.parquet as pq
real_write = pq.ParquetWriter.write_table
def write_then_die(self, *args, **kwargs):
    real_write(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
pq.ParquetWriter.write_table = write_then_die
from pipeline.app.cli import app
sys.argv[0] = "mmsr"
app()
"""


def test_kill_mid_write_keeps_yesterday_and_todays_good_output(champion: Settings) -> None:
    run_recommend(champion, "tiny", YESTERDAY, 5)
    run_recommend(champion, "tiny", TODAY, 5)
    before = {
        d: (champion.pending_partition("tiny", d) / "part-0.parquet").read_bytes() for d in (YESTERDAY, TODAY)
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "MMSR_HOME": str(champion.home),
        "MMSR_RECOMMEND_BATCH_USERS": "16",
        "MMSR_MODEL__DEVICE": "cpu",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_AFTER_FIRST_BLOCK,
            "recommend",
            "--dataset",
            "tiny",
            "--run-date",
            str(TODAY),
            "--k",
            "7",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    staged = list((champion.dataset_dir("tiny") / ".staging").glob("recommendations-*/part-0.parquet"))
    assert staged, "the killed run had started writing its staging file"
    for day, content in before.items():
        assert (champion.pending_partition("tiny", day) / "part-0.parquet").read_bytes() == content
    # the next good run cleans the dead run's staging folder and replaces today only
    run_recommend(champion, "tiny", TODAY, 7)
    assert not list((champion.dataset_dir("tiny") / ".staging").iterdir())
    assert pq.read_table(champion.pending_partition("tiny", TODAY)).num_rows == 60 * 7


def test_exception_mid_write_keeps_outputs_and_cleans_staging(
    champion: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.stages.recommend as recommend

    run_recommend(champion, "tiny", TODAY, 5)
    before = (champion.pending_partition("tiny", TODAY) / "part-0.parquet").read_bytes()
    real, calls = recommend._block_table, []

    def failing(*args: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args)

    monkeypatch.setattr(recommend, "_block_table", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        run_recommend(champion, "tiny", TODAY, 9)
    assert (champion.pending_partition("tiny", TODAY) / "part-0.parquet").read_bytes() == before
    assert not list((champion.dataset_dir("tiny") / ".staging").iterdir())


def test_no_champion_is_a_clear_error_and_writes_nothing(mmsr_home: Path) -> None:
    settings = tiny_settings(mmsr_home)
    root = write_tiny_warehouse(settings)
    with pytest.raises(PipelineError, match="no champion model for 'mmsr-tiny'.*mmsr train"):
        run_recommend(settings, "tiny", TODAY, 5)
    assert not (root / "pending").exists() and not (root / ".staging").exists()


def test_empty_dataset_is_a_clear_error(mmsr_home: Path) -> None:
    settings = tiny_settings(mmsr_home)
    root = write_tiny_warehouse(settings)
    for name in ("user_index", "item_index"):
        table = pq.read_table(root / f"{name}.parquet")
        pq.write_table(table.slice(0, 0), root / f"{name}.parquet")
    with pytest.raises(PipelineError, match="no users or items"):
        run_recommend(settings, "tiny", TODAY, 5)
    assert not (root / "pending").exists()


def test_show_prints_history_and_titles(champion: Settings) -> None:
    run_recommend(champion, "tiny", TODAY, 5)
    publish_night(champion, "tiny", TODAY)  # show reads the published nights
    console = Console(record=True, width=200)
    show_user(champion, "tiny", "tiny-U004", 3, console=console)
    text = console.export_text()
    index, sequences = load_histories(champion, "tiny")
    for item in index.item_ids[sequences[4]]:
        assert f"Title of {item}" in text
    assert f"run {TODAY}" in text and "mmsr-tiny v1" in text
    recs = pq.read_table(champion.recommendations_partition("tiny", TODAY)).to_pylist()
    top = [r["item_id"] for r in recs if r["user_id"] == "tiny-U004"][:3]
    assert all(f"Title of {item}" in text for item in top)


def test_show_unknown_user_exits_non_zero(champion: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSR_HOME", str(champion.home))
    result = CliRunner().invoke(app, ["show", "--dataset", "tiny", "--user", "nobody"])
    assert result.exit_code == 1
    with pytest.raises(PipelineError, match="user 'nobody' not found"):
        show_user(champion, "tiny", "nobody", 3)


def test_block_table_drops_masked_slots() -> None:
    """A user who has seen nearly every item gets fewer than K rows, never -inf scores."""
    ids = np.array([[3, 1, 0], [2, 0, 1]])
    scores = np.array([[0.9, 0.5, 0.1], [0.7, -np.inf, -np.inf]], dtype=np.float32)
    constants = {"run_date": TODAY, "model_name": "mmsr-x", "model_version": 4}
    table = _block_table(
        np.array(["u1", "u2"], dtype=object), ids, scores, np.array(list("abcd"), dtype=object), constants
    )
    assert table.schema == SCHEMA
    assert [(r["user_id"], r["rank"], r["item_id"]) for r in table.to_pylist()] == [
        ("u1", 1, "d"),
        ("u1", 2, "b"),
        ("u1", 3, "a"),
        ("u2", 1, "c"),
    ]


@pytest.mark.shared_data
def test_real_gift_cards_train_recommend_show(shared_data: Path, mmsr_home: Path) -> None:
    """Real Amazon 2018 Gift Cards through extract -> train (ID-only, no codes) -> recommend -> show."""
    from pipeline.stages.extract import run_extract
    from pipeline.stages.train.run import run_train

    folder = shared_data / "amazon2018" / "gift_cards"
    settings = tiny_settings(mmsr_home, baselines=[], model=TINY_MODEL | {"max_epochs": 2})
    run_extract(
        settings, "gift", "amazon2018", folder / "Gift_Cards_5.json.gz", folder / "meta_Gift_Cards.json.gz"
    )
    trained = run_train(settings, "gift")
    assert trained.promotion["promoted"] and trained.promotion["split"] == "test"  # refit by default
    assert trained.promotion["challenger_value"] == pytest.approx(trained.test["ndcg_at_10"], abs=1e-6)
    report = run_recommend(settings, "gift", TODAY, 10)
    assert publish_night(settings, "gift", TODAY)["health"]["gate_passed"]
    index, sequences = load_histories(settings, "gift")
    assert report.users == len(index.user_ids) == len(sequences) and report.rows == 10 * report.users
    rows = pq.read_table(settings.recommendations_partition("gift", TODAY)).to_pylist()
    assert {r["item_id"] for r in rows} <= set(index.item_ids.tolist())
    console = Console(record=True, width=250)
    show_user(settings, "gift", rows[0]["user_id"], 5, console=console)
    assert "Gift Card" in console.export_text()


def test_collapsed_model_is_stopped_by_the_gate_and_yesterday_stays_latest(
    champion: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A champion that recommends the same items to everyone: the night never reaches analysts."""
    import duckdb

    import pipeline.stages.recommend as recommend

    good, broken = date(2026, 4, 1), date(2026, 4, 2)
    run_recommend(champion, "tiny", good, 10)
    assert publish_night(champion, "tiny", good)["health"]["gate_passed"]
    real_load = recommend._load_champion

    def collapsed_champion(settings: Settings, dataset: str) -> tuple[object, int]:
        wrapper, version = real_load(settings, dataset)

        def same_for_everyone(histories: list, k: int, exclude_seen: bool = True) -> tuple:
            ids = np.tile(np.arange(k), (len(histories), 1))
            return ids, np.tile(np.linspace(1.0, 0.1, k, dtype=np.float32), (len(histories), 1))

        wrapper.top_k = same_for_everyone
        return wrapper, version

    monkeypatch.setattr(recommend, "_load_champion", collapsed_champion)
    run_recommend(champion, "tiny", broken, 10)
    with pytest.raises(PipelineError, match="publish gate stopped 'tiny' 2026-04-02: coverage at 20 fell"):
        publish_night(champion, "tiny", broken)
    con = duckdb.connect(str(champion.analytics_db), read_only=True)
    try:
        latest = con.execute("SELECT DISTINCT run_date FROM latest_recommendations").fetchall()
        health = con.execute(
            "SELECT run_date, gate_passed, published FROM recommendation_health WHERE run_date >= ? "
            "ORDER BY run_date",
            [good],
        ).fetchall()
    finally:
        con.close()
    assert latest == [(good,)]
    assert health == [(good, True, True), (broken, False, False)]
