"""Warehouse tables -> ``mmsr_model.data.SequenceData`` plus the external-id maps.

Training, the promotion gate and the recommend stage all read one dataset the
same way through here, so dense ids, splits and codes cannot drift between them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmsr_model.data import MODALITIES, SequenceData, TargetSet
from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class DatasetIndex:
    """External ids of one dataset: ``user_ids[user_idx]`` and ``item_ids[item_idx]``."""

    dataset: str
    user_ids: np.ndarray
    item_ids: np.ndarray

    @cached_property
    def item_idx(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids.tolist())}


def _require(path: Path) -> Path:
    if not path.is_file():
        raise PipelineError(
            f"{path} is missing: run `mmsr extract` (and `mmsr codes`) for this dataset first"
        )
    return path


def _read(path: Path, columns: list[str]) -> pa.Table:
    table = pq.read_table(_require(path))
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {missing}; found {table.column_names}")
    return table.select(columns)


def _dense_ids(path: Path, field: str, ids: np.ndarray) -> np.ndarray:
    """Order rows by their dense id and check it really is ``0..n-1``."""
    order = np.argsort(ids, kind="stable")
    bad = np.flatnonzero(ids[order] != np.arange(len(ids)))
    if bad.size:
        row = int(order[bad[0]])
        raise PipelineError(f"{path}: row {row}, field {field}: ids must be dense 0..{len(ids) - 1}")
    return order


def _list_column(column: pa.ChunkedArray) -> list[np.ndarray]:
    """A list<int> column as one int64 array per row (no Python loop over values)."""
    arr = column.combine_chunks()
    offsets = arr.offsets.to_numpy()
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    return np.split(values, offsets[1:-1] - offsets[0]) if len(arr) else []


def _read_index(path: Path, id_field: str, idx_field: str) -> np.ndarray:
    table = _read(path, [id_field, idx_field])
    idx = table[idx_field].to_numpy(zero_copy_only=False)
    order = _dense_ids(path, idx_field, idx)
    return np.asarray(table[id_field].to_numpy(zero_copy_only=False)[order], dtype=object)


def _read_sequences(path: Path, n_items: int) -> list[np.ndarray]:
    table = _read(path, ["user_idx", "items"])
    order = _dense_ids(path, "user_idx", table["user_idx"].to_numpy(zero_copy_only=False))
    sequences = _list_column(table["items"])
    sequences = [sequences[i] for i in order.tolist()]
    for row, seq in enumerate(sequences):
        if seq.size and (seq.min() < 0 or seq.max() >= n_items):
            raise PipelineError(f"{path}: user_idx {row}, field items: item_idx outside 0..{n_items - 1}")
    return sequences


def _read_splits(path: Path, sequences: list[np.ndarray]) -> dict[str, TargetSet]:
    table = _read(path, ["user_idx", "split", "target_pos"])
    users = table["user_idx"].to_numpy(zero_copy_only=False).astype(np.int64)
    positions = table["target_pos"].to_numpy(zero_copy_only=False).astype(np.int64)
    kinds = np.asarray(table["split"].to_numpy(zero_copy_only=False), dtype=object)
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    bad_user = np.flatnonzero((users < 0) | (users >= len(sequences)))
    if bad_user.size:
        raise PipelineError(f"{path}: row {int(bad_user[0])}, field user_idx: unknown user")
    bad_pos = np.flatnonzero((positions < 1) | (positions >= lengths[users]))
    if bad_pos.size:
        raise PipelineError(
            f"{path}: row {int(bad_pos[0])}, field target_pos: must index a sequence item after at least one"
        )
    unknown = sorted(set(kinds.tolist()) - set(SPLITS))
    if unknown:
        raise PipelineError(f"{path}: field split: unknown value(s) {unknown}")
    return {name: TargetSet(users[kinds == name], positions[kinds == name]) for name in SPLITS}


def _index_of(index: DatasetIndex, item_ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dense item_idx of each id (-1 where the dataset does not know it), as one Arrow hash lookup."""
    found = pc.index_in(item_ids.cast(pa.string()), value_set=pa.array(index.item_ids.tolist(), pa.string()))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _list_matrix(column: pa.ChunkedArray, fill: float, dtype: type) -> np.ndarray:
    """A list column as a ``(rows, widest)`` matrix, shorter and null rows padded with ``fill``.

    Rows of one width (vectors, codes) are a reshape of the value buffer; only ragged
    columns pay for a per-value scatter.
    """
    arr = column.combine_chunks()
    lengths = arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    width = int(lengths.max()) if len(lengths) else 0
    out = np.full((len(arr), width), fill, dtype=dtype)
    if not width:
        return out
    values = arr.flatten().to_numpy(zero_copy_only=False)
    full = lengths == width
    if full.sum() * width == len(values):
        out[full] = values.reshape(-1, width)
    else:
        lengths = lengths.astype(np.int64)
        rows = np.repeat(np.arange(len(arr)), lengths)
        out[rows, np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = values
    return out


#: pads short code lists while they are checked (a stored -1 is an error, a padded slot is not)
_NO_CODE = np.iinfo(np.int64).min


def _read_codes(folder: Path, index: DatasetIndex) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``item_codes[m]`` (n_items, k) with -1 for missing and ``code_centres[m]`` (c, dim)."""
    codes_path = folder / "item_codes.parquet"
    if not codes_path.is_file():
        log.info("no modality codes at %s: training without modality nodes", codes_path)
        return {}, {}
    table = _read(codes_path, ["item_id", "modality", "codes"])
    item_codes: dict[str, np.ndarray] = {}
    centres: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        rows = table.filter(pc.equal(table["modality"], modality))
        if rows.num_rows == 0:
            continue
        centres_path = folder / f"{modality}_centres.parquet"
        centre_table = _read(centres_path, ["code", "vector"])
        order = _dense_ids(centres_path, "code", centre_table["code"].to_numpy(zero_copy_only=False))
        vectors = _list_matrix(centre_table["vector"], np.nan, np.float32)[order]
        codes = _list_matrix(rows["codes"], _NO_CODE, np.int64)
        idx = _index_of(index, rows["item_id"])
        known = idx >= 0
        padding = codes == _NO_CODE
        bad = np.flatnonzero(known & (~padding & ((codes < 0) | (codes >= len(vectors)))).any(axis=1))
        if bad.size:
            item = rows["item_id"][int(bad[0])].as_py()
            raise PipelineError(
                f"{codes_path}: item_id {item}, field codes: code outside 0..{len(vectors) - 1}"
            )
        codes[padding] = -1
        out = np.full((len(index.item_ids), codes.shape[1]), -1, dtype=np.int64)
        out[idx[known]] = codes[known]
        log.info(
            "%s codes: %d of %d items, k=%d, c=%d",
            modality,
            int(known.sum()),
            len(index.item_ids),
            codes.shape[1],
            len(vectors),
        )
        item_codes[modality], centres[modality] = out, vectors
    return item_codes, centres


def _read_features(folder: Path, index: DatasetIndex) -> dict[str, np.ndarray]:
    """Raw embeddings per modality, NaN rows where the item has none (raw-node ablation).

    Read column-wise (Arrow buffers straight into numpy): as Python floats, vectors take
    about 13 times their own size (some 18 GB for 900,000 384-d items).
    """
    features: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        path = folder / f"{modality}.parquet"
        if not path.is_file():
            continue
        table = _read(path, ["item_id", "vector", "missing"])
        present = table.filter(pc.is_null(table["missing"]))
        if present.num_rows == 0:
            continue
        vectors = _list_matrix(present["vector"], np.nan, np.float32)
        out = np.full((len(index.item_ids), vectors.shape[1]), np.nan, dtype=np.float32)
        idx = _index_of(index, present["item_id"])
        out[idx[idx >= 0]] = vectors[idx >= 0]
        features[modality] = out
    return features


def load_histories(settings: Settings, dataset: str) -> tuple[DatasetIndex, list[np.ndarray]]:
    """The id maps and every user's full chronological item sequence (dense ids)."""
    root = settings.dataset_dir(dataset)
    index = DatasetIndex(
        dataset=dataset,
        user_ids=_read_index(root / "user_index.parquet", "user_id", "user_idx"),
        item_ids=_read_index(root / "item_index.parquet", "item_id", "item_idx"),
    )
    if len(index.item_ids) == 0 or len(index.user_ids) == 0:
        raise PipelineError(f"dataset {dataset!r} at {root} has no users or items: nothing to train or score")
    sequences = _read_sequences(root / "sequences.parquet", len(index.item_ids))
    if len(sequences) != len(index.user_ids):
        raise PipelineError(
            f"{root / 'sequences.parquet'}: {len(sequences)} users but user_index has {len(index.user_ids)}"
        )
    return index, sequences


def load_sequence_data(settings: Settings, dataset: str) -> tuple[SequenceData, DatasetIndex]:
    """Read one dataset's warehouse tables, codes and embeddings into model arrays."""
    root = settings.dataset_dir(dataset)
    index, sequences = load_histories(settings, dataset)
    item_codes, centres = _read_codes(root / "codes", index)
    data = SequenceData(
        sequences=sequences,
        n_items=len(index.item_ids),
        splits=_read_splits(root / "splits.parquet", sequences),
        item_codes=item_codes,
        code_centres=centres,
        item_features=_read_features(root / "embeddings", index),
    )
    log.info(
        "%s: %d users, %d items, samples %s",
        dataset,
        len(sequences),
        data.n_items,
        {k: len(v) for k, v in data.splits.items()},
    )
    return data, index


def input_files(settings: Settings, dataset: str) -> list[Path]:
    """The Parquet files a training run reads (what the fingerprint covers)."""
    root = settings.dataset_dir(dataset)
    names = ["sequences", "splits", "item_index", "user_index"]
    files = [root / f"{n}.parquet" for n in names]
    files += sorted((root / "codes").glob("*.parquet")) + sorted((root / "embeddings").glob("*.parquet"))
    return [f for f in files if f.is_file()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(settings: Settings, dataset: str) -> dict[str, object]:
    """Row counts and content hashes of every input file, plus one combined hash."""
    root = settings.dataset_dir(dataset)
    files = {
        str(path.relative_to(root)): {"rows": pq.ParquetFile(path).metadata.num_rows, "sha256": _sha256(path)}
        for path in input_files(settings, dataset)
    }
    combined = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"sha256": combined, "files": files}
