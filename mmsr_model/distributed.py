"""Data-parallel training on ``torch.distributed`` (launched by ``torchrun``: NCCL on GPUs, gloo on CPUs).

Every rank holds the whole model (built from the same seed) and visits the same epoch
order; of each global batch a rank takes every ``size``-th sample starting at its rank.
Gradients are summed across ranks, each weighted by its share of the global batch, so a
step equals one step of a single process over the whole global batch (up to float
summation order). Validation, early stopping and checkpoints happen on rank 0 and their
outcome is broadcast, so every rank stops after the same epoch. Without an initialised
process group every function here is the single-process identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
from torch import distributed as dist

T = TypeVar("T")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_size() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def is_main() -> bool:
    return rank_and_size()[0] == 0


def my_share(batch: np.ndarray) -> np.ndarray:
    """This rank's samples of one global batch."""
    rank, size = rank_and_size()
    return batch[rank::size]


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_parameters(module: torch.nn.Module) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    if active():
        for tensor in (*module.parameters(), *module.buffers()):
            dist.broadcast(tensor.data, src=0)


def sum_over_ranks(value: float, device: torch.device) -> float:
    if not active():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item())


def reduce_gradients(parameters: Iterable[torch.nn.Parameter], share: float) -> None:
    """Sum ``share``-weighted gradients over ranks (a parameter no rank touched keeps no gradient)."""
    if not active():
        return
    params = list(parameters)
    touched = torch.tensor(
        [p.grad is not None for p in params], dtype=torch.int32, device=params[0].device if params else "cpu"
    )
    dist.all_reduce(touched, op=dist.ReduceOp.MAX)
    for param, any_rank in zip(params, touched.tolist(), strict=True):
        if not any_rank:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        param.grad.mul_(share)
        dist.all_reduce(param.grad)


@contextmanager
def process_group_from_environment(device: str, timeout: timedelta = timedelta(hours=2)) -> Iterator[bool]:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1).

    NCCL when ``device`` resolves to CUDA (each rank on GPU ``LOCAL_RANK``), else gloo.
    The long timeout covers rank 0's work between collective calls (test metrics,
    logging). Yields whether this process is part of a data-parallel group.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield False
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    try:
        yield True
    finally:
        dist.destroy_process_group()


def describe() -> dict[str, Any]:
    rank, size = rank_and_size()
    return {"rank": rank, "world_size": size, "backend": dist.get_backend() if active() else None}
