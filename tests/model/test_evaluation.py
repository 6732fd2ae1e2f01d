import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from toy_models import ScoreOnly

from mmsr_model.config import ModelConfig
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.evaluation import evaluate, evaluate_breakdown, evaluate_missing_modality, sample_ranks
from mmsr_model.registry import build_model

N_ITEMS = 6


class FixedScores(ScoreOnly):
    """Scores item i with 0.6 - 0.1 * i whatever the history, so rank(i) = i + 1 before exclusions."""

    name = "fixed"
    has_modality_links = True

    def __init__(self) -> None:
        super().__init__(N_ITEMS, ModelConfig())
        self.register_buffer("scores", torch.linspace(0.6, 0.1, N_ITEMS))
        self.drops: list[tuple[str, float, int]] = []

    def item_embeddings(self) -> torch.Tensor:
        return self.scores[:, None]

    @contextmanager
    def drop_modality_links(self, modality: str, p: float, seed: int) -> Iterator[None]:
        """While active, the order is reversed (a stand-in for a model hurt by missing links)."""
        self.drops.append((modality, p, seed))
        self.scores.neg_()
        try:
            yield
        finally:
            self.scores.neg_()


def _ts(users: list[int], positions: list[int]) -> TargetSet:
    return TargetSet(np.array(users, dtype=np.int64), np.array(positions, dtype=np.int64))


@pytest.fixture
def data() -> SequenceData:
    sequences = [np.array(s, dtype=np.int64) for s in ([5, 0, 3], [1, 2, 1], [4, 2, 1, 0, 3, 5])]
    splits = {
        "train": _ts([0, 2, 2, 2], [1, 1, 2, 3]),  # train part: items {5, 0} and {4, 2, 1, 0}: item 3 is cold
        "valid": _ts([0], [1]),
        "test": _ts([0, 1, 2], [2, 2, 5]),  # targets 3 (cold), 1 (a repeat of a seen item), 5
    }
    return SequenceData(
        sequences=sequences, n_items=N_ITEMS, splits=splits, item_codes={"text": np.zeros((6, 1))}
    )


def test_full_ranking_ranks_and_metrics(data: SequenceData) -> None:
    model = FixedScores()
    assert sample_ranks(model, data, data.splits["test"], exclude_seen=False).tolist() == [4, 2, 6]
    metrics = evaluate(model, data, "test", ks=(1, 3), exclude_seen=False, batch_size=2)
    assert metrics["hr_at_1"] == 0.0
    assert metrics["hr_at_3"] == pytest.approx(1 / 3)
    assert metrics["mrr_at_3"] == pytest.approx(1 / 2 / 3)


def test_exclude_seen_removes_history_items_but_never_the_target(data: SequenceData) -> None:
    model = FixedScores()
    # u0: item 0 seen -> rank 3; u1: target 1 was seen but stays -> rank 2; u2: 0..4 all seen -> 1
    assert sample_ranks(model, data, data.splits["test"], exclude_seen=True).tolist() == [3, 2, 1]
    metrics = evaluate(model, data, "test", ks=(1, 3), exclude_seen=True)
    assert metrics["hr_at_1"] == pytest.approx(1 / 3)
    assert metrics["mrr_at_3"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)


def test_breakdown_by_cold_warm_target_history_length_and_popularity(data: SequenceData) -> None:
    groups = evaluate_breakdown(FixedScores(), data, "test", ks=(3,), exclude_seen=False)
    # empty buckets are left out; targets 1 and 5 occur once each in the train part
    assert set(groups) == {"all", "cold", "warm", "hist_1_2", "hist_3_5", "pop_1_4"}
    assert groups["pop_1_4"] == groups["warm"]
    assert groups["all"]["n_samples"] == 3
    assert (groups["cold"]["n_samples"], groups["cold"]["hr_at_3"]) == (1, 0.0)  # rank 4
    assert (groups["warm"]["n_samples"], groups["warm"]["hr_at_3"]) == (2, 0.5)  # ranks 2, 6
    assert groups["hist_1_2"]["hr_at_3"] == 0.5  # ranks 4, 2
    assert groups["hist_3_5"]["mrr_at_3"] == 0.0  # rank 6
    assert groups["all"]["coverage_at_3"] == 0.5  # every user's top 3: items 0, 1, 2
    assert "coverage_at_3" not in groups["warm"]


def test_coverage_counts_the_items_some_top_k_list_holds(data: SequenceData) -> None:
    """Outside the history the lists differ: u0 gets 1, 2, 3; u1 0, 1 (its target, kept), 3; u2 only
    5 (every other item is in its history), so item 4 is in no list."""
    groups = evaluate_breakdown(FixedScores(), data, "test", ks=(1, 3), exclude_seen=True)
    assert groups["all"]["coverage_at_3"] == pytest.approx(5 / 6)
    assert groups["all"]["coverage_at_1"] == pytest.approx(3 / 6)  # items 1, 0 and 5
    longer = evaluate_breakdown(FixedScores(), data, "test", ks=(3, 20), exclude_seen=False)
    assert longer["all"]["coverage_at_20"] == 1.0  # lists longer than the catalogue hold all of it


def test_popularity_buckets_hold_their_bounds() -> None:
    """Items 0-3 occur 4, 5, 20 and 100 times in the train part: one bucket each, edges included."""
    base = [0] * 4 + [1] * 5 + [2] * 20 + [3] * 100
    data = SequenceData(
        sequences=[np.array([*base, target], dtype=np.int64) for target in range(4)],
        n_items=N_ITEMS,
        splits={"train": _ts([0], [len(base) - 1]), "test": _ts([0, 1, 2, 3], [len(base)] * 4)},
    )
    groups = evaluate_breakdown(FixedScores(), data, "test", ks=(1,), exclude_seen=False)
    assert {name: groups[name]["n_samples"] for name in groups if name.startswith("pop_")} == {
        "pop_1_4": 1,
        "pop_5_19": 1,
        "pop_20_99": 1,
        "pop_100_plus": 1,
    }
    assert groups["pop_1_4"]["hr_at_1"] == 1.0  # item 0, the top score
    assert groups["pop_100_plus"]["hr_at_1"] == 0.0


def test_missing_modality_rows_per_modality_and_p(data: SequenceData) -> None:
    model = FixedScores()
    rows = evaluate_missing_modality(model, data, ps=(0.1, 0.5), ks=(1,), seed=7, exclude_seen=False)
    # image is absent from the data: skipped; text and both evaluated per p, after the intact row
    assert [(r["modality"], r["p"]) for r in rows] == [("none", 0.0)] + [
        (m, p) for m in ("text", "both") for p in (0.1, 0.5)
    ]
    assert model.drops == [("text", 0.1, 7), ("text", 0.5, 7), ("both", 0.1, 7), ("both", 0.5, 7)]
    assert rows[0]["mrr_at_1"] == 0.0 and rows[1]["mrr_at_1"] == pytest.approx(
        1 / 3
    )  # reversed: target 5 first
    restored = evaluate(model, data, "test", ks=(1,), exclude_seen=False)  # links restored afterwards
    assert restored["mrr_at_1"] == 0.0


def test_missing_modality_is_skipped_for_models_without_links(data: SequenceData, caplog) -> None:
    assert evaluate_missing_modality(build_model("pop", data), data, exclude_seen=True) == []
    assert "missing-modality evaluation skipped" in caplog.text


def test_unknown_or_empty_split_is_a_clear_error(data: SequenceData) -> None:
    with pytest.raises(ValueError, match="'nope' has no samples"):
        evaluate(FixedScores(), data, "nope", exclude_seen=False)


@pytest.mark.parametrize("function", [sample_ranks, evaluate, evaluate_breakdown, evaluate_missing_modality])
def test_the_protocol_is_always_stated_by_the_caller(function) -> None:  # noqa: ANN001
    """Masked and unmasked ranking differ by up to a third of NDCG@10 (SASRec, Beauty): no silent default."""
    parameter = inspect.signature(function).parameters["exclude_seen"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is inspect.Parameter.empty
