"""Scale benchmark: every nightly stage's time and memory at 1x, 10x and 100x Beauty.

Per size, ``benchmarks/scale_data.py`` writes seeded Amazon-2023 reviews + meta JSONL
under ``--work``; then each stage runs in its own interpreter (``--child``) so that its
wall time, CPU time (user + system) and peak RSS are its own, read from ``os.wait4``:

- ``extract``: ``run_extract`` (amazon2023 format, default 5-core, leave-one-out);
- ``embed_encode``: the real text encoder (``embed_text``) on the first ``--encode-items``
  items only; its time is extrapolated to every item;
- ``embed_import``: ``run_embed --import-features`` of SEEDED RANDOM unit vectors (384-d)
  for every item: the stage's read, hash, merge and write at full size;
- ``codes``: ``run_codes``;
- ``train``: the warehouse read (``load_sequence_data``), the per-user cache and
  ``--train-steps`` production steps (``build_batch`` + ``train_step``), extrapolated to
  one epoch; then the model is registered as champion (timed apart);
- ``validation``: ``evaluate`` on the valid split, capped at ``--valid-users`` users and
  extrapolated to all of them (weights untrained: cost does not depend on them);
- ``recommend``: ``run_recommend`` for every user, or, above ``--recommend-users``, for
  the first that many users (a copy of the user tables) extrapolated to all.

Run e.g. (results go to ``benchmarks/results/scale.{md,json,png}``; sizes merge into the
stored JSON, so 100x can be run later on its own)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --sizes 1,10 --work /tmp/mmsr-scale
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATASET = "scale"
RUN_DATE = date(2026, 1, 1)
TEXT_DIM = 384
STAGES = ("extract", "embed_encode", "embed_import", "codes", "train", "validation", "recommend")
#: set-up children whose cost is not a stage's: the random vectors to import
PREP = {"embed_import": "vectors"}

log = logging.getLogger("benchmarks.scale")


# ---- children: one stage each, in a fresh interpreter ---------------------------------------


class _Clock:
    """Wall and CPU seconds (this process, all threads) since it started: CPU time is the work
    itself and holds up under the shared machine's load, where wall time does not."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _settings(**overrides: Any) -> Any:
    from pipeline.core.config import load_settings

    return load_settings(**overrides)


def _child_generate(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.scale_data import generate

    out = generate(args.work / "raw", args.scale, args.seed).to_dict()
    return {"rows_in": 0, "rows_out": out["interactions"], **out}


def _child_extract(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.stages.extract import run_extract

    raw = args.work / "raw"
    report = run_extract(_settings(), DATASET, "amazon2023", raw / "reviews.jsonl", raw / "meta.jsonl")
    return {
        "rows_in": sum(f.lines for f in report.files),
        "rows_out": report.interactions,
        "users": report.users,
        "items": report.items,
        "items_with_image_ref": report.items_with_image_ref,
        "kcore_rounds": report.kcore_rounds,
        "phases_s": report.timings_s,
    }


def _items_table() -> Any:
    from pipeline.stages.embed.items import read_items

    return read_items(_settings().dataset_dir(DATASET) / "items.parquet")


def _child_embed_encode(args: argparse.Namespace) -> dict[str, Any]:
    """``embed_text`` on one item, then on the probe: the difference is the encoder's per-item cost."""
    from pipeline.stages.embed.modalities import embed_text

    items = _items_table()
    probe = items.slice(0, min(args.encode_items, items.num_rows))
    laps = []
    for n, name in ((1, "encode_one.parquet"), (probe.num_rows, "encode_probe.parquet")):
        clock = _Clock()
        report = embed_text(_settings(), probe.slice(0, n), args.work / name)
        laps.append(clock.lap())
    (one, one_cpu), (many, many_cpu) = laps
    per_item, per_item_cpu = (
        (b - a) / max(probe.num_rows - 1, 1) for a, b in ((one, many), (one_cpu, many_cpu))
    )
    return {
        "rows_in": probe.num_rows,
        "rows_out": report.embedded,
        "items": items.num_rows,
        "fixed_s": one,
        "per_item_ms": 1000 * per_item,
        "per_item_cpu_ms": 1000 * per_item_cpu,
        "extrapolated_s": one + per_item * items.num_rows,
        "extrapolated_cpu_s": one_cpu + per_item_cpu * items.num_rows,
    }


def _child_vectors(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    items = _items_table()["item_id"].to_pylist()
    vectors = np.random.default_rng(args.seed).standard_normal((len(items), TEXT_DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(args.work / "text_vectors.npy", vectors)
    (args.work / "text_vectors.ids.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    return {"rows_in": len(items), "rows_out": len(items)}


def _child_embed_import(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.stages.embed import run_embed

    report = run_embed(_settings(), DATASET, "text", import_features=args.work / "text_vectors.npy")
    text = report.modalities["text"]
    return {"rows_in": text.items, "rows_out": text.embedded}


def _child_codes(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.stages.codes import run_codes

    report = run_codes(_settings(), DATASET)
    text = report.modalities["text"]
    return {"rows_in": text.items, "rows_out": text.items * text.k, "c": text.c, "k": text.k}


def _model_and_data(settings: Any) -> tuple[Any, Any, tuple[float, float]]:
    """The train stage's read of the warehouse and a fresh default MMSR, with the read's wall and CPU s."""
    from mmsr_model.registry import build_model
    from pipeline.stages.train.config import train_config
    from pipeline.warehouse.dataset import load_sequence_data

    clock = _Clock()
    data, _ = load_sequence_data(settings, DATASET)
    load = clock.lap()
    model = build_model("mmsr", data, **train_config(settings).model_params)
    return model, data, load


def _child_train(args: argparse.Namespace) -> dict[str, Any]:
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from mmsr_model.batching import build_batch, epoch_order
    from mmsr_model.data import TargetSet
    from mmsr_model.fitting import make_trainee, train_step
    from pipeline.serving.registry import CHAMPION, log_pyfunc, registered_name, setup_mlflow
    from pipeline.stages.train.config import train_config

    torch.manual_seed(args.seed)
    settings = _settings()
    config = train_config(settings)
    model, data, (load_s, load_cpu) = _model_and_data(settings)
    device = torch.device("cpu")
    model.to(device).train()
    trainee, autocast = make_trainee(model, config.lr, config.weight_decay, config.seed, device)
    train = data.splits["train"]
    clock = _Clock()
    model.prepare_samples(data, TargetSet(train.users[:1], train.positions[:1]))  # the per-user cache
    cache_s, cache_cpu = clock.lap()
    order = epoch_order(model, train, config.batch_size, trainee.shuffler)
    warmup = 2
    n_steps = min(warmup + args.train_steps, len(order) // config.batch_size)
    step_s = step_cpu = 0.0
    for i in range(n_steps):
        clock = _Clock()
        idx = order[i * config.batch_size : (i + 1) * config.batch_size]
        batch, targets = build_batch(model, data, train, idx)
        train_step(trainee, batch, targets, device, autocast)
        if i >= warmup:
            wall, cpu = clock.lap()
            step_s, step_cpu = step_s + wall, step_cpu + cpu
    timed = max(n_steps - warmup, 1)
    clock = _Clock()
    setup_mlflow(settings, DATASET)
    with mlflow.start_run(run_name="scale-benchmark"):
        version = log_pyfunc(model, settings.dataset_dir(DATASET) / "item_index.parquet", DATASET)
    MlflowClient().set_registered_model_alias(registered_name(DATASET), CHAMPION, str(version))
    steps_per_epoch = -(-len(train) // config.batch_size)
    return {
        "rows_in": len(train),
        "rows_out": timed * config.batch_size,
        "load_s": load_s,
        "cache_s": cache_s,
        "step_s": step_s / timed,
        "step_cpu_s": step_cpu / timed,
        "timed_steps": timed,
        "batch_size": config.batch_size,
        "samples_per_s": config.batch_size * timed / step_s,
        "extrapolated_s": load_s + cache_s + steps_per_epoch * step_s / timed,
        "extrapolated_cpu_s": load_cpu + cache_cpu + steps_per_epoch * step_cpu / timed,
        "register_s": clock.lap()[0],
        "n_items": data.n_items,
    }


def _child_validation(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import numpy as np
    import torch

    from mmsr_model.data import TargetSet
    from mmsr_model.evaluation import evaluate

    torch.manual_seed(args.seed)
    settings = _settings()
    model, data, (load_s, load_cpu) = _model_and_data(settings)
    valid = data.splits["valid"]
    n = min(args.valid_users, len(valid))
    keep = np.sort(np.random.default_rng(args.seed).choice(len(valid), n, replace=False))
    capped = dataclasses.replace(
        data, splits={**data.splits, "valid": TargetSet(valid.users[keep], valid.positions[keep])}
    )
    clock = _Clock()
    evaluate(model, capped, "valid", exclude_seen=settings.model.exclude_seen, device=torch.device("cpu"))
    eval_s, eval_cpu = clock.lap()
    share = len(valid) / max(n, 1)
    return {
        "rows_in": len(valid),
        "rows_out": n,
        "load_s": load_s,
        "eval_s": eval_s,
        "extrapolated_s": load_s + eval_s * share,
        "extrapolated_cpu_s": load_cpu + eval_cpu * share,
    }


def _child_recommend_prep(args: argparse.Namespace) -> dict[str, Any]:
    """The first ``--recommend-users`` users' tables in ``--home`` (a capped copy); items as they are."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = args.work / "home" / "warehouse" / DATASET
    target = args.home / "warehouse" / DATASET
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "item_index.parquet", target / "item_index.parquet")
    for name in ("user_index", "sequences"):
        table = pq.read_table(source / f"{name}.parquet")
        keep = pc.less(table["user_idx"], args.recommend_users)
        pq.write_table(table.filter(keep), target / f"{name}.parquet")
    return {"rows_in": 0, "rows_out": args.recommend_users}


def _child_recommend(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.stages.recommend import run_recommend

    report = run_recommend(_settings(), DATASET, RUN_DATE, None)
    return {"rows_in": report.users, "rows_out": report.rows, "stage_s": report.seconds}


CHILDREN = {
    "generate": _child_generate,
    "extract": _child_extract,
    "embed_encode": _child_embed_encode,
    "vectors": _child_vectors,
    "embed_import": _child_embed_import,
    "codes": _child_codes,
    "train": _child_train,
    "validation": _child_validation,
    "recommend_prep": _child_recommend_prep,
    "recommend": _child_recommend,
}


# ---- parent: sizes, children, measurements ----------------------------------------------------


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _run_child(name: str, args: argparse.Namespace, work: Path, scale: float, home: Path, env: dict) -> dict:
    """One child; its wall time, and CPU time and peak RSS from ``os.wait4`` (its own, threads included)."""
    result = work / f"{name}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--work",
        str(work),
        "--home",
        str(home),
        "--scale",
        str(scale),
        "--seed",
        str(args.seed),
        "--encode-items",
        str(args.encode_items),
        "--train-steps",
        str(args.train_steps),
        "--valid-users",
        str(args.valid_users),
        "--recommend-users",
        str(args.recommend_users),
        "--mem-limit-gib",
        str(args.mem_limit_gib),
        "--result",
        str(result),
    ]
    started = time.perf_counter()
    with (work / f"{name}.log").open("w") as child_log:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=child_log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (work / f"{name}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(result.read_text())
    out.update(
        wall_s=round(wall, 2),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
        peak_rss_mib=round(usage.ru_maxrss / 1024, 1),
        uptime=_uptime(),
        load_1min=round(os.getloadavg()[0], 2),
    )
    log.info(
        "%gx %s: %.1f s wall, %.1f s CPU, %.0f MiB", scale, name, wall, out["cpu_s"], out["peak_rss_mib"]
    )
    return out


def _env(home: Path, tracking_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "MMSR_HOME": str(home),
        "MMSR_MLFLOW_TRACKING_URI": f"sqlite:///{(tracking_home / 'mlflow' / 'mlflow.db').resolve()}",
        "MMSR_IMAGE_DOWNLOAD": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }


def _capped_recommend(args: argparse.Namespace, work: Path, scale: float, home: Path, users: int) -> dict:
    """``run_recommend`` on the first N and N/4 users (same champion): the difference of the two
    runs is the per-user cost, the rest (interpreter, champion load) fixed; extrapolated to every user."""
    runs = []
    for cap in (args.recommend_users // 4, args.recommend_users):
        capped = work / f"home_capped_{cap}"
        sub = argparse.Namespace(**{**vars(args), "recommend_users": cap})
        _run_child("recommend_prep", sub, work, scale, capped, _env(capped, home))
        runs.append(_run_child("recommend", sub, work, scale, capped, _env(capped, home)))
    small, out = runs
    extra = out["rows_in"] - small["rows_in"]
    for key, total in (("s", "wall_s"), ("cpu_s", "cpu_s")):
        per_user = max(out[total] - small[total], 0.0) / extra
        fixed = max(out[total] - per_user * out["rows_in"], 0.0)
        out[f"per_user_ms_{key}"] = 1000 * per_user
        out["extrapolated_" + key] = fixed + per_user * users
    out.update(
        capped_users=[small["rows_in"], out["rows_in"]], capped_wall_s=[small["wall_s"], out["wall_s"]]
    )
    out.update(capped_cpu_s=[small["cpu_s"], out["cpu_s"]], rows_in=users)
    return out


def run_size(args: argparse.Namespace, scale: float, record: dict[str, Any], save: Any) -> None:
    """Generate one size and run the stages on it, saving after every stage."""
    work = args.work / f"x{scale:g}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    home = work / "home"
    env = _env(home, home)
    try:
        record["generate"] = _run_child("generate", args, work, scale, home, env)
        save()
        for stage in args.stages:
            if stage == "recommend" and record["extract"]["users"] > args.recommend_users:
                out = _capped_recommend(args, work, scale, home, record["extract"]["users"])
            else:
                if stage in PREP:
                    _run_child(PREP[stage], args, work, scale, home, env)
                out = _run_child(stage, args, work, scale, home, env)
            record[stage] = out
            save()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10", help="comma-separated multiples of Beauty")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, in order")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmsr-scale"), help="generated data (deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and warehouse")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--encode-items", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--valid-users", type=int, default=5_000)
    parser.add_argument("--recommend-users", type=int, default=5_000)
    parser.add_argument(
        "--mem-limit-gib",
        type=float,
        default=12.0,
        help="address-space cap of each stage process: one that needs more fails instead of pushing "
        "the shared machine into swap or the OOM killer",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.child:
        if args.child != "extract":  # DuckDB keeps to its own memory limit and spills
            limit = int(args.mem_limit_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        args.result.write_text(json.dumps(CHILDREN[args.child](args), default=str))
        return
    from benchmarks.scale_report import load_results, write_results

    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; expected some of {', '.join(STAGES)}")
    results = load_results(args.out)
    results["settings"] = {
        k: v
        for k, v in vars(args).items()
        if k in ("seed", "encode_items", "train_steps", "valid_users", "recommend_users")
    }
    for scale in (float(s) for s in args.sizes.split(",")):
        record: dict[str, Any] = {"uptime_start": _uptime()}
        results["sizes"][f"{scale:g}"] = record
        run_size(args, scale, record, lambda: write_results(results, args.out))
    write_results(results, args.out)


if __name__ == "__main__":
    main()
