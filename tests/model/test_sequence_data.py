"""SequenceData survives a save/load round trip (the benchmarks' hand-off to a GPU machine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmsr_model.data import SequenceData, TargetSet


def test_save_load_round_trip(tmp_path: Path) -> None:
    sequences = [np.array([3, 1, 2]), np.array([0, 4]), np.array([2, 2, 4, 1])]
    data = SequenceData(
        sequences,
        5,
        {
            "train": TargetSet(np.array([0, 2]), np.array([1, 2])),
            "test": TargetSet(np.array([1]), np.array([1])),
        },
        item_codes={"text": np.array([[0, 1], [1, -1], [0, 0], [1, 1], [-1, -1]])},
        code_centres={"text": np.ones((2, 4), dtype=np.float32)},
        item_features={"text": np.full((5, 4), np.nan, dtype=np.float32)},
    )
    loaded = SequenceData.load(data.save(tmp_path / "d" / "data.npz"))
    assert loaded.n_items == 5
    assert [s.tolist() for s in loaded.sequences] == [s.tolist() for s in sequences]
    assert loaded.splits.keys() == data.splits.keys()
    for name, targets in data.splits.items():
        assert loaded.splits[name].users.tolist() == targets.users.tolist()
        assert loaded.splits[name].positions.tolist() == targets.positions.tolist()
    assert np.array_equal(loaded.item_codes["text"], data.item_codes["text"])
    assert np.array_equal(loaded.code_centres["text"], data.code_centres["text"])
    assert np.isnan(loaded.item_features["text"]).all()
    assert list(tmp_path.joinpath("d").iterdir()) == [tmp_path / "d" / "data.npz"]


def test_empty_data_round_trip(tmp_path: Path) -> None:
    loaded = SequenceData.load(SequenceData([], 0, {}).save(tmp_path / "empty.npz"))
    assert loaded.sequences == [] and loaded.n_items == 0 and loaded.splits == {}
