"""MMSR speed on the Beauty sequences: training samples/s, graph-building share, inference users/s.

Times a few hundred training steps (not a whole epoch) and extrapolates one epoch of
all training prefixes (leave-one-out: every prefix target except the last two items).
A step is the production one: batches come from ``mmsr_model.batching`` in the fit
loop's first-epoch order and the optimisation is ``mmsr_model.fitting.train_step``
(Adam with TrainConfig's defaults, autocast on CUDA).
Codes and content vectors are RANDOM (c=30, k=3 per item and modality; 384-d vectors):
speed depends on graph and table sizes, not on what the codes and vectors mean. Run e.g.::

    .venv/bin/python benchmarks/speed.py --device cpu --threads 2 --steps 200
    .venv/bin/python benchmarks/speed.py --sample 2000 --steps 20   # quick CI-sized run

Each row also says how far the model step and the scoring are from their arithmetic
(``benchmarks/arithmetic.py``: FLOPs counted on one step and on the scored users, against this
machine's float32 GEMM peak with the same threads). ``--loss sampled_softmax`` times that
objective (its negatives' rows of the item table only) instead of the full softmax;
``--content-dim K`` keeps the content vectors' top K principal axes (MMSR's ``content_dim``,
by default the model's; ``all`` keeps every dimension); ``--item-content none`` leaves content out
of the item vectors (code nodes only: the model the pipeline trained before content joined them).

Results go to ``benchmarks/results/speed.{json,md}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any folder
from benchmarks.arithmetic import count_flops, gemm_peak_gflops  # noqa: E402
from mmsr_model.batching import batches, build_batch, epoch_order  # noqa: E402
from mmsr_model.config import MMSRConfig  # noqa: E402
from mmsr_model.data import SequenceData, TargetSet  # noqa: E402
from mmsr_model.device import resolve_device  # noqa: E402
from mmsr_model.fitting import make_trainee, train_step  # noqa: E402
from mmsr_model.graph import GraphBatch  # noqa: E402
from mmsr_model.inference import top_k  # noqa: E402
from mmsr_model.mmsr import MMSR  # noqa: E402
from mmsr_model.objectives import Objective  # noqa: E402
from mmsr_model.training import TrainConfig  # noqa: E402
from pipeline.core.io import write_text_atomic  # noqa: E402

log = logging.getLogger("benchmarks.speed")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("MMSR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def load_beauty(path: Path, sample: int | None, seed: int) -> list[np.ndarray]:
    """Item-id sequences (dense ids) from ``user_sequence.txt.gz``; optionally a user sample."""
    ids: dict[str, int] = {}
    sequences = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            asins = line.split()[1:]
            sequences.append(np.fromiter((ids.setdefault(a, len(ids)) for a in asins), np.int64, len(asins)))
    if sample is not None and sample < len(sequences):
        keep = np.random.default_rng(seed).choice(len(sequences), sample, replace=False)
        sequences = [sequences[i] for i in np.sort(keep)]
    return sequences


def make_data(sequences: list[np.ndarray], modalities: list[str], seed: int) -> SequenceData:
    """Leave-one-out splits plus, per modality, random codes (c=30, k=3, distinct per item) and
    random 384-d content vectors (the default MMSR adds their projection to each item vector)."""
    n_items = int(max(s.max() for s in sequences)) + 1
    lens = np.array([len(s) for s in sequences])
    users = np.arange(len(sequences))
    # train targets: positions 1 .. n-3 (the last two items are validation and test)
    n_train = np.maximum(lens - 3, 0)
    train = TargetSet(np.repeat(users, n_train), np.concatenate([np.arange(1, n + 1) for n in n_train]))
    valid = TargetSet(users[lens >= 3], lens[lens >= 3] - 2)
    test = TargetSet(users[lens >= 2], lens[lens >= 2] - 1)
    rng = np.random.default_rng(seed)
    codes = {m: np.argsort(rng.random((n_items, 30)), axis=1)[:, :3] for m in modalities}
    centres = {m: rng.normal(size=(30, 384)).astype(np.float32) for m in modalities}
    features = {m: rng.normal(size=(n_items, 384)).astype(np.float32) for m in modalities}
    splits = {"train": train, "valid": valid, "test": test}
    return SequenceData(sequences, n_items, splits, codes, centres, features)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    sequences = load_beauty(
        args.data / "sequences" / "beauty" / "user_sequence.txt.gz", args.sample, args.seed
    )
    data = make_data(sequences, args.modalities, args.seed)
    train = data.splits["train"]
    log.info(
        "loaded %d users, %d items, %d train samples in %.1fs",
        len(sequences),
        data.n_items,
        len(train),
        time.perf_counter() - t0,
    )
    model = MMSR.from_data(
        data,
        modalities=args.modalities,
        max_len=50,
        hidden_size=args.hidden,
        content_dim=args.content_dim,
        item_content=args.item_content,
        seed=args.seed,
    )
    model.to(device).train()
    # the production trainer: Adam with the default TrainConfig, autocast on CUDA only
    defaults = TrainConfig()
    trainee, autocast = make_trainee(model, defaults.lr, defaults.weight_decay, args.seed, device)
    objective = Objective(args.loss, args.negatives)
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    t0 = time.perf_counter()
    model.prepare_samples(data, TargetSet(train.users[:1], train.positions[:1]))  # builds the per-user cache
    cache_s = time.perf_counter() - t0

    order = epoch_order(model, train, args.batch_size, trainee.shuffler)  # the first epoch's order
    n_steps = min(args.warmup + args.steps, len(order) // args.batch_size)
    build_s = step_s = build_cpu = step_cpu = 0.0
    nodes = edges = 0
    for i in tqdm(range(n_steps), desc="train steps", unit="step"):
        idx = order[i * args.batch_size : (i + 1) * args.batch_size]
        t0, c0 = time.perf_counter(), time.process_time()
        batch, targets = build_batch(model, data, train, idx)  # what the fit loop's batches() builds
        t1, c1 = time.perf_counter(), time.process_time()
        train_step(trainee, batch, targets, device, autocast, objective)  # the fit loop's; .item() syncs CUDA
        t2, c2 = time.perf_counter(), time.process_time()
        if i >= args.warmup:
            build_s += t1 - t0
            step_s += t2 - t1
            build_cpu += c1 - c0
            step_cpu += c2 - c1
            if isinstance(batch, GraphBatch):  # on an accelerator counted where its graphs are built
                nodes += batch.num_nodes
                edges += batch.homo_index.shape[1] + batch.hetero_index.shape[1]
    timed = n_steps - args.warmup
    # on an accelerator the graph itself is built inside the step (``batch_to``); timed apart here
    # over the same batches, synchronised, and moved from the model's share to the graph's
    device_graph_s, loop = 0.0, {}
    if device.type == "cuda":
        device_graph_s, built = _device_graphs(model, data, train, order, args, device)
        nodes = sum(graph.num_nodes for graph, _ in built)
        edges = sum(graph.homo_index.shape[1] + graph.hetero_index.shape[1] for graph, _ in built)
        loop = _production_loop(model, trainee, data, train, order, args, device, autocast, objective, built)
    build_s += device_graph_s
    step_s -= device_graph_s
    per_step = (build_s + step_s) / timed
    samples_per_s = args.batch_size / per_step
    epoch_s = cache_s + len(train) / samples_per_s
    # CPU seconds bound the wall time an idle machine would need (>= 1 busy thread): contention-free
    cpu_per_step = (build_cpu + step_cpu) / timed

    # one more step (a batch the timing did not use), counted instead of timed
    batch, targets = build_batch(model, data, train, order[n_steps * args.batch_size :][: args.batch_size])
    step_flops = count_flops(lambda: train_step(trainee, batch, targets, device, autocast, objective))

    test = data.splits["test"]
    n_users = min(args.infer_users, len(test))
    histories = data.histories(TargetSet(test.users[:n_users], test.positions[:n_users]), 50)
    model.eval()
    block = args.score_block
    top_k(model, histories[: min(256, n_users)], k=20, device=device, batch_size=block)  # warm-up
    infer_s = min(
        _timed(lambda: top_k(model, histories, k=20, device=device, batch_size=block)) for _ in range(3)
    )
    # counted over the timed users, so the item table's projection is shared as in the timed run
    infer_flops_per_user = (
        count_flops(lambda: top_k(model, histories, k=20, device=device, batch_size=block)) / n_users
    )
    peak = gemm_peak_gflops() if device.type == "cpu" else None
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "amp": str(amp_dtype).removeprefix("torch.") if use_amp else "off",
        "users": len(sequences),
        "items": data.n_items,
        "train_samples": len(train),
        "modalities": args.modalities,
        "codes": "random c=30 k=3",
        "content_dim": args.content_dim,
        "content": "none"
        if model.config.item_content == "none"
        else "random 384-d" + (f", top {args.content_dim} PCs" if args.content_dim else ""),
        "hidden_size": args.hidden,
        "batch_size": args.batch_size,
        "timed_steps": timed,
        "device_graph_ms_per_step": round(1000 * device_graph_s / timed, 2),
        **loop,
        "score_block": block or "default",
        "mean_nodes_per_batch": nodes / timed,
        "mean_edges_per_batch": edges / timed,
        "cache_build_s": round(cache_s, 3),
        "graph_build_ms_per_step": round(1000 * build_s / timed, 2),
        "model_step_ms": round(1000 * step_s / timed, 2),
        "graph_build_share": round(build_s / (build_s + step_s), 4),
        "train_samples_per_s": round(samples_per_s, 1),
        "epoch_estimate_s": round(epoch_s, 1),
        "graph_build_cpu_ms_per_step": round(1000 * build_cpu / timed, 2),
        "model_step_cpu_ms": round(1000 * step_cpu / timed, 2),
        "graph_build_cpu_share": round(build_cpu / (build_cpu + step_cpu), 4),
        "epoch_estimate_from_cpu_s": round(cache_s + len(train) / args.batch_size * cpu_per_step, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "inference_users": n_users,
        "inference_users_per_s": round(n_users / infer_s, 1),
        "objective": args.loss if args.loss == "full_softmax" else f"{args.loss} ({args.negatives})",
        "step_gflop": round(step_flops / 1e9, 3),
        "inference_mflop_per_user": round(infer_flops_per_user / 1e6, 3),
        "gemm_peak_gflops": None if peak is None else round(peak, 1),
        # model step and scoring against their FLOPs at the GEMM peak (CPU only)
        "model_step_vs_arithmetic": None
        if peak is None
        else round(step_s / timed * peak * 1e9 / step_flops, 2),
        "inference_vs_arithmetic": None
        if peak is None
        else round(infer_s / n_users * peak * 1e9 / infer_flops_per_user, 2),
    }


def _timed(fn: Any) -> float:
    """Wall seconds of ``fn()``, accelerator work included."""
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device_graphs(
    model: MMSR,
    data: SequenceData,
    train: TargetSet,
    order: np.ndarray,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[float, list[tuple[GraphBatch, torch.Tensor]]]:
    """The timed steps' graphs built on ``device`` (``batch_to``, each synchronised) with their
    targets, and the seconds the building took."""
    seconds, built = 0.0, []
    for i in range(args.warmup, args.warmup + args.steps):
        idx = order[i * args.batch_size : (i + 1) * args.batch_size]
        if len(idx) < args.batch_size:
            break
        batch, targets = build_batch(model, data, train, idx)
        _sync()
        t0 = time.perf_counter()
        graph = model.batch_to(batch, device)
        _sync()
        seconds += time.perf_counter() - t0
        built.append((graph, targets.to(device)))
    return seconds, built


def _production_loop(
    model: MMSR,
    trainee: Any,
    data: SequenceData,
    train: TargetSet,
    order: np.ndarray,
    args: argparse.Namespace,
    device: torch.device,
    autocast: Any,
    objective: Objective,
    built: list[tuple[GraphBatch, torch.Tensor]],
) -> dict[str, Any]:
    """The fit loop's own batches over the steps of ``built`` (prefetched, graphs built on a side
    stream during the previous step) against the same steps on ``built``'s graphs: the graph time a
    step still waits for is the difference."""
    n = len(built)
    span = order[args.warmup * args.batch_size :][: n * args.batch_size]
    loop_s = _timed(
        lambda: [
            train_step(trainee, b, t, device, autocast, objective)
            for b, t, _ in batches(model, data, train, span, args.batch_size, prefetch=True, device=device)
        ]
    )
    model_s = _timed(lambda: [train_step(trainee, b, t, device, autocast, objective) for b, t in built])
    return {
        "loop_ms_per_step": round(1000 * loop_s / n, 2),
        "prebuilt_ms_per_step": round(1000 * model_s / n, 2),
        "loop_samples_per_s": round(args.batch_size * n / loop_s, 1),
        "loop_graph_wait_share": round(max(loop_s - model_s, 0.0) / loop_s, 4),
    }


def write_results(rows: list[dict[str, Any]], out: Path, command: str) -> None:
    """Merge ``rows`` into speed.json (keyed by device + modalities) and rewrite speed.md's table."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "speed.json"
    runs: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    for row in rows:
        mods = "+".join(row["modalities"]) or "id-only"
        key = f"{row['device']}|threads={row['torch_threads']}|{mods}|{row['users']}"
        if row.get("objective", "full_softmax") != "full_softmax":
            key += f"|{row['objective']}"
        if row.get("content") == "none":
            key += "|content=none"
        elif row.get("content_dim"):
            key += f"|content_dim={row['content_dim']}"
        if row.get("batch_size", 128) != 128:
            key += f"|batch={row['batch_size']}"
        if row.get("score_block", "default") != "default":
            key += f"|score_block={row['score_block']}"
        runs[key] = {
            **row,
            "command": command,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    write_text_atomic(json_path, json.dumps(runs, indent=2, sort_keys=True) + "\n")
    cols = [
        ("device", "device"),
        ("device_name", "device name"),
        ("amp", "autocast"),
        ("torch_threads", "torch threads"),
        ("modalities", "modalities"),
        ("content", "content vectors"),
        ("objective", "objective"),
        ("batch_size", "batch"),
        ("users", "users"),
        ("train_samples", "train samples"),
        ("graph_build_ms_per_step", "graph ms/step"),
        ("model_step_ms", "model ms/step"),
        ("graph_build_share", "graph share"),
        ("graph_build_cpu_share", "graph share (CPU time)"),
        ("train_samples_per_s", "train samples/s"),
        ("loop_samples_per_s", "fit loop samples/s"),
        ("loop_graph_wait_share", "fit loop graph wait share"),
        ("epoch_estimate_s", "epoch est. (s)"),
        ("epoch_estimate_from_cpu_s", "epoch est. from CPU time (s)"),
        ("inference_users_per_s", "inference users/s"),
        ("score_block", "score block"),
        ("step_gflop", "GFLOP/step"),
        ("gemm_peak_gflops", "GEMM peak GFLOP/s"),
        ("model_step_vs_arithmetic", "model step / arithmetic"),
        ("inference_vs_arithmetic", "scoring / arithmetic"),
        ("load_average_1min", "load avg"),
    ]
    lines = [
        "# MMSR speed (benchmarks/speed.py)",
        "",
        "Beauty sequences, leave-one-out train prefixes, batch 128 unless the batch column says otherwise, "
        "d=128, 1 layer, RANDOM codes "
        "(c=30, k=3; speed depends on graph size, not on code meaning). Epoch estimate = cache build + "
        "train samples / samples/s (graph building and the step run serially here; the harness "
        "prefetches the next batch in a thread). Measured on a shared machine: other engineers' "
        "jobs compete for the same 2 CPU cores (see load avg), so wall-clock CPU numbers are "
        "pessimistic. 'From CPU time' uses process CPU seconds instead of wall time: an idle "
        "machine needs at most about that long with one busy thread. Under contention two torch "
        "threads are far slower than one (each parallel op waits for a descheduled peer thread). "
        "On CUDA the CPU only cuts the padded histories and the graph is built on the device inside "
        "the step: there 'graph ms/step' adds both (the device part timed apart, synchronised, over the "
        "same batches) and 'model ms/step' is the rest of the step. The H200 rows whose content "
        "column reads - predate the device-side graph builder (their graphs were built on the CPU). "
        "'Fit loop' (CUDA only): the training loop's own batches over the same steps, the next batch's "
        "graph built on a side stream while the current step runs; its graph wait share is the part of "
        "its time that the same steps on graphs built beforehand do not take.",
        "",
        "| " + " | ".join(title for _, title in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in runs.values():
        values = [row.get(key, "-") for key, _ in cols]  # rows from older versions may lack a column
        cells = ["+".join(v) or "id-only" if isinstance(v, list) else str(v) for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Commands and raw fields: `speed.json`."]
    write_text_atomic(out / "speed.md", "\n".join(lines) + "\n" + _hand_written(out / "speed.md"))


def _hand_written(path: Path) -> str:
    """The sections a person wrote below the table (from the first ``## `` heading on), kept on rewrite."""
    text = path.read_text() if path.exists() else ""
    start = text.find("\n## ")
    return "" if start < 0 else text[start:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--infer-users", type=int, default=8192)
    parser.add_argument(
        "--score-block",
        type=int,
        default=None,
        help="users per scoring block (default: top_k's for the device)",
    )
    parser.add_argument("--sample", type=int, default=None, help="use only this many random users")
    parser.add_argument("--modality-sets", default="text;text,image", help="';'-separated modality lists")
    parser.add_argument("--loss", default="full_softmax", choices=["full_softmax", "sampled_softmax"])
    parser.add_argument("--negatives", type=int, default=1024, help="negatives per batch for sampled_softmax")
    parser.add_argument(
        "--content-dim",
        type=lambda v: MMSRConfig(content_dim=v).content_dim,  # the model's own reading of "all"
        default=MMSRConfig().content_dim,
        help="MMSR's content_dim (kept principal axes; 'all': every dimension); default: the model's",
    )
    parser.add_argument(
        "--item-content",
        choices=["add", "none"],
        default=MMSRConfig().item_content,
        help="MMSR's item_content ('none': code nodes only); default: the model's",
    )
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for mods in args.modality_sets.split(";"):
        args.modalities = [m for m in mods.split(",") if m]
        rows.append(bench(args))
        log.info("%s", json.dumps(rows[-1]))
    write_results(
        rows,
        args.out,
        "python benchmarks/speed.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k not in ("modalities", "data", "out")
        ),
    )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
