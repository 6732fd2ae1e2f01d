"""Many users' item sequences packed flat (CSR), so windows, seen items and targets are index arithmetic.

Scoring and training read blocks of (user, end) pairs: the history is
``sequence[user][:end]``. Packing every sequence once into one flat tensor plus offsets
turns "the last ``max_len`` items of each of 4,096 users" into one gather, on whatever
device the packed tensors live on, instead of a Python loop over users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Histories:
    """``items[ptr[u] : ptr[u + 1]]`` is user ``u``'s chronological sequence (dense item ids)."""

    items: torch.Tensor  # int64, flat
    ptr: torch.Tensor  # int64, [n_users + 1]

    @classmethod
    def pack(cls, sequences: Sequence[np.ndarray]) -> Histories:
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        flat = np.concatenate(sequences).astype(np.int64) if lengths.sum() else np.zeros(0, np.int64)
        return cls.from_lengths(flat, lengths)

    @classmethod
    def from_lengths(cls, items: np.ndarray, lengths: np.ndarray) -> Histories:
        ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        return cls(torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64)), torch.from_numpy(ptr))

    def __len__(self) -> int:
        return self.ptr.shape[0] - 1

    @property
    def lengths(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def device(self) -> torch.device:
        return self.items.device

    def to(self, device: torch.device) -> Histories:
        return Histories(self.items.to(device), self.ptr.to(device))

    def select(self, users: torch.Tensor) -> Histories:
        """The sequences of ``users``, in that order."""
        lengths = self.lengths[users]
        rows, offset = _spans(lengths)
        return Histories(self.items[self.ptr[users][rows] + offset], _offsets(lengths))

    def windows(self, users: torch.Tensor, ends: torch.Tensor, max_len: int) -> torch.Tensor:
        """``[B, max_len]``: the last ``max_len`` items of ``sequence[users[b]][:ends[b]]``,
        left-padded with -1 (the last item in the last column)."""
        start = ends[:, None] - max_len + torch.arange(max_len, device=ends.device)
        index = (self.ptr[users][:, None] + start).clamp(0, max(self.items.shape[0] - 1, 0))
        return torch.where(start >= 0, self.items[index], -1)

    def seen(self, users: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row, item)`` for every item of ``sequence[users[b]][:ends[b]]``: a scatter index."""
        rows, offset = _spans(ends)
        return rows, self.items[self.ptr[users][rows] + offset]

    def at(self, users: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``sequence[users[b]][positions[b]]`` for every ``b`` (the samples' targets)."""
        return self.items[self.ptr[users] + positions]


def _spans(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For spans of ``lengths``: each element's span and its offset inside it."""
    rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
    return rows, torch.arange(rows.shape[0], device=lengths.device) - _offsets(lengths)[:-1][rows]


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
