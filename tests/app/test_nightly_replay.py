"""The nightly replay benchmark's plan, arms and report, so they do not rot between runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from benchmarks.nightly_replay import (
    hand_written_reading,
    paired_by_group,
    paired_difference,
    parse_arm,
    render,
    reveal_plan,
    write_night,
)


def test_the_reveal_plan_keeps_three_interactions_and_each_night_writes_its_share(
    tmp_path: Path,
) -> None:
    rows = [[f"u{u}", *(f"i{u}_{j}" for j in range(n))] for u, n in enumerate([3, 4, 6, 9, 12] * 40)]
    lengths = np.array([len(r) - 1 for r in rows])
    drawn = reveal_plan(lengths, nights=5, seed=1)
    assert not drawn[0].any() and np.array_equal(drawn, reveal_plan(lengths, nights=5, seed=1))
    assert (lengths - drawn.sum(axis=0) >= 3).all()  # a leave-one-out split needs three on night 0
    assert 0.1 < drawn[1:].mean() <= 0.25
    for night in range(5):
        path = tmp_path / f"n{night}.txt"
        write_night(rows, drawn, night, path)
        written = [len(line.split()) - 1 for line in path.read_text().splitlines()]
        assert written == (lengths - drawn[night + 1 :].sum(axis=0)).tolist()


def test_warm_arms_parse_into_settings_and_bad_ones_are_refused() -> None:
    assert parse_arm("lr0.3:warm_lr_scale=0.3,warm_max_epochs=2") == (
        "lr0.3",
        {"warm_lr_scale": 0.3, "warm_max_epochs": 2},
    )
    assert parse_arm("warm:") == ("warm", {})
    for bad in ("cold:warm_lr_scale=0.3", ":warm_lr_scale=0.3", "a:lr=0.3", "a:warm_lr_scale"):
        with pytest.raises(argparse.ArgumentTypeError, match="--warm-arm"):
            parse_arm(bad)


def _row(ndcg: float, seconds: float, samples: int, start: str = "warm") -> dict:
    return {
        "new_items": 5, "warm_start": start, "train_seconds": seconds, "epochs": 3, "refit_epochs": 1,
        "samples_processed": samples, "ndcg_at_10": ndcg, "ndcg_at_10_se": 0.002, "hr_at_10": 2 * ndcg,
        "hr_at_10_se": 0.003, "promoted": False,
    }  # fmt: skip


def _payload(**extra: object) -> dict:
    night_0 = _row(0.02, 100.0, 1000, "cold")
    return {
        "dataset": "beauty", "sample_users": 300, "nights": 2, "seed": 2023, "share_per_night": 0.25,
        "cold_max_epochs": 15, "threads": "1", "load_avg_before": [1.0], "load_avg_after": [1.2],
        "arms": {
            "warm": [night_0, _row(0.019, 5.0, 40)],
            "lr0.3": [night_0, _row(0.015, 6.0, 50)],
            "cold": [night_0, _row(0.020, 100.0, 1000, "cold")],
        },
        **extra,
    }  # fmt: skip


def test_the_report_puts_every_warm_arm_beside_cold() -> None:
    arms = {"warm": {"warm_lr_scale": 1.0}, "lr0.3": {"warm_lr_scale": 0.3}}
    text = render(_payload(warm_arms=arms, offset=300))
    assert "Beauty users 301-600" in text
    assert "- `lr0.3`: `warm_lr_scale` 0.3" in text
    assert "`warm` over the 1 nights" in text and "within one SE of the cold model's on 1 of 1" in text
    assert "`lr0.3` over the 1 nights" in text and "on 0 of 1" in text
    table = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert [line.split(" | ")[2] for line in table] == ["warm", "lr0.3", "cold"]
    assert "5% time, 4% samples | yes |" in table[0] and "| no |" in table[1]
    assert sum(line.startswith("| 0 |") for line in text.splitlines()) == 1  # night 0 is shared


def test_a_report_written_before_arms_had_names_still_renders() -> None:
    payload = _payload(warm_schedule={"warm_max_epochs": 5})
    del payload["arms"]["lr0.3"]
    text = render(payload)
    assert "First 300 Beauty users" in text and "- `warm`: `warm_max_epochs` 5" in text


def test_the_paired_difference_cancels_how_hard_each_user_is() -> None:
    rng = np.random.default_rng(0)
    hardness = rng.uniform(0, 0.5, 400)
    cold = {f"u{i}": float(h) for i, h in enumerate(hardness)}
    arm = {f"u{i}": float(h) - 0.01 for i, h in enumerate(hardness)} | {"only_here": 1.0}
    diff = paired_difference(arm, cold)
    assert diff["ndcg_diff_vs_cold"] == pytest.approx(-0.01)  # the user only one arm ranked is left out
    assert diff["ndcg_diff_vs_cold_se"] < 1e-9 < np.std(hardness) / np.sqrt(400)


def test_the_paired_difference_is_split_into_tonights_users_and_the_rest() -> None:
    cold = {f"u{i}": 0.1 * (i % 3) for i in range(40)}
    tonight = {f"u{i}" for i in range(10)}
    arm = {u: v - (0.05 if u in tonight else 0.0) + 0.001 * (int(u[1:]) % 2) for u, v in cold.items()}
    split = paired_by_group(arm, cold, tonight | {"left_out"})
    assert split["users_tonight"] == 10
    assert split["ndcg_diff_vs_cold_tonight"] == pytest.approx(-0.0495)
    assert split["ndcg_diff_vs_cold_rest"] == pytest.approx(0.0005)
    assert split["ndcg_diff_vs_cold"] == pytest.approx((10 * -0.0495 + 30 * 0.0005) / 40)
    payload = _payload(warm_arms={"warm": {}, "lr0.3": {}})
    payload["arms"]["warm"][1] |= split
    table = render(payload).split("by user group")[1]
    assert "| 1 | warm | 10 | -0.0495 ± 0.0002 | +0.0005 ± 0.0001 |" in table
    assert "lr0.3" not in table  # an arm without the split has no row


def test_a_second_cold_seed_is_reported_as_the_noise_between_cold_models() -> None:
    payload = _payload(warm_arms={"warm": {}}, cold_arms={"cold-seed2024": {"seed": 2024}})
    del payload["arms"]["lr0.3"]
    second = _row(0.0215, 90.0, 990, "cold") | {"ndcg_diff_vs_cold": 0.0015, "ndcg_diff_vs_cold_se": 0.001}
    payload["arms"]["cold-seed2024"] = [payload["arms"]["cold"][0], second]
    payload["arms"]["warm"][1] |= {"ndcg_diff_vs_cold": -0.001, "ndcg_diff_vs_cold_se": 0.0004}
    text = render(payload)
    assert "- `cold-seed2024`: cold, seed 2024 (the reference `cold` arm: seed 2023)" in text
    assert "`cold-seed2024` (a second cold model, seed 2024): its test NDCG@10 was within one SE" in text
    assert "beyond two of its standard errors on 1 of 1" in text  # warm: 0.001 > 2 x 0.0004
    table = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert [line.split(" | ")[2] for line in table] == ["warm", "cold-seed2024", "cold"]
    assert table[0].endswith("| -0.0010 ± 0.0004 |") and table[1].endswith("| +0.0015 ± 0.0010 |")


def test_render_only_keeps_the_hand_written_reading(tmp_path: Path) -> None:
    report = tmp_path / "nightly_replay.md"
    assert hand_written_reading(report) == ""
    report.write_text(render(_payload()) + "\nReading (by hand): night 1 is a tie.\n")
    assert hand_written_reading(report) == "\nReading (by hand): night 1 is a tie.\n"
