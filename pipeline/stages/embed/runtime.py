"""Where encoders run: CUDA with fp16 autocast when present, else CPU in float32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def inference(device: torch.device) -> Iterator[None]:
    """No autograd; fp16 autocast on GPU (half the memory traffic, same ranking quality)."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield
