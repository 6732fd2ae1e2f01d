"""The scale benchmark's generator and driver at a tiny size, so they do not rot between runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.scale import main
from benchmarks.scale_data import MIN_HISTORY, generate

SCALE, SEED = 0.02, 7


def _reviews(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generator_is_seeded_and_has_the_shape_the_stages_need(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", SCALE, SEED)
    second = generate(tmp_path / "b", SCALE, SEED)
    assert Path(first.reviews).read_bytes() == Path(second.reviews).read_bytes()
    assert Path(first.meta).read_bytes() == Path(second.meta).read_bytes()
    reviews = _reviews(Path(first.reviews))
    assert len(reviews) == first.interactions and first.users == 447
    by_user: dict[str, list[int]] = {}
    for row in reviews:
        by_user.setdefault(row["user_id"], []).append(row["timestamp"])
    assert len(by_user) == first.users
    assert min(len(t) for t in by_user.values()) >= MIN_HISTORY
    assert all(np.all(np.diff(t) >= 0) for t in by_user.values())  # chronological per user
    counts = np.bincount(np.unique([r["parent_asin"] for r in reviews], return_inverse=True)[1])
    assert counts.max() > 5 * np.median(counts)  # a power law: a few items in many histories
    meta = _reviews(Path(first.meta))
    assert len(meta) == first.items and all(m["title"] and m["description"] for m in meta)
    without = sum(not m["images"] for m in meta)
    assert without == first.items_without_image and 0 < without < first.items


def test_driver_runs_a_stage_in_a_child_and_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    main(["--sizes", str(SCALE), "--stages", "extract", "--work", str(tmp_path / "work"), "--out", str(out)])
    record = json.loads((out / "scale.json").read_text())["sizes"][f"{SCALE:g}"]
    extract = record["extract"]
    assert extract["rows_in"] > record["generate"]["interactions"]  # reviews + meta lines
    assert 0 < extract["rows_out"] <= record["generate"]["interactions"]
    assert extract["peak_rss_mib"] > 0 and extract["cpu_s"] > 0 and "load average" in extract["uptime"]
    assert "| extract |" in (out / "scale.md").read_text() and (out / "scale.png").stat().st_size > 0
    assert not (tmp_path / "work" / f"x{SCALE:g}").exists()  # generated data deleted


def test_driver_rejects_an_unknown_stage(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "--sizes",
                "0.01",
                "--stages",
                "extract,bogus",
                "--work",
                str(tmp_path),
                "--out",
                str(tmp_path / "r"),
            ]
        )
