"""The nightly job without Airflow (``mmsr nightly``): the DAG's stages, in the DAG's order, in this process.

It calls the same stage table as the DAG tasks (``pipeline.orchestration``), so a run here
and a DAG run produce the same tables; it is what to use on a laptop or in a cron job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from tqdm.auto import tqdm

from pipeline.config import Settings
from pipeline.orchestration import run_stage

log = logging.getLogger(__name__)


@dataclass
class NightlyReport:
    """Each stage's report and wall time, in run order."""

    dataset: str
    run_date: str
    stages: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nightly_steps(run_date: date) -> list[tuple[str, str, dict[str, Any]]]:
    """(step name, stage, args) in DAG order; ``promote``'s version is filled from ``train``'s report."""
    return [
        ("extract", "extract", {}),
        ("embed_text", "embed", {"modality": "text"}),
        ("embed_image", "embed", {"modality": "image"}),
        ("codes", "codes", {}),
        ("train", "train", {"promote": False}),
        ("promote", "promote", {}),
        ("recommend", "recommend", {"run_date": run_date.isoformat()}),
        ("publish_analytics", "publish", {}),
    ]


def run_nightly(settings: Settings, dataset: str, run_date: date | None = None) -> NightlyReport:
    """Run every stage for ``dataset`` and ``run_date`` (default: today, UTC); stops at the first error."""
    day = run_date or datetime.now(UTC).date()
    report = NightlyReport(dataset=dataset, run_date=day.isoformat())
    for step, stage, args in tqdm(nightly_steps(day), desc=f"nightly {dataset}", unit="stage"):
        if step == "promote":
            args = {"version": report.stages["train"]["model_version"]}
        started = time.perf_counter()
        report.stages[step] = run_stage(settings, stage, dataset, args)
        report.seconds[step] = round(time.perf_counter() - started, 2)
        log.info("%s done in %.1f s", step, report.seconds[step])
    return report
