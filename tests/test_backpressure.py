"""Back-pressure and deadlines end to end: a full model queue behind gRPC reaches the client as Overloaded and the
gateway as 503 with Retry-After, at once; a spent deadline is never sent on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.deadlines import deadline_in
from fashion_search.core.images import decode_image
from fashion_search.core.unavailable import DeadlineExceeded, Overloaded
from fashion_search.gateway.app import create_app
from fashion_search.pipeline.search_pipeline import SearchPipeline
from fashion_search.services.embedder.client import RemoteEmbedder
from fashion_search.services.embedder.model import GarmentEmbedder
from fashion_search.services.embedder.server import start_server
from fashion_search.services.search.factory import make_index
from tests.conftest import make_settings

CALLERS = 8
# One request admitted at a time, never batched with another: concurrent callers must be refused.
TIGHT = {"embedder_queue_size": 1, "embedder_max_batch_size": 1, "overload_retry_after_s": 3}


def _together(fn: Callable[[int], Any], n: int) -> list[Any]:
    """fn(i) in n threads started at once; each result or the exception it raised."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        start = time.monotonic()
        try:
            out[i] = (fn(i), time.monotonic() - start)
        except Exception as exc:  # collected for the assertions
            out[i] = (exc, time.monotonic() - start)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


@pytest.fixture(scope="module")
def tight_embedder_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(tmp_path_factory.mktemp("tight"), **TIGHT)
    server, port = start_server(settings, 0, GarmentEmbedder(settings))
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_a_full_model_queue_behind_grpc_refuses_at_once(
    tight_embedder_url: str, tmp_path: Path, small_records: list[CatalogRecord]
) -> None:
    settings = make_settings(tmp_path)
    client = RemoteEmbedder(tight_embedder_url, settings)
    image = decode_image(Path(small_records[0].image_path).read_bytes(), settings)
    results = _together(lambda _: client.embed([image]), CALLERS)
    refused = [(r, t) for r, t in results if isinstance(r, Overloaded)]
    served = [r for r, _ in results if not isinstance(r, Exception)]
    assert refused and served, results
    assert len(refused) + len(served) == CALLERS  # nothing else went wrong
    assert all(r.retry_after_s == 3 for r, _ in refused)
    client.close()


def test_a_spent_deadline_is_not_sent(tight_embedder_url: str, tmp_path: Path, small_records: list) -> None:
    settings = make_settings(tmp_path)
    client = RemoteEmbedder(tight_embedder_url, settings)
    image = decode_image(Path(small_records[0].image_path).read_bytes(), settings)
    with deadline_in(0.0), pytest.raises(DeadlineExceeded):
        client.embed([image])
    with deadline_in(30.0):  # a live deadline is sent as the call's timeout and the call succeeds
        assert client.embed([image]).shape == (1, client.dim)
    client.close()


def test_the_gateway_answers_a_full_queue_with_503_and_retry_after(
    tmp_path: Path, shared_models: dict, small_records: list[CatalogRecord]
) -> None:
    settings = make_settings(tmp_path, **TIGHT)
    embedder = GarmentEmbedder(settings)  # embedded mode: the same batcher in-process
    index = make_index(settings, embedder.dim)
    pipe = SearchPipeline(settings, shared_models["detector"], shared_models["segmenter"], embedder, index)
    data = Path(small_records[3].image_path).read_bytes()
    try:
        with TestClient(create_app(settings, pipe)) as client:
            results = _together(lambda _: client.post(
                "/v1/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"mode": "simple"}
            ), CALLERS)
    finally:
        index.close()
    codes = sorted(r.status_code for r, _ in results)
    assert set(codes) == {200, 503}, codes
    for resp, _ in results:
        if resp.status_code == 503:
            assert resp.headers["Retry-After"] == "3" and "overloaded" in resp.json()["detail"]


def test_a_nested_deadline_never_extends_the_outer_one() -> None:
    from fashion_search.core.deadlines import call_timeout, remaining

    assert remaining() is None and call_timeout("x", 7.0) == 7.0  # no deadline: the service's own timeout
    with deadline_in(1.0):
        with deadline_in(60.0):
            left = remaining()
            assert left is not None and left <= 1.0
        with deadline_in(0.5):
            assert call_timeout("x", 7.0) <= 0.5
        assert call_timeout("x", 0.25) == 0.25  # never more than the service's own timeout
    assert remaining() is None
