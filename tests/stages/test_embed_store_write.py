"""The embeddings Parquet is written a row slice at a time; what is read back is every row as given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.stages.embed import store
from pipeline.stages.embed.store import Embeddings, read_vectors, write_embeddings


@pytest.mark.parametrize("chunk_rows", [3, 65_536])
def test_written_rows_read_back_unchanged_across_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    monkeypatch.setattr(store, "WRITE_CHUNK_ROWS", chunk_rows)
    vectors = np.random.default_rng(3).standard_normal((8, 4)).astype(np.float32)
    missing = [None, "no_text", None, None, "no_text", None, None, None]
    vectors[[1, 4]] = np.nan
    emb = Embeddings([f"I{i}" for i in range(8)], "enc", [f"h{i}" for i in range(8)], vectors, missing)
    path = tmp_path / "text.parquet"
    write_embeddings(emb, path)
    table, read, present = read_vectors(path)
    assert table["item_id"].to_pylist() == emb.item_ids and table["content_hash"].to_pylist() == emb.hashes
    assert table["missing"].to_pylist() == missing and set(table["encoder_id"].to_pylist()) == {"enc"}
    assert present.tolist() == [m is None for m in missing]
    np.testing.assert_array_equal(read[present], vectors[present])
    assert table["vector"].null_count == 2
    assert pq.ParquetFile(path).num_row_groups == (3 if chunk_rows == 3 else 1)


def test_no_items_write_an_empty_file_with_the_schema(tmp_path: Path) -> None:
    write_embeddings(Embeddings([], "enc", [], np.zeros((0, 4), np.float32), []), tmp_path / "e.parquet")
    assert pq.read_table(tmp_path / "e.parquet").schema == store.SCHEMA
