"""Embed stage: item text and image vectors per dataset, cached by content hash.

``run_embed`` is what the CLI (``mmsr embed``) and the Airflow task call. Output:
``warehouse/<dataset>/embeddings/{text,image}.parquet`` (see README "Embeddings").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.embed.items import read_items
from pipeline.stages.embed.modalities import ModalityReport, embed_images, embed_text, import_feature_file

log = logging.getLogger(__name__)

MODALITY_CHOICES = ("text", "image", "all")


@dataclass
class EmbedReport:
    dataset: str
    modalities: dict[str, ModalityReport] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"dataset": self.dataset, "modalities": {m: r.to_dict() for m, r in self.modalities.items()}}


def embeddings_path(settings: Settings, dataset: str, modality: str) -> Path:
    return settings.dataset_dir(dataset) / "embeddings" / f"{modality}.parquet"


def run_embed(
    settings: Settings, dataset: str, modality: str = "all", import_features: Path | None = None
) -> EmbedReport:
    """Embed (or import) one dataset's text and/or image features incrementally."""
    if modality not in MODALITY_CHOICES:
        raise PipelineError(f"--modality must be one of {', '.join(MODALITY_CHOICES)}, got {modality!r}")
    if import_features is not None and modality == "all":
        raise PipelineError("--import-features fills one modality: add --modality text or --modality image")
    items = read_items(settings.dataset_dir(dataset) / "items.parquet")
    report = EmbedReport(dataset)
    for name in ("text", "image") if modality == "all" else (modality,):
        out = embeddings_path(settings, dataset, name)
        if import_features is not None:
            report.modalities[name] = import_feature_file(items, Path(import_features), out)
        elif name == "text":
            report.modalities[name] = embed_text(settings, items, out)
        else:
            report.modalities[name] = embed_images(settings, items, out)
    return report
