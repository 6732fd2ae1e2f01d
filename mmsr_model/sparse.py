"""Edge-wise attention kernels as sparse matrix products, so no ``[edges x d]`` tensor is built.

Gathering both endpoint vectors of every edge and scatter-adding weighted values
(the textbook way) moves several ``edges x d`` tensors per attention and dominated the
MMSR step on CPU. Here one attention is two sparse products over a fixed pattern:
logits by SDDMM (``torch.sparse.sampled_addmm``: ``a[row] . b[col]`` only where an
edge exists) and aggregation by SpMM (CSR matrix times dense values). Each is the
other's backward, so both get hand-written autograd with a transposed pattern built
once per batch. Computed in float32 (autocast is switched off around them). On CUDA the
plain gather / index_add formulation is used instead: fast on GPUs, and the cuSPARSE
kernels could not be exercised on the machines this was written on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import torch


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor, without torch's "support is in beta state" warning (once per process, not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


class Transpose(NamedTuple):
    """A pattern's transpose as CSR: its row pointers, columns, and the edge order it lists edges in."""

    crow: torch.Tensor
    col: torch.Tensor
    perm: torch.Tensor


@dataclass
class Pattern:
    """Edges sorted by ``row`` as a CSR pattern of shape ``(n_rows, n_cols)``.

    Its transpose is sorted out on first use: only the backward passes of the CSR kernels
    read it, so scoring, validation and the gather formulation (CUDA) never build it.
    """

    row: torch.Tensor
    crow: torch.Tensor
    col: torch.Tensor
    n_rows: int
    n_cols: int
    _transpose: Transpose | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_sorted(cls, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> Pattern:
        """Pattern of edges ``rows[e] <- cols[e]``; ``rows`` must be sorted ascending."""
        return cls(row=rows, crow=_crow(rows, n_rows), col=cols, n_rows=n_rows, n_cols=n_cols)

    @property
    def transpose(self) -> Transpose:
        if self._transpose is None:
            perm = torch.argsort(self.col, stable=True)
            self._transpose = Transpose(_crow(self.col[perm], self.n_cols), self.row[perm], perm)
        return self._transpose

    def to(self, device: torch.device) -> Pattern:
        """The pattern on ``device`` (a transpose already built moves with it)."""
        moved = {name: getattr(self, name).to(device, non_blocking=True) for name in ("row", "crow", "col")}
        transpose = None if self._transpose is None else Transpose(*(t.to(device) for t in self._transpose))
        return Pattern(**moved, n_rows=self.n_rows, n_cols=self.n_cols, _transpose=transpose)

    def matrix(self, weights: torch.Tensor) -> torch.Tensor:
        return _csr(self.crow, self.col, weights, (self.n_rows, self.n_cols))

    def matrix_t(self, weights: torch.Tensor) -> torch.Tensor:
        crow, col, perm = self.transpose
        return _csr(crow, col, weights[perm], (self.n_cols, self.n_rows))

    def sample(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a[row_e] . b[col_e]`` for every edge, in edge order."""
        zeros = self.matrix(a.new_zeros(self.col.shape[0]))
        return torch.sparse.sampled_addmm(zeros, a.contiguous(), b.T, beta=0.0).values()


def _crow(sorted_rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=sorted_rows.device)
    crow[1:] = torch.bincount(sorted_rows, minlength=n_rows).cumsum(0)
    return crow


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights: torch.Tensor, dense: torch.Tensor, pattern: Pattern) -> torch.Tensor:  # noqa: ANN001
        ctx.pattern = pattern
        ctx.save_for_backward(weights, dense)
        return pattern.matrix(weights) @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # noqa: ANN001
        weights, dense = ctx.saved_tensors
        pattern: Pattern = ctx.pattern
        grad = grad.contiguous()
        grad_weights = pattern.sample(grad, dense) if ctx.needs_input_grad[0] else None
        grad_dense = pattern.matrix_t(weights) @ grad if ctx.needs_input_grad[1] else None
        return grad_weights, grad_dense, None


class _SDDMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, pattern: Pattern) -> torch.Tensor:  # noqa: ANN001
        ctx.pattern = pattern
        ctx.save_for_backward(a, b)
        return pattern.sample(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # noqa: ANN001
        a, b = ctx.saved_tensors
        pattern: Pattern = ctx.pattern
        grad = grad.contiguous()
        grad_a = pattern.matrix(grad) @ b if ctx.needs_input_grad[0] else None
        grad_b = pattern.matrix_t(grad) @ a if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def use_gathers(t: torch.Tensor) -> bool:
    """Plain gathers on GPUs, where they are fast and the cuSPARSE kernels are untested here."""
    return t.is_cuda


def spmm(pattern: Pattern, weights: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``out[r] = sum over edges (r <- c) of weights_e * dense[c]``, shape ``[n_rows, d]``."""
    with torch.autocast(dense.device.type, enabled=False):
        weights, dense = weights.float(), dense.float()
        if use_gathers(dense):
            out = dense.new_zeros(pattern.n_rows, dense.shape[1])
            return out.index_add_(0, pattern.row, weights.unsqueeze(-1) * dense[pattern.col])
        return _SpMM.apply(weights, dense, pattern)


def sddmm(pattern: Pattern, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a[row_e] . b[col_e]`` for every edge ``e`` of ``pattern``, shape ``[E]``."""
    with torch.autocast(a.device.type, enabled=False):
        a, b = a.float(), b.float()
        if use_gathers(a):
            return (a[pattern.row] * b[pattern.col]).sum(-1)
        return _SDDMM.apply(a, b, pattern)


def segment_softmax(logits: torch.Tensor, segments: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Softmax of ``logits`` within each segment (``segments[e]``: the segment of entry ``e``).

    The segment maximum is subtracted first (detached: the shift cancels, so it needs no
    gradient), and 1e-16 guards an all-underflow segment; the operations are those of
    ``torch_geometric.utils.softmax``, whose results the tests compare bit for bit.
    """
    peak = logits.new_zeros(n_segments)
    peak.scatter_reduce_(0, segments, logits.detach(), "amax", include_self=False)
    scores = (logits - peak.index_select(0, segments)).exp()
    total = scores.new_zeros(n_segments).scatter_add_(0, segments, scores) + 1e-16
    return scores / total.index_select(0, segments)
