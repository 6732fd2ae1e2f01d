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


def cost_cpu_s(row: dict[str, Any]) -> float:
    """The stage's CPU seconds for the whole input (the work itself; robust under load)."""
    return float(row.get("extrapolated_cpu_s", row["cpu_s"]))


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
        "| stage | rows in | rows out | wall s | CPU s | cost wall s | cost CPU s | peak RSS MiB "
        "| load 1 min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGE_ORDER:
        row = record.get(stage)
        if row is None:
            continue
        cells = [f"{row['rows_in']:,}", f"{row['rows_out']:,}", _fmt(row["wall_s"]), _fmt(row["cpu_s"])]
        cells += [
            _fmt(cost_s(row)),
            _fmt(cost_cpu_s(row)),
            f"{row['peak_rss_mib']:,.0f}",
            str(row["load_1min"]),
        ]
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


def _growth(results: dict[str, Any], small_size: str = "10", large_size: str = "100") -> list[str]:
    """Per stage: CPU cost, wall cost and peak RSS ratios between two sizes (CPU cost is judged)."""
    sizes = results["sizes"]
    if small_size not in sizes or large_size not in sizes:
        return [f"Growth {small_size}x -> {large_size}x: not measured ({large_size}x not run)."]
    lines = [
        f"| stage | CPU cost {small_size}x -> {large_size}x (target <= {TIME_TARGET:g}x) | wall cost ratio "
        f"| peak RSS ratio (target <= {RSS_TARGET:g}x) | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for stage in STAGE_ORDER:
        small, large = sizes[small_size].get(stage), sizes[large_size].get(stage)
        if not small or not large:
            continue
        cpu_ratio = cost_cpu_s(large) / cost_cpu_s(small)
        wall_ratio = cost_s(large) / cost_s(small)
        rss_ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
        ok = cpu_ratio <= TIME_TARGET and rss_ratio <= RSS_TARGET
        verdict = "met" if ok else "NOT met"
        lines.append(f"| {stage} | {cpu_ratio:.1f}x | {wall_ratio:.1f}x | {rss_ratio:.1f}x | {verdict} |")
    return lines


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for stage in STAGE_ORDER:
        points = [
            (rec["extract"]["rows_out"], cost_cpu_s(rec[stage]), rec[stage]["peak_rss_mib"])
            for rec in (results["sizes"][s] for s in _sizes(results))
            if stage in rec and "extract" in rec
        ]
        if not points:
            continue
        xs, times, rss = zip(*points, strict=True)
        time_ax.plot(xs, times, marker="o", label=stage)
        rss_ax.plot(xs, rss, marker="o", label=stage)
    drawn = time_ax.get_lines()
    if drawn:  # slope 1 through the smallest size's slowest stage: a linear stage runs parallel to it
        x0 = min(min(line.get_xdata()) for line in drawn)
        y0 = max(line.get_ydata()[0] for line in drawn)
        time_ax.plot([x0, 100 * x0], [y0, 100 * y0], "k:", label="linear (slope 1)")
    time_ax.set(xscale="log", yscale="log", xlabel="interactions after 5-core", ylabel="CPU s (whole input)")
    rss_ax.set(xscale="log", yscale="log", xlabel="interactions after 5-core", ylabel="peak RSS MiB")
    time_ax.set_title("CPU cost per stage (whole input)")
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
        "Cost = the stage's time for the whole input, in wall and in CPU seconds (growth is judged on CPU",
        "seconds: wall time under this load varies 2-4x between runs). Where only part was timed the cost",
        "is extrapolated:",
        "",
    ]
    lines += [f"- `{stage}`: {note}." for stage, note in NOTES.items()]
    lines += ["", "## Per size", ""]
    for size in _sizes(results):
        lines += [*_stage_table(size, results["sizes"][size]), ""]
    lines += ["## Growth", "", *_growth(results, "1", "10"), "", *_growth(results), ""]
    lines += ["![cost against size](scale.png)", ""]
    lines += results.get("findings", [])
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "scale.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(out / "scale.md", markdown(results))
    if any("extract" in rec for rec in results["sizes"].values()):
        _plot(results, out / "scale.png")
