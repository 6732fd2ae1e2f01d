"""The report's plots: matplotlib figures rendered to PNG and embedded as data URIs.

PNG at a modest resolution keeps a report with every plot well under a megabyte and
renders the same in every browser, with no script or server.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the nightly worker has no display
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 90
#: health figures plotted per night, with their axis titles
HEALTH_PANELS = (
    ("coverage_at_10", "coverage at 10"),
    ("coverage_at_20", "coverage at 20"),
    ("gini", "Gini of item exposure"),
    ("top_1pct_share", "slots on top 1 % items"),
    ("mean_popularity_percentile", "mean popularity percentile"),
    ("new_item_share", "slots on new items"),
    ("jaccard_at_20", "Jaccard@20 vs previous night"),
    ("users_served", "users served"),
)


def to_data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def model_metrics_plot(runs: Sequence[dict[str, Any]]) -> str | None:
    """MMSR's test metrics at 10 (solid) and the baselines' NDCG@10 (dashed) of every model version."""
    metrics = sorted(
        {
            k
            for r in runs
            for k, v in r.items()
            if isinstance(v, float)
            and (k.startswith("test_") and k.endswith("_at_10") or k.endswith("_test_ndcg_at_10"))
        }
    )
    if not metrics:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.6))
    versions = [r["model_version"] for r in runs]
    for name in metrics:
        values = [r.get(name) for r in runs]
        style = "-o" if name.startswith("test_") else "--."
        ax.plot(versions, [float("nan") if v is None else v for v in values], style, label=name, ms=4)
    for run in runs:
        if run.get("promotion") == "promoted":
            ax.axvline(run["model_version"], color="#bbb", lw=0.8, zorder=0)
    ax.set_xlabel("model version (grey line: promoted to champion)")
    ax.set_xticks(versions)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_data_uri(fig)


def health_plot(health: Sequence[dict[str, Any]]) -> str | None:
    """Small multiples of the health figures over nights; nights the gate stopped in red."""
    if not health:
        return None
    fig, axes = plt.subplots(2, 4, figsize=(12, 5), sharex=True)
    days = [row["run_date"] for row in health]
    failed = [not row.get("gate_passed") for row in health]
    for ax, (column, title) in zip(axes.ravel(), HEALTH_PANELS, strict=True):
        values = [float("nan") if row.get(column) is None else float(row[column]) for row in health]
        ax.plot(days, values, "-o", ms=3, color="#1f77b4")
        bad = [(d, v) for d, v, f in zip(days, values, failed, strict=True) if f]
        if bad:
            ax.plot(*zip(*bad, strict=True), "o", color="#d62728", ms=6, label="stopped by gate")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        _date_axis(ax, days)
    fig.autofmt_xdate()
    fig.tight_layout()
    return to_data_uri(fig)


def _date_axis(ax: Any, days: Sequence[Any]) -> None:
    """One tick per night for a short history, calendar ticks for a long one (never hours)."""
    if len(days) <= 8:
        ax.set_xticks(days)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    else:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def learning_curve_plot(curve: dict[str, list[tuple[int, float]]]) -> str | None:
    """Training loss and validation metrics at 10 per epoch of the served model (timings left out)."""
    if not curve:
        return None
    losses = {k: v for k, v in curve.items() if "loss" in k}
    others = {k: v for k, v in curve.items() if k.startswith("val_") and k.endswith("_at_10")}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, group, ylabel in ((axes[0], losses, "loss"), (axes[1], others, "validation metric")):
        for name, points in group.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], "-o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return to_data_uri(fig)
