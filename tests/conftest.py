"""Shared fixtures: a temporary MMSR_HOME per test and the real Amazon data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("MMSR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes under its own MMSR_HOME and never fetches remote images."""
    home = tmp_path / "mmsr_home"
    monkeypatch.setenv("MMSR_HOME", str(home))
    monkeypatch.setenv("MMSR_IMAGE_DOWNLOAD", "false")
    monkeypatch.delenv("MMSR_CONFIG", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture
def mmsr_home(_isolated_home: Path) -> Path:
    return _isolated_home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Amazon files from ../shared/data; skips the test when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Amazon data not found at {SHARED_DATA} (set MMSR_SHARED_DATA)")
    return SHARED_DATA
