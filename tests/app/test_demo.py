"""What ``mmsr demo`` prints after the DAG run, read from a real published analytics DB.

The DAG run itself is covered by tests/test_dag_e2e.py (the same ``run_dag``); this checks
the summary: metrics beside the baselines, run id, version and alias, the DuckDB path and
three users' recommendations with titles.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
from rich.console import Console

from pipeline.app.demo import _print_summary
from pipeline.core.config import load_settings
from pipeline.core.io import write_parquet_atomic
from pipeline.orchestration.airflow_local import DagRunSummary
from pipeline.stages.publish import publish_analytics


def _write(table: dict, path: Path) -> None:
    write_parquet_atomic(pa.table(table), path)


def test_summary_shows_metrics_registry_and_titled_samples(mmsr_home: Path) -> None:
    settings = load_settings()
    folder = settings.dataset_dir("demo")
    items = {"item_id": ["i1", "i2", "i3"], "title": ["Teal linen scarf", "Amber canvas cap", "Ivory belt"]}
    _write(
        {
            **items,
            "brand": ["b"] * 3,
            "categories": [["c"]] * 3,
            "description": [""] * 3,
            "image_ref": [None] * 3,
        },
        folder / "items.parquet",
    )
    users = ["u1", "u1", "u2", "u2", "u3", "u3", "u4", "u4"]
    recs = {
        "run_date": pa.array([date(2024, 5, 1)] * 8, pa.date32()),
        "user_id": users,
        "rank": pa.array([1, 2] * 4, pa.int32()),
        "item_id": ["i1", "i2"] * 4,
        "score": pa.array([2.0, 1.0] * 4, pa.float32()),
        "model_name": ["mmsr-demo"] * 8,
        "model_version": pa.array([3] * 8, pa.int32()),
    }
    _write(recs, folder / "recommendations" / "run_date=2024-05-01" / "part-0.parquet")
    publish_analytics(settings)
    summary = DagRunSummary(
        dag_id="mmsr_nightly_demo",
        run_id="manual__x",
        run_date="2024-05-01",
        state="success",
        task_states={},
        reports={
            "train": {
                "run_id": "abc123",
                "registered_model": "mmsr-demo",
                "model_version": 3,
                "test": {"ndcg_at_10": 0.5123},
                "baselines": {"pop": {"ndcg_at_10": 0.0456}},
            },
            "promote": {"promoted": True, "reason": "beats v2"},
            "recommend": {"rows": 8, "users": 4},
            "publish_analytics": {"health": {"coverage_at_20": 0.5, "gini": 0.25, "gate_passed": True}},
            "report": {"path": "/abs/var/reports/demo/run_date=2024-05-01/index.html"},
        },
        seconds=12.0,
    )
    console = Console(record=True, width=160)
    _print_summary(settings, summary, 20.0, console)
    text = console.export_text()
    assert "0.5123" in text and "0.0456" in text and "pop" in text
    assert "abc123" in text and "mmsr-demo version 3 -> alias champion" in text
    assert str(settings.analytics_db.resolve()) in text
    assert "Teal linen scarf" in text and "Amber canvas cap" in text
    assert "u1" in text and "u3" in text and "u4" not in text  # three sample users
    assert "coverage@20 0.500, Gini 0.250, publish gate passed" in text
    assert "report:              /abs/var/reports/demo/run_date=2024-05-01/index.html" in text
