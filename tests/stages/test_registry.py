"""Champion/challenger gate both ways, and the registered pyfunc loaded by alias in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from tiny_warehouse import register_untrained, tiny_settings, write_tiny_warehouse

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.serving.registry import registered_name, setup_mlflow
from pipeline.stages.promote import PromotionDecision, evaluate_version, gate_split, metric_k, run_promote
from pipeline.stages.train.run import run_train
from pipeline.warehouse.dataset import load_sequence_data
from pipeline.warehouse.model_runs import read_model_runs

pytestmark = pytest.mark.slow
NAME = registered_name("tiny")


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[PromotionDecision]]:
    """v1 untrained (first: promoted), v2 trained (better: promoted), v3 untrained (worse: rejected)."""
    settings = tiny_settings(tmp_path_factory.mktemp("registry") / "home", baselines=[])
    write_tiny_warehouse(settings)
    decisions = [register_untrained(settings)]
    decisions.append(PromotionDecision(**run_train(settings, "tiny").promotion))
    decisions.append(register_untrained(settings))
    return settings, decisions


def _champion(settings: Settings) -> int:
    return int(MlflowClient(settings.tracking_uri).get_model_version_by_alias(NAME, "champion").version)


def test_first_model_is_promoted(gate: tuple) -> None:
    _, (first, _, _) = gate
    assert first.version == 1 and first.promoted and first.champion_version is None


def test_better_challenger_is_promoted(gate: tuple) -> None:
    settings, (first, better, _) = gate
    assert better.version == 2 and better.promoted
    assert better.champion_version == 1
    # the old champion is re-evaluated on the same current split: the same number as its own gate
    assert better.champion_value == pytest.approx(first.challenger_value)
    assert better.challenger_value > better.champion_value
    tags = MlflowClient(settings.tracking_uri).get_model_version(NAME, "2").tags
    assert tags["promotion_decision"] == "promoted" and tags["compared_champion_version"] == "1"
    assert float(tags["champion_test_ndcg_at_10"]) == pytest.approx(better.champion_value)


def test_worse_challenger_never_touches_champion(gate: tuple) -> None:
    settings, (_, better, worse) = gate
    assert worse.version == 3 and not worse.promoted
    assert worse.champion_version == 2 and worse.champion_value == pytest.approx(better.challenger_value)
    assert _champion(settings) == 2
    client = MlflowClient(settings.tracking_uri)
    assert int(client.get_model_version_by_alias(NAME, "challenger").version) == 3
    tags = client.get_model_version(NAME, "3").tags
    assert tags["promotion_decision"] == "rejected"
    assert float(tags["challenger_test_ndcg_at_10"]) < float(tags["champion_test_ndcg_at_10"])
    promotions = {row["model_version"]: row["promotion"] for row in read_model_runs(settings, "tiny")}
    assert promotions == {2: "promoted", 3: "rejected"} | {1: promotions[1]}


def test_the_gate_ranks_the_lists_recommend_serves(gate: tuple) -> None:
    """Seen items are no candidates at the gate (``exclude_seen``), as in what ``recommend`` writes."""
    settings, (_, better, _) = gate
    data, index = load_sequence_data(settings, "tiny")
    metric, uri = settings.promotion_metric, f"models:/{NAME}/2"
    setup_mlflow(settings, "tiny")
    split = gate_split(settings)
    served, every = (evaluate_version(uri, data, index, split, metric, seen) for seen in (True, False))
    assert better.challenger_value == served != every


def test_margin_blocks_a_small_gain(gate: tuple) -> None:
    """Re-gating the rejected v3 against v2 with a margin: still rejected, champion unchanged."""
    settings, _ = gate
    strict = tiny_settings(settings.home, baselines=[], promotion_margin=0.5, promotion_metric="hr_at_20")
    decision = run_promote(strict, "tiny", 3)
    assert not decision.promoted and decision.metric == "hr_at_20" and decision.margin == 0.5
    assert _champion(settings) == 2


def test_bad_promotion_metric_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="promotion_metric"):
        metric_k("ndcg@10")


FRESH_PROCESS = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/mmsr-tiny@champion")
frame = pd.DataFrame(json.loads(sys.argv[2]))
out = model.predict(frame)
print(json.dumps({"item_ids": out["item_ids"].tolist(), "scores": out["scores"].tolist()}))
"""


def test_pyfunc_round_trip_in_a_fresh_process(gate: tuple) -> None:
    settings, _ = gate
    request = {
        "history": [["tiny-I003", "tiny-I004", "tiny-I005"], ["tiny-I010"], ["unknown-item"]],
        "k": [5, 3, 4],
    }
    setup_mlflow(settings, "tiny")
    local = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(pd.DataFrame(request))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, settings.tracking_uri, json.dumps(request)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    remote = json.loads(done.stdout.strip().splitlines()[-1])
    assert remote["item_ids"] == local["item_ids"].tolist()
    # float32 sums may round differently with another thread count; ids are compared exactly
    for remote_row, local_row in zip(remote["scores"], local["scores"], strict=True):
        np.testing.assert_allclose(remote_row, local_row, rtol=1e-5)
    assert [len(ids) for ids in remote["item_ids"]] == [5, 3, 0]
    # the trained champion has learned the chain: after I003..I005 comes I006 (4th of 37 unseen
    # items after 4 tiny epochs; its validation NDCG@10 is 0.73); seen items are excluded
    assert "tiny-I006" in remote["item_ids"][0]
    assert not {"tiny-I003", "tiny-I004", "tiny-I005"} & set(remote["item_ids"][0])


def test_pyfunc_signature_and_input_example(gate: tuple) -> None:
    settings, _ = gate
    setup_mlflow(settings, "tiny")
    info = mlflow.models.get_model_info(f"models:/{NAME}/2")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["history", "k"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["item_ids", "scores"]
    assert info.signature.params.to_dict()[0]["name"] == "exclude_seen"
    assert info.saved_input_example_info is not None


def test_models_pickled_under_the_old_module_path_still_load() -> None:
    import pickle

    from pipeline.serving.pyfunc_model import MMSRPythonModel

    # what an earlier release's python_model.pkl names: the class by its old module path
    assert pickle.loads(b"cpipeline.pyfunc_model\nMMSRPythonModel\n.") is MMSRPythonModel
