"""Which datasets the nightly job runs: ``settings.datasets``, plus the synthetic demo dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.config import Settings

DEMO_DATASET = "demo"


def demo_enabled(settings: Settings) -> bool:
    """The demo dataset is scheduled when ``settings.demo`` is on or no dataset is configured."""
    return settings.demo or not settings.datasets


def demo_raw_dir(settings: Settings) -> Path:
    """Where the synthetic demo input (reviews, meta, images) lives: ``MMSR_HOME/demo/raw``."""
    return settings.home / "demo" / "raw"


def dataset_configs(settings: Settings) -> dict[str, dict[str, Any]]:
    """Extract arguments per dataset: ``settings.datasets`` plus the demo dataset when enabled."""
    configs = {name: dict(cfg) for name, cfg in settings.datasets.items()}
    if demo_enabled(settings):
        raw = demo_raw_dir(settings)
        configs.setdefault(
            DEMO_DATASET,
            {
                "format": "amazon2018",
                "reviews": str(raw / "reviews.json.gz"),
                "meta": str(raw / "meta.json.gz"),
                "images": str(raw / "images"),
                "generate_demo": True,
            },
        )
    return configs
