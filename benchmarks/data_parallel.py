"""Data-parallel training throughput: one process against N gloo (or NCCL) processes, side by side.

Runs the production trainer (``mmsr_model.training.train``, the default MMSR) for a fixed
number of epochs on a seeded sample of Beauty users with random codes and content
vectors (``benchmarks/speed.py``'s data), once per layout, and reports training
samples/s from the epochs' ``train_seconds`` (rank 0's clock: it includes the gradient
all-reduce and waiting for the slowest rank; validation is excluded). Layouts are
``PROCESSESxTHREADS`` and run in turn, ``--repeats`` times in alternating order, so that
each ratio compares runs taken minutes apart on the same machine. Run e.g.::

    .venv/bin/python benchmarks/data_parallel.py --layouts 1x1,1x2,2x1 --sample 4000 --repeats 2

Results go to ``benchmarks/results/data_parallel.{json,md}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any folder
from benchmarks.speed import DEFAULT_DATA, ROOT, load_beauty, make_data  # noqa: E402
from mmsr_model.training import TrainConfig, train  # noqa: E402
from pipeline.core.io import write_text_atomic  # noqa: E402

log = logging.getLogger("benchmarks.data_parallel")


def _worker(rank: int, size: int, threads: int, init: str, args: argparse.Namespace, out: str) -> None:
    """One rank: join the group (when ``size`` > 1), train, and (rank 0) write the epoch records."""
    torch.set_num_threads(threads)
    if size > 1:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(rank)
        torch.distributed.init_process_group(backend, init_method=init, rank=rank, world_size=size)
    try:
        sequences = load_beauty(
            args.data / "sequences" / "beauty" / "user_sequence.txt.gz", args.sample, args.seed
        )
        data = make_data(sequences, ["text"], args.seed)
        config = TrainConfig(
            model="mmsr",
            model_params={"modalities": ["text"]},
            batch_size=args.batch_size,
            max_epochs=args.epochs,
            patience=args.epochs,
            seed=args.seed,
            device=f"cuda:{rank}" if args.device.startswith("cuda") else "cpu",
        )
        _, history = train(config, data)
        if rank == 0:
            Path(out).write_text(
                json.dumps(
                    {
                        "epochs": history.epochs,
                        "train_samples": history.n_train_samples,
                        "items": data.n_items,
                    }
                )
            )
    finally:
        if size > 1:
            torch.distributed.destroy_process_group()


def run_layout(processes: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train once with ``processes`` ranks of ``threads`` torch threads; samples/s over all epochs."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        init = f"file://{Path(tmp) / 'rendezvous'}"
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        if processes == 1:
            _worker(0, 1, threads, init, args, str(out))
        else:
            mp.spawn(_worker, args=(processes, threads, init, args, str(out)), nprocs=processes, join=True)
        wall = time.perf_counter() - started
        result = json.loads(out.read_text())
    train_s = sum(e["train_seconds"] for e in result["epochs"])
    samples = result["train_samples"] * len(result["epochs"])
    return {
        "processes": processes,
        "threads_per_process": threads,
        "epochs": len(result["epochs"]),
        "train_samples_per_epoch": result["train_samples"],
        "items": result["items"],
        "train_seconds": round(train_s, 2),
        "train_samples_per_s": round(samples / train_s, 1),
        "wall_seconds": round(wall, 2),
        "final_train_loss": round(result["epochs"][-1]["train_loss"], 5),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per layout: median samples/s over the repeats, and its ratio to the first layout's."""
    layouts: dict[str, list[float]] = {}
    for run in runs:
        layouts.setdefault(f"{run['processes']}x{run['threads_per_process']}", []).append(
            run["train_samples_per_s"]
        )
    base = statistics.median(next(iter(layouts.values())))
    return [
        {
            "layout": name,
            "runs": len(rates),
            "median_samples_per_s": round(statistics.median(rates), 1),
            "ratio_to_first": round(statistics.median(rates) / base, 2),
        }
        for name, rates in layouts.items()
    ]


def write_results(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "data_parallel.json", json.dumps(report, indent=2) + "\n")
    lines = [
        "# Data-parallel training throughput (benchmarks/data_parallel.py)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['when']}; machine: {report['machine']}, {report['cpus']} CPUs, "
        f"device `{report['device']}`",
        f"- data: {report['runs'][0]['train_samples_per_epoch']} training samples per epoch over "
        f"{report['runs'][0]['items']} items (a seeded sample of Beauty users, random codes and content "
        "vectors); the default MMSR with text, batch "
        f"{report['batch_size']} per step over all ranks, {report['runs'][0]['epochs']} epoch(s) per run",
        "- samples/s from the trainer's own epoch clock on rank 0 (all-reduce and waits included, "
        "validation excluded); layouts as processes x torch threads per process",
        "",
        "| layout | runs | median train samples/s | ratio to the first layout |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s['layout']} | {s['runs']} | {s['median_samples_per_s']} | {s['ratio_to_first']} |"
        for s in report["summary"]
    ]
    lines += [
        "",
        "Every run, in the order it ran:",
        "",
        "| layout | train samples/s | train s | wall s | final train loss | load avg before / after |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['processes']}x{r['threads_per_process']} | {r['train_samples_per_s']} | "
        f"{r['train_seconds']} | {r['wall_seconds']} | {r['final_train_loss']} | "
        f"{r['load_average_1min_before']} / {r['load_average_1min_after']} |"
        for r in report["runs"]
    ]
    write_text_atomic(out / "data_parallel.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    parser.add_argument("--layouts", default="1x2,2x1", help="comma-separated PROCESSESxTHREADS")
    parser.add_argument("--sample", type=int, default=4000, help="Beauty users in the sample")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the layouts, alternating order")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    layouts = [tuple(int(n) for n in item.split("x")) for item in args.layouts.split(",")]
    runs = []
    for round_ in range(args.repeats):
        for processes, threads in layouts if round_ % 2 == 0 else layouts[::-1]:
            runs.append(run_layout(processes, threads, args))
            log.info("%s", json.dumps(runs[-1]))
    report = {
        "command": "python benchmarks/data_parallel.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "device": args.device,
        "batch_size": args.batch_size,
        "runs": runs,
        "summary": summarise(runs),
    }
    write_results(report, args.out)
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
