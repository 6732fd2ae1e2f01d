import numpy as np
import pytest
import torch
from seqdata import chain_data

from mmsr_model import inference
from mmsr_model.inference import block_rows, ordered_top_k, top_k
from mmsr_model.registry import build_model


def _reference_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Sort by score descending, then item id ascending, one row at a time."""
    return np.stack([np.lexsort((np.arange(row.size), -row))[:k] for row in scores])


@pytest.mark.parametrize("k", [1, 7, 39, 40])
def test_ordered_top_k_breaks_ties_by_lower_id(k: int) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(64, 40)).astype(np.float32)  # many ties, also at the cut
    scores[:8] = rng.normal(size=(8, 40))  # some rows without ties
    scores[8:12, 5:] = -np.inf  # masked items: fewer than k left unmasked
    values, ids = ordered_top_k(torch.from_numpy(scores), k)
    expected = _reference_top_k(scores, k)
    np.testing.assert_array_equal(ids.numpy(), expected)
    np.testing.assert_array_equal(values.numpy(), np.take_along_axis(scores, expected, 1))


def test_scoring_builds_the_item_table_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The item table (MMSR: ID rows plus projected content of every item) is not rebuilt per block."""
    from mmsr_model.evaluation import evaluate

    data = chain_data(n_users=12, n_items=30, text_codes=4)
    model = build_model("mmsr", data, hidden_size=8, modalities=["text"])
    builds = []
    table = model.item_embeddings
    monkeypatch.setattr(model, "item_embeddings", lambda: builds.append(1) or table())
    top_k(model, data.histories(data.splits["test"], model.max_len), k=3, batch_size=5)
    evaluate(model, data, "test", exclude_seen=True, batch_size=5)
    assert len(builds) == 2


def test_top_k_excludes_seen_items_and_is_deterministic() -> None:
    data = chain_data(n_users=10, n_items=30)
    model = build_model("sasrec", data, hidden_size=16, seed=1)
    histories = [np.array([3, 4, 5]), np.array([7]), np.arange(25)]
    ids, scores = top_k(model, histories, k=5, batch_size=2)
    assert ids.shape == (3, 5) and ids.dtype == np.int64 and scores.dtype == np.float32
    for history, row in zip(histories, ids, strict=True):
        assert not set(row.tolist()) & set(history.tolist())
    assert np.all(np.diff(scores, axis=1) <= 0)
    again_ids, again_scores = top_k(model, histories, k=5, batch_size=3)
    np.testing.assert_array_equal(ids, again_ids)
    np.testing.assert_allclose(scores, again_scores, atol=1e-5)
    # without exclusion the seen items may come back; with exclusion they never do
    kept, _ = top_k(model, histories, k=30, exclude_seen=False)
    assert sorted(kept[0].tolist()) == list(range(30))


def test_top_k_on_popularity_gives_tied_items_in_id_order() -> None:
    data = chain_data(n_users=10, n_items=30)
    model = build_model("pop", data)
    model.counts.copy_(torch.tensor([1.0, 5, 5, 0, 5, 2] + [0.0] * 24))
    ids, scores = top_k(model, [np.array([2])], k=4)
    assert ids.tolist() == [[1, 4, 5, 0]]
    assert scores.tolist() == [[5.0, 5.0, 2.0, 1.0]]


def test_top_k_rejects_bad_input() -> None:
    model = build_model("pop", chain_data(n_users=5, n_items=10))
    with pytest.raises(ValueError, match="k=11"):
        top_k(model, [np.array([1])], k=11)
    with pytest.raises(ValueError, match="non-empty"):
        top_k(model, [np.array([], dtype=np.int64)], k=3)


def test_blocks_shrink_with_the_catalogue_and_results_do_not_depend_on_them(monkeypatch) -> None:  # noqa: ANN001
    assert block_rows(1024, 12_101) == 1024  # Beauty: a 47 MiB block
    assert block_rows(1024, 1_210_100) == 55  # 100x the catalogue: rows cut to stay under 256 MiB
    assert block_rows(1024, 10**9) == 1
    data = chain_data(n_users=10, n_items=30)
    model = build_model("sasrec", data, hidden_size=16, seed=1)
    histories = [np.array([3, 4, 5]), np.array([7]), np.arange(25), np.array([9, 2])]
    ids, scores = top_k(model, histories, k=6)
    monkeypatch.setattr(inference, "SCORE_BLOCK_BYTES", 4 * 30)  # one user per block
    assert block_rows(1024, 30) == 1
    small_ids, small_scores = top_k(model, histories, k=6)
    np.testing.assert_array_equal(ids, small_ids)
    np.testing.assert_allclose(scores, small_scores, atol=1e-5)
