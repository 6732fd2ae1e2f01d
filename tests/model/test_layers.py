"""The HAN-GNN layer: W_K/W_V really used, phase 2 depends on phase 1, every switch trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seqdata import graphs_of

from mmsr_model import layers, sparse
from mmsr_model.config import MMSRConfig
from mmsr_model.graph import GraphBatch
from mmsr_model.layers import HANLayer
from mmsr_model.sparse import Pattern, sddmm, segment_softmax, spmm

DIM = 16


@pytest.fixture
def batch() -> GraphBatch:
    rng = np.random.default_rng(0)
    codes = {1: rng.integers(-1, 5, size=(12, 2)), 2: rng.integers(-1, 7, size=(12, 3))}
    return graphs_of([rng.integers(0, 12, size=n) for n in (1, 4, 7, 9)], codes)


def states(batch: GraphBatch, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch.num_nodes, DIM, generator=torch.Generator().manual_seed(seed))


def layer(**kwargs: object) -> HANLayer:
    torch.manual_seed(0)
    return HANLayer(MMSRConfig(hidden_size=DIM, attn_dropout=0.0, **kwargs)).eval()


def test_output_shape_and_gradients_reach_every_parameter(batch: GraphBatch) -> None:
    lay = layer().train()
    h = states(batch).requires_grad_()
    out = lay(h, batch)
    assert out.shape == h.shape
    out.square().sum().backward()
    for name, p in lay.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert h.grad is not None


@pytest.mark.parametrize("which", ["w_k", "w_v"])
def test_keys_and_values_come_from_their_own_projections(batch: GraphBatch, which: str) -> None:
    lay = layer()
    h = states(batch)
    before = lay(h, batch)
    with torch.no_grad():
        for lin in getattr(lay, which).maps:
            lin.weight.zero_()
            lin.bias.zero_()
    assert not torch.allclose(before, lay(h, batch), atol=1e-5)


class Recorder:
    """Wraps a layer's attention methods: records outputs, optionally perturbs one call."""

    def __init__(self, lay: HANLayer, perturb: tuple[str, int] | None = None) -> None:
        self.calls: dict[str, list[torch.Tensor]] = {"homogeneous": [], "heterogeneous": []}
        for kind in self.calls:
            original = getattr(lay, kind)

            def wrapped(x, values, batch, kind=kind, original=original):  # noqa: ANN001, ANN202
                out = original(x, values, batch)
                if perturb == (kind, len(self.calls[kind])):
                    out = out + 3.0
                self.calls[kind].append(out)
                return out

            setattr(lay, kind, wrapped)


@pytest.mark.parametrize("fusion", ["non_invasive", "invasive"])
def test_second_phase_of_each_path_depends_on_the_first(batch: GraphBatch, fusion: str) -> None:
    h = states(batch)
    base = Recorder(lay := layer(fusion=fusion))
    lay(h, batch)
    # call order: A1 homogeneous, B1 heterogeneous, A2 heterogeneous, B2 homogeneous
    path_a = Recorder(lay := layer(fusion=fusion), perturb=("homogeneous", 0))
    lay(h, batch)
    assert not torch.allclose(path_a.calls["heterogeneous"][1], base.calls["heterogeneous"][1], atol=1e-5)
    assert torch.allclose(path_a.calls["heterogeneous"][0], base.calls["heterogeneous"][0])
    path_b = Recorder(lay := layer(fusion=fusion), perturb=("heterogeneous", 0))
    lay(h, batch)
    assert not torch.allclose(path_b.calls["homogeneous"][1], base.calls["homogeneous"][1], atol=1e-5)
    assert torch.allclose(path_b.calls["homogeneous"][0], base.calls["homogeneous"][0])


@pytest.mark.parametrize("homogeneous_values", ["states", "projected"])
def test_non_invasive_aggregates_original_values(batch: GraphBatch, homogeneous_values: str) -> None:
    """Phase 2 of path B aggregates the layer input's values, so its output is a convex mix of them."""
    h = states(batch)
    rec = Recorder(lay := layer(homogeneous_values=homogeneous_values))
    lay(h, batch)
    values = lay.w_v(h, batch.type_counts) if homogeneous_values == "projected" else h
    # a convex mix of the input's values (per coordinate), not of the updated states
    mixed = rec.calls["homogeneous"][1]
    assert (mixed <= values.max(0).values + 1e-5).all() and (mixed >= values.min(0).values - 1e-5).all()
    assert not torch.allclose(
        layer(fusion="invasive", homogeneous_values=homogeneous_values)(h, batch), lay(h, batch), atol=1e-5
    )


def test_variants_differ_and_gates_behave(batch: GraphBatch) -> None:
    h = states(batch)
    outputs = {
        name: layer(**kw)(h, batch)
        for name, kw in {
            "async": {},
            "sync": {"update": "sync"},
            "invasive": {"fusion": "invasive"},
            "hard": {"gate": "hard"},
        }.items()
    }
    assert not torch.allclose(outputs["async"], outputs["sync"], atol=1e-5)
    assert not torch.allclose(outputs["async"], outputs["invasive"], atol=1e-5)
    for fusion in ("non_invasive", "invasive"):
        projected = layer(fusion=fusion, homogeneous_values="projected")(h, batch)
        assert not torch.allclose(
            projected, layer(fusion=fusion, homogeneous_values="states")(h, batch), atol=1e-5
        )
    hard = layer(gate="hard")
    scores = torch.randn(5, 2)
    assert torch.equal(hard._gate_weights(scores).sum(-1), torch.ones(5))
    assert set(hard._gate_weights(scores).unique().tolist()) <= {0.0, 1.0}
    hard.train()
    weights = hard._gate_weights(scores.requires_grad_())
    weights[:, 0].sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0  # straight-through gradient


def test_residual_switch_keeps_or_drops_the_input_state(batch: GraphBatch) -> None:
    """Synchronous update: with the residual the output is the input plus the same messages."""
    h = states(batch)
    with_residual = layer(update="sync", residual=True)(h, batch)
    messages_only = layer(update="sync", residual=False)(h, batch)
    torch.testing.assert_close(with_residual - messages_only, h)
    assert not torch.allclose(layer(residual=True)(h, batch), layer()(h, batch), atol=1e-5)


@pytest.mark.parametrize("homogeneous_values", ["states", "projected"])
def test_homogeneous_values_switch_picks_what_the_sequential_attention_aggregates(
    batch: GraphBatch, homogeneous_values: str
) -> None:
    """Synchronous update: the homogeneous message mixes the states, or their W_V projections."""
    h = states(batch)
    lay = layer(update="sync", homogeneous_values=homogeneous_values)
    values = lay.w_v(h, batch.type_counts)
    homo_values = values if homogeneous_values == "projected" else h
    expected = lay.homogeneous(h, homo_values, batch) + lay.heterogeneous(h, values, batch)
    torch.testing.assert_close(lay(h, batch), expected)


def test_runs_under_cpu_autocast(batch: GraphBatch) -> None:
    lay = layer()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lay(states(batch), batch)
    assert torch.isfinite(out.float()).all()


def test_unknown_switch_is_rejected() -> None:
    with pytest.raises(ValueError, match="update"):
        MMSRConfig(update="parallel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="homogeneous_values"):
        MMSRConfig(homogeneous_values="keys")  # type: ignore[arg-type]


@pytest.mark.parametrize("gathers", [False, True], ids=["sparse", "gather-path"])
def test_sparse_kernels_match_gather_reference_with_gradients(
    gathers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SDDMM/SpMM (hand-written backward; gathers on CUDA) against the gather / index_add formulation."""
    monkeypatch.setattr(sparse, "use_gathers", lambda t: gathers)
    g = torch.Generator().manual_seed(0)
    n_rows, n_cols, dim = 7, 5, 4
    rows = torch.randint(0, n_rows, (30,), generator=g).sort().values
    cols = torch.randint(0, n_cols, (30,), generator=g)
    pattern = Pattern.from_sorted(rows, cols, n_rows, n_cols)
    a = torch.randn(n_rows, dim, generator=g, requires_grad=True)
    b = torch.randn(n_cols, dim, generator=g, requires_grad=True)
    w = torch.randn(30, generator=g, requires_grad=True)
    logits, out = sddmm(pattern, a, b), spmm(pattern, w, b)
    assert pattern._transpose is None  # a forward pass (scoring) never sorts out the transpose
    ref_logits = (a[rows] * b[cols]).sum(-1)
    ref_out = torch.zeros(n_rows, dim).index_add(0, rows, w.unsqueeze(-1) * b[cols])
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(out, ref_out)
    grads = torch.autograd.grad((logits.sin().sum() + out.square().sum()), (a, b, w))
    ref = torch.autograd.grad((ref_logits.sin().sum() + ref_out.square().sum()), (a, b, w))
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want)
    assert (pattern._transpose is None) == gathers  # the CSR backward built it; the gathers need none


def test_segment_softmax_equals_torch_geometric_bit_for_bit_with_gradients() -> None:
    """The reference is PyG's softmax (a dev dependency); segments 3 and 9 have no entry."""
    reference = pytest.importorskip("torch_geometric.utils").softmax
    g = torch.Generator().manual_seed(0)
    segments = torch.randint(0, 10, (200,), generator=g)
    segments = segments[(segments != 3) & (segments != 9)]
    logits = (20 * torch.randn(len(segments), generator=g)).requires_grad_()
    ours, theirs = segment_softmax(logits, segments, 10), reference(logits, segments, num_nodes=10)
    assert torch.equal(ours, theirs)
    sums = torch.zeros(10).index_add_(0, segments, ours.detach())
    torch.testing.assert_close(sums[sums > 0], torch.ones(8))
    weights = torch.randn(len(segments), generator=g)
    assert torch.equal(*(torch.autograd.grad((out * weights).sum(), logits)[0] for out in (ours, theirs)))


@pytest.mark.parametrize("pruned", [frozenset({"cpu"}), frozenset()], ids=["pruned", "unpruned"])
@pytest.mark.parametrize("homogeneous_values", ["states", "projected"])
@pytest.mark.parametrize("fusion", ["non_invasive", "invasive"])
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("update", ["async", "sync"])
def test_restricting_to_readout_rows_gives_those_rows(
    batch: GraphBatch,
    update: str,
    residual: bool,
    fusion: str,
    homogeneous_values: str,
    pruned: frozenset[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(layers, "PRUNED_DEVICES", pruned)
    lay = layer(update=update, residual=residual, fusion=fusion, homogeneous_values=homogeneous_values)
    h = states(batch)
    rows = batch.last_node
    torch.testing.assert_close(lay(h, batch, rows=rows), lay(h, batch)[rows])


@pytest.mark.parametrize("fusion", ["non_invasive", "invasive"])
@pytest.mark.parametrize("update", ["async", "sync"])
def test_pruned_first_phases_train_as_the_unpruned_ones(
    batch: GraphBatch, update: str, fusion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With attention dropout on, pruning draws the same masks: same outputs and gradients, same seed."""
    runs = []
    for pruned in (frozenset(), frozenset({"cpu"})):
        monkeypatch.setattr(layers, "PRUNED_DEVICES", pruned)
        torch.manual_seed(0)
        lay = HANLayer(MMSRConfig(hidden_size=DIM, attn_dropout=0.3, update=update, fusion=fusion)).train()
        h = states(batch).requires_grad_()
        torch.manual_seed(1)
        out = lay(h, batch, rows=batch.last_node)
        out.square().sum().backward()
        runs.append((out, h.grad, lay.w_q.maps[0].weight.grad, torch.rand(1)))
    for pruned_value, unpruned_value in zip(runs[1], runs[0], strict=True):
        torch.testing.assert_close(pruned_value, unpruned_value)


def test_second_phase_reads_only_the_rows_and_their_in_neighbours(batch: GraphBatch) -> None:
    rows = batch.last_node
    subset = layers.read_by_second_phase(batch, rows)
    read = set(subset.nodes.tolist())
    into = {
        int(s)
        for index in (batch.homo_index, batch.hetero_index)
        for s, d in index.T
        if int(d) in set(rows.tolist())
    }
    assert read == into | set(rows.tolist())
    assert len(read) < batch.num_nodes
    assert layers.type_counts_of(batch, torch.tensor(sorted(read))) == tuple(
        sum(1 for node in read if sum(batch.type_counts[:t]) <= node < sum(batch.type_counts[: t + 1]))
        for t in range(len(batch.type_counts))
    )
