"""One-file model save/load that never unpickles arbitrary objects.

The file holds the registry name, ``init_kwargs`` (numpy arrays stored as
tensors) and the ``state_dict``; loading rebuilds the class with
``cls.from_init_kwargs(init_kwargs)`` (flat: ``n_items``, the config fields, the data
arrays) and reads the file with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsr_model.atomic import write_atomically
from mmsr_model.base import SequentialRecommender
from mmsr_model.registry import model_class

FORMAT_VERSION = 1
_ARRAY_TAG = "__ndarray__"


def save_model(model: SequentialRecommender, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "name": model.name,
        "init_kwargs": _encode(model.init_kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> SequentialRecommender:
    """Rebuild the saved model on ``device``, in eval mode."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: model file format {version!r}, this library reads {FORMAT_VERSION}")
    cls = model_class(payload["name"])
    model = cls.from_init_kwargs(_decode(payload["init_kwargs"]))
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.to(device).eval()


def _encode(value: Any) -> Any:
    """Turn numpy values into things ``weights_only`` loading accepts."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("init_kwargs may not hold object arrays")
        return {_ARRAY_TAG: torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY_TAG}:
            return value[_ARRAY_TAG].numpy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
