"""Resumable training: the epoch loop's whole state after an epoch, in one file.

A nightly train task that dies mid-run (worker lost, out of memory, pre-empted) is
retried by Airflow; with a checkpoint the retry carries on after the last finished
epoch instead of starting over, and a time-budgeted benchmark run on a CPU can be
continued in a later session until early stopping ends it. Resuming is exact:
weights, Adam moments, loss scaling, the shuffling, dropout and modality-drop random
streams and the early-stopping counters all come back, so on the same device a
resumed run matches an uninterrupted one epoch for epoch.

The file name carries a hash of everything that decides what is learnt (the
learning settings and the data), so a changed setting or new data starts a fresh
file instead of resuming a different run. Settings that only decide how long or
where it runs (max epochs, patience, time budget, device) may change between
resumes, and so may ``refit``: a finished run resumed with it goes straight to the
refit (which is not checkpointed). Files are read with ``torch.load(weights_only=True)``:
nothing is unpickled.

Each file also records what its hash was taken over, so a run that finds only other
files of its model says why it starts afresh (which settings differ, or the data):
after an upgrade that added a learning setting, every earlier file is such a one.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsr_model.atomic import write_atomically
from mmsr_model.base import SequentialRecommender
from mmsr_model.data import SequenceData

FORMAT_VERSION = 1
#: TrainConfig fields a resumed run may change: they steer how long, where and how fast it runs
RUN_CONTROLS = frozenset(
    {
        "max_epochs",
        "patience",
        "time_budget_s",
        "device",
        "prefetch",
        "checkpoint_dir",
        "refit",  # runs after the checkpointed loop has ended; it does not change what the loop learns
    }
)
#: TrainConfig fields and model parameters added after checkpoints were first keyed, with the value
#: every earlier run had: at that value they stay out of the key, so an upgrade does not orphan the
#: checkpoint of a run that never set them (a retry after the upgrade still resumes it), while a run
#: under another value (``exclude_seen``'s default validates differently) never resumes such a file
LATER_SETTINGS: dict[str, Any] = {"max_valid_samples": None, "new_repeats": 1, "exclude_seen": False}
LATER_MODEL_PARAMS: dict[str, Any] = {"content_dim": None, "id_init": "random"}


@dataclass
class LoopState:
    """Where the epoch loop stands after ``epoch`` (history as ``TrainHistory.to_dict``)."""

    epoch: int
    best_score: float
    bad_epochs: int
    best_state: dict[str, torch.Tensor] | None
    history: dict[str, Any]


@dataclass
class Trainee:
    """The live objects a checkpoint restores in place."""

    model: SequentialRecommender
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    shuffler: np.random.Generator


@dataclass(frozen=True)
class CheckpointFile:
    """Where a run's checkpoint lives, and the JSON of what decides its name (the learning
    settings and the data signature)."""

    path: Path
    key: str


def checkpoint_file(
    directory: str | Path, config_fields: dict[str, Any], data: SequenceData
) -> CheckpointFile:
    """``<directory>/<model>-<hash of the learning settings and the data>.pt``."""
    learning = {
        k: _set_only(v, LATER_MODEL_PARAMS) if k == "model_params" else v
        for k, v in sorted(_set_only(config_fields, LATER_SETTINGS).items())
        if k not in RUN_CONTROLS
    }
    key = json.dumps({"config": learning, "data": data_signature(data)}, sort_keys=True, default=repr)
    name = f"{config_fields['model']}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    return CheckpointFile(Path(directory) / name, key)


def _set_only(fields: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the ``later`` ones that hold their default."""
    return {k: v for k, v in fields.items() if not (k in later and v == later[k])}


def other_runs(file: CheckpointFile) -> list[str]:
    """Why each other checkpoint of the same model in the directory is not this run's."""
    model = file.path.name.rsplit("-", 1)[0]
    mine = json.loads(file.key)
    reasons = []
    for other in sorted(file.path.parent.glob(f"{model}-*.pt")):
        if other == file.path:
            continue
        try:
            stored = torch.load(other, map_location="cpu", weights_only=True, mmap=True).get("key")
        except (OSError, RuntimeError, pickle.UnpicklingError) as error:
            reasons.append(f"{other.name}: unreadable ({error})")
            continue
        if stored is None:
            reasons.append(f"{other.name}: written without its settings (an earlier version)")
            continue
        theirs = json.loads(stored)
        fields = sorted(
            k
            for k in mine["config"].keys() | theirs["config"].keys()
            if mine["config"].get(k, "<absent>") != theirs["config"].get(k, "<absent>")
        )
        differ = [f"settings {', '.join(fields)}"] if fields else []
        differ += ["data"] if mine["data"] != theirs["data"] else []
        reasons.append(f"{other.name}: other {' and '.join(differ)}")
    return reasons


def data_signature(data: SequenceData) -> str:
    """SHA-256 over the sequences, splits and side information: new data means a new run."""
    digest = hashlib.sha256(f"n_items={data.n_items};users={len(data.sequences)}".encode())
    for seq in data.sequences:
        digest.update(np.asarray(seq, dtype=np.int64).tobytes())
        digest.update(b"|")
    for name in sorted(data.splits):
        digest.update(name.encode())
        digest.update(np.asarray(data.splits[name].users, dtype=np.int64).tobytes())
        digest.update(np.asarray(data.splits[name].positions, dtype=np.int64).tobytes())
    for kind in ("item_codes", "code_centres", "item_features"):
        for modality, array in sorted(getattr(data, kind).items()):
            digest.update(f"{kind}.{modality}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save_checkpoint(file: CheckpointFile, trainee: Trainee, state: LoopState) -> Path:
    """Write the loop's state after ``state.epoch`` atomically (a crash mid-write keeps the last one)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "key": file.key,
        "epoch": state.epoch,
        "best_score": state.best_score,
        "bad_epochs": state.bad_epochs,
        "best_state": state.best_state,
        "history": state.history,
        "model": {k: v.detach().cpu() for k, v in trainee.model.state_dict().items()},
        "optimizer": trainee.optimizer.state_dict(),
        "scaler": trainee.scaler.state_dict(),
        "shuffler": trainee.shuffler.bit_generator.state,
        "model_streams": {
            name: gen.bit_generator.state for name, gen in trainee.model.random_streams().items()
        },
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return write_atomically(file.path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(file: CheckpointFile, trainee: Trainee) -> LoopState | None:
    """Restore ``trainee`` from ``file`` and return the loop's state; ``None`` when there is no file."""
    path = file.path
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {payload.get('format_version')!r}, this library reads "
            f"{FORMAT_VERSION}; delete the file to start the run over"
        )
    trainee.model.load_state_dict(payload["model"], strict=True)
    trainee.optimizer.load_state_dict(payload["optimizer"])
    trainee.scaler.load_state_dict(payload["scaler"])
    trainee.shuffler.bit_generator.state = payload["shuffler"]
    for name, gen in trainee.model.random_streams().items():
        gen.bit_generator.state = payload["model_streams"][name]
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return LoopState(
        epoch=payload["epoch"],
        best_score=payload["best_score"],
        bad_epochs=payload["bad_epochs"],
        best_state=payload["best_state"],
        history=payload["history"],
    )
