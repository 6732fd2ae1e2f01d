"""Builds the nightly Airflow DAG of one dataset (``dags/mmsr_nightly.py`` calls it per dataset).

Task graph: extract -> (embed_text, embed_image in parallel) -> codes -> train -> promote
-> recommend -> publish_analytics. Every task is a thin call into
``pipeline.orchestration.run_stage_isolated`` (a fresh interpreter per stage, so CUDA is
never initialised in a forked worker) and returns the stage's small JSON report, which
is all XCom carries. ``run_date`` (a Param, else the logical date, else ``run_after``)
is the partition key; every stage is idempotent for it. A ``PipelineError`` (bad input,
no champion...) fails the task at once; anything else is retried with exponential
backoff. With ``settings.shards > 1`` embed and recommend fan out with ``.expand`` over
shard workspaces (``pipeline.sharding``) and a combine task swaps the merged output in.

Only ``airflow.sdk`` and the light ``pipeline`` modules are imported here: the DAG
processor parses this in well under 2 s (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, Param, dag, get_current_context, task

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.orchestration import resolve_run_date

DAG_ID_PREFIX = "mmsr_nightly_"
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "mmsr",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
}
#: per-task execution timeouts (the default above covers the rest)
TIMEOUTS = {
    "extract": timedelta(hours=1),
    "embed": timedelta(hours=4),
    "codes": timedelta(hours=1),
    "train": timedelta(hours=8),
    "promote": timedelta(minutes=30),
    "publish_analytics": timedelta(minutes=30),
}


def dag_id(dataset: str) -> str:
    return f"{DAG_ID_PREFIX}{dataset}"


def recommendations_asset(settings: Settings, dataset: str) -> Asset:
    """The table analysts' DAGs can be scheduled on (``schedule=[asset]``)."""
    folder = (settings.dataset_dir(dataset) / "recommendations").resolve()
    return Asset(name=f"mmsr_{dataset}_recommendations", uri=folder.as_uri(), group="mmsr")


def _fail_fast(run: Callable[[Settings], dict[str, Any]]) -> dict[str, Any]:
    """Call ``run`` with the worker's current settings; a ``PipelineError`` fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.config import load_settings

    try:
        return run(load_settings())
    except PipelineError as exc:  # bad input: a retry would fail the same way
        raise AirflowFailException(str(exc)) from exc


def _stage(stage: str, dataset: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    from pipeline.orchestration import run_stage_isolated

    return _fail_fast(lambda settings: run_stage_isolated(settings, stage, dataset, args))


def _shard_stage(stage: str, dataset: str, shard: int, shards: int, args: dict[str, Any]) -> dict[str, Any]:
    from pipeline.sharding import run_shard

    return _fail_fast(lambda settings: run_shard(settings, stage, dataset, shard, shards, args))


def _combine(stage: str, dataset: str, shards: int, args: dict[str, Any]) -> dict[str, Any]:
    from pipeline.sharding import combine_shards

    return _fail_fast(lambda settings: combine_shards(settings, stage, dataset, shards, args))


def _run_date() -> str:
    ctx = get_current_context()
    dag_run = ctx.get("dag_run")
    return resolve_run_date(
        ctx["params"].get("run_date"), ctx.get("logical_date"), getattr(dag_run, "run_after", None)
    ).isoformat()


def build_dag(settings: Settings, dataset: str) -> DAG:
    """The nightly DAG of ``dataset`` (see module docstring)."""
    shards = settings.shards
    asset = recommendations_asset(settings, dataset)

    @dag(
        dag_id=dag_id(dataset),
        description=f"MMSR nightly: extract, embed, codes, train, promote, recommend for {dataset}",
        schedule=settings.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
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
        @task(execution_timeout=TIMEOUTS["extract"])
        def extract() -> dict[str, Any]:
            return {"run_date": _run_date(), **_stage("extract", dataset)}

        @task(execution_timeout=TIMEOUTS["embed"])
        def embed(modality: str) -> dict[str, Any]:
            return _stage("embed", dataset, {"modality": modality})

        @task(execution_timeout=TIMEOUTS["embed"])
        def embed_shard(modality: str, shard: int) -> dict[str, Any]:
            return _shard_stage("embed", dataset, shard, shards, {"modality": modality})

        @task(execution_timeout=TIMEOUTS["embed"])
        def embed_combine(modality: str) -> dict[str, Any]:
            return _combine("embed", dataset, shards, {"modality": modality})

        @task(execution_timeout=TIMEOUTS["codes"])
        def codes() -> dict[str, Any]:
            return _stage("codes", dataset)

        @task(execution_timeout=TIMEOUTS["train"])
        def train() -> dict[str, Any]:
            return _stage("train", dataset, {"promote": False})

        @task(execution_timeout=TIMEOUTS["promote"])
        def promote(trained: dict[str, Any]) -> dict[str, Any]:
            return _stage("promote", dataset, {"version": trained["model_version"]})

        @task(outlets=[asset])
        def recommend() -> dict[str, Any]:
            return _stage("recommend", dataset, {"run_date": _run_date()})

        @task
        def recommend_shard(shard: int) -> dict[str, Any]:
            return _shard_stage("recommend", dataset, shard, shards, {"run_date": _run_date()})

        @task(outlets=[asset])
        def recommend_combine() -> dict[str, Any]:
            return _combine("recommend", dataset, shards, {"run_date": _run_date()})

        @task(execution_timeout=TIMEOUTS["publish_analytics"])
        def publish_analytics() -> dict[str, Any]:
            return _stage("publish", dataset)

        def embedded(modality: str) -> tuple[Any, Any]:
            """First and last task of one modality's embedding (one task, or shards + combine)."""
            if shards == 1:
                single = embed.override(task_id=f"embed_{modality}")(modality)
                return single, single
            task_id = f"embed_{modality}_shard"
            mapped = (
                embed_shard.override(task_id=task_id)
                .partial(modality=modality)
                .expand(shard=list(range(shards)))
            )
            combined = embed_combine.override(task_id=f"embed_{modality}")(modality)
            mapped >> combined
            return mapped, combined

        def recommended() -> tuple[Any, Any]:
            if shards == 1:
                single = recommend()
                return single, single
            mapped = recommend_shard.expand(shard=list(range(shards)))
            combined = recommend_combine.override(task_id="recommend")()
            mapped >> combined
            return mapped, combined

        # only promote reads an upstream value (train's model version); the other edges only
        # order the tasks, so a task can be rerun (or marked done) on its own for a run_date
        text_first, text_last = embedded("text")
        image_first, image_last = embedded("image")
        extract() >> [text_first, image_first]
        trained = train()
        [text_last, image_last] >> codes() >> trained
        recommend_first, recommend_last = recommended()
        promote(trained) >> recommend_first
        recommend_last >> publish_analytics()

    return nightly()


def build_dags(settings: Settings) -> dict[str, DAG]:
    """One DAG per configured dataset (plus the demo dataset when enabled), keyed by dag_id."""
    from pipeline.orchestration import dataset_configs

    return {dag_id(name): build_dag(settings, name) for name in dataset_configs(settings)}
