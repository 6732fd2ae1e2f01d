"""Runs the real nightly DAG once in this process (``dag.test()``), for ``make demo`` and the tests.

No scheduler, no webserver: Airflow keeps its metadata in a SQLite file under
``MMSR_HOME/airflow`` and every task runs in turn in this process (each stage still in
its own fresh interpreter, see ``pipeline.orchestration.stages``). Airflow reads its
configuration when first imported, so ``configure_airflow`` must run before anything
imports ``airflow``; it refuses to run if Airflow was already imported for another home.

``python -m pipeline.orchestration.airflow_local DATASET [RUN_DATE] [--mark-success REGEX]`` runs one
dataset's DAG and prints the run summary as JSON on the last line of stdout (exit 1 when the
run failed).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.core.config import Settings, load_settings
from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)

#: the packaged DAG file's folder: Airflow parses it here, in the image and in the demo alike
DAGS_FOLDER = Path(__file__).resolve().parent / "dags"


@dataclass
class DagRunSummary:
    """What one ``dag.test()`` run did: its state, each task's state, and each task's XCom report."""

    dag_id: str
    run_id: str
    run_date: str
    state: str
    task_states: dict[str, str]
    reports: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment that keeps Airflow's home, SQLite metadata DB and logs under ``MMSR_HOME/airflow``."""
    home = settings.airflow_home.resolve()
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


def configure_airflow(settings: Settings) -> None:
    """Point Airflow at ``MMSR_HOME/airflow`` and create its metadata DB on first use."""
    env = airflow_env(settings)
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise PipelineError(
            f"Airflow was already imported with AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')!r}; "
            f"run the DAG for {env['AIRFLOW_HOME']} in a fresh process"
        )
    os.environ.update(env)
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "airflow.db").is_file():
        log.info("creating the Airflow metadata DB under %s (airflow db migrate)", home)
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=os.environ, capture_output=True, text=True
        )
        if done.returncode != 0:
            (home / "airflow.db").unlink(missing_ok=True)
            raise PipelineError(
                f"airflow db migrate failed under {home}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )


def _xcom_reports(dag_id: str, run_id: str) -> dict[str, Any]:
    """Return values of every task of the run, keyed by task id (mapped tasks: a list by map index)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    reports: dict[str, Any] = {}
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, key="return_value")).all()
        for row in sorted(rows, key=lambda r: (r.task_id, r.map_index)):
            value = XComModel.deserialize_value(row)
            if row.map_index >= 0:
                reports.setdefault(row.task_id, []).append(value)
            else:
                reports[row.task_id] = value
    return reports


def run_dag(
    settings: Settings, dataset: str, run_date: date, mark_success_pattern: str | None = None
) -> DagRunSummary:
    """Parse ``dags/`` and run the nightly DAG of ``dataset`` once for ``run_date``.

    ``mark_success_pattern`` (a task-id regex) marks matching tasks done without running them.
    """
    import time

    configure_airflow(settings)
    from airflow.dag_processing.dagbag import DagBag

    from pipeline.orchestration.dag import dag_id

    bag = DagBag(str(DAGS_FOLDER))
    if bag.import_errors:
        raise PipelineError(f"the DAG files do not import: {bag.import_errors}")
    wanted = dag_id(dataset)
    if wanted not in bag.dags:
        raise PipelineError(f"no DAG {wanted!r} in {DAGS_FOLDER}; configured: {sorted(bag.dags)}")
    started = time.perf_counter()
    dag_run = bag.dags[wanted].test(
        run_conf={"run_date": run_date.isoformat()}, mark_success_pattern=mark_success_pattern
    )
    seconds = time.perf_counter() - started
    states = {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(
            getattr(ti.state, "value", ti.state)
        )
        for ti in dag_run.get_task_instances()
    }
    return DagRunSummary(
        dag_id=wanted,
        run_id=dag_run.run_id,
        run_date=run_date.isoformat(),
        state=str(getattr(dag_run.state, "value", dag_run.state)),
        task_states=states,
        reports=_xcom_reports(wanted, dag_run.run_id),
        seconds=round(seconds, 1),
    )


def main(argv: list[str]) -> int:
    import argparse

    from pipeline.core.logs import setup_logging

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.orchestration.airflow_local", description=__doc__
    )
    parser.add_argument("dataset")
    parser.add_argument("run_date", nargs="?", type=date.fromisoformat, default=date.today())
    parser.add_argument("--mark-success", help="regex of task ids to mark done instead of running")
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level)
    summary = run_dag(settings, args.dataset, args.run_date, args.mark_success)
    sys.stdout.write("\n" + json.dumps(summary.to_dict(), default=str) + "\n")
    return 0 if summary.succeeded else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
