"""The scale benchmark's results: ``scale.json`` (raw), ``scale.md`` (tables, growth check), ``scale.png``.

A stage's cost at a size is its wall time, or, where only part of the work was timed
(encoder subset, training steps, capped validation and recommend users), the time
extrapolated to the whole; the growth check compares 10x with 100x.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.io import write_text_atomic

TIME_TARGET, RSS_TARGET = 12.0, 3.0
STAGE_ORDER = ("extract", "embed_encode", "embed_import", "codes", "train", "validation", "recommend")
NOTES = {
    "embed_encode": "real MiniLM (`embed_text`) on 1 item, then on the first items; cost = the 1-item run "
    "(model load) + the per-item difference x items",
    "embed_import": "seeded random unit vectors (384-d) for every item, through `--import-features`",
    "train": "warehouse read + cache + steps x steps per epoch (one epoch of every train prefix)",
    "validation": "warehouse read + capped users' ranking time x valid users / capped",
    "recommend": "`run_recommend` on copies of the user tables holding the first N/4 and N users (same "
    "items and champion): fixed part + per-user difference x users; its peak RSS is the N-user run's",
}


def load_results(out: Path) -> dict[str, Any]:
    path = out / "scale.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.setdefault("sizes", {})
    return results


def cost_s(row: dict[str, Any]) -> float:
    """The stage's time for the whole input: measured, or extrapolated from the timed part."""
    return float(row.get("extrapolated_s", row["wall_s"]))


def _sizes(results: dict[str, Any]) -> list[str]:
    return sorted(results["sizes"], key=float)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _stage_table(size: str, record: dict[str, Any]) -> list[str]:
    interactions = record.get("extract", {}).get("rows_out")
    lines = [
        f"### {size}x Beauty" + (f": {interactions:,} interactions after the 5-core" if interactions else ""),
        "",
        f"Generated: {record['generate']['interactions']:,} reviews of {record['generate']['users']:,} users "
        f"on {record['generate']['items']:,} items ({record['generate']['items_without_image']:,} without "
        f"an image), {record['generate']['reviews_mib']} + {record['generate']['meta_mib']} MiB JSONL, in "
        f"{record['generate']['wall_s']} s. Load at start: `{record['uptime_start']}`.",
        "",
        "| stage | rows in | rows out | wall s | CPU s | cost s (whole input) | peak RSS MiB | load 1 min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGE_ORDER:
        row = record.get(stage)
        if row is None:
            continue
        cells = [f"{row['rows_in']:,}", f"{row['rows_out']:,}", _fmt(row["wall_s"]), _fmt(row["cpu_s"])]
        cells += [_fmt(cost_s(row)), f"{row['peak_rss_mib']:,.0f}", str(row["load_1min"])]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    train = record.get("train")
    if train:
        lines += [
            "",
            f"Train: {train['n_items']:,} items; warehouse read {train['load_s']:.1f} s, "
            f"cache {train['cache_s']:.1f} s, {train['step_s'] * 1000:,.0f} ms per step of "
            f"{train['batch_size']} ({train['samples_per_s']:,.0f} samples/s over {train['timed_steps']} "
            f"steps), registration {train['register_s']:.1f} s.",
        ]
    return lines


def _growth(results: dict[str, Any]) -> list[str]:
    sizes = results["sizes"]
    if "10" not in sizes or "100" not in sizes:
        return ["Growth check 10x -> 100x: not measured (100x not run)."]
    lines = [
        f"| stage | time 10x -> 100x (target <= {TIME_TARGET:g}x) | peak RSS 10x -> 100x "
        f"(target <= {RSS_TARGET:g}x) | verdict |",
        "|---|---:|---:|---|",
    ]
    for stage in STAGE_ORDER:
        small, large = sizes["10"].get(stage), sizes["100"].get(stage)
        if not small or not large:
            continue
        time_ratio = cost_s(large) / cost_s(small)
        rss_ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
        ok = time_ratio <= TIME_TARGET and rss_ratio <= RSS_TARGET
        lines.append(f"| {stage} | {time_ratio:.1f}x | {rss_ratio:.1f}x | {'met' if ok else 'NOT met'} |")
    return lines


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for stage in STAGE_ORDER:
        points = [
            (rec["extract"]["rows_out"], cost_s(rec[stage]), rec[stage]["peak_rss_mib"])
            for rec in (results["sizes"][s] for s in _sizes(results))
            if stage in rec and "extract" in rec
        ]
        if not points:
            continue
        xs, times, rss = zip(*points, strict=True)
        time_ax.plot(xs, times, marker="o", label=stage)
        rss_ax.plot(xs, rss, marker="o", label=stage)
    if any(True for _ in time_ax.lines):
        x0 = min(min(line.get_xdata()) for line in time_ax.lines)
        for ax, top in ((time_ax, max(max(line.get_ydata()) for line in time_ax.lines)),):
            ax.plot([x0, x0 * 100], [top / 100, top], "k:", label="linear (slope 1)")
    time_ax.set(xscale="log", yscale="log", xlabel="interactions after 5-core", ylabel="cost s (whole input)")
    rss_ax.set(xscale="log", yscale="log", xlabel="interactions after 5-core", ylabel="peak RSS MiB")
    time_ax.set_title("time (under load, 2 shared cores)")
    rss_ax.set_title("peak RSS per stage process")
    time_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(results: dict[str, Any]) -> str:
    settings = results.get("settings", {})
    lines = [
        "# Scale benchmark (`benchmarks/scale.py`)",
        "",
        "Seeded synthetic Amazon-2023 reviews + meta (`benchmarks/scale_data.py`: power-law item popularity,",
        "5-core-like histories, timestamps, titles and descriptions, 15% of items without an image; image",
        "URLs never fetched) at multiples of Beauty, through the real stages, each in its own interpreter;",
        "wall, CPU (user + system) and peak RSS from `os.wait4` on that process (DuckDB and torch threads",
        "included). **Taken under load**: 2 CPU cores shared with two long training jobs (see each row's",
        "load average and `uptime`), `OMP_NUM_THREADS=1`, torch 1 thread; wall times are upper bounds, CPU",
        "seconds are the work itself. Model: default MMSR (d=128, 1 layer, full softmax), text codes only,",
        "CPU, untrained weights for validation and recommend (their cost does not depend on the weights).",
        f"Settings: {json.dumps(settings)}.",
        "",
        "Cost s = the time for the whole input. Where only part was timed it is extrapolated:",
        "",
    ]
    lines += [f"- `{stage}`: {note}." for stage, note in NOTES.items()]
    lines += ["", "## Per size", ""]
    for size in _sizes(results):
        lines += [*_stage_table(size, results["sizes"][size]), ""]
    lines += ["## Growth 10x -> 100x", "", *_growth(results), "", "![cost against size](scale.png)", ""]
    lines += results.get("findings", [])
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "scale.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(out / "scale.md", markdown(results))
    if any("extract" in rec for rec in results["sizes"].values()):
        _plot(results, out / "scale.png")
