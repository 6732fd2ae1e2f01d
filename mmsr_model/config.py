"""Every model's hyper-parameters, each declared once: its type, default, bounds and what it does.

A model is built from ``n_items``, one frozen, validated config and (MMSR only) its
data arrays; ``init_kwargs`` (what persistence, checkpoints and the MLflow pyfunc
save) is derived from the config, and the pipeline's ``ModelSettings`` takes its
MMSR fields from :class:`MMSRArchitecture`. Pydantic only (no torch), so that
loading the settings stays cheap.

"The authors' implementation" below is the public code released with the MMSR paper
(Hu et al., CIKM 2023, where the model is called VLGraph); our defaults follow its
Beauty run where the paper does not say.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: metric names as the evaluation reports them: hr_at_10, mrr_at_5, ndcg_at_20 ...
METRIC_PATTERN = r"^(hr|mrr|ndcg)_at_([1-9][0-9]*)$"


class TrainingConfig(BaseModel):
    """How every model is trained: Adam, full-softmax batches and early stopping on validation.

    ``training.TrainConfig`` takes its defaults from here, and the pipeline's
    ``ModelSettings`` inherits these fields, so each is declared once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: float = Field(0.002, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    batch_size: int = Field(128, ge=1, description="training samples per step")
    max_epochs: int = Field(100, ge=1, description="upper bound on training epochs")
    patience: int = Field(8, ge=1, description="epochs without validation gain before stopping")
    eval_metric: str = Field(
        "ndcg_at_10", pattern=METRIC_PATTERN, description="validation metric for early stopping"
    )
    exclude_seen: bool = Field(
        True,
        description="validation and test rank only items outside the sample's history (the target always "
        "stays a candidate): what recommend serves, and the published full-ranking protocol; off: every item",
    )
    loss: Literal["full_softmax", "sampled_softmax"] = Field(
        "full_softmax", description="cross-entropy over every item, or over uniformly sampled negatives"
    )
    negatives: int = Field(256, ge=1, description="negatives per batch for sampled_softmax")
    label_smoothing: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="label smoothing of the cross-entropy; 0.1 validates above 0 for MMSR on Beauty over "
        "three seeds (the baselines keep 0, their published setting)",
    )
    max_valid_samples: int | None = Field(
        None,
        ge=1,
        description="validate every epoch on the same seeded sample of this many valid targets "
        "(None: all of them); bounds validation's cost, which grows with users x items",
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'")


class ModelConfig(BaseModel):
    """Hyper-parameters shared by every model; frozen, and unknown names are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_len: int = Field(50, ge=1, description="history items the model sees (the most recent ones)")

    @classmethod
    def from_params(cls, **params: Any) -> Self:
        """The config of ``params``; an unknown name is a ``TypeError``, as for a function's keyword
        (a training setting handed to a model is a caller's mistake), a bad value a ``ValidationError``."""
        if unknown := sorted(set(params) - set(cls.model_fields)):
            raise TypeError(f"{cls.__name__} got unexpected parameters {unknown}")
        return cls(**params)


class MMSRArchitecture(ModelConfig):
    """MMSR's hyper-parameters except the seed (the pipeline settings take theirs from these)."""

    hidden_size: int = Field(128, ge=1, description="node / item embedding size d")
    num_layers: int = Field(1, ge=1, description="HAN-GNN layers")
    dropout: float = Field(0.4, ge=0, lt=1, description="node dropout on each HAN-GNN layer's output")
    attn_dropout: float = Field(0.2, ge=0, lt=1, description="attention dropout")
    update: Literal["async", "sync"] = Field("async", description="asynchronous gate or synchronous update")
    fusion: Literal["non_invasive", "invasive"] = Field(
        "non_invasive",
        description="phase-2 values: the layer input's (non-invasive) or the intermediate states' (invasive)",
    )
    modality_nodes: Literal["codes", "raw"] = Field("codes", description="code nodes or one node per feature")
    modalities: list[Literal["text", "image"]] = Field(
        default_factory=lambda: ["text", "image"], description="modalities in the graph; [] = ID-only"
    )
    gate: Literal["soft", "hard"] = Field("soft", description="update-gate kind")
    readout: Literal["last", "mean", "attention"] = Field(
        "last",
        description="sequence readout: the last item's state, the mean of the item states, or "
        "(attention) the last item's state joined with an attention-weighted sum of every item state "
        "(SR-GNN's hybrid session embedding)",
    )
    readout_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the state that is scored")
    norm: Literal["layer", "none"] = Field(
        "none", description="layer norm on each HAN-GNN layer's output; off: higher validation NDCG on Beauty"
    )
    residual: bool = Field(
        False,
        description="each HAN-GNN phase adds its message to the node's state; off: the message alone, "
        "as in the authors' implementation",
    )
    homogeneous_values: Literal["states", "projected"] = Field(
        "projected",
        description="homogeneous attention aggregates W_V of the neighbours (as the authors' implementation "
        "does) or their states",
    )
    score_scale: float | None = Field(
        None, gt=0, description="None: dot-product scores; a number: cosine scores times this scale"
    )
    item_content: Literal["none", "add"] = Field(
        "add",
        description="item vectors (graph inputs and the scoring table): the ID embedding alone, or plus a "
        "learned projection of each modality's content vector, so items seldom trained on score by content",
    )
    cold_items: Literal["id_and_content", "content_only"] = Field(
        "content_only",
        description="with item_content: items that no training sample holds are scored by their content "
        "alone (content_only), since their ID rows were only ever pushed down as negatives",
    )
    content_norm: Literal["l2", "whiten"] = Field(
        "l2", description="content vectors are centred, then L2-normalised or PCA-whitened, before projection"
    )
    id_init: Literal["random", "content"] = Field(
        "random",
        description="with item_content: ID embeddings start random, or as the top principal components of "
        "the items' content vectors (modalities side by side) at the random start's scale, so that items "
        "that read or look alike start close (items without content start random)",
    )
    content_dim: int | None = Field(
        64,
        ge=1,
        description="with item_content: keep the top principal components of each modality's centred "
        "content vectors (None, or 'all' in an environment variable: every dimension); projecting the "
        "whole catalogue's content is most of a training step's arithmetic, and shrinks with it",
    )
    modality_drop_p: float = Field(
        0.0, ge=0, le=1, description="while training, each item loses each modality's links with this chance"
    )
    id_drop_p: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="with item_content: while training, each item with content loses its ID embedding (in the"
        " graph and in the scoring table) with this chance, so that its content alone must place it",
    )

    @field_validator("content_dim", mode="before")
    @classmethod
    def _every_dimension(cls, value: Any) -> Any:
        """'all' (or 'none', 'null'): an environment variable's way to say None."""
        return None if isinstance(value, str) and value.strip().lower() in {"all", "none", "null"} else value


class MMSRConfig(MMSRArchitecture):
    """Everything that defines an MMSR network besides the data it is sized for."""

    seed: int = Field(
        2023, description="seeds the initial weights, the centre projections and training's modality drops"
    )


class BaselineConfig(ModelConfig):
    """Hyper-parameters shared by the trainable ID-sequence baselines."""

    seed: int | None = Field(None, description="seeds the initial weights; None: the global torch RNG")


class SASRecConfig(BaselineConfig):
    """SASRec as RecBole 1.2.1 configures it by default."""

    hidden_size: int = Field(64, ge=1, description="embedding and transformer width")
    num_layers: int = Field(2, ge=1, description="transformer blocks")
    num_heads: int = Field(2, ge=1, description="attention heads (must divide hidden_size)")
    inner_size: int = Field(256, ge=1, description="feed-forward width")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on hidden states")
    attn_dropout: float = Field(0.5, ge=0, lt=1, description="dropout on attention weights")
    layer_norm_eps: float = Field(1e-12, gt=0, description="LayerNorm epsilon")
    initializer_range: float = Field(0.02, gt=0, description="std of the normal weight initialisation")


class GRU4RecConfig(BaselineConfig):
    """GRU4Rec as RecBole 1.2.1 builds it."""

    embedding_size: int = Field(64, ge=1, description="item embedding size")
    hidden_size: int = Field(128, ge=1, description="GRU state size")
    num_layers: int = Field(1, ge=1, description="GRU layers")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout on the item embeddings")


class PopularityConfig(ModelConfig):
    """Popularity has nothing to tune; ``max_len`` only keeps the contract uniform."""
