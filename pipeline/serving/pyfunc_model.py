"""The MLflow pyfunc wrapper that serves an mmsr_model on EXTERNAL item ids.

A registered model must be usable without the warehouse that trained it (by the
promotion gate months later, by `mlflow models serve`), so it carries its own
item index and maps ids at the boundary. The weights file (``save_model``) holds
the model's init kwargs, modality codes included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

if TYPE_CHECKING:
    from mmsr_model.histories import Histories

log = logging.getLogger(__name__)

DEFAULT_K = 20
MODEL_ARTIFACT = "model"
ITEM_INDEX_ARTIFACT = "item_index"


def read_item_ids(path: str | Path) -> np.ndarray:
    """``item_index.parquet`` as an array ``item_ids[item_idx]``."""
    table = pq.read_table(path, columns=["item_id", "item_idx"]).sort_by("item_idx")
    return np.asarray(table["item_id"].to_pylist(), dtype=object)


class MMSRPythonModel(mlflow.pyfunc.PythonModel):
    """Top-K next items for histories of external item ids."""

    def load_context(self, context: Any) -> None:
        from mmsr_model.persistence import load_model

        self.model = load_model(context.artifacts[MODEL_ARTIFACT], device="cpu").eval()
        self.item_ids = read_item_ids(context.artifacts[ITEM_INDEX_ARTIFACT])
        self.item_idx = {item: i for i, item in enumerate(self.item_ids.tolist())}
        self.device: str | None = None
        log.info("loaded %s model over %d items", self.model.name, len(self.item_ids))

    def to_internal(self, histories: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """External-id histories -> dense ids of this model; unknown items are dropped."""
        lookup = self.item_idx.get
        return [np.fromiter((i for i in map(lookup, h) if i is not None), dtype=np.int64) for h in histories]

    def top_k(
        self, histories: Histories | Sequence[np.ndarray], k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Block-wise top-K over dense ids, packed or one array per user (histories must be
        non-empty); -inf marks no candidate."""
        from mmsr_model.inference import top_k

        return top_k(
            self.model, histories, min(k, len(self.item_ids)), exclude_seen=exclude_seen, device=self.device
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        histories = self.to_internal(model_input["history"].tolist())
        ks = model_input["k"] if "k" in model_input else pd.Series(DEFAULT_K, index=model_input.index)
        ks = ks.fillna(DEFAULT_K).astype(int).to_numpy()
        item_ids: list[list[str]] = [[] for _ in histories]
        scores: list[list[float]] = [[] for _ in histories]
        rows = [r for r, h in enumerate(histories) if h.size]
        if rows:
            ids, vals = self.top_k(
                [histories[r] for r in rows], int(ks.max()), bool(params.get("exclude_seen", True))
            )
            for row, row_ids, row_vals in zip(rows, ids, vals, strict=True):
                keep = np.isfinite(row_vals[: ks[row]])
                item_ids[row] = self.item_ids[row_ids[: ks[row]][keep]].tolist()
                scores[row] = row_vals[: ks[row]][keep].astype(float).tolist()
        return pd.DataFrame({"item_ids": item_ids, "scores": scores})


def signature() -> ModelSignature:
    """Input: ``history`` (external ids) and optional ``k``; output: ranked ids and scores."""
    return ModelSignature(
        inputs=Schema([ColSpec(Array("string"), "history"), ColSpec("long", "k", required=False)]),
        outputs=Schema([ColSpec(Array("string"), "item_ids"), ColSpec(Array("double"), "scores")]),
        params=ParamSchema([ParamSpec("exclude_seen", "boolean", True)]),
    )


def input_example(item_ids: np.ndarray, k: int = 5) -> pd.DataFrame:
    """Two small histories drawn from the real catalogue (the first items of the index)."""
    head = item_ids[: min(3, len(item_ids))].tolist()
    return pd.DataFrame({"history": [head, head[:1]], "k": [k, k]})
