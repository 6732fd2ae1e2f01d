"""MLflow set-up, model registration and the champion lookup.

A dataset's models are registered as ``mmsr-<dataset>``; the ``champion`` alias is
what ``recommend`` serves, ``challenger`` the latest candidate (see ``stages.promote``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.core.config import Settings
from pipeline.serving.pyfunc_model import (
    ITEM_INDEX_ARTIFACT,
    MODEL_ARTIFACT,
    MMSRPythonModel,
    input_example,
    signature,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
#: run tag: the day of the cold run a chain of warm nights started from (the full-retrain clock)
FULL_RETRAIN_TAG = "full_retrain_date"
#: model version tag: "true" when a warm model fell below its chain's cold model at the gate
WARM_DRIFT_TAG = "warm_drift"
CHALLENGER = "challenger"
_GATE_BATCH = 8192


def registered_name(dataset: str) -> str:
    return f"mmsr-{dataset}"


def setup_mlflow(settings: Settings, dataset: str) -> str:
    """Point MLflow at the configured store; return the dataset's experiment id.

    The experiment's artifact location is a file URI under ``settings.mlflow_artifacts``
    so nothing lands in ``./mlruns`` or anywhere else outside MMSR_HOME.
    """
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # MLflow also exports the URIs as environment variables, which Settings.tracking_uri
    # would then prefer for every later home in this process: keep the environment as it was
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    name = registered_name(dataset)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = (settings.mlflow_artifacts / dataset).resolve()
        location.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(name, artifact_location=location.as_uri())
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_pyfunc(model: object, item_index: Path, dataset: str) -> int:
    """Log ``model`` as a pyfunc in the active run, register it; return the new version."""
    from mmsr_model.persistence import save_model
    from pipeline.serving.pyfunc_model import read_item_ids

    with tempfile.TemporaryDirectory(prefix="mmsr-model-") as tmp:
        weights = Path(tmp) / "model.pt"
        save_model(model, weights)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=MMSRPythonModel(),
            artifacts={MODEL_ARTIFACT: str(weights), ITEM_INDEX_ARTIFACT: str(item_index)},
            signature=signature(),
            input_example=input_example(read_item_ids(item_index)),
            pip_requirements=_requirements(),
            registered_model_name=registered_name(dataset),
        )
    version = int(info.registered_model_version)
    log.info("registered %s version %d", registered_name(dataset), version)
    return version


def _requirements() -> list[str]:
    """Pin what the wrapper imports (skips MLflow's slow requirement inference)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "torch", "numpy", "pandas", "pyarrow")]


def load_registered(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """A registered version's pyfunc, without MLflow's requirement check.

    That check compares the version's pinned requirements (:func:`_requirements`) with every
    installed distribution, a scan of site-packages that costs seconds per load; every
    stage runs from the one installation (image) that trained and logged the model.
    """
    return mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)


def current_champion(client: MlflowClient, dataset: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(registered_name(dataset), CHAMPION).version)
    except MlflowException:
        return None


def chain_cold_version(client: MlflowClient, dataset: str, version: int) -> int | None:
    """The promoted cold version that ``version``'s warm chain started from (None: ``version`` is cold,
    or that version is gone)."""
    name = registered_name(dataset)
    run = client.get_run(client.get_model_version(name, str(version)).run_id)
    if run.data.tags.get("warm_start") != "warm":
        return None
    started = run.data.tags.get(FULL_RETRAIN_TAG)
    cold_runs = client.search_runs(
        [run.info.experiment_id], f"tags.warm_start = 'cold' and tags.{FULL_RETRAIN_TAG} = '{started}'"
    )
    versions = [
        int(v.version)
        for cold in cold_runs
        for v in client.search_model_versions(f"name = '{name}' and run_id = '{cold.info.run_id}'")
        if v.tags.get("promotion_decision") == "promoted"
    ]
    return max(versions, default=None)
