"""Headless Chromium for tests: load a local HTML file, take a screenshot, dump the DOM.

Debian's ``chromium`` package (``.ci/run`` installs it). Without it a test skips,
unless ``MMSR_REQUIRE_CHROMIUM`` is set (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2000",
)
#: what a page that failed to load something, or threw, leaves in Chromium's log
LOAD_ERRORS = ("Failed to load resource", "net::ERR_", "Uncaught", "Not allowed to load local resource")


@dataclass
class Rendered:
    dom: str
    screenshot: Path
    log: str


def chromium() -> str:
    """The browser's path; skips (or fails under MMSR_REQUIRE_CHROMIUM) when it is not installed."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if found:
        return found
    message = "chromium is not installed (apt-get install chromium; .ci/run does it)"
    if os.environ.get("MMSR_REQUIRE_CHROMIUM"):
        pytest.fail(message)
    pytest.skip(message)


def render(page: Path, workdir: Path) -> Rendered:
    """Screenshot ``page`` and dump its DOM in two headless runs (one profile folder each)."""
    browser = chromium()
    url = page.resolve().as_uri()
    shot = workdir / "screenshot.png"
    logs = []
    for extra in ([f"--screenshot={shot}"], ["--dump-dom", "--enable-logging=stderr", "--v=0"]):
        profile = workdir / f"profile-{len(logs)}"
        done = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        logs.append(done.stderr)
    return Rendered(dom=done.stdout, screenshot=shot, log="\n".join(logs))
