"""The arrays every model in this library consumes.

Item ids are dense ``0..n_items-1``; users are row numbers of ``sequences``.
A sample is a (user, position) pair: the target is ``sequences[user][position]``
and the model sees the history ``sequences[user][:position]`` (its last
``max_len`` items). Training samples are every prefix of the train part
(prefix augmentation), so splits are just lists of such pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MODALITIES = ("text", "image")


@dataclass(frozen=True)
class TargetSet:
    """Samples of one split: ``users[i]``'s item at ``positions[i]`` is a target."""

    users: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass
class SequenceData:
    """Sequences, splits and per-modality side information for one dataset.

    ``item_codes[m]`` is ``(n_items, k)`` int64 with ``-1`` where item has no code
    (missing modality); ``code_centres[m]`` is ``(c, dim)`` float32;
    ``item_features[m]`` is ``(n_items, dim)`` float32 with NaN rows for missing,
    used by the "raw features instead of codes" ablation.
    """

    sequences: list[np.ndarray]
    n_items: int
    splits: dict[str, TargetSet]
    item_codes: dict[str, np.ndarray] = field(default_factory=dict)
    code_centres: dict[str, np.ndarray] = field(default_factory=dict)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)

    def histories(self, targets: TargetSet, max_len: int) -> list[np.ndarray]:
        """The input history of every sample in ``targets`` (last ``max_len`` items)."""
        return [
            self.sequences[u][max(0, p - max_len) : p]
            for u, p in zip(targets.users.tolist(), targets.positions.tolist(), strict=True)
        ]

    def train_item_counts(self) -> np.ndarray:
        """How often each item occurs in the train part (train targets and their histories), ``(n_items,)``.

        Popularity counts these; evaluation calls a target with count 0 "cold".
        """
        train = self.splits.get("train")
        if train is None or len(train) == 0:
            return np.zeros(self.n_items, dtype=np.int64)
        last = np.full(len(self.sequences), -1, dtype=np.int64)
        np.maximum.at(last, train.users, train.positions)
        seen = [self.sequences[u][: p + 1] for u, p in enumerate(last.tolist()) if p >= 0]
        return np.bincount(np.concatenate(seen), minlength=self.n_items).astype(np.int64)

    def target_items(self, targets: TargetSet) -> np.ndarray:
        return np.fromiter(
            (
                self.sequences[u][p]
                for u, p in zip(targets.users.tolist(), targets.positions.tolist(), strict=True)
            ),
            dtype=np.int64,
            count=len(targets),
        )
