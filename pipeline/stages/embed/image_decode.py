"""Decoding image files into RGB tensors inside DataLoader workers.

Decision on unusual but valid images: CMYK, palette, greyscale and images with an
alpha channel are *embedded*, not marked missing. Transparent pixels are composited
over white (product shots sit on white; dropping alpha would leave whatever colour the
transparent pixels happen to store, often black). EXIF orientation is applied.
Only files that cannot be decoded get a ``missing`` reason:
``empty_file``, ``not_an_image`` (no decoder recognises the bytes), ``truncated``,
``corrupt`` (recognised but fails to decode) and ``too_large`` (decompression bomb).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited over white."""
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(path: Path) -> tuple[Image.Image | None, str | None]:
    """``(rgb image, None)`` or ``(None, reason)``; never raises for bad files."""
    try:
        if path.stat().st_size == 0:
            return None, "empty_file"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb(image), None
    except FileNotFoundError:
        return None, "not_found"
    except UnidentifiedImageError:
        return None, "not_an_image"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "too_large"
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise many types; one bad file must not stop the run
        return None, "truncated" if "truncated" in str(exc).lower() else "corrupt"


class ImageFiles(Dataset):
    """``(index, tensor or None, reason)`` per file: decoding and preprocessing run in the worker."""

    def __init__(self, paths: list[Path], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        image, reason = decode_image(self.paths[i])
        if image is None:
            return i, None, reason
        try:
            return i, self.preprocess(image), None
        except Exception as exc:  # noqa: BLE001 - same reasoning as decode_image
            return i, None, "truncated" if "truncated" in str(exc).lower() else "corrupt"


def collate(batch: list[tuple[int, torch.Tensor | None, str | None]]) -> dict[str, Any]:
    """Stack the decoded images; carry the failures alongside with their reasons."""
    ok = [(row, tensor) for row, tensor, _ in batch if tensor is not None]
    return {
        "rows": [row for row, _ in ok],
        "pixels": torch.stack([tensor for _, tensor in ok]) if ok else None,
        "failed": [(row, reason) for row, tensor, reason in batch if tensor is None],
    }
