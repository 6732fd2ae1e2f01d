"""The report as one self-contained HTML page: inline CSS, plots and thumbnails as data URIs.

Nothing is fetched when the page is opened (no script, no server, no network), so it
can be mailed, archived or opened from a file share. Every value is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import logging
from datetime import UTC, datetime
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

from pipeline.core.config import Settings
from pipeline.stages.report import plots
from pipeline.stages.report.data import ReportData, served_version

log = logging.getLogger(__name__)

THUMB_PX = 64
#: health columns in the table -> their headers; numbers as in ``_FORMATS``, other floats to 3 places
HEALTH_COLUMNS = {
    "run_date": "night", "published": "published", "users_served": "users", "users_short": "< k recs",
    "coverage_at_10": "cov@10", "coverage_at_20": "cov@20", "gini": "Gini", "top_1pct_share": "top 1 %",
    "mean_popularity_percentile": "pop. pct", "new_item_share": "new", "jaccard_at_20": "J@20",
    "model_version": "model", "test_ndcg_at_10": "test NDCG@10",
}  # fmt: skip
_FORMATS = {
    "users_served": "{:,}",
    "users_short": "{:,}",
    "model_version": "v{}",
    "test_ndcg_at_10": "{:.4f}",
}
CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1240px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
th{background:#f5f5f5} .num{text-align:right} .bad{color:#b00020;font-weight:600} .ok{color:#137333}
.thumb{width:48px;height:48px;object-fit:contain;background:#fafafa;border:1px solid #eee}
.noimg{display:inline-block;width:48px;height:48px;background:#f0f0f0}
.user{display:flex;gap:24px;margin-bottom:18px} .user>div{flex:1} img.plot{max-width:100%}
.muted{color:#777}
"""


@cache
def _thumbnail_cached(path: str, mtime_ns: int) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=75)
    except OSError as exc:
        log.warning("no thumbnail for %s: %s", path, exc)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(settings: Settings, image_ref: str | None) -> str | None:
    """A small JPEG data URI of a local image (or one the embed stage downloaded); never fetches."""
    from pipeline.stages.embed.image_source import Fetcher, parse_ref

    source = parse_ref(image_ref)
    if source.kind == "local":
        path = Path(source.location)
    elif source.kind == "remote":
        path = Fetcher(settings).cache_path(source.location)
    else:
        return None
    if not path.is_file():
        return None
    return _thumbnail_cached(str(path), path.stat().st_mtime_ns)


def _fmt(value: Any, pattern: str | None = None) -> str:
    """A cell's text: ``pattern``, else 3 decimals for a float; a dash for a missing value."""
    pattern = pattern or ("{:.3f}" if isinstance(value, float) else "{}")
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float) and value != value:  # NaN
        return "NaN"
    return escape(pattern.format(value))


def _img(uri: str | None, alt: str) -> str:
    if uri is None:
        return '<span class="noimg" title="no image"></span>'
    return f'<img class="thumb" src="{uri}" alt="{escape(alt)}">'


def _plot(uri: str | None, alt: str, empty: str) -> str:
    return (
        f'<img class="plot" src="{uri}" alt="{escape(alt)}">'
        if uri
        else f'<p class="muted">{escape(empty)}</p>'
    )


def _items_table(settings: Settings, rows: list[dict[str, Any]], extra: tuple[str, str, str] | None) -> str:
    head = "<tr><th>#</th><th></th><th>item</th><th>title</th>" + (f"<th>{extra[1]}</th>" if extra else "")
    body = []
    for n, row in enumerate(rows, 1):
        cell = f'<td class="num">{_fmt(row.get(extra[0]), extra[2])}</td>' if extra else ""
        body.append(
            f"<tr><td>{n}</td><td>{_img(thumbnail(settings, row.get('image_ref')), row['item_id'])}</td>"
            f"<td>{escape(row['item_id'])}</td><td>{_fmt(row.get('title'))}</td>{cell}</tr>"
        )
    return f"<table>{head}</tr>{''.join(body)}</table>"


def _header(data: ReportData) -> str:
    night = data.night
    if night is None:
        status = '<span class="muted">no health row for this night</span>'
    elif night.get("gate_passed"):
        status = '<span class="ok">passed the publish gate</span>'
    else:
        reasons = "; ".join(night.get("gate_failures") or [])
        published = "published anyway (gate disabled)" if night.get("published") else "NOT published"
        status = f'<span class="bad">stopped by the publish gate, {published}: {escape(reasons)}</span>'
    version = served_version(data)
    return (
        f"<h1>{escape(data.dataset)} · recommendations of {data.run_date}</h1>"
        f"<p>Night status: {status}. Served model: "
        f"{'v' + str(version) if version is not None else 'unknown'}. Generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</p>"
    )


def _health_section(data: ReportData) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in HEALTH_COLUMNS.values())
    rows = []
    for row in reversed(data.health):
        css = "" if row.get("gate_passed") else ' class="bad"'
        cells = "".join(f'<td class="num">{_fmt(row.get(c), _FORMATS.get(c))}</td>' for c in HEALTH_COLUMNS)
        rows.append(f"<tr{css}>{cells}</tr>")
    plot = _plot(plots.health_plot(data.health), "health metrics over nights", "no health rows yet")
    return (
        '<section id="health"><h2>Recommendation health over nights</h2>'
        f"{plot}<table><tr>{head}</tr>{''.join(rows)}</table>"
        '<p class="muted">Red: nights the publish gate stopped. Definitions: docs/pipeline.md.</p></section>'
    )


def _models_section(data: ReportData) -> str:
    columns = (
        "model_version",
        "trained_at",
        "promotion",
        "test_hr_at_10",
        "test_ndcg_at_10",
        "test_mrr_at_10",
    )
    head = "".join(f"<th>{c}</th>" for c in columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{_fmt(r.get(c), '{:.4f}' if c.startswith('test') else '{}')}</td>" for c in columns)
        + "</tr>"
        for r in reversed(data.model_runs)
    )
    plot = _plot(plots.model_metrics_plot(data.model_runs), "model metrics over versions", "no model metrics")
    return (
        '<section id="model-metrics"><h2>Model metrics over versions</h2>'
        f"{plot}<table><tr>{head}</tr>{rows}</table></section>"
    )


def _users_section(settings: Settings, data: ReportData) -> str:
    blocks = []
    for user, (history, recs) in data.users.items():
        blocks.append(
            f'<div class="user-block"><h3>user {escape(user)}</h3><div class="user">'
            f"<div><h4>latest history (newest first)</h4>{_items_table(settings, history, None)}</div>"
            f"<div><h4>top {len(recs)}</h4>{_items_table(settings, recs, ('score', 'score', '{:.3f}'))}</div>"
            "</div></div>"
        )
    body = "".join(blocks) or '<p class="muted">no users this night</p>'
    return f'<section id="sample-users"><h2>Sample users</h2>{body}</section>'


def render_page(settings: Settings, data: ReportData) -> str:
    """The whole report page as one HTML string."""
    curve = _plot(
        plots.learning_curve_plot(data.learning_curve),
        "learning curve",
        f"no per-epoch metrics logged for model v{served_version(data)}",
    )
    top = _items_table(settings, data.top_items, ("users", "users", "{:,}"))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(data.dataset)} recommendations {data.run_date}</title>"
        f"<style>{CSS}</style></head><body>"
        f"{_header(data)}{_health_section(data)}{_models_section(data)}"
        f'<section id="learning-curve"><h2>Learning curve of the served model</h2>{curve}</section>'
        f'<section id="top-items"><h2>Most recommended items</h2>{top}</section>'
        f"{_users_section(settings, data)}</body></html>\n"
    )
