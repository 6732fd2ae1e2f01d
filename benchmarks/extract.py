"""Extract-stage benchmark: rows/s per raw format on ../shared/data, plus the Beauty target.

Each case runs in a fresh interpreter (``--case``) so its peak RSS (``ru_maxrss``, which
includes DuckDB's memory) and its wall time are its own. The parent records both the
stage's own time and the whole command's time (interpreter start and imports included).
Target: Beauty sequences (198,502 interactions) extracted, 5-cored and split in < 15 s
on the 2-core reference machine, peak memory < 1 GiB.

    .venv/bin/python benchmarks/extract.py [--repeats 3]   # writes benchmarks/results/extract.{json,md}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMSR_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
TARGET_S, TARGET_RSS_MIB = 15.0, 1024.0
COLUMNS = {
    "case": "case",
    "format": "format",
    "lines_read": "lines read",
    "interactions": "interactions",
    "users": "users",
    "items": "items",
    "stage_s_median": "stage s",
    "command_s_median": "command s",
    "lines_per_s": "lines/s",
    "rows_per_s": "rows/s",
    "peak_rss_mib": "peak RSS MiB",
}

# name -> (format, reviews, meta, images); paths relative to the shared data folder.
# The small samples run with the k-core off (the 2014 head has no 5-core left); the
# paper-scale sequences use the default 5-core, as in the target.
NO_KCORE = {
    "amazon2018_gift_cards",
    "amazon2018_magazine",
    "amazon2018_all_beauty",
    "amazon2014_music_head50",
}
CASES: dict[str, tuple[str, str | None, str | None, str | None]] = {
    "amazon2018_gift_cards": (
        "amazon2018",
        "amazon2018/gift_cards/Gift_Cards_5.json.gz",
        "amazon2018/gift_cards/meta_Gift_Cards.json.gz",
        "amazon2018/gift_cards/images",
    ),
    "amazon2018_magazine": (
        "amazon2018",
        "amazon2018/samples/Magazine_Subscriptions_5.json.gz",
        "amazon2018/samples/meta_Magazine_Subscriptions.json.gz",
        None,
    ),
    "amazon2018_all_beauty": ("amazon2018", "amazon2018/samples/All_Beauty_5.json.gz", None, None),
    "amazon2014_music_head50": (
        "amazon2014",
        "amazon2014/samples/reviews_Musical_Instruments_5.head50.json",
        None,
        None,
    ),
    # the 2023 sample has no reviews: only its meta file is staged (adapter + meta SQL are timed)
    "amazon2023_meta_only": (
        "amazon2023",
        None,
        "amazon2023/samples/meta_Health_and_Personal_Care.jsonl.gz",
        None,
    ),
    "sequences_beauty": (
        "sequences",
        "sequences/beauty/user_sequence.txt.gz",
        "sequences/beauty/item_text.txt.gz",
        None,
    ),
    "sequences_sports": (
        "sequences",
        "sequences/sports/user_sequence.txt.gz",
        "sequences/sports/item_text.txt.gz",
        None,
    ),
}


def _run_case(name: str, home: Path) -> dict:
    """Child process: run one case, return its counts, timings and peak RSS."""
    os.environ["MMSR_HOME"] = str(home)
    from pipeline.core.config import load_settings
    from pipeline.stages.extract import run_extract

    fmt, reviews, meta, images = CASES[name]
    settings = load_settings(kcore=0) if name in NO_KCORE else load_settings()
    start = time.perf_counter()
    if reviews is None:
        lines = _stage_meta_only(fmt, DATA / meta, home)
        out = {"lines_read": lines, "rows_staged": lines, "interactions": None, "users": None, "items": lines}
    else:
        report = run_extract(
            settings, name, fmt, DATA / reviews, meta and DATA / meta, images and DATA / images
        )
        out = {
            "lines_read": sum(f.lines for f in report.files),
            "rows_staged": sum(f.rows for f in report.files),
            "interactions": report.interactions,
            "users": report.users,
            "items": report.items,
            "timings_s": report.timings_s,
        }
    out["stage_s"] = time.perf_counter() - start
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _stage_meta_only(fmt: str, meta: Path, work: Path) -> int:
    import duckdb

    from pipeline.stages.extract.formats import get_adapter
    from pipeline.stages.extract.staging import META_SCHEMA, RejectLog, stage_file
    from pipeline.warehouse.queries import load_sql

    work.mkdir(parents=True, exist_ok=True)
    rejects = RejectLog(work / "rejects.jsonl")
    stats = stage_file(
        meta, "meta", get_adapter(fmt).meta(meta), META_SCHEMA, work / "meta.parquet", rejects, 0.01
    )
    rejects.close()
    con = duckdb.connect()
    (items,) = con.execute(load_sql("extract_meta"), {"meta": str(work / "meta.parquet")}).fetchone()
    con.close()
    return int(stats.lines) if items else 0


def _measure(name: str, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="mmsr-bench-") as home:
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--case", name, "--home", home],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["command_s"] = time.perf_counter() - start
            runs.append(result)
    best = min(runs, key=lambda r: r["command_s"])
    command = statistics.median(r["command_s"] for r in runs)
    stage = statistics.median(r["stage_s"] for r in runs)
    return {
        "case": name,
        "format": CASES[name][0],
        "lines_read": best["lines_read"],
        "interactions": best["interactions"],
        "users": best["users"],
        "items": best["items"],
        "stage_s_median": round(stage, 3),
        "command_s_median": round(command, 3),
        "lines_per_s": round(best["lines_read"] / stage),
        "rows_per_s": round(best["rows_staged"] / stage),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
        "phases_s": best.get("timings_s"),
        "kcore": 0 if name in NO_KCORE else "default (5)",
        "repeats": repeats,
    }


def _markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Extract benchmark",
        "",
        f"Machine: {meta['machine']}; {meta['cpus']} CPUs; load average at start {meta['loadavg']}; "
        f"commit {meta['commit']}; {meta['date']}.",
        "Median of the repeats; `stage` = `run_extract` alone, `command` = the whole child process",
        "(interpreter start and imports included); peak RSS = the child's `ru_maxrss` (DuckDB included).",
        "rows/s = rows the adapters staged (reviews + meta; a sequences line holds many) per stage second.",
        "The small samples are dominated by fixed costs (DuckDB start, Parquet writer set-up), not parsing.",
        "",
        "| " + " | ".join(COLUMNS.values()) + " |",
        "|---|---|" + "---:|" * (len(COLUMNS) - 2),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                "-" if r[key] is None else f"{r[key]:,}" if isinstance(r[key], int) else str(r[key])
                for key in COLUMNS
            )
            + " |"
        )
    beauty = next((r for r in rows if r["case"] == "sequences_beauty"), None)
    if beauty:
        ok = beauty["command_s_median"] < TARGET_S and beauty["peak_rss_mib"] < TARGET_RSS_MIB
        lines += [
            "",
            f"Beauty target (< {TARGET_S:.0f} s, < {TARGET_RSS_MIB:.0f} MiB): "
            f"command {beauty['command_s_median']} s, peak {beauty['peak_rss_mib']} MiB "
            f"-> {'met' if ok else 'NOT met'}. Phases: {beauty['phases_s']}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), help="(internal) run one case in this process")
    parser.add_argument("--home", type=Path, help="(internal) MMSR_HOME for --case")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.case:
        logging.disable(logging.INFO)
        print(json.dumps(_run_case(args.case, args.home)))
        return
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA} (set MMSR_SHARED_DATA)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "commit": commit.stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
    }
    rows = []
    for name in CASES:
        repeats = args.repeats if name == "sequences_beauty" else 1
        rows.append(_measure(name, repeats))
        logging.getLogger("benchmark").warning("%s: %s", name, rows[-1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "extract.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    (RESULTS / "extract.md").write_text(_markdown(meta, rows))
    print(_markdown(meta, rows))


if __name__ == "__main__":
    main()
