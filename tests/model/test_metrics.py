import math

import numpy as np
import pytest
import torch

from mmsr_model.metrics import metric_names, metrics_from_ranks, target_ranks


def test_metrics_match_hand_computed_values() -> None:
    ranks = np.array([1, 2, 3, 6, 11, 25])
    m = metrics_from_ranks(ranks, ks=(5, 10, 20))
    assert m["hr_at_5"] == pytest.approx(3 / 6)
    assert m["hr_at_10"] == pytest.approx(4 / 6)
    assert m["hr_at_20"] == pytest.approx(5 / 6)
    assert m["mrr_at_5"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 6)
    assert m["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 6) / 6)
    # standard NDCG with one relevant item: 1 / log2(rank + 1), ideal DCG = 1
    assert m["ndcg_at_5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / 2) / 6)
    assert m["ndcg_at_20"] == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(7) + 1 / math.log2(12)) / 6
    )
    assert set(m) == set(metric_names((5, 10, 20)))


def test_perfect_ranking_gives_one_and_empty_gives_nan() -> None:
    assert metrics_from_ranks(np.ones(4, dtype=int), ks=(1,)) == {
        "hr_at_1": 1.0,
        "mrr_at_1": 1.0,
        "ndcg_at_1": 1.0,
    }
    assert math.isnan(metrics_from_ranks(np.array([], dtype=int), ks=(5,))["hr_at_5"])


def test_rank_counts_strictly_higher_scores_and_breaks_ties_by_lower_id() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0]])
    # row 0: target 2 (0.5) has two items above -> rank 3; target 3 (0.9) ties with item 1 -> rank 2
    assert target_ranks(scores[[0, 0]], torch.tensor([2, 3])).tolist() == [3, 2]
    # row 1: all tied -> rank = 1 + number of lower ids
    assert target_ranks(scores[[1, 1, 1]], torch.tensor([0, 2, 4])).tolist() == [1, 3, 5]
