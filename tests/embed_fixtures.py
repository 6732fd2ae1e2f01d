"""Tiny items.parquet fixtures the embed and codes tests write themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.stages.extract.staging import META_SCHEMA

ITEMS_SCHEMA = META_SCHEMA  # items.parquet has exactly the staged meta columns


def item(
    item_id: str, title: str | None = None, image_ref: str | None = None, **fields: Any
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "title": title,
        "brand": fields.get("brand"),
        "categories": fields.get("categories", []),
        "description": fields.get("description"),
        "image_ref": image_ref,
    }


def write_items(home: Path, dataset: str, rows: list[dict[str, Any]]) -> Path:
    path = home / "warehouse" / dataset / "items.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA), path)
    return path


def write_tiny_text_model(folder: Path) -> Path:
    """A 2-layer random BERT saved as a plain Hugging Face folder, which sentence-transformers
    loads with mean pooling: the real text code path with no download and no packaged weights
    (the GPU machine has neither)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "shoes", "coffee", "beans", "blue"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=8
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder
