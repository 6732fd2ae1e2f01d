"""Quality benchmark: MMSR, its ablations and the baselines on a sequence set (Beauty, Sports).

The data is built by the real pipeline stages in a temporary MMSR_HOME (extract
with format "sequences", text embedding, modality codes, the warehouse loader),
text modality only (the sequence sets have no images). ``--data`` names the set (its folder
name names the rows' dataset: ``--data .../sequences/sports``). Every model is trained by
``mmsr_model.training.train`` with the configuration the train stage uses
(``pipeline.stages.train.config.train_config``: MMSR from ``ModelSettings``, each baseline with
its own standard settings), validation-based early stopping, and evaluated by
full ranking on the test split.

Splits: "loo" (leave-one-out) and "ratio" (the public code's per-user 80/20, with
validation targets from the end of the train part; see sql/extract_splits.sql).
The published sequences are used as they are (already 5-core; k-core off).

Full run (hours on a 2-core CPU; meant for a GPU machine):
    .venv/bin/python benchmarks/quality.py --device cuda
Build the data here, train elsewhere (a GPU machine needs only torch, numpy and
pydantic-settings, not DuckDB, MLflow or the text encoder):
    .venv/bin/python benchmarks/quality.py --prepared prep --models pop --max-epochs 1   # writes prep/*.npz
    python benchmarks/quality.py --prepared prep --device cuda --models mmsr-sync --ablations none
Continue a budget-cut CPU run in a later session: give both runs the same
``--checkpoint-dir`` (the second resumes after the last saved epoch; a new budget applies):
    OMP_NUM_THREADS=1 python benchmarks/quality.py --split loo --models mmsr --ablations none \
        --prepared prep --checkpoint-dir ckpt --time-budget-min 100
Variants: ``--models mmsr-invasive`` runs one ablation alone; ``--mmsr dropout=0.5`` overrides a
ModelSettings field for MMSR (named in the row label).
Smoke run (clearly labelled as such in the output):
    .venv/bin/python benchmarks/quality.py --split loo --models pop,sasrec --ablations none --max-epochs 2
CI-sized run: add ``--sample 500`` (first 500 users).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMSR_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
KS = (5, 10, 20)
FULL_EPOCHS = 100
#: MMSR variants beside the default (async update, non-invasive fusion, text codes)
ABLATIONS: dict[str, dict[str, Any]] = {
    "sync": {"update": "sync"},
    "homo_states": {"homogeneous_values": "states"},
    "invasive": {"fusion": "invasive"},
    "raw": {"modality_nodes": "raw"},
    "id_only": {"modalities": []},
    "layers2": {"num_layers": 2},
}
#: the public code's own Beauty log (80/20 ratio split, full ranking, test-set epoch selection)
PUBLIC_RATIO = {"hr_at_5": 0.0755, "mrr_at_5": 0.0489, "hr_at_20": 0.1418, "mrr_at_20": 0.0549}

log = logging.getLogger("benchmarks.quality")


@dataclass
class Result:
    split: str
    label: str
    test: dict[str, float]
    best_epoch: int
    epochs: int
    best_val: float
    train_seconds: float
    n_train: int
    stop: str  # "patience", "budget" (time budget spent) or "max epochs"
    #: test metrics ranked against every item, history included (the protocol before exclude_seen)
    every_item: dict[str, float] = field(default_factory=dict)
    #: test metrics (with n_samples) per bucket of the target's training count; ``cold``: items in no
    #: training sample (absent when the test split has none)
    by_popularity: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def cold_hr_at_20(self) -> float:
        return self.by_popularity.get("cold", {}).get("hr_at_20", float("nan"))

    @property
    def n_cold(self) -> int:
        return int(self.by_popularity.get("cold", {}).get("n_samples", 0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=("loo", "ratio", "both"), default="both")
    p.add_argument(
        "--models",
        default="mmsr,sasrec,gru4rec,pop",
        help="comma list of registry names; 'mmsr-<ablation>' runs that ablation alone",
    )
    p.add_argument(
        "--ablations",
        default=",".join(ABLATIONS),
        help=f"comma list of MMSR variants to add ({', '.join(ABLATIONS)}) or 'none'",
    )
    p.add_argument("--max-epochs", type=int, default=FULL_EPOCHS)
    p.add_argument(
        "--mmsr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ModelSettings override for MMSR and its ablations (e.g. weight_decay=1e-5, dropout=0.5); "
        "repeatable; named in the row label; baselines keep their own settings",
    )
    p.add_argument("--patience", type=int, default=8)
    p.add_argument(
        "--time-budget-min",
        type=float,
        default=None,
        help="per model: stop after the epoch that passes this many minutes (CPU runs); marked in the table",
    )
    p.add_argument(
        "--refit",
        action="store_true",
        help="every model: after its row, a second row ('refit') for a fresh model trained on train + "
        "valid targets for the best epoch count (mmsr_model.training.refit)",
    )
    p.add_argument("--max-train-samples", type=int, default=None, help="seeded subsample of train targets")
    p.add_argument("--sample", type=int, default=None, help="use only the first N users (CI-sized run)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--seed", type=int, default=2023)
    p.add_argument("--data", type=Path, default=DATA / "sequences" / "beauty")
    p.add_argument("--home", type=Path, default=None, help="MMSR_HOME to build in (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS / "quality.md")
    p.add_argument(
        "--prepared",
        type=Path,
        default=None,
        help="folder of prepared data (<dataset>.npz): loaded when present, else built and saved there; "
        "lets a machine without DuckDB or the text encoder (a GPU box) train on data built here. A saved "
        "file is reused as it is: give a new folder after changing data or code settings (MMSR_CODES_*)",
    )
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="save each model's training state here after every epoch and resume from it: a rerun with "
        "the same settings and data carries on where the last one stopped (see mmsr_model.checkpoint)",
    )
    args = p.parse_args(argv)
    args.mmsr = dict(parse_override(p, item) for item in args.mmsr)
    args.models = [m for m in args.models.split(",") if m]
    args.ablations = [] if args.ablations == "none" else [a for a in args.ablations.split(",") if a]
    if unknown := set(args.ablations) - set(ABLATIONS):
        p.error(f"unknown ablations {sorted(unknown)}")
    return args


def parse_override(p: argparse.ArgumentParser, item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (numbers, lists, strings)."""
    import yaml

    from pipeline.core.config import ModelSettings

    key, sep, value = item.partition("=")
    if not sep or key not in ModelSettings.model_fields:
        p.error(f"--mmsr wants KEY=VALUE with KEY one of {sorted(ModelSettings.model_fields)}, got {item!r}")
    return key, yaml.safe_load(value)


def sample_users(source: Path, n_users: int, out: Path) -> Path:
    """The first ``n_users`` lines of a user_sequence file (a CI-sized dataset)."""
    with gzip.open(source, "rt", encoding="utf-8") as src, gzip.open(out, "wt", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= n_users:
                break
            dst.write(line)
    return out


def quality_settings(args: argparse.Namespace, home: Path, split: str) -> Any:
    """The pipeline settings of the benchmark: the sequence set as it is, text codes only."""
    from pipeline.core.config import ModelSettings, Settings

    fields = {"modalities": ["text"], "device": args.device, "patience": args.patience, **args.mmsr}
    return Settings(
        home=home, seed=args.seed, split=split, kcore=0, image_download=False, model=ModelSettings(**fields)
    )


def dataset_name(args: argparse.Namespace, split: str) -> str:
    return f"{args.data.name}_{split}" + (f"_sample{args.sample}" if args.sample else "")


def build_data(args: argparse.Namespace, settings: Any, dataset: str, needs_text: bool) -> Any:
    """Run extract (+ text embed and codes when a model needs them) and load the SequenceData."""
    from pipeline.stages.codes import run_codes
    from pipeline.stages.embed import run_embed
    from pipeline.stages.extract import run_extract
    from pipeline.warehouse.dataset import load_sequence_data

    home = settings.home
    reviews = args.data / "user_sequence.txt.gz"
    if args.sample:
        reviews = sample_users(reviews, args.sample, home / f"user_sequence_{args.sample}.txt.gz")
    run_extract(settings, dataset, "sequences", reviews, args.data / "item_text.txt.gz")
    if needs_text:
        cached = home / "text_embeddings.parquet"
        target = settings.dataset_dir(dataset) / "embeddings" / "text.parquet"
        if cached.is_file():  # same items in both splits: reuse the vectors (embed is incremental)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, target)
        run_embed(settings, dataset, "text")
        shutil.copyfile(target, cached)
        run_codes(settings, dataset)
    data, _ = load_sequence_data(settings, dataset)
    return data


def prepared_data(args: argparse.Namespace, settings: Any, split: str, needs_text: bool) -> Any:
    """The split's SequenceData from ``--prepared`` when saved there, else built (and saved there)."""
    from mmsr_model.data import SequenceData

    dataset = dataset_name(args, split)
    saved = args.prepared / f"{dataset}.npz" if args.prepared else None
    if saved is not None and saved.is_file():
        log.info("loading prepared data %s", saved)
        return SequenceData.load(saved)
    data = build_data(args, settings, dataset, needs_text or saved is not None)
    if saved is not None:
        data.save(saved)
    return data


def run_split(args: argparse.Namespace, home: Path, split: str, on_result: Callable[[Result], None]) -> None:
    """Train and test every requested model on ``split``, handing each row to ``on_result``."""
    from mmsr_model.training import refit, train
    from pipeline.stages.train.config import train_config

    variants = [model_variant(m) for m in args.models]
    if "mmsr" in args.models:
        variants += [model_variant(f"mmsr-{a}") for a in args.ablations]
    needs_text = any(name == "mmsr" and params.get("modalities") != [] for name, _, params in variants)
    settings = quality_settings(args, home, split)
    data = prepared_data(args, settings, split, needs_text)
    checkpoints = args.checkpoint_dir
    for name, label, params in variants:
        config = train_config(settings, name)
        config = replace(
            config,
            model_params={**config.model_params, **params},
            max_epochs=args.max_epochs,
            patience=args.patience,
            max_train_samples=args.max_train_samples,
            device=args.device,
            seed=args.seed,
            time_budget_s=None if args.time_budget_min is None else 60 * args.time_budget_min,
            checkpoint_dir=None if checkpoints is None else str(checkpoints),
            refit=False,  # the selected model's row; --refit adds the refit one after it
        )
        if name == "mmsr" and args.mmsr:
            label += " (" + ", ".join(f"{k}={v}" for k, v in args.mmsr.items()) + ")"
        log.info("%s / %s: %s", split, label, config)
        model, history = train(config, data)
        on_result(result_row(split, label, config, data, model, history))
        if args.refit:  # the selection's numbers, plus the refit's epochs, samples and seconds
            refit_history = replace(history)
            started = time.perf_counter()
            model = refit(config, data, refit_history)
            refit_history.seconds = history.seconds + time.perf_counter() - started
            on_result(result_row(split, f"{label} refit", config, data, model, refit_history))


def result_row(split: str, label: str, config: Any, data: Any, model: Any, history: Any) -> Result:
    """The test-split row of one trained model."""
    from mmsr_model.evaluation import evaluate, evaluate_breakdown

    groups = evaluate_breakdown(model, data, "test", KS, exclude_seen=config.exclude_seen)
    every_item = evaluate(model, data, "test", KS, exclude_seen=False) if config.exclude_seen else {}
    test = {k: v for k, v in groups["all"].items() if k != "n_samples"}
    log.info("%s / %s test: %s", split, label, {k: round(v, 4) for k, v in test.items()})
    return Result(
        split=split,
        label=label,
        test=test,
        best_epoch=history.best_epoch,
        epochs=len(history.epochs),
        best_val=history.best_val.get(config.eval_metric, float("nan")),
        train_seconds=history.seconds,
        n_train=history.n_train_samples,
        stop=stop_reason(history),
        every_item=every_item,
        by_popularity={name: m for name, m in groups.items() if name == "cold" or name.startswith("pop_")},
    )


def model_variant(name: str) -> tuple[str, str, dict[str, Any]]:
    """(registry name, row label, MMSR params) of a --models entry (``mmsr-<ablation>``: that one alone)."""
    base, _, ablation = name.partition("-")
    if base == "mmsr" and ablation in ABLATIONS:
        return "mmsr", name, ABLATIONS[ablation]
    return name, name, {}


def stop_reason(history: Any) -> str:
    if history.stopped_early:
        return "patience"
    return "budget" if history.stopped_by_budget else "max epochs"


def is_smoke(args: argparse.Namespace) -> bool:
    return bool(args.sample or args.max_train_samples or args.max_epochs < FULL_EPOCHS)


def render(args: argparse.Namespace, results: list[Result], wall: float, command: str, device: str) -> str:
    metrics = [f"{kind}_at_{k}" for k in KS for kind in ("hr", "mrr", "ndcg")]
    lines = [f"# Quality benchmark: {args.data.name} sequences, text modality, full ranking", ""]
    if is_smoke(args):
        lines += [
            "> **SMOKE RUN — not the target result.** "
            f"max_epochs={args.max_epochs}, max_train_samples={args.max_train_samples}, "
            f"sample={args.sample}: models are under-trained; the numbers only show the harness runs "
            "end to end.",
            "",
        ]
    if any(r.stop == "budget" for r in results):
        lines += [
            f"> **Time budget:** rows marked `budget` stopped after {args.time_budget_min:g} min of "
            "training, before early stopping ended them; they are lower bounds on full training.",
            "",
        ]
    lines += [
        f"- command: `{command}`",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; wall time: {wall / 60:.1f} min",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, device `{device}`",
        f"- early stopping on validation ndcg_at_10, patience {args.patience}; seed {args.seed}",
        "- metrics on the test split, in %, ranked against every item outside the user's history, as "
        "recommend serves and published full-ranking results count (`exclude_seen`, the default; ties: lower "
        "item id first); the last two columns rank against every item, history included; coverage@10: the "
        "share of the catalogue in some test user's top 10",
        "",
    ]
    for split in dict.fromkeys(r.split for r in results):
        rows = [r for r in results if r.split == split]
        lines += [f"## Split: {split}", ""]
        header = [
            "model",
            *[m.replace("_at_", "@").upper() for m in metrics],
            "best val NDCG@10",
            "best ep",
            "epochs",
            "stop",
            "train s",
            "cold HR@20",
            "coverage@10",
            "NDCG@10 every item",
            "HR@20 every item",
        ]
        lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for r in rows:
            cells = [r.label, *[f"{100 * r.test[m]:.2f}" for m in metrics]]
            cells += [f"{100 * r.best_val:.2f}", str(r.best_epoch), str(r.epochs), r.stop]
            cells += [
                f"{r.train_seconds:.0f}",
                f"{100 * r.cold_hr_at_20:.2f}",
                f"{100 * r.test['coverage_at_10']:.1f}",
            ]
            every = ("ndcg_at_10", "hr_at_20")
            cells += [f"{100 * r.every_item[m]:.2f}" if r.every_item else "" for m in every]
            lines.append("| " + " | ".join(cells) + " |")
        if split == "ratio" and args.data.name == "beauty":
            ref = ", ".join(
                f"{k.replace('_at_', '@').upper()} {100 * v:.2f}%" for k, v in PUBLIC_RATIO.items()
            )
            lines += ["", f"Public code's own Beauty log (test-set epoch selection): {ref}."]
        n_train, n_cold = (rows[0].n_train, rows[0].n_cold) if rows else (0, 0)
        lines += ["", f"Train samples per model: {n_train}. Cold test targets (cold HR@20): {n_cold}.", ""]
        lines += popularity_table(rows)
    return "\n".join(lines)


def popularity_table(rows: list[Result]) -> list[str]:
    """Test NDCG@10 and HR@20 per bucket of the target's training count: where content should pay."""
    buckets = list(dict.fromkeys(name for r in rows for name in r.by_popularity))
    if not buckets:
        return []
    sizes = {name: int(r.by_popularity[name]["n_samples"]) for r in rows for name in r.by_popularity}
    header = [
        "model",
        *[f"{name.removeprefix('pop_').replace('_', '-')} ({sizes[name]:,})" for name in buckets],
    ]
    lines = [
        "Test NDCG@10 / HR@20 in % by the target's count in the train part (users in brackets; cold: 0):",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for r in rows:
        cells = [
            f"{100 * r.by_popularity[name]['ndcg_at_10']:.2f} / {100 * r.by_popularity[name]['hr_at_20']:.2f}"
            if name in r.by_popularity
            else ""
            for name in buckets
        ]
        lines.append("| " + " | ".join([r.label, *cells]) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from mmsr_model.device import resolve_device
    from pipeline.core.io import write_text_atomic
    from pipeline.core.logs import setup_logging

    setup_logging("INFO")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.data.is_dir():
        raise SystemExit(f"sequence set not found at {args.data} (set MMSR_SHARED_DATA or --data)")
    # the settings given as environment variables (MMSR_CODES_LEVELS=3 ...) change the data or the model
    named = sorted(k for k in os.environ if k == "OMP_NUM_THREADS" or k.startswith("MMSR_"))
    env = "".join(f"{k}={shlex.quote(os.environ[k])} " for k in named)
    command = env + "python benchmarks/quality.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    device = str(resolve_device(args.device))
    splits = ("loo", "ratio") if args.split == "both" else (args.split,)
    results: list[Result] = []

    def write_results(result: Result) -> None:
        """Rewrite the table after every model, so a stopped run keeps what it finished."""
        results.append(result)
        write_text_atomic(args.out, render(args, results, time.perf_counter() - started, command, device))

    with tempfile.TemporaryDirectory(prefix="mmsr-quality-") as tmp:
        home = args.home or Path(tmp)
        for split in splits:
            run_split(args, home, split, write_results)
    print(args.out.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
