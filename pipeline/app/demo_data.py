"""The embedded demo dataset: a small synthetic category in the real amazon2018 format.

Why synthetic and structured: ``make demo`` must run end to end with no download, and
its metrics should mean something. Every item belongs to one of ``N_STYLES`` styles;
the style shows in the title words (colour, material), in the brand and in the JPEG
(dominant colour and shape). Users walk through the styles in order: the next item is
usually the same slot of the next style, sometimes the next slot of the same style.
So a sequential model can learn the order, and text and image codes carry the style.
A few items have no image (the missing-modality case). Same seed -> same bytes.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# (colour word, RGB, material, shape, brand) per style.
STYLES: tuple[tuple[str, tuple[int, int, int], str, str, str], ...] = (
    ("crimson", (200, 30, 40), "leather", "circle", "Rubra"),
    ("amber", (240, 160, 20), "canvas", "square", "Solis"),
    ("lime", (120, 210, 40), "bamboo", "triangle", "Verda"),
    ("teal", (20, 150, 150), "linen", "diamond", "Maris"),
    ("cobalt", (30, 60, 200), "denim", "stripes", "Azura"),
    ("violet", (140, 50, 190), "velvet", "ring", "Viola"),
    ("charcoal", (50, 50, 55), "wool", "cross", "Carbo"),
    ("ivory", (235, 230, 210), "cotton", "dots", "Nivis"),
)
N_STYLES = len(STYLES)
NOUNS = ("tote", "wallet", "scarf", "cap", "backpack", "pouch", "belt", "glove")
P_NEXT_STYLE = 0.7  # same slot, next style
P_NEXT_SLOT = 0.2  # next slot, same style; otherwise a random item
MISSING_IMAGE_FRACTION = 0.05
IMAGE_SIZE = 64
DAY = 86_400
START_TS = 1_420_070_400  # 2015-01-01 UTC


def _asin(item: int) -> str:
    return f"B0DEMO{item:04d}"


def _draw(shape: str, rgb: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """A small product photo: pale background, the style's shape in its colour, jitter per item."""
    background = tuple(int(v) for v in 235 + rng.integers(-15, 15, size=3))
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    draw = ImageDraw.Draw(img)
    colour = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in rgb)
    c = IMAGE_SIZE // 2 + int(rng.integers(-4, 5))
    r = int(rng.integers(16, 24))
    box = (c - r, c - r, c + r, c + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(c, c - r), (c - r, c + r), (c + r, c + r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(c, c - r), (c + r, c), (c, c + r), (c - r, c)], fill=colour)
    elif shape == "stripes":
        for y in range(4, IMAGE_SIZE, 12):
            draw.rectangle((0, y, IMAGE_SIZE, y + 5), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=7)
    elif shape == "cross":
        draw.rectangle((c - r, c - 5, c + r, c + 5), fill=colour)
        draw.rectangle((c - 5, c - r, c + 5, c + r), fill=colour)
    else:  # dots
        for x in range(8, IMAGE_SIZE, 16):
            for y in range(8, IMAGE_SIZE, 16):
                draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colour)
    return img


def _item_meta(item: int, n_slots: int, has_image: bool) -> dict[str, Any]:
    style, slot = item % N_STYLES, item // N_STYLES
    colour, _, material, shape, brand = STYLES[style]
    noun = NOUNS[slot % len(NOUNS)]
    article = "An" if colour[0] in "aeiou" else "A"
    return {
        "asin": _asin(item),
        "title": f"{colour.title()} {material} {noun} no. {slot + 1}",
        "brand": brand,
        "category": ["Demo Store", "Accessories", f"{noun.title()}s"],
        "description": [
            f"{article} {colour} {noun} made of {material}, with a {shape} motif.",
            f"Part {slot + 1} of {n_slots} in the {brand} {colour} line.",
        ],
        "imageURLHighRes": [f"images/{_asin(item)}.jpg"] if has_image else [],
    }


def _next_item(item: int, n_items: int, n_slots: int, rng: np.random.Generator) -> int:
    style, slot = item % N_STYLES, item // N_STYLES
    draw = rng.random()
    if draw < P_NEXT_STYLE:
        style = (style + 1) % N_STYLES
    elif draw < P_NEXT_STYLE + P_NEXT_SLOT:
        slot = (slot + 1) % n_slots
    else:
        return int(rng.integers(n_items))
    return min(slot * N_STYLES + style, n_items - 1)


def _gzip_lines(path: Path, records: list[dict[str, Any]]) -> None:
    """JSON lines, gzip with mtime 0 and no file name: identical bytes for identical data."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))


def write_demo_dataset(out: Path, seed: int, n_users: int = 400, n_items: int = 240) -> dict[str, Any]:
    """Write ``reviews.json.gz``, ``meta.json.gz`` and ``images/<asin>.jpg`` under ``out``.

    Returns where the files are and their counts (the CLI prints it).
    """
    if n_items < N_STYLES or n_users < 1:
        raise ValueError(f"need n_items >= {N_STYLES} and n_users >= 1, got {n_items}, {n_users}")
    rng = np.random.default_rng(seed)
    out = Path(out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    n_slots = -(-n_items // N_STYLES)

    missing = set(
        rng.choice(n_items, size=max(1, round(n_items * MISSING_IMAGE_FRACTION)), replace=False).tolist()
    )
    meta = []
    for item in tqdm(range(n_items), desc="demo items", leave=False):
        has_image = item not in missing
        meta.append(_item_meta(item, n_slots, has_image))
        image_path = images_dir / f"{_asin(item)}.jpg"
        if has_image:
            _draw(STYLES[item % N_STYLES][3], STYLES[item % N_STYLES][1], rng).save(
                image_path, "JPEG", quality=90
            )
        else:
            image_path.unlink(missing_ok=True)

    reviews = []
    for user in tqdm(range(n_users), desc="demo users", leave=False):
        length = int(rng.integers(6, 16))
        ts = START_TS + int(rng.integers(0, 3 * 365)) * DAY
        item = int(rng.integers(n_items))
        for _ in range(length):
            colour, _, _, _, _ = STYLES[item % N_STYLES]
            reviews.append(
                {
                    "reviewerID": f"ADEMOUSER{user:05d}",
                    "asin": _asin(item),
                    "overall": float(rng.integers(3, 6)),
                    "unixReviewTime": ts,
                    "reviewText": f"Nice {colour} piece, fits the rest of my collection.",
                    "summary": "Five Stars",
                }
            )
            ts += int(rng.integers(1, 30)) * DAY  # strictly increasing: the order is the signal
            item = _next_item(item, n_items, n_slots, rng)

    _gzip_lines(out / "reviews.json.gz", reviews)
    _gzip_lines(out / "meta.json.gz", meta)
    summary = {
        "format": "amazon2018",
        "reviews": str(out / "reviews.json.gz"),
        "meta": str(out / "meta.json.gz"),
        "images": str(images_dir),
        "users": n_users,
        "items": n_items,
        "interactions": len(reviews),
        "items_without_image": len(missing),
        "seed": seed,
    }
    log.info(
        "demo dataset written to %s: %d users, %d items, %d reviews", out, n_users, n_items, len(reviews)
    )
    return summary
