"""A plain (non-editable) install into a fresh venv carries what the stages read: SQL and the DAG file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


def test_fresh_venv_with_a_plain_install_runs_mmsr_extract(tmp_path: Path) -> None:
    source, venv, work = tmp_path / "src", tmp_path / "venv", tmp_path / "work"
    # build from a copy, so the build leaves nothing in the checkout
    ignore = shutil.ignore_patterns(".git", ".venv", "var", "build", "*.egg-info", "__pycache__", "tests")
    shutil.copytree(ROOT, source, ignore=ignore)
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    # the dependencies come from the test's environment (a path entry; its editable install stays out)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
          "--no-build-isolation", str(source)])  # fmt: skip
    assert (site / "pipeline" / "sql" / "extract_splits.sql").is_file()
    assert (site / "pipeline" / "orchestration" / "dags" / "mmsr_nightly.py").is_file()

    work.mkdir()
    lines = [f"U{u} " + " ".join(f"I{(u + j) % 9}" for j in range(5)) for u in range(12)]
    (work / "user_sequence.txt").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "MMSR_HOME": str(work / "home"), "MMSR_KCORE": "0"}
    env.pop("PYTHONPATH", None)
    where = _run([str(python), "-c", "import pipeline; print(pipeline.__file__)"], cwd=work, env=env)
    assert where.stdout.strip().startswith(str(site))
    _run(
        [str(venv / "bin" / "mmsr"), "extract", "--dataset", "t", "--format", "sequences"]
        + ["--reviews", "user_sequence.txt"],
        cwd=work,
        env=env,
    )
    assert (work / "home" / "warehouse" / "t" / "splits.parquet").is_file()
