"""The nightly HTML report: self-contained, every section, thumbnails embedded, `mmsr report` CLI."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from tiny_warehouse import spread, tiny_settings, write_candidate, write_tiny_warehouse
from typer.testing import CliRunner

from pipeline.app.cli import app
from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.publish import publish_night
from pipeline.stages.report import write_report
from pipeline.warehouse.model_runs import upsert_model_run

NIGHTS = (date(2026, 7, 1), date(2026, 7, 2))
SECTIONS = ("health", "model-metrics", "learning-curve", "top-items", "sample-users")


@pytest.fixture
def published(mmsr_home: Path) -> Settings:
    """Two published nights; three items with real local images, one with a broken one."""
    settings = tiny_settings(mmsr_home, report_sample_users=3)
    root = write_tiny_warehouse(settings)
    items = pq.read_table(root / "items.parquet").to_pylist()
    for n, item in enumerate(items):
        path = mmsr_home / "images" / f"{item['item_id']}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if n < 3:
            Image.new("RGB", (300, 200), (40 * n, 120, 200)).save(path)
        elif n == 3:
            path.write_bytes(b"not a jpeg")
        item["image_ref"] = str(path) if n < 4 else None
        item["title"] = f"<b>Title</b> of {item['item_id']}" if n == 5 else item["title"]
    pq.write_table(
        pa.Table.from_pylist(items, schema=pq.read_schema(root / "items.parquet")), root / "items.parquet"
    )
    for version, day in enumerate(NIGHTS, 1):
        upsert_model_run(
            settings, "tiny", version, {"test_ndcg_at_10": 0.1 * version, "promotion": "promoted"}
        )
        write_candidate(settings, day, spread(day, k=10))
        publish_night(settings, "tiny", day)
    return settings


def test_report_is_self_contained_with_every_section(published: Settings) -> None:
    report = write_report(published, "tiny")
    path = Path(report["path"])
    assert path == (published.home / "reports" / "tiny" / "run_date=2026-07-02" / "index.html").resolve()
    assert report["run_date"] == "2026-07-02" and report["bytes"] == path.stat().st_size < 5 * 2**20
    html = path.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "passed the publish gate" in html
    # nothing is fetched when the page opens: every src is a data URI, no script, no link
    assert re.findall(r'src="(?!data:)', html) == [] and "<script" not in html and "<link" not in html
    assert html.count('src="data:image/png;base64,') == 2  # health and model metrics plots
    assert "no per-epoch metrics logged for model v1" in html  # no MLflow run behind these versions
    thumbnails = html.count('class="thumb" src="data:image/jpeg;base64,')
    assert thumbnails > 0 and html.count('class="noimg"') > 0
    assert "&lt;b&gt;Title&lt;/b&gt;" in html and "<b>Title</b>" not in html  # titles are escaped
    users = re.findall(r"<h3>user (tiny-U\d+)</h3>", html)
    assert len(users) == 3 and len(set(users)) == 3
    # each sample user: latest history beside the top 10
    block = html.split(f"<h3>user {users[0]}</h3>")[1].split("<h3>")[0]
    assert "latest history" in block and "top 10" in block
    assert write_report(published, "tiny")["path"] == report["path"]  # a rerun replaces the page


def test_report_for_an_earlier_night_and_errors(published: Settings) -> None:
    report = write_report(published, "tiny", NIGHTS[0])
    assert report["run_date"] == "2026-07-01"
    assert "recommendations of 2026-07-01" in Path(report["path"]).read_text()
    with pytest.raises(PipelineError, match="no published recommendations for dataset 'nope'"):
        write_report(published, "nope")


def test_report_command_prints_the_path(published: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSR_HOME", str(published.home))
    result = CliRunner().invoke(app, ["report", "--dataset", "tiny", "--run-date", "2026-07-01"])
    assert result.exit_code == 0, result.output
    assert "run_date=2026-07-01/index.html" in result.output
    missing = CliRunner().invoke(app, ["report", "--dataset", "nope"])
    assert missing.exit_code == 1
