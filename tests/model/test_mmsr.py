"""The MMSR model: every ablation switch trains, caches match direct building, it learns, it saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seqdata import fit_plainly

from mmsr_model import batching, layers
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.device import tensors_in
from mmsr_model.graph import NODE_TYPES, GraphBatch
from mmsr_model.mmsr import MMSR
from mmsr_model.persistence import load_model, save_model

N_ITEMS = 40


@pytest.fixture(scope="module")
def data() -> SequenceData:
    """Toy data with a learnable rule (next item = item + 1 mod N) and both modalities."""
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(0, N_ITEMS) + np.arange(rng.integers(3, 14))) % N_ITEMS for _ in range(120)]
    users = np.concatenate([np.full(len(s) - 2, u) for u, s in enumerate(seqs)])
    positions = np.concatenate([np.arange(1, len(s) - 1) for s in seqs])
    test = TargetSet(np.arange(len(seqs)), np.array([len(s) - 1 for s in seqs]))
    codes = {m: np.argsort(rng.random((N_ITEMS, 6)), axis=1)[:, :2] for m in ("text", "image")}
    codes["image"][:5] = -1  # five items without an image
    centres = {m: rng.normal(size=(6, 24)).astype(np.float32) for m in ("text", "image")}
    features = {m: rng.normal(size=(N_ITEMS, 24)).astype(np.float32) for m in ("text", "image")}
    features["text"][3] = np.nan
    return SequenceData(
        seqs, N_ITEMS, {"train": TargetSet(users, positions), "test": test}, codes, centres, features
    )


def model(data: SequenceData, **params: object) -> MMSR:
    return MMSR.from_data(data, hidden_size=16, max_len=6, **params)


def some(data: SequenceData, split: str = "train", n: int = 48) -> TargetSet:
    t = data.splits[split]
    return TargetSet(t.users[:n], t.positions[:n])


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"update": "sync"},
        {"fusion": "invasive"},
        {"modality_nodes": "raw"},
        {"modalities": []},
        {"modalities": ["text"]},
        {"modalities": ["image"]},
        {"gate": "hard"},
        {"readout": "mean"},
        {"readout": "attention"},
        {"readout_dropout": 0.4},
        {"norm": "layer"},
        {"residual": True},
        {"residual": True, "update": "sync"},
        {"score_scale": 12.0},
        {"readout": "mean", "score_scale": 12.0},
        {"num_layers": 2},
        {"homogeneous_values": "states"},
        {"homogeneous_values": "states", "fusion": "invasive"},
        {"modality_drop_p": 0.5},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default",
)
def test_every_switch_runs_forward_and_backward(data: SequenceData, params: dict) -> None:
    m = model(data, **params).train()
    targets = some(data)
    loss = m.calculate_loss(m.prepare_samples(data, targets), torch.from_numpy(data.target_items(targets)))
    assert torch.isfinite(loss)
    loss.backward()
    assert m.item_emb.weight.grad is not None and m.item_emb.weight.grad.abs().sum() > 0
    assert m.full_sort_predict(m.prepare(data.histories(targets, m.max_len))).shape == (len(targets), N_ITEMS)


def test_modalities_follow_the_data(data: SequenceData) -> None:
    text_only = SequenceData(
        data.sequences,
        N_ITEMS,
        data.splits,
        {"text": data.item_codes["text"]},
        {"text": data.code_centres["text"]},
    )
    m = model(text_only)
    assert m.modalities == ["text"]
    batch = m.prepare(data.histories(some(data), m.max_len))
    assert (
        batch.type_counts[NODE_TYPES.index("image")] == 0 and batch.type_counts[NODE_TYPES.index("text")] > 0
    )
    assert model(data, modality_nodes="raw").init_kwargs["item_features"].keys() == {"text", "image"}


def test_node_dropout_acts_on_layer_outputs(data: SequenceData) -> None:
    """Like the public code, dropout zeroes entries of the layer's output, not of its input."""
    m = model(data, dropout=0.9).train()
    batch = m.prepare(data.histories(some(data), m.max_len))
    assert (m(batch) == 0).float().mean() > 0.8
    assert (m.eval()(batch) != 0).all()


def test_training_settings_are_not_model_params(data: SequenceData) -> None:
    """A training setting handed to the model is a caller's mistake: it fails, not vanishes."""
    with pytest.raises(TypeError, match="lr"):
        model(data, lr=0.1)


def test_gradient_reaches_code_embeddings(data: SequenceData) -> None:
    m = model(data).train()
    targets = some(data)
    m.calculate_loss(
        m.prepare_samples(data, targets), torch.from_numpy(data.target_items(targets))
    ).backward()
    for name in ("text", "image"):
        assert m.code_emb[name].weight.grad.abs().sum() > 0
    layer = m.layers[0]
    # keys and values of every node type feed the last item; code queries only matter from 2 layers up
    for proj in (layer.w_k, layer.w_v):
        assert all(lin.weight.grad.abs().sum() > 0 for lin in proj.maps)
    assert layer.w_q.maps[NODE_TYPES.index("item")].weight.grad.abs().sum() > 0


def test_cached_samples_match_direct_prepare(data: SequenceData) -> None:
    m = model(data).eval()
    targets = data.splits["train"]
    assert (targets.positions > m.max_len).any()  # windows are covered
    with torch.no_grad():
        cached = m(m.prepare_samples(data, targets))
        direct = m(m.prepare(data.histories(targets, m.max_len)))
    torch.testing.assert_close(cached, direct)


def code_nodes(batch: GraphBatch, modality: str) -> int:
    return batch.type_counts[NODE_TYPES.index(modality)]


def test_drop_modality_links(data: SequenceData) -> None:
    m = model(data).eval()
    targets = data.splits["test"]
    full = m.prepare_samples(data, targets)
    with m.drop_modality_links("image", p=1.0, seed=0):
        dropped = m.prepare_samples(data, targets)
        assert code_nodes(dropped, "image") == 0 and code_nodes(dropped, "text") == code_nodes(full, "text")
    with m.drop_modality_links("both", p=0.5, seed=0):
        half = m.prepare_samples(data, targets)
        assert 0 < code_nodes(half, "image") < code_nodes(full, "image")
        assert 0 < code_nodes(half, "text") < code_nodes(full, "text")
        with torch.no_grad():
            assert not torch.allclose(m(half), m(full))
    again = m.prepare_samples(data, targets)
    assert code_nodes(again, "image") == code_nodes(full, "image")  # restored on exit


def test_same_seed_same_model_and_scores(data: SequenceData) -> None:
    batch = model(data).prepare(data.histories(some(data), 6))
    a, b = model(data, seed=5).eval(), model(data, seed=5).eval()
    with torch.no_grad():
        torch.testing.assert_close(a(batch), b(batch))
        assert not torch.allclose(a(batch), model(data, seed=6).eval()(batch))


@pytest.mark.parametrize("update", ["async", "sync"])
def test_pruned_first_phases_train_the_same_model(
    data: SequenceData, update: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pruning the layer to what the readout reads changes no loss and no score beyond float
    rounding (same seed: the same dropout draws; products over fewer rows may round differently).

    Weights are not compared: the gate's last bias has a zero gradient up to rounding (a softmax
    over the two paths ignores a shift shared by both), which Adam turns into steps of any sign.
    """
    runs = []
    for pruned in (frozenset(), frozenset({"cpu"})):
        monkeypatch.setattr(layers, "PRUNED_DEVICES", pruned)
        m = model(data, update=update, attn_dropout=0.3, seed=3)
        losses = fit_plainly(m, data, epochs=2, batch_size=32)
        with torch.no_grad():
            runs.append((losses, m.eval().full_sort_predict(m.prepare_samples(data, data.splits["test"]))))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=1e-5, atol=1e-5)


def test_learns_toy_rule_far_better_than_random(data: SequenceData) -> None:
    torch.manual_seed(0)
    m = model(data, dropout=0.1, attn_dropout=0.0)
    losses = fit_plainly(m, data, epochs=8, batch_size=128)
    test = data.splits["test"]
    m.eval()
    with torch.no_grad():
        top1 = m.full_sort_predict(m.prepare_samples(data, test)).argmax(-1).numpy()
    accuracy = (top1 == data.target_items(test)).mean()
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy > 0.5  # random is 1/40


def test_save_and_load_round_trip(data: SequenceData, tmp_path) -> None:  # noqa: ANN001
    m = model(data, modality_nodes="raw", num_layers=2).eval()
    path = save_model(m, tmp_path / "mmsr.pt")
    loaded = load_model(path)
    batch = m.prepare(data.histories(some(data), m.max_len))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), m(batch))
    assert loaded.init_kwargs["modalities"] == ["image", "text"]


def loss_under_autocast(m: MMSR, data: SequenceData, device: str, dtype: torch.dtype) -> torch.Tensor:
    targets = some(data)
    m.to(device).train()
    batch = m.batch_to(m.prepare_samples(data, targets), torch.device(device))
    with torch.autocast(device, dtype=dtype):
        loss = m.calculate_loss(batch, torch.from_numpy(data.target_items(targets)).to(device))
    loss.backward()
    return loss


def test_trains_under_cpu_autocast(data: SequenceData) -> None:
    m = model(data)
    assert torch.isfinite(loss_under_autocast(m, data, "cpu", torch.bfloat16))
    assert m.code_emb["text"].weight.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda_with_mixed_precision(data: SequenceData) -> None:
    m = model(data)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert torch.isfinite(loss_under_autocast(m, data, "cuda", dtype))
    with torch.no_grad():
        m.eval()
        pending = m.prepare(data.histories(some(data), m.max_len))  # graphs are built on the device
        on_gpu = m(m.batch_to(pending, torch.device("cuda"))).cpu()
        on_cpu = m.cpu()(m.batch_to(pending, torch.device("cpu")))
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prefetched_batches_build_the_same_graphs_on_a_side_stream(data: SequenceData) -> None:
    """The fit loop's CUDA prefetch (graphs built on a side stream by the worker thread) gives
    the graphs and targets that building them at the step would."""
    cuda = torch.device("cuda")
    m = model(data).to(cuda).eval()  # no modality dropout draws: both builds see the same codes
    train = data.splits["train"]
    order = np.random.default_rng(0).permutation(len(train))
    staged = list(batching.batches(m, data, train, order, 32, prefetch=True, device=cuda))
    assert len(staged) == -(-len(order) // 32)
    for start, (batch, targets, fraction) in zip(range(0, len(order), 32), staged, strict=True):
        plain, plain_targets = batching.build_batch(m, data, train, order[start : start + 32])
        direct = m.batch_to(plain, cuda)
        assert isinstance(batch, GraphBatch) and batch.node_value.is_cuda and fraction == 1.0
        assert torch.equal(targets.cpu(), plain_targets)
        for a, b in zip(tensors_in(batch), tensors_in(direct), strict=True):
            assert torch.equal(a, b)


def test_attention_readout_sees_items_beyond_the_last_ones_neighbours(data: SequenceData) -> None:
    """One ID-only layer: the last item's state reads only its graph neighbours, so swapping the
    history's first item leaves a last-item readout unchanged; the attention readout weighs it."""
    histories = [np.array([0, 7, 8, 9]), np.array([20, 7, 8, 9])]
    for readout, changes in (("last", False), ("attention", True)):
        m = model(data, modalities=[], readout=readout).eval()
        with torch.no_grad():
            a, b = m(m.prepare(histories))
        assert (not torch.allclose(a, b)) is changes, readout


def test_score_scale_gives_bounded_cosine_scores(data: SequenceData) -> None:
    m = model(data, score_scale=5.0).eval()
    targets = some(data, "test")
    with torch.no_grad():
        scores = m.full_sort_predict(m.prepare(data.histories(targets, m.max_len)))
    assert scores.abs().max() <= 5.0 + 1e-4
    assert torch.allclose(m.item_embeddings().norm(dim=-1), torch.ones(N_ITEMS))
