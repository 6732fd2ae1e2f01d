"""The nightly job without Airflow (``mmsr nightly``): the DAG's stages, in the DAG's order, in this process.

It walks the same step graph (``pipeline.orchestration.steps``) and stage table as the DAG
tasks, so a run here and a DAG run produce the same tables; it is what to use on a
laptop or in a cron job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from tqdm.auto import tqdm

from pipeline.core.config import Settings
from pipeline.orchestration.stages import run_stage
from pipeline.orchestration.steps import NIGHTLY_STEPS

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


def run_nightly(settings: Settings, dataset: str, run_date: date | None = None) -> NightlyReport:
    """Run every stage for ``dataset`` and ``run_date`` (default: today, UTC); stops at the first error."""
    day = run_date or datetime.now(UTC).date()
    report = NightlyReport(dataset=dataset, run_date=day.isoformat())
    for step in tqdm(NIGHTLY_STEPS, desc=f"nightly {dataset}", unit="step"):
        started = time.perf_counter()
        report.stages[step.name] = run_stage(
            settings, step.stage, dataset, step.stage_args(day, report.stages)
        )
        report.seconds[step.name] = round(time.perf_counter() - started, 2)
        log.info("%s done in %.1f s", step.name, report.seconds[step.name])
    return report
