"""Night-by-night replay: warm start from the champion against cold training, on Beauty or Sports.

A sequence set (``sequences/beauty`` or ``sequences/sports``, ``--dataset``) is revealed
over ``--nights`` simulated nights. A seeded 25% of the users is drawn for every night
after the first; each drawn user's sequence is held back by one interaction per draw,
and night ``n`` reveals the interactions of the users drawn for night ``n`` (items seen
for the first time are the night's new items). Night 0 is the cold start that creates the champion.

Every night runs the real stages on ``MMSR_HOME``-style folders: extract (k-core off:
the sample is not a core), embed text (the packaged MiniLM; incremental, so only new
items embed), codes, train (MMSR + Pop) and the promotion gate. Two arms:

- warm: ``warm_start: auto`` (codes keep their centres, train seeds from the champion);
  ``--warm-arm NAME:SETTING=VALUE,...`` adds warm arms with other warm settings (each
  its own home and champion chain), for choosing those settings, for example
  ``--warm-arm 'anchored:warm_from="chain_cold"'``;
- cold: ``warm_start: never`` (codes re-clustered, every model from random weights);
  ``--cold-seed N`` adds a second cold arm with another seed, which measures how far two
  cold models land apart: the noise that the warm arms' gap to cold should be read against.

Night 0 is trained once and copied into every arm (it is the same cold run). The other
arms reuse the first arm's embeddings (the same items and texts). ``--offset`` skips the
first users: warm settings are chosen on one population (``--offset 3000``) and reported
on another, so that the reported nights never chose anything. Reported per night and
arm: MMSR train wall time (selection + refit), epochs and training samples stepped
through (load-independent), test NDCG@10 / HR@10 on that night's split with their
standard errors (per-user values of the registered model), the paired difference to the
cold model's NDCG@10 over the same test users with its standard error, and promotion.

    OMP_NUM_THREADS=1 python benchmarks/nightly_replay.py [--dataset sports] --sample 1000 --max-epochs 15
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEQUENCES = Path(os.environ.get("MMSR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "sequences"
RESULTS = ROOT / "benchmarks" / "results"
SEED, SHARE = 2023, 0.25
NIGHT_0 = date(2026, 1, 1)
TARGET_COST, K = 0.30, 10

log = logging.getLogger("benchmarks.nightly_replay")


def read_sequences(dataset: str, sample: int | None, offset: int = 0) -> list[list[str]]:
    """``[user, item, item, ...]`` lines of ``sample`` users after the first ``offset`` (all when None)."""
    with gzip.open(SEQUENCES / dataset / "user_sequence.txt.gz", "rt", encoding="utf-8") as fh:
        rows = [line.split() for line in fh if line.strip()][offset:]
    return rows[:sample] if sample else rows


def parse_arm(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME:warm_lr_scale=0.3,warm_replay_fraction=0.5`` as the arm's name and its warm settings."""
    name, _, assignments = spec.partition(":")
    if not name or name == "cold":
        raise argparse.ArgumentTypeError(f"--warm-arm {spec!r}: give the arm a name other than 'cold'")
    overrides = {}
    for assignment in filter(None, assignments.split(",")):
        key, sep, value = assignment.partition("=")
        if not sep or not key.startswith("warm_"):
            raise argparse.ArgumentTypeError(f"--warm-arm {spec!r}: {assignment!r} is not warm_SETTING=VALUE")
        overrides[key] = json.loads(value)
    return name, overrides


def reveal_plan(lengths: np.ndarray, nights: int, seed: int) -> np.ndarray:
    """``drawn[n, u]``: user ``u`` gets its next interaction on night ``n`` (n >= 1).

    A user keeps at least 3 interactions on night 0 (a leave-one-out split needs them).
    """
    rng = np.random.default_rng(seed)
    drawn = np.zeros((nights, len(lengths)), dtype=bool)
    for night in range(1, nights):
        drawn[night] = rng.random(len(lengths)) < SHARE
    held = np.cumsum(drawn[::-1], axis=0)[::-1]  # held[n, u]: interactions revealed on night n or later
    drawn &= held <= (lengths - 3)[None, :]
    return drawn


def write_night(rows: list[list[str]], drawn: np.ndarray, night: int, path: Path) -> None:
    """The reviews file of ``night``: every user's sequence without what later nights reveal."""
    later = drawn[night + 1 :].sum(axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row, hold in zip(rows, later.tolist(), strict=True):
            fh.write(" ".join(row[: len(row) - hold]) + "\n")


def _settings(home: Path, warm: bool, max_epochs: int | None, overrides: dict[str, Any] | None = None) -> Any:
    from pipeline.core.config import Settings

    model: dict[str, Any] = {"device": "cpu"}
    if max_epochs is not None:
        model["max_epochs"] = max_epochs
    return Settings(
        home=home,
        kcore=0,
        baselines=["pop"],
        warm_start="auto" if warm else "never",
        image_download=False,
        model=model,
        **(overrides or {}),
    )


def _test_errors(settings: Any, dataset: str, run_id: str) -> tuple[dict[str, float], dict[str, float]]:
    """NDCG@10 and HR@10 of the run's MMSR on the test split, with standard errors over users,
    and each test user's NDCG@10 by user id (for the paired difference between arms)."""
    import mlflow

    from mmsr_model.evaluation import sample_ranks
    from mmsr_model.persistence import load_model
    from pipeline.warehouse.dataset import load_sequence_data

    data, index = load_sequence_data(settings, dataset)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="warm/mmsr.pt", dst_path=tmp)
        model = load_model(path)
    ranks = sample_ranks(
        model, data, data.splits["test"], exclude_seen=settings.model.exclude_seen, device="cpu"
    )
    ndcg = np.where(ranks <= K, 1.0 / np.log2(ranks + 1), 0.0)
    hit = (ranks <= K).astype(float)
    n = len(ranks)
    figures = {
        "ndcg_at_10": float(ndcg.mean()),
        "ndcg_at_10_se": float(ndcg.std(ddof=1) / np.sqrt(n)),
        "hr_at_10": float(hit.mean()),
        "hr_at_10_se": float(hit.std(ddof=1) / np.sqrt(n)),
        "test_users": n,
    }
    users = index.user_ids[data.splits["test"].users]
    return figures, dict(zip(users.tolist(), ndcg.tolist(), strict=True))


def paired_difference(
    arm: dict[str, float], cold: dict[str, float], among: set[str] | None = None, group: str = ""
) -> dict[str, float]:
    """Mean and standard error of ``arm`` minus ``cold`` per-user NDCG@10 over their common users
    (those in ``among`` only, when given; the keys then end in ``_GROUP``).

    Both models rank the same users' targets, so the per-user difference leaves out how
    hard each user is, as far as the two models agree on that (on the Beauty replay they
    agree weakly: the paired SE is only slightly below either model's own).
    """
    users = sorted(arm.keys() & cold.keys() & (among if among is not None else cold.keys()))
    diff = np.array([arm[u] - cold[u] for u in users])
    key = f"ndcg_diff_vs_cold{'_' + group if group else ''}"
    return {key: float(diff.mean()), f"{key}_se": float(diff.std(ddof=1) / np.sqrt(len(diff)))}


def paired_by_group(arm: dict[str, float], cold: dict[str, float], tonight: set[str]) -> dict[str, float]:
    """The paired difference over every user, over tonight's users (their newest interaction
    is tonight's new test target) and over the rest: a warm model that learns too little
    of the new interactions loses on the first group, one that drifts or forgets on the second."""
    rest = set(cold) - tonight
    return (
        paired_difference(arm, cold)
        | paired_difference(arm, cold, tonight, "tonight")
        | paired_difference(arm, cold, rest, "rest")
        | {"users_tonight": len(tonight & cold.keys())}
    )


def run_night(
    settings: Any, dataset: str, reviews: Path, run_date: date, embeddings_from: Path | None
) -> tuple[dict[str, Any], dict[str, float]]:
    """The real stages for one night of ``dataset``; returns the figures of the night and the
    per-user test NDCG@10."""
    from pipeline.stages.codes import run_codes
    from pipeline.stages.embed import run_embed
    from pipeline.stages.extract import run_extract
    from pipeline.stages.train.run import run_train

    extract = run_extract(settings, dataset, "sequences", reviews, SEQUENCES / dataset / "item_text.txt.gz")
    embed_s = 0.0
    if embeddings_from is None:
        started = time.perf_counter()
        run_embed(settings, dataset, "text")
        embed_s = time.perf_counter() - started
    else:
        target = settings.dataset_dir(dataset) / "embeddings"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(embeddings_from, target)
    codes = run_codes(settings, dataset, run_date)
    report = run_train(settings, dataset, promote=True, run_date=run_date)
    promotion = report.promotion or {}
    figures, per_user = _test_errors(settings, dataset, report.run_id)
    row = {
        "run_date": run_date.isoformat(),
        "users": extract.users,
        "items": extract.items,
        "new_items": extract.new_items,
        "embed_seconds": round(embed_s, 1),
        "codes_rebuilt": codes.rebuilt,
        "warm_start": report.warm_start,
        "warm_start_reason": report.warm_start_reason,
        "train_seconds": report.train_seconds,
        "epochs": report.epochs,
        "refit_epochs": report.refit_epochs,
        "samples_processed": report.samples_processed,
        "model_version": report.model_version,
        "promoted": bool(promotion.get("promoted")),
        "load_avg_after": os.getloadavg()[0],
        **figures,
    }
    return row, per_user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="N users after --offset (default: all)")
    parser.add_argument("--offset", type=int, default=0, help="skip the first N users (dev population)")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap on a cold night's epochs")
    parser.add_argument("--nights", type=int, default=5)
    parser.add_argument("--home", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--dataset", choices=["beauty", "sports"], default="beauty", help="sequence set")
    parser.add_argument(
        "--warm-arm",
        type=parse_arm,
        action="append",
        default=None,
        metavar="NAME:warm_SETTING=VALUE,...",
        help="a warm arm with these warm settings (repeatable; default: one arm 'warm' with the defaults)",
    )
    parser.add_argument(
        "--cold-seed",
        type=int,
        action="append",
        default=[],
        metavar="SEED",
        help=f"a second cold arm 'cold-seedSEED' trained with this seed instead of {SEED} (repeatable)",
    )
    parser.add_argument("--out", default=None, help="results name (default: nightly_replay[_sports])")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args()
    if args.out is None:
        args.out = "nightly_replay" if args.dataset == "beauty" else f"nightly_replay_{args.dataset}"
    if args.render_only:
        payload = json.loads((RESULTS / f"{args.out}.json").read_text(encoding="utf-8"))
        report = RESULTS / f"{args.out}.md"
        report.write_text(render(payload) + hand_written_reading(report), encoding="utf-8")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    work = args.home or Path(tempfile.mkdtemp(prefix="mmsr-replay-"))
    warm_arms = dict(args.warm_arm or [("warm", {})])
    cold_arms = {f"cold-seed{seed}": {"seed": seed} for seed in args.cold_seed}
    rows = read_sequences(args.dataset, args.sample, args.offset)
    drawn = reveal_plan(np.array([len(r) - 1 for r in rows]), args.nights, SEED)
    arms = [*warm_arms, *cold_arms, "cold"]
    homes = {arm: work / arm for arm in arms}
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    load_before = os.getloadavg()
    started = time.perf_counter()
    for night in range(args.nights):
        reviews = work / "raw" / f"night{night}" / "user_sequence.txt"
        write_night(rows, drawn, night, reviews)
        run_date = NIGHT_0 + timedelta(days=night)
        embeddings = None
        per_user: dict[str, dict[str, float]] = {}
        for arm in arms:
            overrides = warm_arms.get(arm) or cold_arms.get(arm)
            settings = _settings(homes[arm], arm in warm_arms, args.max_epochs, overrides)
            if night == 0 and arm != arms[0]:  # the same cold run starts every arm
                shutil.copytree(homes[arms[0]], homes[arm])
                results[arm].append(dict(results[arms[0]][0]))
                continue
            row, per_user[arm] = run_night(settings, args.dataset, reviews, run_date, embeddings)
            embeddings = embeddings or settings.dataset_dir(args.dataset) / "embeddings"
            results[arm].append(row)
            log.info("night %d %s: %s", night, arm, row)
        if night > 0:
            tonight = {rows[u][0] for u in np.flatnonzero(drawn[night])}
            for arm in arms[:-1]:
                results[arm][night].update(paired_by_group(per_user[arm], per_user["cold"], tonight))
        write_results(args, len(rows), warm_arms, cold_arms, load_before, started, results)


def write_results(
    args: argparse.Namespace,
    users: int,
    warm_arms: dict[str, dict[str, Any]],
    cold_arms: dict[str, dict[str, Any]],
    load_before: tuple[float, float, float],
    started: float,
    results: dict[str, list[dict[str, Any]]],
) -> None:
    """Both files, rewritten after every night so an interrupted replay keeps its nights."""
    payload = {
        "dataset": args.dataset,
        "sample_users": args.sample or users,
        "offset": args.offset,
        "nights": args.nights,
        "seed": SEED,
        "share_per_night": SHARE,
        "cold_max_epochs": args.max_epochs,
        "warm_arms": {arm: _warm_schedule(overrides) for arm, overrides in warm_arms.items()},
        "cold_arms": cold_arms,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.machine(),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "arms": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    (RESULTS / f"{args.out}.md").write_text(render(payload), encoding="utf-8")
    log.info("wrote %s", RESULTS / f"{args.out}.md")


def hand_written_reading(report: Path) -> str:
    """The paragraphs written by hand under a report's table (from its ``Reading`` line on).

    A rerun writes a fresh report without them (they described the previous run);
    ``--render-only`` keeps them, since the figures they read are the same.
    """
    if not report.is_file():
        return ""
    text = report.read_text(encoding="utf-8")
    start = text.find("\nReading")
    return "" if start < 0 else text[start:]


def _warm_schedule(overrides: dict[str, Any]) -> dict[str, Any]:
    """The warm settings an arm ran with: the defaults, then its overrides."""
    from pipeline.core.config import Settings

    names = (
        "warm_from",
        "warm_drift_tolerance",
        "warm_max_epochs",
        "warm_patience",
        "warm_replay_fraction",
        "warm_new_repeats",
        "warm_lr_scale",
        "full_retrain_every_days",
    )
    return {name: Settings.model_fields[name].default for name in names} | overrides


def _warm_arms(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each warm arm's settings (files written before arms had names hold one, ``warm``)."""
    return payload.get("warm_arms") or {"warm": payload.get("warm_schedule", {})}


def _within_one_se(row: dict[str, Any], cold: dict[str, Any]) -> bool:
    """The quality target: ``row``'s test NDCG@10 within one of the cold model's standard errors."""
    return abs(row["ndcg_at_10"] - cold["ndcg_at_10"]) <= cold["ndcg_at_10_se"]


def _summary(payload: dict[str, Any], arm: str) -> str:
    """Mean cost of ``arm``'s nights against the cold ones, and how many stayed within one SE."""
    pairs = list(zip(payload["arms"][arm][1:], payload["arms"]["cold"][1:], strict=False))
    if not pairs:
        return f"`{arm}`: no night after night 0 yet."
    time_ratio = np.mean([w["train_seconds"] / c["train_seconds"] for w, c in pairs])
    sample_ratio = np.mean([w["samples_processed"] / c["samples_processed"] for w, c in pairs])
    within = sum(_within_one_se(w, c) for w, c in pairs)
    warm = sum(w["warm_start"] == "warm" for w, _ in pairs)
    mean_arm, mean_cold = (np.mean([pair[side]["ndcg_at_10"] for pair in pairs]) for side in (0, 1))
    paired = [w for w, _ in pairs if "ndcg_diff_vs_cold" in w]
    beyond = sum(abs(w["ndcg_diff_vs_cold"]) > 2 * w["ndcg_diff_vs_cold_se"] for w in paired)
    paired_text = (
        f" The paired difference to cold was beyond two of its standard errors on {beyond} of {len(paired)}."
        if paired
        else ""
    )
    if arm in payload.get("cold_arms", {}):
        return (
            f"`{arm}` (a second cold model, seed {payload['cold_arms'][arm]['seed']}): its test NDCG@10 was "
            f"within one SE of the reference cold model's on {within} of {len(pairs)} nights. Mean test "
            f"NDCG@10: {mean_arm:.4f} against {mean_cold:.4f}.{paired_text}"
        )
    return (
        f"`{arm}` over the {len(pairs)} nights after night 0 ({warm} trained warm): a warm night cost "
        f"{time_ratio:.0%} of the cold night's training time on average ({sample_ratio:.0%} of its "
        f"samples); its test NDCG@10 was within one SE of the cold model's on {within} of {len(pairs)}. "
        f"Mean test NDCG@10 over those nights: warm {mean_arm:.4f}, cold {mean_cold:.4f}.{paired_text}"
    )


def render(payload: dict[str, Any]) -> str:
    """The results table: one row per night and arm, each warm arm beside cold, and the two targets."""
    name = payload["dataset"].split()[0].capitalize()
    warm_arms = _warm_arms(payload)
    others = [*warm_arms, *payload.get("cold_arms", {})]
    offset = payload.get("offset", 0)
    users = payload["sample_users"]
    population = f"{name} users {offset + 1}-{offset + users}" if offset else f"First {users} {name} users"
    lines = [
        f"# Nightly replay: warm start against cold training ({name})",
        "",
        f"{population}, "
        f"{payload['nights']} nights, seed {payload['seed']}, "
        f"{payload['share_per_night']:.0%} of users get their next interaction each night; MMSR + Pop; cold "
        f"epoch cap {payload['cold_max_epochs']}; OMP_NUM_THREADS={payload['threads']}. Load average "
        f"{payload['load_avg_before'][0]:.1f} before, {payload['load_avg_after'][0]:.1f} after (2 cores). "
        "Samples stepped through are the load-independent cost. Targets: a warm night at most "
        f"{TARGET_COST:.0%} of the cold night's training time; its test NDCG@10 within one standard error "
        "of the cold model's. Arms:",
        "",
        *(
            f"- `{arm}`: " + ", ".join(f"`{key}` {value}" for key, value in schedule.items())
            for arm, schedule in warm_arms.items()
        ),
        *(
            f"- `{arm}`: cold, seed {overrides['seed']} (the reference `cold` arm: seed {payload['seed']})"
            for arm, overrides in payload.get("cold_arms", {}).items()
        ),
        "",
        *(line for arm in others for line in (_summary(payload, arm), "")),
        "| night | new items | arm | start | train s | epochs (+refit) | samples | "
        "NDCG@10 ± SE | HR@10 ± SE | promoted | cost vs cold | NDCG within 1 SE | paired Δ NDCG@10 ± SE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cold_rows = payload["arms"]["cold"]
    for night, cold in enumerate(cold_rows):
        for arm in (*others, "cold"):
            if night >= len(payload["arms"][arm]) or (night == 0 and arm != others[0]):
                continue
            row = payload["arms"][arm][night]
            cost = within = paired = ""
            if night > 0 and arm != "cold":
                cost = f"{row['train_seconds'] / cold['train_seconds']:.0%} time, "
                cost += f"{row['samples_processed'] / cold['samples_processed']:.0%} samples"
                within = "yes" if _within_one_se(row, cold) else "no"
                if "ndcg_diff_vs_cold" in row:
                    paired = f"{row['ndcg_diff_vs_cold']:+.4f} ± {row['ndcg_diff_vs_cold_se']:.4f}"
            lines.append(
                f"| {night} | {row['new_items']} | {'all' if night == 0 else arm} | {row['warm_start']} | "
                f"{row['train_seconds']:.0f} | {row['epochs']} (+{row['refit_epochs']}) | "
                f"{row['samples_processed']} | {row['ndcg_at_10']:.4f} ± {row['ndcg_at_10_se']:.4f} | "
                f"{row['hr_at_10']:.4f} ± {row['hr_at_10_se']:.4f} | {'yes' if row['promoted'] else 'no'} | "
                f"{cost} | {within} | {paired} |"
            )
    return "\n".join([*lines, *_group_table(payload, others)]) + "\n"


def _group_table(payload: dict[str, Any], others: list[str]) -> list[str]:
    """The paired difference split into tonight's users and the rest (runs that recorded it)."""
    rows = [
        (night, arm, row)
        for arm in others
        for night, row in enumerate(payload["arms"][arm])
        if "ndcg_diff_vs_cold_tonight" in row
    ]
    if not rows:
        return []
    lines = [
        "",
        "Paired Δ NDCG@10 to cold by user group: tonight's users (drawn tonight: their newest "
        "interaction is tonight's test target, the one before it a new valid one) and the rest.",
        "",
        "| night | arm | tonight's users | Δ tonight ± SE | Δ rest ± SE |",
        "|---|---|---|---|---|",
    ]
    for night, arm, row in sorted(rows, key=lambda r: r[0]):
        lines.append(
            f"| {night} | {arm} | {row['users_tonight']} | "
            f"{row['ndcg_diff_vs_cold_tonight']:+.4f} ± {row['ndcg_diff_vs_cold_tonight_se']:.4f} | "
            f"{row['ndcg_diff_vs_cold_rest']:+.4f} ± {row['ndcg_diff_vs_cold_rest_se']:.4f} |"
        )
    return lines


if __name__ == "__main__":
    main()
