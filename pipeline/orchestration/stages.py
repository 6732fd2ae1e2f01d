"""The stage table: stage name -> the function that runs it, called in this process.

``run_stage`` is what ``mmsr nightly`` calls and what the isolated child process
(``pipeline.orchestration.isolated``) calls for the DAG's tasks. Stage modules, and the
heavy libraries behind them, are imported only when their stage runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.orchestration.datasets import dataset_configs

log = logging.getLogger(__name__)


def _extract(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.stages.extract import run_extract

    cfg = dataset_configs(settings).get(dataset)
    if cfg is None:
        raise PipelineError(f"dataset {dataset!r} is not configured (settings.datasets)")
    for key in ("format", "reviews"):
        if not cfg.get(key):
            raise PipelineError(f"settings.datasets[{dataset!r}] lacks the {key!r} field")
    if cfg.get("generate_demo") and not Path(cfg["reviews"]).is_file():
        from pipeline.app.demo_data import write_demo_dataset

        write_demo_dataset(Path(cfg["reviews"]).parent, seed=settings.seed)

    def optional(key: str) -> Path | None:
        return Path(cfg[key]) if cfg.get(key) else None

    return run_extract(
        settings, dataset, cfg["format"], Path(cfg["reviews"]), optional("meta"), optional("images")
    )


def _embed(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.stages.embed import run_embed

    return run_embed(settings, dataset, args.get("modality", "all"))


def _optional_date(args: dict[str, Any]) -> date | None:
    return date.fromisoformat(args["run_date"]) if args.get("run_date") else None


def _codes(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.stages.codes import run_codes

    return run_codes(settings, dataset, _optional_date(args))


def _train(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.stages.train.run import run_train

    return run_train(
        settings, dataset, promote=bool(args.get("promote", False)), run_date=_optional_date(args)
    )


def _promote(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    version = int(args["version"])
    from pipeline.stages.promote import run_promote

    return run_promote(settings, dataset, version)


def _recommend(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.stages.recommend import run_recommend

    return run_recommend(settings, dataset, date.fromisoformat(args["run_date"]), args.get("k"))


def _publish(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.stages.publish import publish_analytics, publish_night

    if day := _optional_date(args):
        return publish_night(settings, dataset, day)
    return {"analytics_db": str(publish_analytics(settings))}


def _report(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.stages.report import write_report

    return write_report(settings, dataset, date.fromisoformat(args["run_date"]))


_STAGE_FUNCTIONS: dict[str, Callable[[Settings, str, dict[str, Any]], Any]] = {
    "extract": _extract,
    "embed": _embed,
    "codes": _codes,
    "train": _train,
    "promote": _promote,
    "recommend": _recommend,
    "publish": _publish,
    "report": _report,
}


#: every stage, in DAG order (embed runs once per modality)
STAGES = tuple(_STAGE_FUNCTIONS)


def _as_json(report: Any) -> dict[str, Any]:
    """A stage report as plain JSON values (paths and dates become strings)."""
    payload = report.to_dict() if hasattr(report, "to_dict") else report
    return json.loads(json.dumps(payload, default=str))


def run_stage(
    settings: Settings, stage: str, dataset: str, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run one stage in this process and return its JSON report."""
    if stage not in _STAGE_FUNCTIONS:
        raise PipelineError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    log.info("stage %s (dataset=%s, args=%s)", stage, dataset, args or {})
    return _as_json(_STAGE_FUNCTIONS[stage](settings, dataset, dict(args or {})))
