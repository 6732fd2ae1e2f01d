"""Seeded synthetic Amazon-2023 reviews + meta JSONL at a multiple of Beauty's size.

The scale benchmark needs inputs far larger than any real file we hold, with the shape
that drives the stages' costs: power-law item popularity (a few items in most histories,
a long tail the 5-core trims), 5-core-like history lengths (at least 5, mean near
Beauty's 8.9), timestamps in order per user, titles and descriptions for the text
encoder, and a share of items without an image (image URLs are never fetched).
Sampling is vectorised with numpy and users are written in chunks, so memory stays
flat however large the output.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Beauty (5-core) at 1x: users and items before the k-core are generated at these counts
BEAUTY_USERS, BEAUTY_ITEMS = 22_363, 12_101
MIN_HISTORY, MEAN_EXTRA_HISTORY, MAX_HISTORY = 5, 3.9, 300
POPULARITY_EXPONENT = 0.8  # Zipf-like: weight of the item of popularity rank r is (r + 10) ** -a
NO_IMAGE_SHARE = 0.15
CHUNK_USERS = 50_000
CHUNK_ITEMS = 50_000
T0_MS, T1_MS = 1_420_070_400_000, 1_688_169_600_000  # 2015-01-01 .. 2023-07-01
MEAN_GAP_MS = 30 * 86_400_000
VOCAB_SIZE, BRANDS = 4_000, 2_000
CATEGORIES = ("Skin Care", "Hair Care", "Makeup", "Fragrance", "Tools & Accessories", "Bath & Body", "Nail")


@dataclass(frozen=True)
class Generated:
    """What one generation wrote (counts before the extract stage's dedupe and k-core)."""

    reviews: str
    meta: str
    users: int
    items: int
    interactions: int
    items_without_image: int
    reviews_mib: float
    meta_mib: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _vocabulary(rng: np.random.Generator) -> np.ndarray:
    """Pronounceable made-up words, so the encoder sees text of realistic token length."""
    syllables = np.array([c + v for c in "bcdfghklmnprstvz" for v in "aeiou"])
    parts = rng.integers(0, len(syllables), size=(VOCAB_SIZE, 3))
    return np.array(["".join(syllables[row]) for row in parts])


def _phrases(rng: np.random.Generator, vocab: np.ndarray, n: int, lo: int, hi: int) -> list[str]:
    """``n`` phrases of ``lo..hi`` words drawn from ``vocab`` by a power law (common words repeat)."""
    lengths = rng.integers(lo, hi + 1, size=n)
    ranks = np.minimum(rng.zipf(1.3, size=int(lengths.sum())) - 1, len(vocab) - 1)
    words = vocab[ranks]
    ends = np.cumsum(lengths)
    return [" ".join(words[e - k : e]) for e, k in zip(ends.tolist(), lengths.tolist(), strict=True)]


def _item_id(i: int) -> str:
    return f"B0{i:08X}"


def _popularity(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """Cumulative sampling weights over item ids: a power law over a random rank order."""
    weights = (np.arange(n_items) + 10.0) ** -POPULARITY_EXPONENT
    cumulative = np.cumsum(weights[rng.permutation(n_items)])
    return cumulative / cumulative[-1]


def _write_reviews(path: Path, rng: np.random.Generator, n_users: int, cumulative: np.ndarray) -> int:
    """Stream every user's reviews, chunk by chunk; returns the number of lines."""
    vocab = _vocabulary(rng)
    titles = _phrases(rng, vocab, 256, 2, 6)
    texts = _phrases(rng, vocab, 256, 8, 30)
    lines = 0
    with path.open("w", encoding="utf-8") as fh:
        for start in range(0, n_users, CHUNK_USERS):
            n = min(CHUNK_USERS, n_users - start)
            extra = rng.geometric(1.0 / (MEAN_EXTRA_HISTORY + 1.0), size=n) - 1
            lengths = np.minimum(MIN_HISTORY + extra, MAX_HISTORY)
            total = int(lengths.sum())
            users = np.repeat(np.arange(start, start + n), lengths)
            items = np.searchsorted(cumulative, rng.random(total), side="right")
            gaps = rng.exponential(MEAN_GAP_MS, size=total).astype(np.int64)
            first = np.cumsum(lengths) - lengths
            within = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], lengths)
            stamps = np.repeat(rng.integers(T0_MS, T1_MS, size=n), lengths) + within
            ratings = rng.choice(5, size=total, p=[0.06, 0.05, 0.09, 0.18, 0.62]) + 1
            votes = rng.geometric(0.6, size=total) - 1
            title_idx = rng.integers(0, len(titles), size=total)
            text_idx = rng.integers(0, len(texts), size=total)
            rows = zip(
                users.tolist(),
                items.tolist(),
                stamps.tolist(),
                ratings.tolist(),
                votes.tolist(),
                title_idx.tolist(),
                text_idx.tolist(),
                strict=True,
            )
            fh.write(
                "".join(
                    f'{{"rating": {r}.0, "title": "{titles[t]}", "text": "{texts[x]}", "images": [], '
                    f'"asin": "{_item_id(i)}", "parent_asin": "{_item_id(i)}", "user_id": "AG{u:012X}", '
                    f'"timestamp": {s}, "helpful_vote": {v}, "verified_purchase": true}}\n'
                    for u, i, s, r, v, t, x in rows
                )
            )
            lines += total
    return lines


def _image(i: int) -> list[dict[str, str | None]]:
    base = f"https://m.media-amazon.com/images/I/{_item_id(i)}"
    return [
        {
            "thumb": f"{base}._SS40_.jpg",
            "large": f"{base}.jpg",
            "variant": "MAIN",
            "hi_res": f"{base}_SL1500_.jpg",
        }
    ]


def _write_meta(path: Path, rng: np.random.Generator, n_items: int) -> int:
    """Stream one meta record per item; returns how many have no image."""
    vocab = _vocabulary(rng)
    brands = _phrases(rng, vocab, BRANDS, 1, 2)
    without = 0
    with path.open("w", encoding="utf-8") as fh:
        for start in range(0, n_items, CHUNK_ITEMS):
            n = min(CHUNK_ITEMS, n_items - start)
            titles = _phrases(rng, vocab, n, 4, 14)
            descriptions = _phrases(rng, vocab, n, 10, 60)
            features = _phrases(rng, vocab, 3 * n, 3, 8)
            brand = np.minimum(rng.zipf(1.5, size=n) - 1, BRANDS - 1)
            category = rng.integers(0, len(CATEGORIES), size=n)
            no_image = rng.random(n) < NO_IMAGE_SHARE
            without += int(no_image.sum())
            records = []
            for j in range(n):
                i = start + j
                record = {
                    "main_category": "All Beauty",
                    "title": titles[j],
                    "average_rating": 4.2,
                    "rating_number": 10,
                    "features": features[3 * j : 3 * j + 3],
                    "description": [descriptions[j]],
                    "price": None,
                    "images": [] if no_image[j] else _image(i),
                    "videos": [],
                    "store": brands[brand[j]],
                    "categories": ["Beauty & Personal Care", CATEGORIES[category[j]]],
                    "details": {},
                    "parent_asin": _item_id(i),
                    "bought_together": None,
                }
                records.append(json.dumps(record) + "\n")
            fh.write("".join(records))
    return without


def generate(out_dir: Path, scale: float, seed: int) -> Generated:
    """Write ``reviews.jsonl`` and ``meta.jsonl`` for ``scale`` x Beauty into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n_users = max(int(round(BEAUTY_USERS * scale)), 1)
    n_items = max(int(round(BEAUTY_ITEMS * scale)), MIN_HISTORY)
    rng = np.random.default_rng(seed)
    reviews, meta = out_dir / "reviews.jsonl", out_dir / "meta.jsonl"
    interactions = _write_reviews(reviews, rng, n_users, _popularity(rng, n_items))
    without = _write_meta(meta, rng, n_items)
    log.info("generated %.3gx Beauty: %d users, %d items, %d reviews", scale, n_users, n_items, interactions)
    return Generated(
        reviews=str(reviews),
        meta=str(meta),
        users=n_users,
        items=n_items,
        interactions=interactions,
        items_without_image=without,
        reviews_mib=round(reviews.stat().st_size / 2**20, 1),
        meta_mib=round(meta.stat().st_size / 2**20, 1),
    )
