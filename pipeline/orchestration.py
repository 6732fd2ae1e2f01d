"""Runs the nightly stages for the DAG and for ``mmsr nightly``: one table of stages, two ways to call it.

``run_stage`` calls a stage function in this process. ``run_stage_isolated`` runs the
same function in a FRESH Python interpreter (``python -m pipeline.orchestration``):
Airflow's LocalExecutor and Celery workers fork their task processes, and CUDA cannot
be initialised in a forked child of a process that touched it, so every stage runs in
a new interpreter that imports torch itself. The child also returns its memory to the
OS when the stage ends. Settings travel to the child as JSON (so the child sees exactly
the parent's settings), the child's log lines are streamed into the caller's log, and
the stage's small JSON report comes back through a result file: that report is what
the DAG pushes to XCom. A ``PipelineError`` in the child is raised again in the parent
with the same message (bad input: retrying cannot help); any other failure raises
``StageCrashed`` (possibly transient: Airflow retries it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline.child_output import ChildOutputFilter
from pipeline.config import Settings
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DEMO_DATASET = "demo"
#: stages in DAG order; embed runs once per modality
STAGES = ("extract", "embed", "codes", "train", "promote", "recommend", "publish")
_OUTPUT_TAIL_LINES = 40


class StageCrashed(RuntimeError):
    """A stage died with something other than a ``PipelineError`` (worth a retry)."""


def demo_enabled(settings: Settings) -> bool:
    """The demo dataset is scheduled when ``MMSR_DEMO`` is truthy or no dataset is configured."""
    flag = os.environ.get("MMSR_DEMO", "").strip().lower()
    return flag in {"1", "true", "yes", "on"} or not settings.datasets


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


def _extract(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.extract import run_extract

    cfg = dataset_configs(settings).get(dataset)
    if cfg is None:
        raise PipelineError(f"dataset {dataset!r} is not configured (settings.datasets)")
    for key in ("format", "reviews"):
        if not cfg.get(key):
            raise PipelineError(f"settings.datasets[{dataset!r}] lacks the {key!r} field")
    if cfg.get("generate_demo") and not Path(cfg["reviews"]).is_file():
        from pipeline.demo_data import write_demo_dataset

        write_demo_dataset(Path(cfg["reviews"]).parent, seed=settings.seed)

    def optional(key: str) -> Path | None:
        return Path(cfg[key]) if cfg.get(key) else None

    return run_extract(
        settings, dataset, cfg["format"], Path(cfg["reviews"]), optional("meta"), optional("images")
    )


def _embed(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.embed import run_embed

    return run_embed(settings, dataset, args.get("modality", "all"))


def _codes(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.codes import run_codes

    return run_codes(settings, dataset)


def _train(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.train import run_train

    return run_train(settings, dataset, promote=bool(args.get("promote", False)))


def _promote(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    version = int(args["version"])
    from pipeline.registry import run_promote

    return run_promote(settings, dataset, version)


def _recommend(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.recommend import run_recommend

    return run_recommend(settings, dataset, date.fromisoformat(args["run_date"]), args.get("k"))


def _publish(settings: Settings, dataset: str, args: dict[str, Any]) -> Any:
    from pipeline.analytics import publish_analytics

    return {"analytics_db": str(publish_analytics(settings))}


_STAGE_FUNCTIONS: dict[str, Callable[[Settings, str, dict[str, Any]], Any]] = {
    "extract": _extract,
    "embed": _embed,
    "codes": _codes,
    "train": _train,
    "promote": _promote,
    "recommend": _recommend,
    "publish": _publish,
}


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


def run_stage_isolated(
    settings: Settings, stage: str, dataset: str, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run one stage in a fresh interpreter (see module docstring) and return its JSON report."""
    with tempfile.TemporaryDirectory(prefix=f"mmsr-{stage}-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec = {
            "settings": settings.model_dump(mode="json"),
            "stage": stage,
            "dataset": dataset,
            "args": args or {},
        }
        spec_path.write_text(json.dumps(spec, default=str), encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", "5"),
        }
        cmd = [sys.executable, "-m", "pipeline.orchestration", str(spec_path), str(result_path)]
        log.info("stage %s (dataset=%s) in a fresh interpreter: %s", stage, dataset, " ".join(cmd))
        tail: deque[str] = deque(maxlen=_OUTPUT_TAIL_LINES)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            assert proc.stdout is not None
            output = ChildOutputFilter()
            for raw in proc.stdout:  # text mode: tqdm's \r redraws arrive as separate lines
                line = output.relay(raw)
                if line is not None:
                    tail.append(line)
                    log.info("[%s] %s", stage, line)
            returncode = proc.wait()
        finally:
            if proc.poll() is None:  # e.g. Airflow's execution_timeout fired while we were reading
                proc.kill()
                proc.wait()
        result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else None
    if result is not None and result.get("pipeline_error"):
        raise PipelineError(result["pipeline_error"])
    if returncode != 0 or result is None:
        raise StageCrashed(
            f"stage {stage} (dataset {dataset}) exited with code {returncode}; last output:\n"
            + "\n".join(tail)
        )
    return result["report"]


def _child_main(spec_path: Path, result_path: Path) -> int:
    """Entry point of the fresh interpreter: run the stage, write its report or its PipelineError."""
    from pipeline.logs import setup_logging

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    settings = Settings(**spec["settings"])
    setup_logging(settings.log_level)
    try:
        report = run_stage(settings, spec["stage"], spec["dataset"], spec["args"])
    except PipelineError as exc:
        log.error("%s", exc)
        result_path.write_text(json.dumps({"pipeline_error": str(exc)}), encoding="utf-8")
        return 1
    result_path.write_text(json.dumps({"report": report}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(Path(sys.argv[1]), Path(sys.argv[2])))
