"""The ``TrainConfig`` the train stage hands to ``mmsr_model`` for each model, built from the settings.

Kept apart from :mod:`pipeline.stages.train.run` so that benchmarks and tests can build the
exact production configuration without importing MLflow.
"""

from __future__ import annotations

from mmsr_model.config import MMSRArchitecture
from mmsr_model.registry import model_class
from mmsr_model.training import TrainConfig, config_for
from pipeline.core.config import Settings

EVAL_KS = (5, 10, 20)


def train_config(settings: Settings, model: str = "mmsr") -> TrainConfig:
    """The ``TrainConfig`` for MMSR, or for a baseline with its class's standard overrides.

    Baselines keep their own architecture defaults; they share only the history
    length and the seed with MMSR (whichever their config has).
    """
    m = settings.model
    # MMSR's architecture parameters: the settings fields MMSRArchitecture declares (the rest drive training)
    architecture = MMSRArchitecture.model_fields.keys()
    config = TrainConfig(
        model="mmsr",
        model_params={name: getattr(m, name) for name in sorted(architecture)} | {"seed": settings.seed},
        lr=m.lr,
        weight_decay=m.weight_decay,
        batch_size=m.batch_size,
        max_epochs=m.max_epochs,
        patience=m.patience,
        eval_metric=m.eval_metric,
        exclude_seen=m.exclude_seen,
        loss=m.loss,
        negatives=m.negatives,
        label_smoothing=m.label_smoothing,
        max_valid_samples=m.max_valid_samples,
        eval_ks=EVAL_KS,
        seed=settings.seed,
        device=m.device,
        time_budget_s=None if m.time_budget_min is None else 60 * m.time_budget_min,
        refit=m.refit,
    )
    if model == "mmsr":
        return config
    accepted = model_class(model).config_class.model_fields
    shared = {
        key: value for key, value in (("max_len", m.max_len), ("seed", settings.seed)) if key in accepted
    }
    return config_for(model, config, model_params=shared)
