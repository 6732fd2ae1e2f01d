"""The one contract every model follows (after RecBole), so training, evaluation,
inference and persistence never special-case a model.

A model is ``cls(n_items, config, **data arrays)`` with a frozen, validated config
(:mod:`mmsr_model.config`); ``from_data`` sizes a fresh one for a dataset. ``prepare``
turns raw histories into a model-specific CPU batch (a graph batch for MMSR, a padded
tensor for SASRec); ``batch_to`` moves it to a device; ``forward`` returns one state
per history; scores are dot products with the item embeddings. ``init_kwargs``
(derived from the config, never hand-copied) holds everything needed to rebuild the
module (JSON-able values and numpy arrays), so ``persistence`` can save and load it.
Optional capabilities are class flags with a default method, so callers ask the flag
instead of probing for attributes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from mmsr_model.config import ModelConfig
from mmsr_model.data import SequenceData, TargetSet
from mmsr_model.histories import Histories


class SequentialRecommender(nn.Module, ABC):
    """Base class: next-item prediction over ``n_items`` items."""

    #: registry name used by persistence (e.g. "mmsr", "sasrec")
    name: str = ""
    #: the class of this model's hyper-parameters
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: constructor keywords that carry data arrays rather than hyper-parameters (MMSR's codes)
    data_kwarg_names: ClassVar[tuple[str, ...]] = ()
    #: TrainConfig fields this model is trained with by default (e.g. SASRec's lr 0.001, batch 256);
    #: ``training.config_for`` applies them
    default_train_overrides: ClassVar[dict[str, Any]] = {}
    #: whether training should batch histories of similar length together: worth it for models
    #: that pad every history to the batch's longest (SASRec, GRU4Rec), pointless for graphs
    batches_by_length: ClassVar[bool] = False
    #: constructor arguments that files saved before the argument existed lack, with the value
    #: those models had; needed only where today's default differs (persistence fills them in)
    legacy_init_kwargs: ClassVar[dict[str, Any]] = {}
    #: whether ``drop_modality_links`` hides modality information (MMSR); evaluation skips the others
    has_modality_links: ClassVar[bool] = False
    #: ``state_dict`` entries whose leading rows are indexed by item id, in id order: a warm start
    #: copies an older model's rows into them and keeps the fresh rows of items it did not know
    item_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_items: int, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} wants a {self.config_class.__name__}, got {config!r}")
        self.n_items = n_items
        self.config = config
        self.max_len = config.max_len

    @classmethod
    def from_data(cls, data: SequenceData, **params: Any) -> Self:
        """A fresh, untrained model sized for ``data``; ``params`` are fields of ``config_class``."""
        return cls(data.n_items, cls.config_class.from_params(**params))

    @classmethod
    def from_init_kwargs(cls, init_kwargs: dict[str, Any]) -> Self:
        """The model ``init_kwargs`` describes; keys older files lack get ``legacy_init_kwargs``."""
        params = {**cls.legacy_init_kwargs, **init_kwargs}
        n_items = params.pop("n_items")
        data = {key: params.pop(key) for key in cls.data_kwarg_names if key in params}
        return cls(n_items, cls.config_class.from_params(**params), **data)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """``n_items``, every config field and the data arrays: what rebuilds this module."""
        return {"n_items": self.n_items, **self.config.model_dump(), **self.data_kwargs()}

    def data_kwargs(self) -> dict[str, Any]:
        """The data arrays the constructor took (by ``data_kwarg_names``); none by default."""
        return {}

    @abstractmethod
    def prepare(self, histories: Sequence[np.ndarray]) -> Any:
        """Build a CPU batch from item-id histories (each non-empty, chronological)."""

    def prepare_samples(self, data: SequenceData, targets: TargetSet) -> Any:
        """Build a batch for (user, position) samples: the histories ``sequence[user][:position]``."""
        users, positions = (
            torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (targets.users, targets.positions)
        )
        return self.prepare_histories(data.packed(), users, positions)

    def prepare_histories(self, histories: Histories, users: torch.Tensor, ends: torch.Tensor) -> Any:
        """Build a batch for the histories ``sequence[users[b]][:ends[b]]`` of packed sequences.

        Models with a vectorised path override it; by default each history is cut out and
        handed to :meth:`prepare`.
        """
        items, ptr = histories.items.numpy(), histories.ptr.numpy()
        return self.prepare(
            [
                items[ptr[u] + max(0, e - self.max_len) : ptr[u] + e]
                for u, e in zip(users.tolist(), ends.tolist(), strict=True)
            ]
        )

    @abstractmethod
    def batch_to(self, batch: Any, device: torch.device) -> Any:
        """Move a batch from ``prepare`` to ``device``."""

    @abstractmethod
    def forward(self, batch: Any) -> torch.Tensor:
        """One state per history, shape ``[B, d]``."""

    @abstractmethod
    def item_embeddings(self) -> torch.Tensor:
        """Output embeddings of all items, shape ``[n_items, d]``."""

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of :meth:`item_embeddings`. A model whose table is computed (MMSR's
        projected content) overrides it to compute those rows only: a sampled loss then costs
        its sampled items, not the catalogue."""
        return self.item_embeddings()[ids]

    @contextmanager
    def frozen_item_table(self) -> Iterator[torch.Tensor]:
        """:meth:`item_embeddings`, computed once for a caller that scores many batches with
        unchanged weights (inference, validation). While active a model may reuse it for its own
        inputs (MMSR's graph item nodes take their rows instead of projecting content again)."""
        yield self.item_embeddings()

    def drop_modality_links(self, modality: str, p: float, seed: int) -> AbstractContextManager[None]:
        """While active, a random fraction ``p`` of items loses its links of ``modality``.

        Only models with ``has_modality_links`` implement it.
        """
        raise NotImplementedError(f"{self.name} has no modality links to drop")

    def warm_start_mismatch(self, source: SequentialRecommender) -> str | None:
        """Why ``source``'s weights cannot seed this model beyond what shapes show; None if they can.

        The shapes and configs are compared by :func:`mmsr_model.warm_start.transfer_weights`;
        a model whose weights depend on data arrays (MMSR's code centres) checks those here.
        """
        return None

    def inherit_transforms(self, source: SequentialRecommender) -> None:
        """Adopt ``source``'s data-fitted input transforms after its weights were copied in (a
        warm start), so that the weights read the inputs as they did; nothing by default."""

    def random_streams(self) -> dict[str, np.random.Generator]:
        """Random generators the model draws from while training (a checkpoint saves their state)."""
        return {}

    def full_sort_predict(self, batch: Any, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """Scores over all items, shape ``[B, n_items]``.

        ``item_table`` is :meth:`item_embeddings` computed once by a caller that scores many
        batches with unchanged weights (inference, validation), so that it is not rebuilt per batch.
        """
        table = self.item_embeddings() if item_table is None else item_table
        return self.forward(batch) @ table.T

    def calculate_loss(self, batch: Any, targets: torch.Tensor) -> torch.Tensor:
        """Full softmax cross-entropy over all items."""
        return nn.functional.cross_entropy(self.full_sort_predict(batch).float(), targets)
