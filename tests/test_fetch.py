"""Photos by URL: limits, content checks, redirects re-checked, and the guard against server-side request forgery.

Traffic goes only to a local HTTP server on 127.0.0.1; every refused address is refused before any connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from fashion_search.core.catalog import CatalogRecord, parse_catalog
from fashion_search.core.fetch import FetchRefused, fetch_image
from fashion_search.core.settings import Settings
from tests.conftest import SAMPLE, make_settings

PHOTO = next((SAMPLE.parent / "images").rglob("*.jpg")).read_bytes()
SLOW_S = 8.0


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        routes = {
            "/photo.jpg": lambda: self._send(200, PHOTO, "image/jpeg"),
            "/page": lambda: self._send(200, b"<html></html>", "text/html"),
            "/big": lambda: self._send(200, PHOTO * 4, "image/jpeg"),
            "/to-photo": lambda: self._send(302, b"", "text/plain", {"Location": "/photo.jpg"}),
            "/to-metadata": lambda: self._send(
                302, b"", "text/plain", {"Location": "http://169.254.169.254/latest/meta-data/"}),
            "/to-private": lambda: self._send(302, b"", "text/plain", {"Location": "http://10.1.2.3/x.jpg"}),
            "/loop": lambda: self._send(302, b"", "text/plain", {"Location": "/loop"}),
        }
        if self.path == "/slow":
            time.sleep(SLOW_S)
            self._send(200, PHOTO, "image/jpeg")
            return
        routes.get(self.path, lambda: self._send(404, b"", "text/plain"))()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def allowed(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, fetch_allowed_networks=["127.0.0.1/32"], fetch_timeout_s=3.0,
                         max_upload_bytes=len(PHOTO) * 2)


class _Recorder:
    """An httpx client that records where it connects (to prove refused hosts are never contacted)."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.client = httpx.Client(
            follow_redirects=False, trust_env=False, timeout=1.0,
            event_hooks={"request": [lambda request: self.hosts.append(request.url.host)]},
        )


def test_a_photo_from_an_allow_listed_local_server_is_fetched(server: str, allowed: Settings) -> None:
    assert fetch_image(f"{server}/photo.jpg", allowed) == PHOTO
    assert fetch_image(f"{server}/to-photo", allowed) == PHOTO  # a redirect, followed and re-checked


def test_loopback_is_refused_without_the_allow_list(server: str, tmp_path: Path) -> None:
    recorder = _Recorder()
    with pytest.raises(FetchRefused, match="loopback"):
        fetch_image(f"{server}/photo.jpg", make_settings(tmp_path), recorder.client)
    assert recorder.hosts == []


@pytest.mark.parametrize(("url", "why"), [
    ("http://10.0.0.5/a.jpg", "private"),
    ("http://192.168.1.20/a.jpg", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/", "metadata"),
    ("http://[::ffff:10.0.0.5]/a.jpg", "private"),
    ("http://0.0.0.0/a.jpg", "unspecified"),
])
def test_private_link_local_and_metadata_addresses_are_refused_before_any_connection(
    url: str, why: str, allowed: Settings,
) -> None:
    recorder = _Recorder()
    with pytest.raises(FetchRefused, match=why):
        fetch_image(url, allowed, recorder.client)
    assert recorder.hosts == []


@pytest.mark.parametrize("path", ["/to-metadata", "/to-private"])
def test_a_redirect_from_the_allowed_server_to_a_refused_address_is_refused(
    server: str, allowed: Settings, path: str,
) -> None:
    recorder = _Recorder()
    with pytest.raises(FetchRefused, match=r"metadata|private"):
        fetch_image(f"{server}{path}", allowed, recorder.client)
    assert set(recorder.hosts) == {"127.0.0.1"}  # only the allowed server was contacted


@pytest.mark.parametrize(("path", "why"), [
    ("/big", "the limit is"),
    ("/page", "content type 'text/html'"),
    ("/slow", "within 3 s"),
    ("/missing", "HTTP 404"),
    ("/loop", "redirects"),
])
def test_answers_that_are_too_large_not_images_too_slow_or_endless_are_refused(
    server: str, allowed: Settings, path: str, why: str,
) -> None:
    with pytest.raises(FetchRefused, match=why):
        fetch_image(f"{server}{path}", allowed)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.jpg", "http://user:pw@127.0.0.1/a"])
def test_other_schemes_and_credentials_are_refused(url: str, allowed: Settings) -> None:
    with pytest.raises(FetchRefused):
        fetch_image(url, allowed)


def test_catalog_records_may_name_their_photo_by_url_and_http_catalogs_must(tmp_path: Path) -> None:
    text = ('{"product_id": "a", "image_url": "https://shop.example/a.jpg"}\n'
            '{"product_id": "b", "image": "b.jpg", "image_url": "https://shop.example/b.jpg"}\n')
    a, b = parse_catalog(text, ".jsonl", "cat.jsonl", tmp_path)
    assert (a.image_path, a.image_url) == ("", "https://shop.example/a.jpg")
    assert b.image_path == str((tmp_path / "b.jpg").resolve()) and b.image_url == "https://shop.example/b.jpg"
    with pytest.raises(ValueError, match=r"upload:2: a catalog sent over HTTP names photos by image_url"):
        parse_catalog(text, ".jsonl", "upload", None)
    with pytest.raises(ValueError, match=r"cat.csv:2: image_url must be an http"):
        parse_catalog("product_id,image_url\nx,javascript:alert(1)\n", ".csv", "cat.csv", tmp_path)


def test_the_ingestor_fetches_url_photos_stores_them_and_refuses_guarded_ones(
    server: str, allowed: Settings, shared_models: dict,
) -> None:
    from fashion_search.pipeline.ingest import Ingestor
    from fashion_search.pipeline.search_pipeline import SearchPipeline
    from fashion_search.services.search.factory import make_index

    embedder = shared_models["embedder"]
    pipeline = SearchPipeline(allowed, shared_models["detector"], shared_models["segmenter"], embedder,
                              make_index(allowed, embedder.dim))
    records = [
        CatalogRecord("url-ok", "", image_url=f"{server}/photo.jpg"),
        CatalogRecord("url-meta", "", image_url="http://169.254.169.254/latest/"),
        CatalogRecord("url-page", "", image_url=f"{server}/page"),
    ]
    try:
        report = Ingestor(pipeline, allowed).ingest_records(records)
        assert report.indexed == 1
        assert {pid for pid, _ in report.failed} == {"url-meta", "url-page"}
        stored = pipeline.index.get("url-ok")
        assert stored is not None and Path(stored.image_ref).read_bytes() == PHOTO
        assert Path(stored.image_ref).is_relative_to(allowed.images_dir.resolve())
    finally:
        pipeline.index.close()
