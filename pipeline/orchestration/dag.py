"""Builds the nightly Airflow DAG of one dataset from the step graph (``pipeline.orchestration.steps``).

Task graph: extract -> (embed_text, embed_image in parallel) -> codes -> train -> promote
-> recommend -> publish_analytics (the health gate) -> report, as ``NIGHTLY_STEPS``
declares it. Every task is a thin call into
``pipeline.orchestration.isolated.run_stage_isolated`` (a fresh interpreter per stage,
so CUDA is never initialised in a forked worker) and returns the stage's small JSON
report, which is all XCom carries. ``run_date`` (a Param, else the logical date, else
``run_after``) is the partition key; every stage is idempotent for
it. A ``PipelineError`` (bad input, a malformed run_date, no champion...) fails the task
at once; anything else is retried with exponential backoff. With ``settings.shards > 1``
shardable steps fan out with ``.expand`` over shard workspaces
(``pipeline.orchestration.sharding``) and a combine task swaps the merged output in.

Only ``airflow.sdk`` and the light ``pipeline`` modules are imported here: the DAG
processor parses the DAG file in well under 2 s (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, Param, dag, get_current_context, task

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.orchestration.steps import NIGHTLY_STEPS, Step, resolve_run_date

DAG_ID_PREFIX = "mmsr_nightly_"
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "mmsr",
    "retries": 2,
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
}


def dag_id(dataset: str) -> str:
    return f"{DAG_ID_PREFIX}{dataset}"


def recommendations_asset(settings: Settings, dataset: str) -> Asset:
    """The table analysts' DAGs can be scheduled on (``schedule=[asset]``)."""
    folder = (settings.dataset_dir(dataset) / "recommendations").resolve()
    return Asset(name=f"mmsr_{dataset}_recommendations", uri=folder.as_uri(), group="mmsr")


def _run_date() -> date:
    ctx = get_current_context()
    dag_run = ctx.get("dag_run")
    return resolve_run_date(
        ctx["params"].get("run_date"), ctx.get("logical_date"), getattr(dag_run, "run_after", None)
    )


def _fail_fast(run: Callable[[Settings], dict[str, Any]]) -> dict[str, Any]:
    """Call ``run`` with the worker's current settings and return its report with the run's date.

    A ``PipelineError`` (a malformed run_date included) fails the task without retries.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.core.config import load_settings

    try:
        # the date first (a dict display runs left to right): a bad run_date fails before any work
        return {"run_date": _run_date().isoformat(), **run(load_settings())}
    except PipelineError as exc:  # bad input: a retry would fail the same way
        raise AirflowFailException(str(exc)) from exc


def _step_args(step: Step, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return step.stage_args(_run_date() if step.takes_run_date else None, upstream)


def _run_step(step: Step, dataset: str, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from pipeline.orchestration.isolated import run_stage_isolated

    return _fail_fast(
        lambda settings: run_stage_isolated(settings, step.stage, dataset, _step_args(step, upstream))
    )


def _run_shard(step: Step, dataset: str, shard: int, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from pipeline.orchestration.sharding import run_shard

    return _fail_fast(
        lambda settings: run_shard(
            settings, step.stage, dataset, shard, settings.shards, _step_args(step, upstream)
        )
    )


def _combine(step: Step, dataset: str, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from pipeline.orchestration.sharding import combine_shards

    return _fail_fast(
        lambda settings: combine_shards(
            settings, step.stage, dataset, settings.shards, _step_args(step, upstream)
        )
    )


def _add_step(
    step: Step, dataset: str, settings: Settings, outlets: list[Asset], upstream: dict[str, Any]
) -> tuple[Any, Any]:
    """The first and last task of ``step``: one task, or mapped shard tasks and a combine.

    The tasks that run a GPU-capable stage take a slot of ``settings.gpu_pool``, so two of
    them never share the one GPU (a combine only merges files and needs no slot).
    """
    timeout = {"execution_timeout": step.timeout}
    gpu = {"pool": settings.gpu_pool} if step.uses_gpu else {}
    finals = {"outlets": outlets} if step.writes_recommendations else {}
    if settings.shards == 1 or not step.shardable:
        single = task(task_id=step.name, **timeout, **gpu, **finals)(_run_step)(step, dataset, upstream)
        return single, single
    mapped = (
        task(task_id=f"{step.name}_shard", **timeout, **gpu)(_run_shard)
        .partial(step=step, dataset=dataset, upstream=upstream)
        .expand(shard=list(range(settings.shards)))
    )
    combined = task(task_id=step.name, **timeout, **finals)(_combine)(step, dataset, upstream)
    mapped >> combined
    return mapped, combined


def build_dag(settings: Settings, dataset: str) -> DAG:
    """The nightly DAG of ``dataset`` (see module docstring)."""
    outlets = [recommendations_asset(settings, dataset)]

    @dag(
        dag_id=dag_id(dataset),
        description=f"MMSR nightly for {dataset}: extract ... recommend, gated publish, report",
        schedule=settings.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "retry_delay": timedelta(seconds=settings.retry_delay_s)},
        params={
            "run_date": Param(
                None,
                type=["null", "string"],
                pattern=r"^\d{4}-\d{2}-\d{2}$",
                description="Partition date YYYY-MM-DD; empty = the run's logical date",
            )
        },
        tags=["mmsr", dataset],
        doc_md=__doc__,
    )
    def nightly() -> None:
        # only declared inputs (promote's model version) travel through XCom; the other
        # edges only order the tasks, so a task can be rerun (or marked done) on its own
        first: dict[str, Any] = {}
        last: dict[str, Any] = {}
        for step in NIGHTLY_STEPS:
            upstream = {source: last[source] for source, _ in step.inputs.values()}
            first[step.name], last[step.name] = _add_step(step, dataset, settings, outlets, upstream)
            for before in step.after:
                last[before] >> first[step.name]

    return nightly()


def build_dags(settings: Settings) -> dict[str, DAG]:
    """One DAG per configured dataset (plus the demo dataset when enabled), keyed by dag_id."""
    from pipeline.orchestration.datasets import dataset_configs

    return {dag_id(name): build_dag(settings, name) for name in dataset_configs(settings)}
