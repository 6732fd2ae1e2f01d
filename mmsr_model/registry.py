"""Model names to classes, resolved lazily so importing the registry stays cheap."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from mmsr_model.base import SequentialRecommender
from mmsr_model.data import SequenceData

MODEL_NAMES = ("mmsr", "sasrec", "gru4rec", "pop")

_CLASSES = {
    "mmsr": "mmsr_model.mmsr:MMSR",
    "sasrec": "mmsr_model.baselines.sasrec:SASRec",
    "gru4rec": "mmsr_model.baselines.gru4rec:GRU4Rec",
    "pop": "mmsr_model.baselines.pop:Popularity",
}


def model_class(name: str) -> type[SequentialRecommender]:
    """The class registered under ``name``."""
    if name not in _CLASSES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    module, _, attr = _CLASSES[name].partition(":")
    cls = getattr(import_module(module), attr)
    if cls.name != name:
        raise TypeError(f"{_CLASSES[name]} declares name {cls.name!r}, registered as {name!r}")
    return cls


def build_model(name: str, data: SequenceData, **params: Any) -> SequentialRecommender:
    """A fresh, untrained model sized for ``data``."""
    return model_class(name).from_data(data, **params)
