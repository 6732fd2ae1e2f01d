"""Device choice at run time, so nothing in the library hard-codes ``.cuda()``."""

from __future__ import annotations

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
