"""Another checkout's code against this one, alternating in one run: ratios taken under the same load.

Per round and checkout (the other one first): ``benchmarks/speed.py`` (training samples/s with
graph building and the step run serially, and its scoring users/s) and ``benchmarks/recommend.py
--phase score`` (the recommend stage end to end over every Beauty user) on one prepared
MMSR_HOME, whose champion the baseline trains (newer code reads an older checkout's model, not
the reverse). Each run is a fresh interpreter with that checkout first on ``PYTHONPATH``; the
1-minute load average is recorded with every figure. Results go to
``benchmarks/results/side_by_side.{json,md}``, never over the quiet-machine files.

    python benchmarks/side_by_side.py --baseline /path/to/older/checkout [--rounds 2] [--threads 1]

``--this-speed-args`` passes options to this checkout's ``speed.py`` only, to time the model an
older checkout trained by default (``--item-content none`` against a checkout from before content
joined the item vectors); ``--out NAME`` writes ``NAME.{json,md}`` instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMSR_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
SPEED_FIELDS = (
    "train_samples_per_s",
    "graph_build_cpu_ms_per_step",
    "model_step_cpu_ms",
    "inference_users_per_s",
)

log = logging.getLogger("benchmarks.side_by_side")


def _run(tree: Path, args: list[str], threads: int) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "OMP_NUM_THREADS": str(threads),
        "MMSR_SHARED_DATA": str(SHARED),
    }
    proc = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"{tree}: {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _speed(tree: Path, opts: argparse.Namespace, extra: list[str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="mmsr-side-speed-") as out:
        _run(
            tree,
            [
                "benchmarks/speed.py",
                "--data",
                str(SHARED),
                "--threads",
                str(opts.threads),
                "--steps",
                str(opts.steps),
                "--modality-sets",
                opts.modality_sets,
                "--infer-users",
                str(opts.infer_users),
                "--seed",
                str(opts.seed),
                "--out",
                out,
                *extra,
            ],
            opts.threads,
        )
        return list(json.loads((Path(out) / "speed.json").read_text()).values())


def _recommend(tree: Path, home: Path, threads: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    stdout = _run(tree, ["benchmarks/recommend.py", "--phase", "score", "--home", str(home)], threads)
    return {**json.loads(stdout.strip().splitlines()[-1]), "load_average_1min": round(load, 2)}


def _prepare(tree: Path, home: str, threads: int) -> str:
    """The baseline's ``recommend.py`` prepares the home (an older one, without a prepare-only phase,
    prepares it by one whole run of its own, whose timings are not used)."""
    script = tree / "benchmarks" / "recommend.py"
    phase = (
        ["--phase", "prepare"] if '"prepare"' in script.read_text() else ["--phase", "all", "--repeats", "1"]
    )
    return _run(tree, ["benchmarks/recommend.py", *phase, "--home", home], threads).strip()


def measure(opts: argparse.Namespace) -> dict[str, Any]:
    trees = {"baseline": opts.baseline.resolve(), "this": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="mmsr-side-home-") as home:
        log.info("preparing the recommend home: %s", _prepare(trees["baseline"], home, opts.threads))
        for round_ in range(1, opts.rounds + 1):
            for name, tree in trees.items():
                started = time.perf_counter()
                run = {
                    "round": round_,
                    "speed": _speed(tree, opts, opts.this_speed_args.split() if name == "this" else []),
                    "recommend": _recommend(tree, Path(home), opts.threads),
                }
                runs[name].append(run)
                log.info(
                    "round %d %s (%.0f s): %s", round_, name, time.perf_counter() - started, json.dumps(run)
                )
    return {
        "trees": {k: str(v) for k, v in trees.items()},
        "options": {k: str(v) for k, v in vars(opts).items()},
        "runs": runs,
    }


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Median per checkout of every figure, and this checkout's ratio to the baseline."""
    rows = []
    sets = [r["modalities"] for r in result["runs"]["this"][0]["speed"]]
    for i, mods in enumerate(sets):
        for field in SPEED_FIELDS:
            medians = {
                name: statistics.median(run["speed"][i][field] for run in runs)
                for name, runs in result["runs"].items()
            }
            rows.append({"figure": f"speed.py {'+'.join(mods) or 'id-only'}: {field}", **medians})
    for field in ("users_per_s", "stage_s", "stage_cpu_s", "peak_rss_mib"):
        medians = {}
        for name, runs in result["runs"].items():
            values = [
                run["recommend"]["users"] / run["recommend"]["stage_s"]
                if field == "users_per_s"
                else run["recommend"][field]
                for run in runs
            ]
            medians[name] = statistics.median(values)
        rows.append({"figure": f"recommend stage: {field}", **medians})
    for row in rows:
        row["ratio"] = row["this"] / row["baseline"] if row["baseline"] else float("nan")
    return rows


def write(result: dict[str, Any], rows: list[dict[str, Any]], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**result, "summary": rows}, indent=2) + "\n")
    loads = [
        s["load_average_1min"] for runs in result["runs"].values() for run in runs for s in run["speed"]
    ] + [run["recommend"]["load_average_1min"] for runs in result["runs"].values() for run in runs]
    lines = [
        "# Side by side: another checkout against this one (`benchmarks/side_by_side.py`)",
        "",
        f"Baseline `{result['trees']['baseline']}` against this checkout, alternating, "
        f"{result['options']['rounds']} round(s), medians; torch threads {result['options']['threads']}, "
        f"seed {result['options']['seed']}. 1-minute load average {min(loads):.1f}-{max(loads):.1f} "
        f"on {os.cpu_count()} CPU cores: "
        + (
            "quiet (no other job beside the benchmark's own process)."
            if max(loads) < int(result["options"]["threads"]) + 1
            else "**taken under load**, other jobs shared the cores, so absolute figures are pessimistic; "
            "the ratios compare runs under the same load."
        )
        + (
            f" This checkout's `speed.py` ran with `{extra}`."
            if (extra := result["options"].get("this_speed_args"))
            else ""
        ),
        "",
        "| figure | baseline | this | ratio |",
        "|---|---|---|---|",
        *(f"| {r['figure']} | {r['baseline']:.1f} | {r['this']:.1f} | {r['ratio']:.2f} |" for r in rows),
        "",
        f"Raw runs, commands and options: `{name}.json`.",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", type=Path, required=True, help="a checkout of the code to compare against"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (and OMP_NUM_THREADS)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per speed.py run")
    parser.add_argument("--modality-sets", default="text;text,image")
    parser.add_argument("--infer-users", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--this-speed-args", default="", help="options for this checkout's speed.py only")
    parser.add_argument("--out", default="side_by_side", help="results name under benchmarks/results")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = measure(opts)
    rows = summarise(result)
    write(result, rows, opts.out)
    print((RESULTS / f"{opts.out}.md").read_text())


if __name__ == "__main__":
    main()
