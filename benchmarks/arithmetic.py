"""How far a step is from its arithmetic: FLOPs counted per step against the machine's GEMM peak.

The floor of a step is its floating-point operations at the best dense matrix-product rate
this machine reaches (``gemm_peak_gflops``: a 1024-cube float32 product, best of several
timed runs, with the given torch threads). Elementwise, indexing and memory-bound work is
counted as free, so the floor is optimistic and the ratio measured / floor an upper bound on
the waste. FLOPs come from ``torch.utils.flop_counter``, with the sparse products it would
count as dense (the graph's SpMM, a CSR matrix times dense values, and SDDMM, one dot
product per edge) counted by their stored entries instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, addmm_flop, mm_flop

aten = torch.ops.aten


def _is_sparse(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.layout != torch.strided


def _sparse_product_flops(sparse: torch.Tensor, dense: torch.Tensor) -> int:
    """A sparse [m, k] times a dense [k, n]: one multiply-add per stored entry and column."""
    return 2 * sparse._nnz() * dense.shape[-1]


def _mm(a: torch.Tensor, b: torch.Tensor, *args: Any, **kwargs: Any) -> int:
    if _is_sparse(a):
        return _sparse_product_flops(a, b)
    if _is_sparse(b):
        return _sparse_product_flops(b.t(), a.t())
    return mm_flop(a.shape, b.shape)


def _addmm(bias: Any, a: torch.Tensor, b: torch.Tensor, *args: Any, **kwargs: Any) -> int:
    if _is_sparse(a) or _is_sparse(b):
        return _mm(a, b)
    return addmm_flop(bias.shape, a.shape, b.shape)


def _sampled_addmm(pattern: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *args: Any, **kwargs: Any) -> int:
    """SDDMM: one length-k dot product per stored entry of the pattern."""
    return 2 * pattern._nnz() * a.shape[-1]


def _raw(formula: Callable[..., int]) -> Callable[..., int]:
    formula._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode hands it the tensors
    return formula


SPARSE_AWARE = {
    aten.mm: _raw(_mm),
    aten.addmm: _raw(_addmm),
    aten.sparse_sampled_addmm: _raw(_sampled_addmm),
}


def count_flops(run: Callable[[], Any]) -> int:
    """Floating-point operations of ``run()`` (forward and backward alike), sparse products by entries."""
    with FlopCounterMode(display=False, custom_mapping=SPARSE_AWARE) as counter:
        run()
    return int(counter.get_total_flops())


def gemm_peak_gflops(size: int = 1024, repeats: int = 5) -> float:
    """The best float32 GEMM rate of ``repeats`` timed ``size``-cube products, in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
