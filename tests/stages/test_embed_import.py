"""``--import-features``: Parquet (vector column or numeric columns) and NPY + ids files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from embed_fixtures import item, write_items
from typer.testing import CliRunner

from pipeline.app.cli import app
from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.embed import run_embed
from pipeline.stages.embed.store import read_vectors

IDS = ["I1", "I2", "I3"]


@pytest.fixture
def shop(mmsr_home: Path) -> Path:
    write_items(mmsr_home, "shop", [item(i, f"title {i}") for i in IDS])
    return mmsr_home / "warehouse" / "shop" / "embeddings" / "image.parquet"


def test_import_parquet_vector_column(shop: Path, tmp_path: Path) -> None:
    features = tmp_path / "feats.parquet"
    pq.write_table(
        pa.table({"item_id": ["I3", "I1", "ZZ"], "vector": [[3.0, 3.5], [1.0, 1.5], [9.0, 9.0]]}), features
    )
    report = run_embed(Settings(), "shop", "image", import_features=features).modalities["image"]
    assert report.encoder_id.startswith("import:feats.parquet:") and report.dim == 2
    assert report.embedded == 2 and report.missing == {"not_in_import": 1}
    table, vectors, present = read_vectors(shop)
    assert table["item_id"].to_pylist() == IDS and present.tolist() == [True, False, True]
    np.testing.assert_array_equal(vectors[[0, 2]], [[1.0, 1.5], [3.0, 3.5]])


def test_import_parquet_numeric_columns(shop: Path, tmp_path: Path) -> None:
    features = tmp_path / "cols.parquet"
    pq.write_table(
        pa.table({"item_id": IDS, "f0": [1, 2, 3], "label": ["a", "b", "c"], "f1": [0.5, 0.25, 0.0]}),
        features,
    )
    run_embed(Settings(), "shop", "text", import_features=features)
    _, vectors, _ = read_vectors(shop.with_name("text.parquet"))
    np.testing.assert_array_equal(vectors, [[1, 0.5], [2, 0.25], [3, 0.0]])


def test_import_npy_via_cli(shop: Path, tmp_path: Path) -> None:
    features = tmp_path / "clip.npy"
    np.save(features, np.arange(9, dtype=np.float64).reshape(3, 3))
    (tmp_path / "clip.ids.txt").write_text("I2\nI1\nI3\n")
    result = CliRunner().invoke(
        app, ["embed", "--dataset", "shop", "--modality", "image", "--import-features", str(features)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["modalities"]["image"]
    assert report["embedded"] == 3 and report["encoder_id"].startswith("import:clip.npy:")
    _, vectors, _ = read_vectors(shop)
    np.testing.assert_array_equal(vectors[0], [3, 4, 5])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"item_id": ["I1", "I1"], "vector": [[1.0], [2.0]]}, "row 1, field item_id: duplicate item id 'I1'"),
        ({"item_id": ["I1", "I2"], "vector": [[1.0], [float("nan")]]}, r"row 1 \(item 'I2'\), field vector"),
        ({"item_id": ["I1", "I2"], "vector": [[1.0], [1.0, 2.0]]}, "different lengths"),
        ({"item_id": ["I1"], "name": ["x"]}, "numeric feature columns"),
        ({"id": ["I1"], "vector": [[1.0]]}, "field item_id"),
    ],
)
def test_bad_parquet_features(shop: Path, tmp_path: Path, table: dict, message: str) -> None:
    features = tmp_path / "bad.parquet"
    pq.write_table(pa.table(table), features)
    with pytest.raises(PipelineError, match=message):
        run_embed(Settings(), "shop", "image", import_features=features)


def test_bad_npy_features(shop: Path, tmp_path: Path) -> None:
    features = tmp_path / "m.npy"
    np.save(features, np.ones((2, 4)))
    with pytest.raises(PipelineError, match="m.ids.txt"):
        run_embed(Settings(), "shop", "image", import_features=features)
    (tmp_path / "m.ids.txt").write_text("I1\n\n")
    with pytest.raises(PipelineError, match="line 2, field item_id: empty"):
        run_embed(Settings(), "shop", "image", import_features=features)
    (tmp_path / "m.ids.txt").write_text("I1\nI2\nI3\n")
    with pytest.raises(PipelineError, match="3 ids but m.npy has 2 rows"):
        run_embed(Settings(), "shop", "image", import_features=features)
    with pytest.raises(PipelineError, match="--modality text or --modality image"):
        run_embed(Settings(), "shop", "all", import_features=features)
