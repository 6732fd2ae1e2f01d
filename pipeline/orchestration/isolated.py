"""Runs a stage in a FRESH Python interpreter (``python -m pipeline.orchestration.isolated``).

Airflow's LocalExecutor and Celery workers fork their task processes, and CUDA cannot
be initialised in a forked child of a process that touched it, so every DAG task runs
its stage in a new interpreter that imports torch itself. The child also returns its
memory to the OS when the stage ends. Settings travel to the child as JSON (so the
child sees exactly the parent's settings), the child's log lines are streamed into the
caller's log, and the stage's small JSON report comes back through a result file: that
report is what the DAG pushes to XCom. A ``PipelineError`` in the child is raised again
in the parent with the same message (bad input: retrying cannot help); any other
failure raises ``StageCrashed`` (possibly transient: Airflow retries it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.orchestration.child_output import ChildOutputFilter

log = logging.getLogger(__name__)

_OUTPUT_TAIL_LINES = 40


class StageCrashed(RuntimeError):
    """A stage died with something other than a ``PipelineError`` (worth a retry)."""


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
        cmd = _command(settings, stage) + [str(spec_path), str(result_path)]
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


def _command(settings: Settings, stage: str) -> list[str]:
    """The child's command: this module, or ``torchrun`` over it for a data-parallel train stage."""
    child = ["-m", "pipeline.orchestration.isolated"]
    if stage == "train" and settings.train_processes > 1:
        launch = [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={settings.train_processes}",
        ]
        return [sys.executable, *launch, *child]
    return [sys.executable, *child]


def _child_main(spec_path: Path, result_path: Path) -> int:
    """Entry point of the fresh interpreter: run the stage, write its report or its PipelineError.

    Under ``torchrun`` every rank runs the stage inside the process group; rank 0 writes
    the result.
    """
    from mmsr_model.distributed import is_main, process_group_from_environment
    from pipeline.core.logs import setup_logging
    from pipeline.orchestration.stages import run_stage

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    settings = Settings(**spec["settings"])
    setup_logging(settings.log_level)
    with process_group_from_environment(settings.model.device):
        try:
            report = run_stage(settings, spec["stage"], spec["dataset"], spec["args"])
        except PipelineError as exc:
            log.error("%s", exc)
            if is_main():
                result_path.write_text(json.dumps({"pipeline_error": str(exc)}), encoding="utf-8")
            return 1
        if is_main():
            result_path.write_text(json.dumps({"report": report}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(Path(sys.argv[1]), Path(sys.argv[2])))
