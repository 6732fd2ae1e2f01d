"""Recommend-stage benchmark: every Beauty user, top-20, end to end including the Parquet write.

Set-up (not timed): the real Beauty sequences are extracted with the extract stage;
text codes are SYNTHETIC (seeded random, c=30, k=3 per item, the public Beauty run's
shape: the graph has the same number of nodes and edges as with real codes), and so are
the 384-d text vectors whose projection the default MMSR adds to each item's vector; an
UNTRAINED default-size MMSR (d=128, max_len 50) is registered and made champion
directly. Scoring costs the same for trained and untrained weights.

Timed, in a fresh interpreter per repeat (``--phase score``): ``run_recommend``
from loading the champion out of the MLflow registry to the renamed Parquet
partition. Peak memory is that interpreter's ``ru_maxrss`` (imports included).
Target: all 22,363 users in < 60 s on the 2-core reference machine.

``--report`` then times, in one more fresh interpreter (``--phase report``), the
publish gate on that night (``publish_night``: health SQL, gate, move, views) and
``mmsr report`` (``write_report``; target < 30 s and < 5 MB). ``--repeats 0 --report``
with a prepared ``--home --reuse`` times only those and keeps the scoring figures.

    .venv/bin/python benchmarks/recommend.py [--repeats 2] [--device cpu] [--home DIR [--reuse]] [--report]
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
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMSR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "sequences" / "beauty"
RESULTS = ROOT / "benchmarks" / "results"
DATASET, TARGET_S, SEED = "beauty", 60.0, 2023
REPORT_TARGET_S, REPORT_TARGET_MB = 30.0, 5.0
RUN_DATE = date(2026, 1, 1)

log = logging.getLogger("benchmarks.recommend")


def _synthetic_codes(home: Path, c: int = 30, k: int = 3, dim: int = 384) -> None:
    """Seeded random text codes, written by the codes stage's own table writer."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.warehouse.codes_table import item_codes_rows, write_centres, write_item_codes

    root = home / "warehouse" / DATASET
    items = pq.read_table(root / "item_index.parquet").sort_by("item_idx")["item_id"].to_pylist()
    rng = np.random.default_rng(SEED)
    write_centres(root / "codes", "text", rng.normal(size=(c, dim)).astype(np.float32))
    codes = np.argsort(rng.random((len(items), c)), axis=1)[:, :k]
    distances = np.sort(rng.random((len(items), k)), axis=1)
    write_item_codes(root / "codes", [item_codes_rows(items, "text", codes, distances)])


def _synthetic_text_vectors(home: Path, dim: int = 384) -> None:
    """Seeded random text vectors for every item, written by the embed stage's own table writer:
    the default MMSR adds their projection to each item's vector, which scoring pays for."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.stages.embed.store import Embeddings, content_hash, write_embeddings

    root = home / "warehouse" / DATASET
    items = pq.read_table(root / "items.parquet", columns=["item_id"])["item_id"].to_pylist()
    vectors = np.random.default_rng(SEED + 1).normal(size=(len(items), dim)).astype(np.float32)
    emb = Embeddings(
        items, "synthetic:random", [content_hash(i) for i in items], vectors, [None] * len(items)
    )
    write_embeddings(emb, root / "embeddings" / "text.parquet")


def _prepare(home: Path) -> dict:
    """Extract Beauty, write codes and text vectors, register an untrained MMSR as champion."""
    os.environ["MMSR_HOME"] = str(home)
    import mlflow
    from mlflow.tracking import MlflowClient

    from mmsr_model.registry import build_model
    from pipeline.core.config import load_settings
    from pipeline.serving.registry import CHAMPION, log_pyfunc, registered_name, setup_mlflow
    from pipeline.stages.extract import run_extract
    from pipeline.stages.train.config import train_config
    from pipeline.warehouse.dataset import load_sequence_data
    from pipeline.warehouse.model_runs import upsert_model_run

    settings = load_settings()
    extract = run_extract(
        settings, DATASET, "sequences", DATA / "user_sequence.txt.gz", DATA / "item_text.txt.gz"
    )
    _synthetic_codes(home)
    _synthetic_text_vectors(home)
    data, _ = load_sequence_data(settings, DATASET)
    model = build_model("mmsr", data, **train_config(settings).model_params)
    setup_mlflow(settings, DATASET)
    with mlflow.start_run(run_name="benchmark-untrained") as run:
        version = log_pyfunc(model, settings.dataset_dir(DATASET) / "item_index.parquet", DATASET)
        for epoch in range(1, 11):  # SYNTHETIC curve: the report's MLflow lookup costs what a real one does
            mlflow.log_metrics(
                {"epoch_train_loss": 9.0 / epoch, "epoch_val_ndcg_at_10": 0.01 * epoch}, step=epoch
            )
    MlflowClient().set_registered_model_alias(registered_name(DATASET), CHAMPION, str(version))
    upsert_model_run(settings, DATASET, version, {"run_id": run.info.run_id, "promotion": "promoted"})
    return {"users": extract.users, "items": extract.items, "interactions": extract.interactions}


def _cpu_s() -> float:
    """User + system CPU seconds of this process (all threads): contention-free work measure."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _score(home: Path, k: int, device: str) -> dict:
    """Child process: one timed ``run_recommend``."""
    os.environ["MMSR_HOME"] = str(home)
    from pipeline.core.config import load_settings
    from pipeline.stages.recommend import run_recommend

    settings = load_settings(model={"device": device})
    cpu_before = _cpu_s()
    started = time.perf_counter()
    report = run_recommend(settings, DATASET, RUN_DATE, k)
    seconds = time.perf_counter() - started
    return {
        "stage_s": seconds,
        "stage_cpu_s": _cpu_s() - cpu_before,
        "users": report.users,
        "rows": report.rows,
        "batch_users": settings.recommend_batch_users,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parquet_mib": Path(report.path).stat().st_size / 2**20,
    }


def _report(home: Path, k: int, device: str) -> dict:
    """Child process: the publish gate on the scored night, then the HTML report, each timed."""
    os.environ["MMSR_HOME"] = str(home)
    from pipeline.core.config import load_settings
    from pipeline.stages.publish import publish_night
    from pipeline.stages.recommend import run_recommend
    from pipeline.stages.report import write_report

    settings = load_settings(model={"device": device})
    if not any(settings.pending_partition(DATASET, RUN_DATE).glob("*.parquet")):
        run_recommend(settings, DATASET, RUN_DATE, k)  # untimed: the night to gate and report
    started = time.perf_counter()
    published = publish_night(settings, DATASET, RUN_DATE)
    publish_s = time.perf_counter() - started
    cpu_before, started = _cpu_s(), time.perf_counter()
    report = write_report(settings, DATASET, RUN_DATE)
    return {
        "publish_s": publish_s,
        "gate_passed": published["health"]["gate_passed"],
        "report_s": time.perf_counter() - started,
        "report_cpu_s": _cpu_s() - cpu_before,
        "report_mib": report["bytes"] / 2**20,
        "path": report["path"],
        "load_avg_5m": os.getloadavg()[1],
    }


def _child(home: Path, phase: str, k: int, device: str) -> dict:
    """Run one ``--phase`` in a fresh interpreter and return its JSON line."""
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--home", str(home), "--k", str(k), "--device", device],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _time_report_command(home: Path) -> float:
    """Wall seconds of the whole ``mmsr report`` command: interpreter start, imports, the report."""
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.app.cli",
            "report",
            "--dataset",
            DATASET,
            "--run-date",
            str(RUN_DATE),
        ],
        env={**os.environ, "MMSR_HOME": str(home)},
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - started


def _measure(home: Path, k: int, device: str, repeats: int) -> list[dict]:
    runs = []
    for i in range(repeats):
        started = time.perf_counter()
        run = _child(home, "score", k, device)
        run["command_s"] = time.perf_counter() - started
        run["load_avg_5m"] = os.getloadavg()[1]
        log.info(
            "repeat %d: %.1f s stage, %.1f s command, %.0f MiB",
            i + 1,
            run["stage_s"],
            run["command_s"],
            run["peak_rss_mib"],
        )
        runs.append(run)
    return runs


def _write_results(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recommend.json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    lines = [
        "# Recommend benchmark (`benchmarks/recommend.py`)",
        "",
        f"All {s['users']:,} Beauty users, top-{result['k']}, `run_recommend` end to end (champion load from",
        "the MLflow registry, batched scoring with seen items masked, Parquet write + rename), in a fresh",
        "interpreter per repeat. Model: UNTRAINED default-size MMSR (d=128, max_len 50) with synthetic",
        "text codes (c=30, k=3) and synthetic 384-d text vectors (projected into every item's vector);",
        "scoring cost does not depend on the weights' values.",
        "",
        "| device | repeats | stage s (median) | stage CPU s | command s (median) | users/s | peak RSS MiB "
        "| rows | Parquet MiB |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['device']} | {len(result['runs'])} | {s['stage_s_median']:.1f} "
        f"| {s['stage_cpu_s_median']:.1f} | {s['command_s_median']:.1f} | {s['users_per_s']:,.0f} "
        f"| {s['peak_rss_mib']:.0f} "
        f"| {s['rows']:,} | {s['parquet_mib']:.1f} |",
        "",
        f"Target < {TARGET_S:.0f} s: **{'met' if s['stage_s_median'] < TARGET_S else 'NOT met'}**. "
        f"Machine: {result['machine']}; {result['note']}; 5-minute load average up to "
        f"{s['load_avg_5m']:.1f}. Stage CPU s is user + system time of all threads: the work itself.",
        "",
    ]
    if "report" in result:
        r = result["report"]
        met = r["command_s"] < REPORT_TARGET_S and r["report_mib"] < REPORT_TARGET_MB
        lines += [
            "## Publish gate and nightly report on that night",
            "",
            "`publish_night` (health SQL over the night's rows and the tables, gate, rename, views) and",
            "`write_report` (views, matplotlib import and plots, MLflow lookup of the learning curve, HTML),",
            "timed in one fresh interpreter; `mmsr report` command s is the whole CLI run (interpreter start",
            "and imports included). The learning curve is 10 SYNTHETIC epochs logged by the benchmark (the",
            "champion is untrained); it has no test metrics. Beauty has no images: thumbnails are",
            "placeholders.",
            "",
            "| publish gate s | report s | report CPU s | `mmsr report` command s | report MB "
            "| 5-min load average |",
            "|---|---|---|---|---|---|",
            f"| {r['publish_s']:.1f} | {r['report_s']:.1f} | {r['report_cpu_s']:.1f} | {r['command_s']:.1f} "
            f"| {r['report_mib']:.2f} | {r['load_avg_5m']:.1f} |",
            "",
            f"Target `mmsr report` < {REPORT_TARGET_S:.0f} s and < {REPORT_TARGET_MB:.0f} MB: "
            f"**{'met' if met else 'NOT met'}**.",
            "",
        ]
    (RESULTS / "recommend.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", choices=["all", "prepare", "score", "report"], default="all")
    parser.add_argument("--home", type=Path, default=None, help="MMSR_HOME to use (default: a temp folder)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="--home is already prepared: only time the scoring (and the report)",
    )
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="scoring repeats; 0 keeps the stored ones")
    parser.add_argument("--report", action="store_true", help="then time the publish gate and the report")
    parser.add_argument("--note", default="2 CPU cores shared with other jobs (timings are upper bounds)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.phase == "prepare":  # only set up --home (other checkouts then time --phase score on it)
        print(json.dumps(_prepare(args.home)))
        return
    if args.phase != "all":
        phase = _score if args.phase == "score" else _report
        print(json.dumps(phase(args.home, args.k, args.device)))
        return
    if not (DATA / "user_sequence.txt.gz").is_file():
        raise SystemExit(f"Beauty sequences not found under {DATA} (set MMSR_SHARED_DATA)")
    with tempfile.TemporaryDirectory(prefix="mmsr-bench-recommend-") as tmp:
        home = args.home or Path(tmp)
        started = time.perf_counter()
        dataset = {} if args.reuse else _prepare(home)
        log.info("prepared %s in %.1f s", dataset, time.perf_counter() - started)
        runs = _measure(home, args.k, args.device, args.repeats)
        report = _child(home, "report", args.k, args.device) if args.report else None
        if report is not None:
            report["command_s"] = _time_report_command(home)
    stored = RESULTS / "recommend.json"
    result = _summarise(runs, args, dataset) if runs else json.loads(stored.read_text())
    if report is not None:
        log.info("publish gate %.1f s, report %.1f s", report["publish_s"], report["report_s"])
        result["report"] = {k: v for k, v in report.items() if k != "path"}
    _write_results(result)
    log.info("%s", json.dumps(result["summary"]))


def _summarise(runs: list[dict], args: argparse.Namespace, dataset: dict) -> dict:
    stage = statistics.median(r["stage_s"] for r in runs)
    return {
        "k": args.k,
        "device": args.device,
        "dataset": dataset or {"users": runs[0]["users"], "prepared": "reused --home"},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "note": args.note,
        "runs": runs,
        "summary": {
            "users": runs[0]["users"],
            "rows": runs[0]["rows"],
            "stage_s_median": stage,
            "stage_cpu_s_median": statistics.median(r["stage_cpu_s"] for r in runs),
            "command_s_median": statistics.median(r["command_s"] for r in runs),
            "users_per_s": runs[0]["users"] / stage,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "parquet_mib": runs[0]["parquet_mib"],
            "load_avg_5m": max(r["load_avg_5m"] for r in runs),
        },
    }


if __name__ == "__main__":
    main()
