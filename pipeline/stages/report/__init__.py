"""Report stage: the nightly static HTML report analysts open in the morning.

``write_report`` reads the published views (``data``), draws the plots (``plots``) and
writes one self-contained page (``page``) to
``MMSR_HOME/reports/<dataset>/run_date=DAY/index.html`` atomically.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Any

from pipeline.core.config import Settings
from pipeline.core.io import write_text_atomic

log = logging.getLogger(__name__)


def write_report(settings: Settings, dataset: str, run_date: date | None = None) -> dict[str, Any]:
    """Write the report of ``dataset``'s night ``run_date`` (default: its latest published night)."""
    from pipeline.stages.report.data import read_report_data
    from pipeline.stages.report.page import render_page

    started = time.perf_counter()
    data = read_report_data(settings, dataset, run_date)
    html = render_page(settings, data)
    path = settings.report_file(dataset, data.run_date)
    write_text_atomic(path, html)
    report = {
        "dataset": dataset,
        "run_date": data.run_date.isoformat(),
        "path": str(path.resolve()),
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("report for %s %s: %s (%.0f KiB)", dataset, data.run_date, path, report["bytes"] / 1024)
    return report
