"""The nightly job's step graph, declared once: ``mmsr nightly`` and the Airflow DAG both read it.

A step is one run of a stage with fixed arguments (``embed`` runs twice, once per
modality). ``after`` orders the steps; ``inputs`` names the only values that flow
between them (promote needs the version train registered), so any step can be rerun
on its own for a ``run_date``. ``NIGHTLY_STEPS`` is listed in a valid run order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any

from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class Step:
    """One node of the nightly graph (see module docstring)."""

    name: str
    stage: str
    after: tuple[str, ...] = ()
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: argument name -> (upstream step, key of that step's report)
    inputs: Mapping[str, tuple[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    #: the stage takes the partition date as its ``run_date`` argument
    takes_run_date: bool = False
    #: with ``settings.shards > 1`` the step fans out over shard workspaces, then a combine
    shardable: bool = False
    #: the step publishes the recommendations table (an Airflow asset analysts can schedule on)
    writes_recommendations: bool = False
    #: the stage may run on the GPU: its Airflow tasks share the ``gpu_pool`` so they never overlap
    uses_gpu: bool = False
    timeout: timedelta = timedelta(hours=2)

    def stage_args(self, run_date: date | None, reports: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The stage's arguments: the fixed ones, the run date and the upstream values."""
        args = dict(self.args)
        if self.takes_run_date:
            if run_date is None:
                raise PipelineError(f"step {self.name} needs a run_date")
            args["run_date"] = run_date.isoformat()
        for name, (step, key) in self.inputs.items():
            args[name] = reports[step][key]
        return args


def _args(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


def _embed_step(modality: str) -> Step:
    """Each modality is embedded by its own step, so text and image run side by side."""
    return Step(
        f"embed_{modality}",
        "embed",
        ("extract",),
        _args(modality=modality),
        shardable=True,
        uses_gpu=True,
        timeout=timedelta(hours=4),
    )


NIGHTLY_STEPS: tuple[Step, ...] = (
    Step("extract", "extract", timeout=timedelta(hours=1)),
    _embed_step("text"),
    _embed_step("image"),
    # codes and train take the run date for their full-rebuild schedule (a backfill keeps it)
    Step("codes", "codes", ("embed_text", "embed_image"), takes_run_date=True, timeout=timedelta(hours=1)),
    # promotion is its own step so a failed gate can be rerun without retraining
    Step(
        "train",
        "train",
        ("codes",),
        _args(promote=False),
        takes_run_date=True,
        uses_gpu=True,
        timeout=timedelta(hours=8),
    ),
    Step(
        "promote",
        "promote",
        ("train",),
        inputs=MappingProxyType({"version": ("train", "model_version")}),
        timeout=timedelta(minutes=30),
    ),
    Step(
        "recommend",
        "recommend",
        ("promote",),
        takes_run_date=True,
        shardable=True,
        uses_gpu=True,
    ),
    # the health gate: only a sane night is moved where analysts' views read
    Step(
        "publish_analytics",
        "publish",
        ("recommend",),
        takes_run_date=True,
        writes_recommendations=True,
        timeout=timedelta(minutes=30),
    ),
    Step("report", "report", ("publish_analytics",), takes_run_date=True, timeout=timedelta(minutes=30)),
)


def resolve_run_date(param: str | None, logical_date: datetime | None, run_after: datetime | None) -> date:
    """The partition key: the ``run_date`` Param, else the logical date, else when the run was due.

    Airflow 3 manual and asset-triggered runs may have no logical date, hence the last fallback.
    """
    if param:
        try:
            return date.fromisoformat(str(param))
        except ValueError as exc:
            raise PipelineError(f"run_date param {param!r} is not a YYYY-MM-DD date") from exc
    for moment in (logical_date, run_after):
        if moment is not None:
            return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
    return datetime.now(UTC).date()
