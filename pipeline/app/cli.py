"""`mmsr` command line: one command per stage, each a thin call into ``pipeline``.

Stage modules (and torch, sklearn, mlflow behind them) are imported inside the
commands so that ``mmsr --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core.config import Settings, load_settings
from pipeline.core.errors import PipelineError
from pipeline.core.logs import setup_logging

app = typer.Typer(help="MMSR nightly recommender pipeline.", no_args_is_help=True, add_completion=False)
log = logging.getLogger("mmsr")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file (also $MMSR_CONFIG).")]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="Dataset name under MMSR_HOME/warehouse.")]
RunDateOpt = Annotated[str | None, typer.Option(help="Partition date YYYY-MM-DD (default: today, UTC).")]


def _settings(config: Path | None) -> Settings:
    from pydantic import ValidationError

    try:
        settings = load_settings(config)
    except (ValidationError, FileNotFoundError) as exc:
        setup_logging()
        log.error("invalid settings (config file %s or MMSR_* variables): %s", config, exc)
        raise typer.Exit(code=1) from exc
    setup_logging(settings.log_level)
    return settings


def _report(result: Any) -> None:
    """Print a stage's small summary as JSON on stdout (logs go to stderr)."""
    payload = result.to_dict() if hasattr(result, "to_dict") else result
    typer.echo(json.dumps(payload, indent=2, default=str))


def _run(call: Callable[[], Any], report: bool = True) -> None:
    """Run a stage call and print its report; a ``PipelineError`` is logged and exits with 1."""
    try:
        result = call()
    except PipelineError as exc:
        log.error("%s", exc)
        raise typer.Exit(code=1) from exc
    if report and result is not None:
        _report(result)


def _day(value: str | None) -> date | None:
    """A ``--run-date`` value as a date (None: the stage's default, today in UTC)."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise PipelineError(f"--run-date {value!r} is not a YYYY-MM-DD date") from exc


@app.command()
def extract(
    dataset: DatasetOpt,
    fmt: Annotated[str, typer.Option("--format", help="amazon2014 | amazon2018 | amazon2023 | sequences")],
    reviews: Annotated[Path, typer.Option(help="Reviews / ratings / user_sequence file (plain or .gz).")],
    meta: Annotated[Path | None, typer.Option(help="Item metadata / item_text file.")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of local images named <item_id>.jpg.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Raw review + metadata files -> warehouse Parquet tables."""
    settings = _settings(config)
    from pipeline.stages.extract import run_extract

    _run(lambda: run_extract(settings, dataset, fmt, reviews, meta, images))


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Folder to write the synthetic amazon2018-format dataset to.")],
    config: ConfigOpt = None,
) -> None:
    """Write the seeded synthetic demo dataset (reviews, meta, JPEG images)."""
    settings = _settings(config)
    from pipeline.app.demo_data import write_demo_dataset

    _report(write_demo_dataset(out, seed=settings.seed))


@app.command()
def embed(
    dataset: DatasetOpt,
    modality: Annotated[str, typer.Option(help="text | image | all")] = "all",
    import_features: Annotated[
        Path | None, typer.Option(help="Parquet/NPY features keyed by item id to import instead of encoding.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Embed item text and images (incremental, cached by content hash)."""
    settings = _settings(config)
    from pipeline.stages.embed import run_embed

    _run(lambda: run_embed(settings, dataset, modality, import_features=import_features))


@app.command()
def codes(dataset: DatasetOpt, run_date: RunDateOpt = None, config: ConfigOpt = None) -> None:
    """Cluster each modality's item vectors into modality codes.

    ``--run-date`` is the night's date for the codebooks' full-rebuild schedule (a backfill).
    """
    settings = _settings(config)
    from pipeline.stages.codes import run_codes

    _run(lambda: run_codes(settings, dataset, _day(run_date)))


@app.command()
def train(
    dataset: DatasetOpt,
    config: ConfigOpt = None,
    promote: Annotated[bool, typer.Option(help="Run the champion/challenger gate after registering.")] = True,
    run_date: RunDateOpt = None,
) -> None:
    """Train MMSR, log and register it in MLflow, and run the promotion gate.

    With ``train_processes`` > 1 training runs data-parallel under torchrun. ``--run-date``
    is the night's date for the warm start's full-retrain schedule (a backfill).
    """
    settings = _settings(config)
    day = _day(run_date)  # validated here, before any work
    if settings.train_processes > 1:
        from pipeline.orchestration.isolated import run_stage_isolated

        args = {"promote": promote, "run_date": run_date}  # the stage reads None as today
        _run(lambda: run_stage_isolated(settings, "train", dataset, args))
        return
    from pipeline.stages.train.run import run_train

    _run(lambda: run_train(settings, dataset, promote=promote, run_date=day))


@app.command()
def recommend(
    dataset: DatasetOpt,
    run_date: RunDateOpt = None,
    k: Annotated[int | None, typer.Option(help="Recommendations per user.")] = None,
    publish: Annotated[
        bool, typer.Option(help="Then run the health gate and publish the night (`mmsr publish`).")
    ] = True,
    config: ConfigOpt = None,
) -> None:
    """Score every user with the champion and write the day's candidate top-K partition."""
    settings = _settings(config)
    from pipeline.stages.publish import publish_night
    from pipeline.stages.recommend import run_recommend

    def recommend_and_publish() -> dict[str, Any]:
        report = run_recommend(settings, dataset, _day(run_date), k).to_dict()
        if publish:
            report["publish"] = publish_night(settings, dataset, report["run_date"])
        return report

    _run(recommend_and_publish)


@app.command()
def publish(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Gate and publish this dataset's night first.")
    ] = None,
    run_date: RunDateOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Health-gate a night's recommendations (with --dataset), then rebuild MMSR_HOME/analytics.duckdb."""
    settings = _settings(config)
    from datetime import UTC, datetime

    from pipeline.stages.publish import publish_analytics, publish_night

    if dataset is None:
        _run(lambda: {"analytics_db": str(publish_analytics(settings))})
        return
    _run(lambda: publish_night(settings, dataset, _day(run_date) or datetime.now(UTC).date()))


@app.command()
def report(
    dataset: DatasetOpt,
    run_date: Annotated[
        str | None, typer.Option(help="Night YYYY-MM-DD (default: the latest published night).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write the night's static HTML report (default: the latest published night) and print its path."""
    settings = _settings(config)
    from pipeline.stages.report import write_report

    _run(lambda: write_report(settings, dataset, _day(run_date)))


@app.command()
def show(
    dataset: DatasetOpt,
    user: Annotated[str, typer.Option(help="External user id.")],
    k: Annotated[int, typer.Option(help="Recommendations to show.")] = 10,
    config: ConfigOpt = None,
) -> None:
    """Print one user's history and latest recommendations with titles."""
    settings = _settings(config)
    from pipeline.app.show import show_user

    _run(lambda: show_user(settings, dataset, user, k))


@app.command()
def nightly(
    dataset: DatasetOpt,
    run_date: RunDateOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run every stage for one configured dataset without Airflow."""
    settings = _settings(config)
    from pipeline.orchestration.nightly import run_nightly

    _run(lambda: run_nightly(settings, dataset, _day(run_date)))


@app.command()
def demo(config: ConfigOpt = None) -> None:
    """Generate the demo data and run the real nightly DAG once in-process (dag.test())."""
    settings = _settings(config)
    from pipeline.app.demo import run_demo

    _run(lambda: run_demo(settings, config), report=False)


if __name__ == "__main__":
    app()
