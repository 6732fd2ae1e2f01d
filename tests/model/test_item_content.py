"""Content in the item representation: ID embedding + projected content vectors (``item_content="add"``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seqdata import fit_plainly, loo_splits

from mmsr_model.data import SequenceData
from mmsr_model.mmsr import MMSR, content_vectors, fill_absent, fit_content_frame
from mmsr_model.persistence import load_model, save_model

N_WARM, DIM = 30, 16


def twin_data(seed: int = 0) -> SequenceData:
    """Users walk warm items i -> i+1; cold item ``N_WARM + j`` shares item j's content.

    Cold items never occur in training; each test target is the cold twin of the true
    next item, so only content can point at it.
    """
    rng = np.random.default_rng(seed)
    sequences = [
        ((rng.integers(N_WARM) + np.arange(rng.integers(6, 12))) % N_WARM).astype(np.int64)
        for _ in range(120)
    ]
    for seq in sequences:
        seq[-1] += N_WARM
    data = SequenceData(sequences=sequences, n_items=2 * N_WARM, splits=loo_splits(sequences))
    content = rng.normal(size=(N_WARM, DIM))
    data.item_features["text"] = np.concatenate([content, content + 0.05 * rng.normal(size=content.shape)])
    data.item_features["text"][3] = np.nan  # one warm item without a text vector
    data.item_codes["text"] = np.stack([np.arange(2 * N_WARM) % 5, (np.arange(2 * N_WARM) + 1) % 5], axis=1)
    data.code_centres["text"] = rng.normal(size=(5, 8)).astype(np.float32)
    return data


def train_briefly(model: MMSR, data: SequenceData, epochs: int = 10) -> MMSR:
    fit_plainly(model, data, epochs, batch_size=64)
    return model


def ranks(model: MMSR, data: SequenceData) -> np.ndarray:
    test = data.splits["test"]
    with torch.no_grad():
        scores = model.full_sort_predict(model.prepare_samples(data, test))
    target = torch.from_numpy(data.target_items(test))
    return (scores > scores.gather(1, target[:, None])).sum(1).numpy() + 1


def mmsr(data: SequenceData, **params: object) -> MMSR:
    return MMSR.from_data(data, hidden_size=32, dropout=0.1, attn_dropout=0.0, modalities=["text"], **params)


def test_content_ranks_cold_items_where_ids_cannot() -> None:
    data = twin_data()
    id_rank = ranks(train_briefly(mmsr(data, item_content="none"), data), data)
    content_rank = ranks(train_briefly(mmsr(data, cold_items="id_and_content"), data), data)
    only_rank = ranks(train_briefly(mmsr(data, item_content="add", cold_items="content_only"), data), data)
    # measured HR@10: ID only 0.05, ID + content 0.62, content only for cold items 0.96 (of 60 items)
    assert np.mean(content_rank <= 10) > 0.4
    assert np.mean(content_rank <= 10) > 3 * np.mean(id_rank <= 10)
    assert np.mean(only_rank <= 10) > np.mean(content_rank <= 10) + 0.2


def test_on_by_default_persisted_and_off_when_asked(tmp_path) -> None:  # noqa: ANN001
    data = twin_data()
    plain = mmsr(data, item_content="none")
    assert not list(plain.content_proj.parameters())
    torch.testing.assert_close(plain.item_embeddings(), plain.item_emb.weight)
    default = mmsr(data)
    assert (default.config.item_content, default.config.cold_items) == ("add", "content_only")
    model = mmsr(data, content_norm="whiten").eval()
    assert "text" in model.init_kwargs["item_features"]
    assert model.init_kwargs["item_train_counts"][N_WARM:].sum() == 0  # cold twins are never trained on
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    torch.testing.assert_close(loaded.item_embeddings(), model.item_embeddings())
    with torch.no_grad():
        model.content_missing["text"].fill_(1.0)
        table, ids = model.item_embeddings(), model.item_emb.weight
        content = model.content_proj["text"](model.content_text)
        # warm items: ID + content; the item without a text vector: ID + the learned stand-in
        torch.testing.assert_close(table[0], ids[0] + content[0])
        torch.testing.assert_close(table[3], ids[3] + torch.ones(32))
        # a cold item scores by content alone at inference; training still sees its ID row
        torch.testing.assert_close(table[N_WARM], content[N_WARM])
        torch.testing.assert_close(model.train().item_embeddings()[N_WARM], ids[N_WARM] + content[N_WARM])


@pytest.mark.parametrize("absent", [[], [3], [0, 3, 7]])
def test_absent_rows_take_the_stand_in_with_the_gradients_of_a_where(absent: list[int]) -> None:
    projected_leaf = torch.randn(10, 4, requires_grad=True)
    missing = torch.randn(4, requires_grad=True)
    present = torch.ones(10, dtype=torch.bool)
    present[absent] = False
    weights = torch.randn(10, 4)
    grads = []
    for combine in (fill_absent, lambda x, keep, m: torch.where(keep[:, None], x, m)):
        out = combine(projected_leaf * 1.0, present, missing)
        grads.append((out, *torch.autograd.grad((out * weights).sum(), (projected_leaf, missing))))
    for ours, reference in zip(*grads, strict=True):
        torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(
        grads[0][2], weights[absent].sum(0)
    )  # zeros (not no gradient) when none is absent


def test_dropping_a_modality_drops_its_content_too() -> None:
    data = twin_data()
    model = mmsr(data, cold_items="id_and_content").eval()
    with torch.no_grad():
        model.content_missing["text"].fill_(0.0)
        with model.drop_modality_links("text", 1.0, seed=0):
            torch.testing.assert_close(model.item_embeddings(), model.item_emb.weight)


def _vectors(features: np.ndarray, norm: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Content vectors in the frame fitted on the same features."""
    return content_vectors(features, norm, fit_content_frame(features, norm, dim))


@pytest.mark.parametrize("norm", ["l2", "whiten"])
def test_content_vectors_are_centred_and_unit_scaled(norm: str) -> None:
    features = np.random.default_rng(1).normal(3.0, [1.0, 5.0, 0.2, 2.0], size=(200, 4))
    features[7] = np.nan
    vectors, present = _vectors(features, norm)
    assert not present[7] and not vectors[7].any() and present.sum() == 199
    rows = vectors[present]
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=0.1 if norm == "l2" else 1e-6)
    np.testing.assert_allclose(np.mean(np.linalg.norm(rows, axis=1) ** 2), 1.0, rtol=1e-5)
    if norm == "whiten":
        np.testing.assert_allclose(np.cov(rows.T, bias=True) * 4, np.eye(4), atol=1e-6)


@pytest.mark.parametrize("norm", ["l2", "whiten"])
def test_content_dim_keeps_the_top_principal_components(norm: str) -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 6)) + 0.01 * rng.normal(size=(300, 6)) + 4.0
    features[5] = np.nan
    vectors, present = _vectors(features, norm, dim=2)
    assert vectors.shape == (300, 2) and not present[5] and not vectors[5].any()
    full, _ = _vectors(features, norm)
    if norm == "l2":  # two components hold almost all of the variance: items keep their similarities
        similarities = [v[present] @ v[present][:20].T for v in (vectors, full)]
        np.testing.assert_allclose(similarities[0], similarities[1], atol=0.02)
    else:  # whitened within the two kept axes
        np.testing.assert_allclose(np.cov(vectors[present].T, bias=True) * 2, np.eye(2), atol=1e-6)
    np.testing.assert_array_equal(_vectors(features, norm, dim=6)[0], full)  # all kept: unchanged
    model = mmsr(twin_data(), content_dim=4)
    assert model.content_proj["text"].weight.shape == (32, 4) and model.content_text.shape == (60, 4)


def test_id_drop_trains_items_on_their_content_alone_and_leaves_eval_untouched() -> None:
    data = twin_data()
    model = mmsr(data, id_drop_p=0.5, cold_items="id_and_content")
    with torch.no_grad():
        model.item_emb.weight.add_(1.0)  # no ID row is zero, so a dropped one shows
        full = model.eval().item_embeddings()
        content_only = full - model.item_emb.weight
        table = model.train().item_embeddings()
    dropped = ~torch.isclose(table, full).all(dim=1)
    torch.testing.assert_close(table[dropped], content_only[dropped])
    assert 0.3 < dropped.float().mean() < 0.7
    assert not dropped[3]  # item 3 has no content to fall back on: its ID row stays
    with torch.no_grad():
        again = model.train().item_embeddings()
    assert not torch.equal(again, table)  # drawn afresh on every call
    twin = mmsr(data, id_drop_p=0.5, cold_items="id_and_content")
    with torch.no_grad():
        twin.item_emb.weight.add_(1.0)
        torch.testing.assert_close(twin.train().item_embeddings(), table)  # seeded by the model's seed
    assert set(model.random_streams()) == {"train_modality_drop", "train_id_drop"}  # saved in checkpoints
    assert set(mmsr(data).random_streams()) == {"train_modality_drop"}  # so older checkpoints still load
    off = mmsr(data, id_drop_p=0.5, item_content="none").train()
    with torch.no_grad():
        torch.testing.assert_close(off.item_embeddings(), off.item_emb.weight)  # no content: nothing dropped


def test_a_frozen_table_projects_content_once_and_scores_as_before() -> None:
    data = twin_data()
    model = train_briefly(mmsr(data), data, epochs=2).eval()
    batch = model.prepare_samples(data, data.splits["test"])
    projections = []
    model.content_proj["text"].register_forward_hook(lambda *_: projections.append(1))
    with torch.no_grad():
        plain = model.full_sort_predict(batch)
        with model.drop_modality_links("text", 0.5, seed=0):
            dropped = model.full_sort_predict(batch)
        projections.clear()
        with model.frozen_item_table() as table:
            frozen = model.full_sort_predict(batch, table)
            assert len(projections) == 1  # the table's; the graph's item nodes take its rows
            with model.drop_modality_links("text", 0.5, seed=0):  # other links: the table steps aside
                dropped_inside = model.full_sort_predict(batch)
    torch.testing.assert_close(frozen, plain)
    torch.testing.assert_close(dropped_inside, dropped)


def test_content_id_init_starts_alike_items_close_at_the_random_scale() -> None:
    data = twin_data()
    random_start, content_start = (
        mmsr(data, id_init=init).item_emb.weight.detach() for init in ("random", "content")
    )
    warm, twins = content_start[:N_WARM], content_start[N_WARM:]
    has = np.ones(2 * N_WARM, dtype=bool)
    has[3] = False  # no text vector: it keeps its random row
    torch.testing.assert_close(content_start[3], random_start[3])
    near = torch.nn.functional.cosine_similarity(warm, twins)[np.arange(N_WARM) != 3]
    assert near.min() > 0.9  # a cold twin starts next to the item whose content it shares
    assert abs(content_start[has].std().item() / random_start.std().item() - 1) < 0.1
