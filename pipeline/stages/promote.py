"""Promote stage: the champion/challenger gate.

The gate evaluates the challenger AND the current champion through their pyfunc
wrappers on external ids over the SAME current split (test for refit models, the
default; else validation, see ``gate_split``), so a champion trained on an older item
index is still compared fairly (unknown history items are dropped, an unknown target
counts as a miss). Only a challenger that beats the champion by the margin gets the
``champion`` alias.

A warm model (trained from the champion's weights) is also held against its chain's
cold model, the one that started the chain, on the same split: each warm night is
compared with a champion that may itself be warm, so a chain that loses a little every
night would pass every night. Below ``warm_drift_tolerance`` of the cold model's value it
is not promoted, and its version is tagged so that the next night trains cold.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from tqdm.auto import tqdm

from mmsr_model.data import SequenceData
from mmsr_model.metrics import metrics_from_ranks
from pipeline.core.config import METRIC_PATTERN, Settings
from pipeline.core.errors import PipelineError
from pipeline.serving.registry import (
    CHALLENGER,
    CHAMPION,
    WARM_DRIFT_TAG,
    chain_cold_version,
    current_champion,
    load_registered,
    registered_name,
    setup_mlflow,
)
from pipeline.warehouse.dataset import DatasetIndex, load_sequence_data
from pipeline.warehouse.model_runs import upsert_model_run

log = logging.getLogger(__name__)

_GATE_BATCH = 8192


def metric_k(metric: str) -> int:
    match = re.match(METRIC_PATTERN, metric)
    if not match:
        raise PipelineError(f"promotion_metric {metric!r} must look like ndcg_at_10, hr_at_5 or mrr_at_20")
    return int(match.group(2))


def evaluate_version(
    model_uri: str, data: SequenceData, index: DatasetIndex, split: str, metric: str, exclude_seen: bool
) -> float:
    """``metric`` of a registered model on ``split``, through its pyfunc on external ids.

    With ``exclude_seen`` the lists are the ones ``recommend`` serves: the history's items are
    not candidates, so a target the user already had (a repeat) counts as a miss.
    """
    targets = data.splits[split]
    if len(targets) == 0:
        raise PipelineError(f"dataset {index.dataset!r} has no {split!r} samples to compare models on")
    k = metric_k(metric)
    pyfunc = load_registered(model_uri)
    histories = [
        index.item_ids[h].tolist() for h in data.histories(targets, max_len=max(map(len, data.sequences)))
    ]
    target_ids = index.item_ids[data.target_items(targets)]
    ranks = np.zeros(len(targets), dtype=np.int64)
    for start in tqdm(range(0, len(targets), _GATE_BATCH), desc=f"gate {model_uri}", leave=False):
        frame = pd.DataFrame({"history": histories[start : start + _GATE_BATCH]})
        frame["k"] = k
        out = pyfunc.predict(frame, params={"exclude_seen": exclude_seen})
        for row, (ids, target) in enumerate(
            zip(out["item_ids"], target_ids[start : start + _GATE_BATCH], strict=True)
        ):
            hit = np.flatnonzero(np.asarray(ids, dtype=object) == target)
            ranks[start + row] = hit[0] + 1 if hit.size else k + 1  # k + 1: not in the top k
    return float(metrics_from_ranks(ranks, ks=(k,))[metric])


def gate_split(settings: Settings) -> str:
    """The split the gate compares on: 'valid', or 'test' when models are refit on valid.

    A refit model has trained on the valid targets, so only the test targets are
    unseen by both the challenger and a champion trained the same way.
    """
    return "test" if settings.model.refit else "valid"


@dataclass(frozen=True)
class PromotionDecision:
    dataset: str
    version: int
    metric: str
    split: str
    challenger_value: float
    champion_version: int | None
    champion_value: float | None
    margin: float
    promoted: bool
    reason: str
    chain_cold_version: int | None = None
    chain_cold_value: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_promote(settings: Settings, dataset: str, version: int) -> PromotionDecision:
    """Alias ``version`` as challenger; make it champion only if it beats the champion by the margin."""
    setup_mlflow(settings, dataset)
    client = MlflowClient()
    name = registered_name(dataset)
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    data, index = load_sequence_data(settings, dataset)
    metric, margin, split = settings.promotion_metric, settings.promotion_margin, gate_split(settings)
    seen = settings.model.exclude_seen
    challenger = evaluate_version(f"models:/{name}/{version}", data, index, split, metric, seen)
    champion_version = current_champion(client, dataset)
    champion: float | None = None
    if champion_version is None:
        promoted, reason = True, "first model: no champion yet"
    elif champion_version == version:
        promoted, reason = True, "already champion"
    else:
        champion = evaluate_version(f"models:/{name}/{champion_version}", data, index, split, metric, seen)
        promoted = challenger > champion + margin
        verdict = "beats" if promoted else "does not beat"
        reason = (
            f"{split} {metric} {challenger:.5f} {verdict} v{champion_version}'s {champion:.5f} + {margin}"
        )
    cold_version = chain_cold_version(client, dataset, version)
    cold: float | None = None
    drifted = False
    if cold_version is not None:
        same = cold_version == champion_version and champion is not None
        cold = (
            champion
            if same
            else evaluate_version(f"models:/{name}/{cold_version}", data, index, split, metric, seen)
        )
        floor = (1 - settings.warm_drift_tolerance) * cold
        if drifted := challenger < floor:
            promoted = False
            reason = (
                f"{reason}; warm model below its chain's cold v{cold_version} ({cold:.5f} x "
                f"(1 - {settings.warm_drift_tolerance}) = {floor:.5f}): not promoted, "
                "the next night trains cold"
            )
    decision = PromotionDecision(
        dataset,
        version,
        metric,
        split,
        challenger,
        champion_version,
        champion,
        margin,
        promoted,
        reason,
        cold_version,
        cold,
    )
    tags = {
        "promotion_decision": "promoted" if promoted else "rejected",
        "promotion_reason": reason,
        "promotion_metric": metric,
        "promotion_margin": margin,
        "promotion_split": split,
        f"challenger_{split}_{metric}": challenger,
        f"champion_{split}_{metric}": "" if champion is None else champion,
        "compared_champion_version": "" if champion_version is None else champion_version,
        "chain_cold_version": "" if cold_version is None else cold_version,
        WARM_DRIFT_TAG: str(drifted).lower(),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    upsert_model_run(
        settings,
        dataset,
        version,
        {"promotion": tags["promotion_decision"], "gate_value": challenger, "gate_champion_value": champion},
    )
    log.info("%s v%d: %s", name, version, reason)
    return decision
