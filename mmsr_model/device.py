"""Device choice at run time, so nothing in the library hard-codes ``.cuda()``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from typing import Any

import torch
from torch import nn


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` means CUDA when present, else CPU; anything else is passed to torch."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return device


def model_device(model: nn.Module) -> torch.device:
    """Where the model's tensors live (CPU for a model without any)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def place_model(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Move ``model`` to ``device`` when one is given; return where it now lives."""
    if device is None:
        return model_device(model)
    target = resolve_device(device) if isinstance(device, str) else device
    model.to(target)
    return target


class DeviceStager:
    """Moves batches to a CUDA device on a side stream, so a worker thread can build the next
    batch's graph on the GPU while the current step runs on the default stream.

    :meth:`stage` runs in the worker; :meth:`adopt` in the thread that uses the batch: it makes
    that thread's stream wait for the copy and the graph building and tells the caching
    allocator the tensors are in use there (``record_stream``), so their memory is not reused
    on the side stream while the step still reads them.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def stage(self, move: Callable[[], Any]) -> tuple[Any, torch.cuda.Event]:
        """``move()`` run on the side stream, and the event that marks its work done."""
        with torch.cuda.stream(self.stream):
            moved = move()
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return moved, ready

    def adopt(self, moved: Any, ready: torch.cuda.Event) -> Any:
        """``moved`` made safe to use on the calling thread's current stream."""
        current = torch.cuda.current_stream(self.device)
        current.wait_event(ready)
        for tensor in tensors_in(moved):
            tensor.record_stream(current)
        return moved


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside ``value``: nested tuples, lists, dicts and dataclasses."""
    if isinstance(value, torch.Tensor):
        yield value
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from tensors_in(getattr(value, f.name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
