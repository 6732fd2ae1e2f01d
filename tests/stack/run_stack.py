"""The production path end to end: PostgreSQL, an MLflow server and the Airflow services on 127.0.0.1.

Why: the tests and ``make demo`` run the DAG with ``dag.test()`` in one process against
SQLite and a file MLflow store; the deployment runs a LocalExecutor scheduler that forks
task processes, a Postgres metadata DB and an MLflow tracking server over HTTP. This
script starts that shape as native processes (docker-compose.yaml's commands and
settings, Debian's postgresql, no Docker engine), drives ``mmsr_nightly_demo`` through
the REST API and checks what only the real scheduler exercises:

1. an impossible ``run_date`` ("2025-02-30") fails the run on try 1 with the message;
2. a SIGKILLed train stage is retried and the retry resumes from its epoch checkpoint;
3. a healthy same-date rerun: every task succeeds on try 1, the GPU-capable tasks never
   overlap (the ``gpu`` pool), the date keeps one partition;
4. ``models:/mmsr-demo@champion`` loads through the tracking server in a fresh process,
   the model's files download through the server, and ``latest_recommendations`` has a
   row per user.

Every process it starts is stopped by pid (process group) at the end, also on failure.
Exit status 0 = every check passed. ``make stack-test`` runs it with the ``postgres`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("stack-test")

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "mmsr_nightly_demo"
DATASET = "demo"
GOOD_DATE = "2025-03-01"
BAD_DATE = "2025-02-30"
ADMIN = "admin"
#: settings layered on configs/production.yaml (as shipped: its encoders need no model hub):
#: no cron schedule (unpausing must not start a run of its own), a small model, quick retries
STACK_SETTINGS: dict[str, Any] = {
    "schedule": None,
    "retry_delay_s": 5,
    "image_download": False,
    "embed_workers": 0,
    "codes_c": 12,
    "baselines": ["pop"],
    "model": {"hidden_size": 32, "num_layers": 1, "max_len": 50, "batch_size": 128, "max_epochs": 6},
}


class StackFailure(AssertionError):
    """A check of the stack failed (the message says which and why)."""


def check(ok: bool, message: str) -> None:
    """Log a passed check, raise ``StackFailure`` for a failed one."""
    if not ok:
        raise StackFailure(message)
    log.info("PASS %s", message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, every_s: float = 2.0) -> Any:
    """Poll ``probe`` until it returns something truthy; ``StackFailure`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = probe()
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackFailure(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """One JSON request (urllib: the script needs nothing beyond the project's dependencies)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------- postgres


def postgres_bin() -> Path:
    """The PostgreSQL server binaries, installing Debian's package when they are missing."""

    def find() -> Path | None:
        found = shutil.which("pg_ctl")
        if found:
            return Path(found).resolve().parent
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
        return versions[-1].parent if versions else None

    bindir = find()
    if bindir is None:
        if os.geteuid() != 0:
            raise StackFailure("PostgreSQL is not installed (apt-get install postgresql) and we are not root")
        log.info("installing Debian's postgresql package")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env)
        bindir = find()
    if bindir is None:
        raise StackFailure("pg_ctl not found after installing postgresql")
    return bindir


@dataclass
class Stack:
    """The running services: ports, secrets, environments and every process started here."""

    work: Path
    python: str = sys.executable
    ports: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pg_bin: Path | None = None
    pg_user: str | None = None  # run postgres as this user (root cannot)
    pgdata: Path = field(init=False)
    home: Path = field(init=False)
    airflow_home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.pgdata = self.work / "pg" / "data"
        self.home = self.work / "mmsr-home"  # MMSR_HOME of every task
        self.airflow_home = self.work / "airflow"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    def logfile(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"

    # ---- postgres -----------------------------------------------------------------

    def _as_pg_user(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.pg_user, "--", *cmd] if self.pg_user else cmd

    def start_postgres(self) -> None:
        """A fresh cluster in the work folder (password logins, like the postgres image)."""
        self.pg_bin = postgres_bin()
        self.pg_user = "postgres" if os.geteuid() == 0 else None
        if self.pg_user:
            try:
                pwd.getpwnam(self.pg_user)
            except KeyError:
                raise StackFailure(
                    "as root the server needs the postgres user (Debian's package makes it)"
                ) from None
        pg = self.work / "pg"
        pg.mkdir()
        pwfile = pg / "pwfile"
        pwfile.write_text(self.secrets["postgres"] + "\n")
        if self.pg_user:
            shutil.chown(pg, self.pg_user)
            shutil.chown(pwfile, self.pg_user)
        run = [str(self.pg_bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "-A", "scram-sha-256"]
        subprocess.run(self._as_pg_user([*run, f"--pwfile={pwfile}"]), check=True, capture_output=True)
        options = f"-p {self.ports['postgres']} -k {pg} -c listen_addresses=127.0.0.1"
        start = [str(self.pg_bin / "pg_ctl"), "-D", str(self.pgdata), "-o", options, "-l", str(pg / "log")]
        subprocess.run(self._as_pg_user([*start, "-w", "-t", "60", "start"]), check=True)
        log.info("postgres on port %d (pid %s)", self.ports["postgres"], self.postgres_pid())

    def postgres_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def create_databases(self) -> None:
        """The compose file's ``docker/postgres/init-databases.sh``, pointed at this cluster."""
        env = {
            **os.environ,
            "PATH": f"{self.pg_bin}:{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.ports["postgres"]),
            "PGPASSWORD": self.secrets["postgres"],
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "postgres",
            "AIRFLOW_DB_PASSWORD": self.secrets["airflow_db"],
            "MLFLOW_DB_PASSWORD": self.secrets["mlflow_db"],
        }
        script = REPO / "docker" / "postgres" / "init-databases.sh"
        subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True)

    def stop_postgres(self) -> None:
        pid = self.postgres_pid()
        if pid is None or self.pg_bin is None:
            return
        stop = [str(self.pg_bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop"]
        if subprocess.run(self._as_pg_user(stop), capture_output=True).returncode != 0:
            log.warning("pg_ctl stop failed; SIGKILL to postmaster %d", pid)
            _kill(pid, signal.SIGKILL)

    # ---- services -----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """docker-compose.yaml's shared Airflow environment with 127.0.0.1 and free ports."""
        pg = f"127.0.0.1:{self.ports['postgres']}"
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "pipeline" / "orchestration" / "dags"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
            ),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://airflow:{self.secrets['airflow_db']}@{pg}/airflow"
            ),
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["fernet"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["jwt"],
            "AIRFLOW__API__SECRET_KEY": self.secrets["api"],
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.ports["scheduler_health"]),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports["worker_logs"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["trigger_logs"]),
            "MMSR_HOME": str(self.home),
            "MMSR_CONFIG": str(self.work / "settings.yaml"),
            "MLFLOW_TRACKING_URI": self.mlflow,
        }

    def write_settings(self) -> None:
        """configs/production.yaml as shipped, with ``STACK_SETTINGS`` on top."""
        settings = yaml.safe_load((REPO / "configs" / "production.yaml").read_text()) or {}
        for key, value in STACK_SETTINGS.items():
            if isinstance(value, dict):
                settings[key] = {**settings.get(key, {}), **value}
            else:
                settings[key] = value
        (self.work / "settings.yaml").write_text(yaml.safe_dump(settings))

    def spawn(self, name: str, args: list[str]) -> None:
        """Start a service in its own process group (stopped with its children by that pid)."""
        out = self.logfile(name).open("ab")
        proc = subprocess.Popen(
            [self.python, "-m", *args], env=self.env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.work,
        )  # fmt: skip
        self.processes[name] = proc
        log.info("started %s (pid %d)", name, proc.pid)  # args hold the run's database passwords

    def airflow_cli(self, *args: str, timeout_s: float = 300) -> None:
        name = f"airflow-{args[0]}-{args[1] if len(args) > 1 else ''}".rstrip("-")
        with self.logfile(name).open("ab") as out:
            done = subprocess.run(
                [self.python, "-m", "airflow", *args], env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                timeout=timeout_s, cwd=self.work,
            )  # fmt: skip
        if done.returncode != 0:
            command = " ".join(args[:2])
            raise StackFailure(f"airflow {command} failed (exit {done.returncode}); see {out.name}")

    def start(self) -> None:
        """Postgres, the databases, airflow-init's steps, MLflow and the four Airflow services."""
        for name in ("postgres", "mlflow", "api", "scheduler_health", "worker_logs", "trigger_logs"):
            self.ports[name] = free_port()
        from cryptography.fernet import Fernet

        self.secrets = {
            "postgres": secrets.token_urlsafe(16),
            "airflow_db": secrets.token_urlsafe(16),
            "mlflow_db": secrets.token_urlsafe(16),
            "admin": secrets.token_urlsafe(16),
            "fernet": Fernet.generate_key().decode(),
            "jwt": secrets.token_urlsafe(32),
            "api": secrets.token_urlsafe(32),
        }
        (self.work / "logs").mkdir()
        self.home.mkdir()
        self.write_settings()
        self.start_postgres()
        self.create_databases()
        pg = f"127.0.0.1:{self.ports['postgres']}"
        artifacts = self.home / "mlflow" / "artifacts"
        artifacts.mkdir(parents=True)
        mlflow_port = self.ports["mlflow"]
        self.spawn(
            "mlflow",
            [
                "mlflow", "server", "--host=127.0.0.1", f"--port={mlflow_port}", "--workers=1",
                f"--backend-store-uri=postgresql+psycopg2://mlflow:{self.secrets['mlflow_db']}@{pg}/mlflow",
                f"--default-artifact-root={artifacts.as_uri()}",
                f"--allowed-hosts=127.0.0.1,127.0.0.1:{mlflow_port},localhost,localhost:{mlflow_port}",
            ],
        )  # fmt: skip
        # airflow-init: migrate, the admin user, the GPU pool
        self.airflow_cli("db", "migrate")
        self.airflow_cli(
            # --password=…: a random password may start with "-", which argparse would take for an option
            "users", "create", "--username", ADMIN, f"--password={self.secrets['admin']}", "--role", "Admin",
            "--email", "admin@example.org", "--firstname", "mmsr", "--lastname", "admin",
        )  # fmt: skip
        from pipeline.core.config import load_settings

        settings = load_settings(self.work / "settings.yaml")
        pool = [settings.gpu_pool, str(settings.gpu_pool_slots), "tasks that may use the GPU"]
        self.airflow_cli("pools", "set", *pool)
        api_args = ["airflow", "api-server", "--host", "127.0.0.1", "--port", str(self.ports["api"])]
        self.spawn("airflow-apiserver", api_args)
        for service in ("scheduler", "dag-processor", "triggerer"):
            self.spawn(f"airflow-{service}", ["airflow", service])
        wait_for("the MLflow server", lambda: http_ok(f"{self.mlflow}/health"), 180)
        wait_for("the API server", lambda: http_ok(f"{self.api}/api/v2/version"), 180)
        health = f"http://127.0.0.1:{self.ports['scheduler_health']}/health"
        wait_for("the scheduler's health check", lambda: http_ok(health), 180)

    def stop(self) -> None:
        """SIGTERM every started process group, SIGKILL what is left after 20 s, then postgres."""
        for name, proc in reversed(list(self.processes.items())):
            if proc.poll() is None:
                log.info("stopping %s (pid %d)", name, proc.pid)
                _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # the group may hold task processes even after its leader exited
            _killpg(proc.pid, signal.SIGKILL)
        self.stop_postgres()


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# --------------------------------------------------------------------------- REST API


class AirflowApi:
    """The Airflow 3 REST API with a JWT from the FAB admin's login."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        token = http("POST", f"{base}/auth/token", {"username": ADMIN, "password": password})
        self.headers = {"Authorization": f"Bearer {token['access_token']}"}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return http(method, f"{self.base}/api/v2{path}", body, self.headers)

    def trigger(self, run_id: str, run_date: str) -> None:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": {"run_date": run_date}}
        self.call("POST", f"/dags/{DAG_ID}/dagRuns", body)
        log.info("triggered %s with run_date %s", run_id, run_date)

    def run_state(self, run_id: str) -> str:
        return self.call("GET", f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}")["state"]

    def task_instances(self, run_id: str) -> dict[str, dict[str, Any]]:
        found = self.call("GET", f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances")
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def task_log(self, run_id: str, task_id: str, try_number: int) -> str:
        run = urllib.parse.quote(run_id)
        path = f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        return json.dumps(self.call("GET", path))

    def wait_finished(self, run_id: str, timeout_s: float) -> str:
        def finished() -> str | None:
            state = self.run_state(run_id)
            return state if state in ("success", "failed") else None

        started = time.monotonic()
        state = wait_for(f"run {run_id} to finish", finished, timeout_s, every_s=3)
        log.info("run %s ended %s after %.0f s", run_id, state, time.monotonic() - started)
        return state


# --------------------------------------------------------------------------- checks


def check_bad_date(api: AirflowApi, timeout_s: float) -> None:
    """A date that matches the Param's pattern but does not exist costs no retry."""
    run_id = "stack_bad_date"
    api.trigger(run_id, BAD_DATE)
    state = api.wait_finished(run_id, timeout_s)
    tis = api.task_instances(run_id)
    extract = tis["extract"]
    check(state == "failed", f"run_date {BAD_DATE}: the run failed")
    state, tries = extract["state"], extract["try_number"]
    check(
        state == "failed" and tries == 1,
        f"run_date {BAD_DATE}: extract failed on try 1 (state {state}, try {tries})",
    )
    text = api.task_log(run_id, "extract", 1)
    check("is not a YYYY-MM-DD date" in text, f"run_date {BAD_DATE}: the task log gives the message")


def _parent(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ...", comm may hold spaces
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    with contextlib.suppress(OSError, ValueError, IndexError):
        while pid > 1:
            if pid == ancestor:
                return True
            pid = _parent(pid)
    return False


def train_stage_pid(scheduler: int) -> int | None:
    """The train stage's fresh interpreter (``pipeline.orchestration.isolated``) under OUR scheduler.

    Other people's trains on the same machine look the same; only a descendant is ours.
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        stage = b"pipeline.orchestration.isolated" in cmdline
        if (
            stage
            and any(b"/mmsr-train-" in part for part in cmdline)
            and _descends_from(int(entry.name), scheduler)
        ):
            return int(entry.name)
    return None


def check_killed_train(api: AirflowApi, stack: Stack, timeout_s: float) -> None:
    """SIGKILL the train stage after its first epoch checkpoint: the retry resumes from it."""
    run_id = "stack_killed_train"
    api.trigger(run_id, GOOD_DATE)
    checkpoints = stack.home / "warehouse" / DATASET / "checkpoints"

    def checkpointed_stage() -> int | None:
        if api.run_state(run_id) in ("success", "failed"):
            raise StackFailure(f"run {run_id} ended before train wrote a checkpoint")
        pid = train_stage_pid(stack.processes["airflow-scheduler"].pid)
        return pid if pid and any(checkpoints.glob("mmsr-*.pt")) else None

    pid = wait_for("the train stage's first checkpoint", checkpointed_stage, timeout_s, every_s=0.5)
    os.kill(pid, signal.SIGKILL)
    log.info("SIGKILLed the train stage (pid %d) after %s", pid, [p.name for p in checkpoints.glob("*.pt")])
    state = api.wait_finished(run_id, timeout_s)
    tis = api.task_instances(run_id)
    train = tis["train"]
    check(state == "success", f"killed train: the run succeeded (state {state})")
    others = {task: ti["try_number"] for task, ti in tis.items() if task != "train"}
    check(set(others.values()) == {1}, f"killed train: every other task ran once {others}")
    check(
        train["state"] == "success" and train["try_number"] == 2,
        f"killed train: train succeeded on its retry (try {train['try_number']})",
    )
    text = api.task_log(run_id, "train", 2)
    check("resumed from" in text, "killed train: the retry resumed from the epoch checkpoint")


def check_healthy_rerun(api: AirflowApi, stack: Stack, timeout_s: float) -> None:
    """The same date again: every task succeeds on try 1 and the date keeps one partition."""
    run_id = "stack_rerun"
    api.trigger(run_id, GOOD_DATE)
    state = api.wait_finished(run_id, timeout_s)
    tis = api.task_instances(run_id)
    not_first = {task: (ti["state"], ti["try_number"]) for task, ti in tis.items()}
    check(state == "success", f"healthy rerun: the run succeeded (state {state})")
    check(
        all(ti["state"] == "success" and ti["try_number"] == 1 for ti in tis.values()),
        f"healthy rerun: every task succeeded on try 1 {not_first}",
    )
    check_gpu_tasks_never_overlap(tis)
    recommendations = stack.home / "warehouse" / DATASET / "recommendations"
    partitions = sorted(p.name for p in recommendations.iterdir())
    files = sorted(p.name for p in (recommendations / f"run_date={GOOD_DATE}").iterdir())
    check(
        partitions == [f"run_date={GOOD_DATE}"] and files == ["part-0.parquet"],
        f"same-date rerun: one partition for {GOOD_DATE} ({partitions}, {files})",
    )


def check_gpu_tasks_never_overlap(tis: dict[str, dict[str, Any]]) -> None:
    """The gpu pool (1 slot) serialises the GPU-capable tasks, the two embeds included."""
    moment = datetime.fromisoformat
    gpu = sorted(
        (moment(ti["start_date"]), moment(ti["end_date"]), task)
        for task, ti in tis.items()
        if ti.get("pool") == "gpu"
    )
    names = [task for _, _, task in gpu]
    check(
        set(names) == {"embed_text", "embed_image", "train", "recommend"},
        f"the GPU-capable tasks are in the gpu pool {names}",
    )
    overlaps = [(a[2], b[2]) for a, b in zip(gpu, gpu[1:], strict=False) if b[0] < a[1]]
    check(not overlaps, f"no two gpu-pool tasks ran at once (overlapping: {overlaps})")


#: run in a fresh interpreter: nothing of this process (settings, MLflow state) leaks in
_LOAD_CHAMPION = """
import json, sys
import mlflow, pandas as pd, pyarrow.parquet as pq
model = mlflow.pyfunc.load_model("models:/mmsr-demo@champion")
items = pq.read_table(sys.argv[1]).column("item_id").to_pylist()[:3]
out = model.predict(pd.DataFrame({"history": [items], "k": [5]}))
print(json.dumps({"rows": len(out), "k": len(out["item_ids"].iloc[0])}))
"""


def check_serving(stack: Stack) -> None:
    """The champion through the tracking server, its files through the server, the analytics view."""
    env = {k: v for k, v in stack.env().items() if not k.startswith(("MMSR_", "AIRFLOW"))}
    item_index = stack.home / "warehouse" / DATASET / "item_index.parquet"
    done = subprocess.run(
        [stack.python, "-c", _LOAD_CHAMPION, str(item_index)],
        env=env, cwd=stack.work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
    check(
        result == {"rows": 1, "k": 5},
        f"models:/mmsr-demo@champion loads through {stack.mlflow} in a fresh process and predicts "
        f"({result or done.stderr[-2000:]})",
    )
    alias = http(
        "GET", f"{stack.mlflow}/api/2.0/mlflow/registered-models/alias?name=mmsr-demo&alias=champion"
    )
    version = alias["model_version"]["version"]
    query = urllib.parse.urlencode({"name": "mmsr-demo", "version": version, "path": "MLmodel"})
    url = f"{stack.mlflow}/model-versions/get-artifact?{query}"
    with urllib.request.urlopen(url, timeout=30) as response:
        mlmodel = yaml.safe_load(response.read())
    check(
        "python_function" in mlmodel.get("flavors", {}),
        f"the champion's (version {version}) MLmodel downloads through the MLflow server",
    )
    import duckdb

    with duckdb.connect(str(stack.home / "analytics.duckdb"), read_only=True) as con:
        sequences = stack.home / "warehouse" / DATASET / "sequences.parquet"
        n_users = con.execute("SELECT count(*) FROM read_parquet(?)", [str(sequences)]).fetchone()[0]
        per_user = con.execute(
            "SELECT count(DISTINCT user_id), count(*) FROM latest_recommendations WHERE dataset = ?",
            [DATASET],
        ).fetchone()
    check(
        per_user[0] == n_users and per_user[1] > 0,
        f"latest_recommendations has rows for every one of the {n_users} users ({per_user})",
    )


def run_checks(stack: Stack, run_timeout_s: float) -> None:
    api = AirflowApi(stack.api, stack.secrets["admin"])
    wait_for(f"the DAG {DAG_ID} to be parsed", lambda: api.call("GET", f"/dags/{DAG_ID}"), 180)
    api.call("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    check_bad_date(api, run_timeout_s)
    check_killed_train(api, stack, run_timeout_s)
    check_healthy_rerun(api, stack, run_timeout_s)
    check_serving(stack)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, data) on success")
    parser.add_argument("--run-timeout-min", type=float, default=12.0, help="bound on each DAG run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mmsr-stack-"))
    work.chmod(0o755)  # the postgres user must reach its data folder inside
    stack = Stack(work)
    # a SIGTERM (CI timeout) ends like a failure: through the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ok = False
    try:
        stack.start()
        log.info("stack up after %.0f s", time.monotonic() - started)
        run_checks(stack, args.run_timeout_min * 60)
        ok = True
    except (StackFailure, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log.error("FAIL %s", exc)
    finally:
        stack.stop()
    log.info("stack test %s in %.0f s", "passed" if ok else "FAILED", time.monotonic() - started)
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log.info("logs and data kept in %s", work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
