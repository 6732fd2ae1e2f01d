"""A modality's fitted codebook: what turns an item vector into its codes, kept between nights.

The codes stage clusters once, then keeps the codebook so that code ``i`` means the
same centre every night and a warm-started model's code embeddings still fit; each
night it only assigns items to the kept centres. The codebook holds the transform into
the clustering space (centring and the PCA projection, whitening included, or none)
and the centres there; assignment is the same function on the night it was built and
on every later one, so an unchanged item gets the same codes.

Stored as ``codes/<modality>_codebook.npz``; ``codes/state.json`` says when and with
which settings the codebooks were built.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import write_atomically, write_text_atomic

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Codebook:
    """Centres of one modality in the clustering space, and the way into that space."""

    mean: np.ndarray  # (dim,): subtracted before ``projection``
    projection: np.ndarray | None  # (dim, cluster_dim); None: the clustering space is the input space
    centres: np.ndarray  # (levels * c, cluster_dim), level-major
    levels: int
    k: int  # codes per item (one per level when levels > 1)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_space(self, vectors: np.ndarray) -> np.ndarray:
        """Input vectors in the clustering space (float64)."""
        x = np.asarray(vectors, dtype=np.float64)
        return x if self.projection is None else (x - self.mean) @ self.projection

    def assign(self, space: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(codes (n, k), distances (n, k))`` of clustering-space rows, nearest first.

        One level: the ``k`` nearest centres. Several: per level the nearest centre to
        what the levels before left over (a residual quantiser), distances being the
        norm of what is left after that level.
        """
        if self.levels == 1:
            distances = _distances(space, self.centres)
            order = np.argsort(distances, axis=1, kind="stable")[:, : self.k]
            return order.astype(np.int32), np.take_along_axis(distances, order, axis=1).astype(np.float32)
        c = len(self.centres) // self.levels
        residual, codes, gaps = space, [], []
        for level in range(self.levels):
            book = self.centres[level * c : (level + 1) * c]
            chosen = np.argmin(_distances(residual, book), axis=1)
            residual = residual - book[chosen]
            codes.append(chosen + level * c)
            gaps.append(np.linalg.norm(residual, axis=1))
        return np.stack(codes, 1).astype(np.int32), np.stack(gaps, 1).astype(np.float32)

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {"mean": self.mean, "centres": self.centres, "shape": [self.levels, self.k]}
        if self.projection is not None:
            arrays["projection"] = self.projection
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomically(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))

    @classmethod
    def load(cls, path: Path) -> Codebook:
        with np.load(path) as saved:
            levels, k = (int(v) for v in saved["shape"])
            projection = saved["projection"] if "projection" in saved.files else None
            return cls(saved["mean"], projection, saved["centres"], levels, k)


def _distances(space: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Euclidean distances of every row to every centre."""
    squared = (space**2).sum(1)[:, None] - 2 * space @ centres.T + (centres**2).sum(1)
    return np.sqrt(np.maximum(squared, 0.0))


def codebook_path(codes_dir: Path, modality: str) -> Path:
    return codes_dir / f"{modality}_codebook.npz"


def read_state(codes_dir: Path) -> dict[str, Any] | None:
    """When and how the kept codebooks were built; None when there are none (or it is unreadable)."""
    path = codes_dir / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        date.fromisoformat(state["built_on"])
        return state
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(codes_dir: Path, built_on: date, clustering: dict[str, Any], dims: dict[str, int]) -> None:
    state = {"built_on": built_on.isoformat(), "clustering": clustering, "dims": dims}
    write_text_atomic(codes_dir / STATE_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n")
