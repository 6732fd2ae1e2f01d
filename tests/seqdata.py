"""Tiny sequence datasets the harness tests build themselves (no files)."""

from __future__ import annotations

import numpy as np
import torch

from mmsr_model.base import SequentialRecommender
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.graph import GraphBatch, build_graphs
from mmsr_model.histories import Histories


def graphs_of(
    histories: list[np.ndarray],
    codes: dict[int, np.ndarray],
    max_len: int = 50,
    device: str = "cpu",
) -> GraphBatch:
    """The graph batch of whole ``histories`` (their last ``max_len`` items), built on ``device``."""
    packed = Histories.pack(histories)
    items = packed.windows(torch.arange(len(packed)), packed.lengths, max_len).to(device)
    return build_graphs(
        items, {t: torch.from_numpy(np.asarray(c, dtype=np.int64)).to(device) for t, c in codes.items()}
    )


def loo_splits(sequences: list[np.ndarray]) -> dict[str, TargetSet]:
    """Leave-one-out: last item test, second-to-last valid, every earlier prefix a train target."""
    parts: dict[str, tuple[list[int], list[int]]] = {s: ([], []) for s in ("train", "valid", "test")}
    for user, seq in enumerate(sequences):
        n = len(seq)
        for split, positions in (("train", range(1, n - 2)), ("valid", [n - 2]), ("test", [n - 1])):
            for p in positions:
                parts[split][0].append(user)
                parts[split][1].append(p)
    return {
        s: TargetSet(np.array(u, dtype=np.int64), np.array(p, dtype=np.int64)) for s, (u, p) in parts.items()
    }


def chain_data(
    n_users: int = 80,
    n_items: int = 30,
    min_len: int = 5,
    max_len: int = 12,
    seed: int = 0,
    text_codes: int = 0,
) -> SequenceData:
    """Every user walks item i -> i+1 (mod n_items) from a random start: a clear sequential signal.

    ``text_codes > 0`` adds a text modality: item i links to codes i and i+1 (mod ``text_codes``).
    """
    rng = np.random.default_rng(seed)
    sequences = [
        (rng.integers(n_items) + np.arange(rng.integers(min_len, max_len + 1))) % n_items
        for _ in range(n_users)
    ]
    sequences = [s.astype(np.int64) for s in sequences]
    data = SequenceData(sequences=sequences, n_items=n_items, splits=loo_splits(sequences))
    if text_codes:
        items = np.arange(n_items)
        data.item_codes["text"] = np.stack([items % text_codes, (items + 1) % text_codes], axis=1)
        data.code_centres["text"] = rng.normal(size=(text_codes, 8)).astype(np.float32)
    return data


def fit_plainly(
    model: SequentialRecommender, data: SequenceData, epochs: int, batch_size: int, lr: float = 0.01
) -> list[float]:
    """A bare Adam loop over the train split in one seeded order (no harness); the step losses."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train = data.splits["train"]
    order = np.random.default_rng(0).permutation(len(train))
    losses = []
    model.train()
    for _ in range(epochs):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            targets = TargetSet(train.users[idx], train.positions[idx])
            loss = model.calculate_loss(
                model.prepare_samples(data, targets), torch.from_numpy(data.target_items(targets))
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return losses
