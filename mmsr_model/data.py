"""The arrays every model in this library consumes.

Item ids are dense ``0..n_items-1``; users are row numbers of ``sequences``.
A sample is a (user, position) pair: the target is ``sequences[user][position]``
and the model sees the history ``sequences[user][:position]`` (its last
``max_len`` items). Training samples are every prefix of the train part
(prefix augmentation), so splits are just lists of such pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mmsr_model.atomic import write_atomically
from mmsr_model.histories import Histories

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
    _packed: Histories | None = field(default=None, init=False, repr=False, compare=False)

    def packed(self) -> Histories:
        """``sequences`` packed flat (built once; the sequences are not changed after loading)."""
        if self._packed is None or len(self._packed) != len(self.sequences):
            self._packed = Histories.pack(self.sequences)
        return self._packed

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

    def with_valid_in_train(self) -> SequenceData:
        """A copy whose 'train' split also holds the 'valid' targets, and that has no 'valid' split."""
        train, valid = self.splits["train"], self.splits["valid"]
        splits = {name: targets for name, targets in self.splits.items() if name not in ("train", "valid")}
        splits["train"] = TargetSet(
            np.concatenate([train.users, valid.users]), np.concatenate([train.positions, valid.positions])
        )
        return replace(self, splits=splits)

    def target_items(self, targets: TargetSet) -> np.ndarray:
        users, positions = (
            torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (targets.users, targets.positions)
        )
        return self.packed().at(users, positions).numpy()

    def save(self, path: Path) -> Path:
        """Everything in one ``.npz`` (written atomically): a machine without the pipeline can train on it."""
        arrays: dict[str, np.ndarray] = {
            "n_items": np.asarray(self.n_items),
            "seq_items": np.concatenate(self.sequences) if self.sequences else np.zeros(0, np.int64),
            "seq_lengths": np.asarray([len(s) for s in self.sequences], dtype=np.int64),
        }
        for name, targets in self.splits.items():
            arrays[f"split.{name}.users"], arrays[f"split.{name}.positions"] = (
                targets.users,
                targets.positions,
            )
        for kind in ("item_codes", "code_centres", "item_features"):
            for modality, array in getattr(self, kind).items():
                arrays[f"{kind}.{modality}"] = array

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.savez(f, **arrays)

        return write_atomically(path, write)

    @classmethod
    def load(cls, path: Path) -> SequenceData:
        """The data :meth:`save` wrote."""
        with np.load(path) as z:
            ends = np.cumsum(z["seq_lengths"])
            sequences = np.split(z["seq_items"], ends[:-1]) if len(ends) else []
            data = cls(sequences=sequences, n_items=int(z["n_items"]), splits={})
            for key in z.files:
                kind, _, name = key.partition(".")
                if kind == "split" and name.endswith(".users"):
                    split = name.removesuffix(".users")
                    data.splits[split] = TargetSet(z[key], z[f"split.{split}.positions"])
                elif kind in ("item_codes", "code_centres", "item_features"):
                    getattr(data, kind)[name] = z[key]
        return data
