"""The search service over real gRPC on loopback: RemoteIndex against a server over an EdgeIndex."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fashion_search.core.domain import GARMENT_VECTOR, IMAGE_VECTOR, Box, Product, SearchQuery, VectorIndex
from fashion_search.core.grpc_common import ServiceUnavailable, check_health
from fashion_search.core.settings import Settings
from fashion_search.services.search.client import RemoteIndex
from fashion_search.services.search.edge_index import EdgeIndex
from fashion_search.services.search.factory import make_index
from fashion_search.services.search.points import expand_query
from fashion_search.services.search.server import start_server

DIM = 8


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def catalog(n: int = 6) -> list[tuple[Product, dict[str, np.ndarray]]]:
    image, garment = unit_vectors(n, seed=1), unit_vectors(n, seed=2)
    return [
        (
            Product(f"p{i}", category="dress" if i % 2 else "shoe", title=f"P{i}", price=5.5 * i,
                    image_ref=f"/i/{i}", tags=["a", "b"], box=Box(0.0, 1.0, 20.0, 30.0) if i % 2 else None),
            {IMAGE_VECTOR: image[i], GARMENT_VECTOR: garment[i]},
        )
        for i in range(n)
    ]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, grpc_timeout_s=5, max_top_k=10)


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    """A search server on a free loopback port over an EdgeIndex under tmp_path."""
    index = EdgeIndex(settings, DIM)
    server, port = start_server(settings, port=0, index=index)
    yield f"{settings.bind_host}:{port}"
    server.stop(None).wait()
    index.close()


@pytest.fixture
def remote(url: str, settings: Settings) -> Iterator[RemoteIndex]:
    with RemoteIndex(url, settings) as client:
        yield client


def test_remote_index_round_trip(remote: RemoteIndex, url: str, settings: Settings) -> None:
    assert isinstance(remote, VectorIndex)
    assert check_health(url, settings)
    items = catalog()
    assert remote.upsert(items) == len(items)
    hits = remote.search(items[3][1][IMAGE_VECTOR], top_k=3)
    assert hits[0].product == items[3][0]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    garment = remote.search(items[2][1][GARMENT_VECTOR], top_k=2, vector_name=GARMENT_VECTOR, categories=["shoe"])
    assert garment[0].product.product_id == "p2"
    assert {h.product.category for h in garment} == {"shoe"}
    # Query expansion runs on the server, over the query's two nearest products.
    vectors = np.stack([v[IMAGE_VECTOR] for _, v in items])
    query = unit_vectors(1, seed=7)[0]
    expanded = expand_query(query, vectors[np.argsort(-(vectors @ query))[:2]])
    want = [items[i][0] for i in np.argsort(-(vectors @ expanded))]
    assert want != [items[i][0] for i in np.argsort(-(vectors @ query))]  # else the check below proves nothing
    assert [h.product for h in remote.search(query, top_k=6, expand=2)] == want
    assert remote.get("p1") == items[1][0]
    assert remote.get("unknown") is None
    # Conditional replacement runs on the server: revisions travel both ways.
    read = [remote.get(p) for p in ("p0", "p2")]
    assert all(p is not None and p.revision for p in read)
    remote.upsert([items[2]])  # p2 written again since it was read
    skipped = remote.replace_unchanged([(p, items[5][1]) for p in read if p is not None])
    assert skipped == ["p2"]
    assert {h.product.product_id for h in remote.search(items[5][1][IMAGE_VECTOR], top_k=2)} == {"p0", "p5"}
    assert remote.get("p0").revision != read[0].revision  # type: ignore[union-attr]
    remote.upsert([(replace(items[4][0], embedder="model-a"), items[4][1])])
    assert remote.get("p4").embedder == "model-a"  # type: ignore[union-attr]
    before = remote.stats()
    assert before.embedders == {"model-a": 1, "": len(items) - 1}
    assert (before.count, before.dim, before.backend) == (len(items), DIM, "qdrant-edge")
    assert before.categories == ["dress", "shoe"]
    assert remote.delete(["p1", "nope"]) == 1
    after = remote.stats()
    assert after.count == len(items) - 1
    assert after.version > before.version
    assert remote.version == after.version  # the Version RPC agrees with Stats
    assert remote.optimize() is False


def test_remote_scroll_round_trip(remote: RemoteIndex) -> None:
    items = catalog()
    remote.upsert(items)
    seen = []
    offset: str | None = None
    while True:
        page, offset = remote.scroll(offset, 4)
        seen.extend(page)
        if offset is None:
            break
    # Payloads (box included) come back whole, each product once, over two pages.
    assert sorted(seen, key=lambda p: p.product_id) == [p for p, _ in items]
    assert remote.scroll(None, 10) == (seen, None)
    with pytest.raises(ValueError, match="limit"):
        remote.scroll(None, 0)
    with pytest.raises(ValueError, match="expand"):
        remote.search(items[0][1][IMAGE_VECTOR], top_k=3, expand=-2)
    with pytest.raises(ValueError, match="offset"):
        remote.scroll("garbage", 3)


def test_factory_returns_remote_index_when_search_url_set(url: str, settings: Settings) -> None:
    index = make_index(settings.model_copy(update={"search_url": url}), 0)
    try:
        assert isinstance(index, RemoteIndex)
        assert index.stats().dim == DIM
    finally:
        index.close()


def test_invalid_requests_raise_value_error(remote: RemoteIndex) -> None:
    remote.upsert(catalog())
    version = remote.stats().version
    with pytest.raises(ValueError, match="shape"):
        remote.search(np.ones(DIM + 1), top_k=3)
    with pytest.raises(ValueError, match="top_k"):
        remote.search(np.ones(DIM), top_k=0)
    with pytest.raises(ValueError, match="unknown vector name"):
        remote.search(np.ones(DIM), top_k=3, vector_name="colour")
    with pytest.raises(ValueError, match="shape"):
        remote.upsert([(Product("x"), {IMAGE_VECTOR: np.ones(3)})])
    with pytest.raises(ValueError, match="product id"):
        remote.get("")
    assert remote.stats().version == version == remote.version


def test_unreachable_server_raises_service_unavailable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, grpc_timeout_s=2)
    with socket.socket() as sock:
        sock.bind((settings.bind_host, 0))
        port = sock.getsockname()[1]
    # The socket is closed now, so nothing listens on the port.
    with RemoteIndex(f"{settings.bind_host}:{port}", settings) as remote:
        start = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            remote.stats()
        with pytest.raises(ServiceUnavailable):
            remote.search(np.ones(DIM), top_k=1)
        assert time.monotonic() - start < 3 * settings.grpc_timeout_s


def test_a_batch_of_searches_answers_each_as_alone_in_one_call(remote: RemoteIndex) -> None:
    items = catalog()
    remote.upsert(items)
    queries = [
        SearchQuery(items[1][1][IMAGE_VECTOR], 3),
        SearchQuery(items[2][1][GARMENT_VECTOR], 2, GARMENT_VECTOR, ["shoe"]),
        SearchQuery(items[4][1][IMAGE_VECTOR], 4, IMAGE_VECTOR, None, 2),
    ]
    batched = remote.search_batch(queries)
    alone = [remote.search(q.vector, q.top_k, q.vector_name, q.categories, q.expand) for q in queries]
    assert [[h.product.product_id for h in hits] for hits in batched] == [
        [h.product.product_id for h in hits] for hits in alone
    ]
    for b, a in zip(batched, alone, strict=True):
        assert [h.score for h in b] == pytest.approx([h.score for h in a], abs=1e-6)
    assert remote.search_batch([]) == []
    with pytest.raises(ValueError):  # a bad query in a batch is bad input, not an outage
        remote.search_batch([SearchQuery(np.ones(DIM + 1, np.float32), 3)])
