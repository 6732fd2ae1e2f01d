"""speed.py rewrites its table from speed.json and keeps what a person wrote below it."""

from __future__ import annotations

from pathlib import Path

from benchmarks.speed import write_results

ROW = {"device": "cpu", "torch_threads": 1, "modalities": ["text"], "users": 10, "train_samples_per_s": 5.0}


def test_a_rerun_replaces_its_row_and_keeps_the_hand_written_reading(tmp_path: Path) -> None:
    write_results([ROW], tmp_path, "first")
    md = tmp_path / "speed.md"
    md.write_text(md.read_text() + "\n## Reading\n\nBy hand.\n")
    write_results([{**ROW, "train_samples_per_s": 7.0}], tmp_path, "second")
    text = md.read_text()
    assert text.endswith("\n## Reading\n\nBy hand.\n") and text.count("## Reading") == 1
    table = [line for line in text.splitlines() if line.startswith("| cpu")]
    assert len(table) == 1 and "| 7.0 |" in table[0]


def test_a_content_dim_row_sits_beside_the_full_content_row(tmp_path: Path) -> None:
    write_results([ROW, {**ROW, "content_dim": 64, "train_samples_per_s": 9.0}], tmp_path, "both")
    table = [line for line in (tmp_path / "speed.md").read_text().splitlines() if line.startswith("| cpu")]
    assert len(table) == 2


def test_a_row_without_content_sits_beside_the_content_rows(tmp_path: Path) -> None:
    rows = [
        {**ROW, "content_dim": 64},
        {**ROW, "content_dim": 64, "content": "none", "train_samples_per_s": 9.0},
    ]
    write_results(rows, tmp_path, "both")
    table = [line for line in (tmp_path / "speed.md").read_text().splitlines() if line.startswith("| cpu")]
    assert len(table) == 2
