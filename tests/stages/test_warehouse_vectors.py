"""The warehouse reader turns the codes and embeddings tables into dense per-item arrays.

Both are read column-wise (no Python list per value, which at a million items needs
tens of GB): the arrays must be exactly what the rows say, items the dataset does not
know are ignored, and a code outside the codebook still names its item.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import PipelineError
from pipeline.warehouse.dataset import DatasetIndex, _read_codes, _read_features

INDEX = DatasetIndex(
    dataset="shop",
    user_ids=np.array(["u"], dtype=object),
    item_ids=np.array(["A", "B", "C", "D"], dtype=object),
)


def _write_codes(folder: Path, codes: list[list[int]], ids: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "item_id": ids + ["A"],
                "modality": ["text"] * len(ids) + ["image"],
                "codes": pa.array(codes + [[1]], pa.list_(pa.int32())),
                "distances": pa.array([[0.5] * len(c) for c in codes] + [[0.1]], pa.list_(pa.float32())),
            }
        ),
        folder / "item_codes.parquet",
    )
    for modality, c in (("text", 3), ("image", 2)):
        vectors = np.arange(c * 2, dtype=np.float32).reshape(c, 2) + (10 if modality == "image" else 0)
        pq.write_table(
            pa.table(
                {
                    "code": pa.array([2, 0, 1][:c] if c == 3 else [1, 0], pa.int32()),
                    "vector": vectors.tolist(),
                }
            ),
            folder / f"{modality}_centres.parquet",
        )


def test_codes_are_placed_by_item_with_short_rows_padded_and_unknown_items_ignored(tmp_path: Path) -> None:
    _write_codes(tmp_path, [[2, 0, 1], [1], [0, 2, 2]], ["C", "Z", "A"])  # Z: not in the dataset
    codes, centres = _read_codes(tmp_path, INDEX)
    assert codes["text"].tolist() == [[0, 2, 2], [-1, -1, -1], [2, 0, 1], [-1, -1, -1]]
    assert codes["image"].tolist() == [[1], [-1], [-1], [-1]]
    # centre rows ordered by their code column
    assert centres["text"].tolist() == [[2.0, 3.0], [4.0, 5.0], [0.0, 1.0]]
    assert centres["image"].tolist() == [[12.0, 13.0], [10.0, 11.0]]
    assert codes["text"].dtype == np.int64 and centres["text"].dtype == np.float32


def test_a_bad_code_of_an_item_the_dataset_does_not_know_is_ignored(tmp_path: Path) -> None:
    _write_codes(tmp_path, [[0, 1], [0, 7]], ["A", "Z"])
    codes, _ = _read_codes(tmp_path, INDEX)
    assert codes["text"].tolist() == [[0, 1], [-1, -1], [-1, -1], [-1, -1]]


def test_ragged_codes_pad_with_minus_one(tmp_path: Path) -> None:
    _write_codes(tmp_path, [[2], [0, 1]], ["B", "D"])
    codes, _ = _read_codes(tmp_path, INDEX)
    assert codes["text"].tolist() == [[-1, -1], [2, -1], [-1, -1], [0, 1]]


@pytest.mark.parametrize("codes", [[[0, 1], [0, 3]], [[0, 1], [-1]], [[0, 1, 2], [2, -1]]])
def test_a_code_outside_the_codebook_names_its_item(tmp_path: Path, codes: list[list[int]]) -> None:
    _write_codes(tmp_path, codes, ["A", "B"])  # a stored -1 is an error even where short rows pad with -1
    with pytest.raises(PipelineError, match=r"item_id B, field codes: code outside 0\.\.2"):
        _read_codes(tmp_path, INDEX)


def test_features_fill_known_items_and_leave_nan_for_missing_or_absent(tmp_path: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "item_id": ["D", "A", "B", "Z"],
                "vector": pa.array(
                    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], None, [7.0, 8.0, 9.0]], pa.list_(pa.float32())
                ),
                "missing": [None, None, "no_text", None],
            }
        ),
        tmp_path / "text.parquet",
    )
    features = _read_features(tmp_path, INDEX)
    text = features["text"]
    assert text.dtype == np.float32 and text.shape == (4, 3)
    assert text[0].tolist() == [4.0, 5.0, 6.0] and text[3].tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(text[1]).all() and np.isnan(text[2]).all()  # B has no vector, C no row
