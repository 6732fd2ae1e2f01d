"""Where an item's image comes from: a local file, a ``file://`` URL, or http(s).

Content hashes (what decides whether a rerun re-embeds an image):
- local files and ``file://``: the file's bytes, so a replaced photo is re-embedded even
  when its path, size or mtime did not change, and a copied folder is not;
- http(s): the URL itself. Fetching every image just to hash it would defeat the cache,
  and product-image URLs are content-addressed in practice. Failed downloads are retried
  on the next run regardless (see ``store.RETRY_REASONS``).
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tqdm.auto import tqdm

from mmsr_model.atomic import write_atomically
from pipeline.core.config import Settings
from pipeline.stages.embed.store import content_hash

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 16
_IO_THREADS = 8


@dataclass(frozen=True)
class ImageSource:
    """``kind`` is one of none, local, remote, unsupported; ``location`` a path or URL."""

    kind: str
    location: str = ""


@dataclass(frozen=True)
class Resolved:
    """A readable local file for the decoder, or the reason there is none."""

    path: Path | None
    missing: str | None


def parse_ref(ref: str | None) -> ImageSource:
    if ref is None or not ref.strip():
        return ImageSource("none")
    ref = ref.strip()
    scheme = urlparse(ref).scheme.lower()
    if scheme in ("http", "https"):
        return ImageSource("remote", ref)
    if scheme == "file":
        return ImageSource("local", urllib.request.url2pathname(urlparse(ref).path))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        return ImageSource("unsupported", ref)
    return ImageSource("local", ref)


def source_hash(source: ImageSource) -> str:
    if source.kind == "local":
        path = Path(source.location)
        if path.is_file():
            return content_hash(b"file:" + path.read_bytes())
        return content_hash(f"absent:{path}")
    return content_hash(f"{source.kind}:{source.location}")


def hash_sources(sources: list[ImageSource]) -> list[str]:
    """Hash every source; local files are read in threads (I/O bound, hashlib frees the GIL)."""
    with ThreadPoolExecutor(_IO_THREADS) as pool:
        return list(
            tqdm(
                pool.map(source_hash, sources),
                total=len(sources),
                desc="hash images",
                disable=len(sources) < 500,
            )
        )


class Fetcher:
    """Downloads http(s) images once into ``cache_dir/images`` with timeout, retries and a size cap."""

    def __init__(self, settings: Settings) -> None:
        self.cache = settings.cache_dir / "images"
        self.timeout = settings.image_timeout_s
        self.retries = settings.image_retries
        self.max_bytes = settings.image_max_bytes
        self.enabled = settings.image_download

    def cache_path(self, url: str) -> Path:
        return self.cache / content_hash(url)

    def fetch(self, url: str) -> Resolved:
        if not self.enabled:
            return Resolved(None, "download_disabled")
        target = self.cache_path(url)
        if target.is_file():
            return Resolved(target, None)
        reason = "unreachable"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
            body, reason, retry = self._download(url)
            if body is not None:
                self._store(target, body)
                return Resolved(target, None)
            if not retry:
                break
        log.debug("image %s: %s after %d attempt(s)", url, reason, attempt + 1)
        return Resolved(None, reason)

    def _download(self, url: str) -> tuple[bytes | None, str, bool]:
        """``(body, reason, worth_retrying)``; the whole transfer must finish within the timeout."""
        deadline = time.monotonic() + self.timeout
        request = urllib.request.Request(url, headers={"User-Agent": "mmsr-embed/0.1"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    return None, "too_large", False
                chunks: list[bytes] = []
                size = 0
                while chunk := response.read1(
                    _READ_CHUNK
                ):  # returns per recv, so the deadline is checked often
                    size += len(chunk)
                    if size > self.max_bytes:
                        return None, "too_large", False
                    if time.monotonic() > deadline:
                        return None, "timeout", True
                    chunks.append(chunk)
                return b"".join(chunks), "", False
        except urllib.error.HTTPError as exc:
            return None, "http_error", exc.code >= 500 or exc.code in (408, 429)
        except TimeoutError:
            return None, "timeout", True
        except urllib.error.URLError as exc:
            return None, "timeout" if isinstance(exc.reason, TimeoutError) else "unreachable", True
        except (OSError, http.client.HTTPException):
            return None, "unreachable", True

    def _store(self, target: Path, body: bytes) -> None:
        write_atomically(target, lambda tmp: tmp.write_bytes(body))


def resolve_sources(sources: list[ImageSource], settings: Settings) -> list[Resolved]:
    """A local file (downloaded into the cache for URLs) or a missing reason per source."""
    fetcher = Fetcher(settings)

    def resolve(source: ImageSource) -> Resolved:
        if source.kind == "none":
            return Resolved(None, "no_image")
        if source.kind == "unsupported":
            return Resolved(None, "unsupported")
        if source.kind == "remote":
            return fetcher.fetch(source.location)
        path = Path(source.location)
        return Resolved(path, None) if path.is_file() else Resolved(None, "not_found")

    remote = sum(s.kind == "remote" for s in sources)
    with ThreadPoolExecutor(_IO_THREADS) as pool:
        return list(
            tqdm(pool.map(resolve, sources), total=len(sources), desc="fetch images", disable=remote < 50)
        )
