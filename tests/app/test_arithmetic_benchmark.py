"""The FLOP count behind speed.md's 'model step / arithmetic': sparse products by stored entries."""

from __future__ import annotations

import torch

from benchmarks.arithmetic import count_flops, gemm_peak_gflops
from mmsr_model.sparse import Pattern, sddmm, spmm


def test_dense_products_count_2mnk_and_sparse_ones_their_stored_entries() -> None:
    a, b = torch.randn(6, 5), torch.randn(5, 4)
    assert count_flops(lambda: a @ b) == 2 * 6 * 5 * 4
    assert count_flops(lambda: torch.addmm(torch.zeros(4), a, b)) == 2 * 6 * 5 * 4
    sparse = torch.eye(50).to_sparse_csr()  # 50 stored entries; torch's own counter says 2 * 50^2 * 4
    values = torch.randn(50, 4)
    assert count_flops(lambda: sparse @ values) == 2 * 50 * 4
    q, k = torch.randn(50, 8), torch.randn(50, 8)
    assert count_flops(lambda: torch.sparse.sampled_addmm(sparse, q, k.T)) == 2 * 50 * 8  # SDDMM


def test_the_graph_layers_sparse_products_count_per_edge_forward_and_backward() -> None:
    rows, cols = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 3, 1, 0, 2, 3])  # 6 edges, 4 nodes
    pattern = Pattern.from_sorted(rows, cols, 3, 4)
    q, k = torch.randn(3, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    assert count_flops(lambda: sddmm(pattern, q, k).sum().backward()) == 3 * 2 * 6 * 8  # dot + 2 gradients
    weights = torch.randn(6, requires_grad=True)
    values = torch.randn(4, 8, requires_grad=True)
    assert count_flops(lambda: spmm(pattern, weights, values)) == 2 * 6 * 8


def test_the_gemm_peak_is_a_positive_rate() -> None:
    assert gemm_peak_gflops(size=64, repeats=2) > 0
