"""docker-compose.yaml, Dockerfile and .env.example hold what the deployment needs.

Docker is not usable on CI: the file is checked as YAML (services, health checks, named
volumes, GPU reservation, secrets only from .env); ``docker compose config`` runs only
when a docker CLI AND a reachable engine exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
SERVICES = {
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "mlflow",
}
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that accepts compose's ``!reset`` / ``!override`` merge tags."""


_ComposeLoader.add_multi_constructor("!", lambda loader, tag, node: None)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_ComposeLoader)  # noqa: S506 - safe subclass


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


def test_services_and_health_checks(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, command in AIRFLOW_COMMANDS.items():
        assert services[name]["command"] == command
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_named_volumes(compose: dict) -> None:
    assert set(compose["volumes"]) == {"postgres-data", "mmsr-home", "mlflow-artifacts"}
    services = compose["services"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "mlflow-artifacts:/opt/mmsr-home/mlflow/artifacts" in services["mlflow"]["volumes"]
    scheduler = services["airflow-scheduler"]
    assert "mmsr-home:/opt/mmsr-home" in scheduler["volumes"]
    # the task container writes MLflow artifacts at the path the MLflow server serves them from
    assert "mlflow-artifacts:/opt/mmsr-home/mlflow/artifacts" in scheduler["volumes"]
    assert scheduler["environment"]["MMSR_HOME"] == "/opt/mmsr-home"


def test_task_runner_reserves_the_gpu_and_cpu_override_drops_it(compose: dict) -> None:
    devices = compose["services"]["airflow-scheduler"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    override = load(ROOT / "docker-compose.cpu.yaml")
    assert "deploy" in override["services"]["airflow-scheduler"]
    assert "!reset" in (ROOT / "docker-compose.cpu.yaml").read_text()


def test_postgres_backends_and_mlflow_server(compose: dict) -> None:
    services = compose["services"]
    airflow_db = services["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert airflow_db.startswith("postgresql+psycopg2://airflow:") and airflow_db.endswith(
        "@postgres:5432/airflow"
    )
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql+psycopg2://mlflow:" in mlflow and "@postgres:5432/mlflow" in mlflow
    assert "--allowed-hosts=" in mlflow and "mlflow:5000" in mlflow
    assert services["airflow-scheduler"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    init = (ROOT / "docker" / "postgres" / "init-databases.sh").read_text()
    assert "CREATE DATABASE airflow" in init and "CREATE DATABASE mlflow" in init
    init_env = services["airflow-init"]["environment"]
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true" and init_env["_AIRFLOW_WWW_USER_CREATE"] == "true"


def test_bounded_workers_and_the_gpu_pool(compose: dict) -> None:
    """LocalExecutor forks PARALLELISM workers up front; airflow-init creates the pool GPU tasks use."""
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__PARALLELISM"] == "${AIRFLOW_PARALLELISM:-4}"
    assert env["MMSR_GPU_POOL"] == "gpu"
    init = "\n".join(compose["services"]["airflow-init"]["command"])
    assert 'airflow pools set "$${MMSR_GPU_POOL:-gpu}" "$${MMSR_GPU_POOL_SLOTS:-1}"' in init
    assert '-e "${MMSR_SRC}[postgres]"' in (ROOT / "Dockerfile").read_text()


def test_secrets_only_from_env_file() -> None:
    text = COMPOSE.read_text()
    keys = re.findall(r"^\s*([A-Z_]*(?:PASSWORD|SECRET|FERNET_KEY)[A-Z_]*):\s*(\S+)", text, flags=re.M)
    assert len(keys) >= 7
    for key, value in keys:
        assert value.startswith("${"), f"hard-coded secret: {key}: {value}"
    assert "postgresql+psycopg2://airflow:${" in text and "postgresql+psycopg2://mlflow:${" in text
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    assert referenced <= documented, f"not in .env.example: {sorted(referenced - documented)}"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_dockerfile_extends_official_airflow_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG AIRFLOW_VERSION=3\.3\.\d+$", text, flags=re.M)
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in text
    assert re.search(r'pip install .*"apache-airflow==\$\{AIRFLOW_VERSION\}".*-e', text)
    assert "ENV AIRFLOW__CORE__DAGS_FOLDER=${MMSR_SRC}/pipeline/orchestration/dags" in text


def _docker_engine_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_docker_compose_config_validates() -> None:
    if not _docker_engine_usable():
        pytest.skip("docker CLI or engine not usable here")
    for files in (
        ["-f", "docker-compose.yaml"],
        ["-f", "docker-compose.yaml", "-f", "docker-compose.cpu.yaml"],
    ):
        done = subprocess.run(
            ["docker", "compose", "--env-file", ".env.example", *files, "config", "--quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
