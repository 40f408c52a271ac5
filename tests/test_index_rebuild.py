"""Zero-downtime rebuild: a complete new collection is built beside the served one and switched to atomically, while
threads keep querying (Edge, qdrant-client local mode standing in for a server, and both through the gRPC service)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from fashion_search.core.domain import IMAGE_VECTOR, Product, RebuildableIndex, VectorIndex, as_rebuildable
from fashion_search.core.garment_colour import garment_vector_dim
from fashion_search.core.settings import Settings
from fashion_search.services.search.client import RemoteIndex
from fashion_search.services.search.factory import make_local_index
from fashion_search.services.search.server import start_server
from tests.conftest import make_settings

DIM, N, TOP_K, QUERIES = 8, 120, 10, 16


def unit(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def catalog(vectors: np.ndarray, title: str) -> list[tuple[Product, dict[str, np.ndarray]]]:
    """N products p0..p{N-1}: the same ids in both collections, with other vectors (another model) and titles."""
    return [(Product(f"p{i}", category="dress", title=title), {IMAGE_VECTOR: v}) for i, v in enumerate(vectors)]


def exact_top(vectors: np.ndarray, queries: np.ndarray) -> list[list[str]]:
    """Each query's exact top-k product ids over a complete collection."""
    order = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :TOP_K]
    return [[f"p{i}" for i in row] for row in order]


@pytest.fixture(params=["edge", "qdrant"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, index_backend=request.param)


@pytest.fixture(params=["in-process", "grpc"])
def served(
    request: pytest.FixtureRequest, settings: Settings,
) -> Iterator[tuple[VectorIndex, Callable[[], VectorIndex]]]:
    """The index that rebuilds (the process's own, or the search service's through RemoteIndex) and a factory of
    clients for the query threads."""
    index = make_local_index(settings, DIM)
    if request.param == "in-process":
        yield index, lambda: index
        index.close()
        return
    server, port = start_server(settings, port=0, index=index)
    url = f"{settings.bind_host}:{port}"
    clients: list[RemoteIndex] = []

    def client() -> VectorIndex:
        clients.append(RemoteIndex(url, settings))
        return clients[-1]

    try:
        yield client(), client
    finally:
        for c in clients:
            c.close()
        server.stop(None)
        index.close()


def test_queries_during_a_rebuild_see_the_complete_old_or_the_complete_new_collection(
    served: tuple[VectorIndex, Callable[[], VectorIndex]],
) -> None:
    index, client = served
    old, new, queries = unit(N, seed=1), unit(N, seed=2), unit(QUERIES, seed=3)
    index.upsert(catalog(old, "old"))
    want_old, want_new = exact_top(old, queries), exact_top(new, queries)
    assert all(a != b for a, b in zip(want_old, want_new, strict=True))  # every query tells the two apart

    stop, errors = threading.Event(), []
    answers: list[tuple[float, str, int]] = []  # (when, which collection, query)

    def loop(seed: int) -> None:
        reader, k = client(), seed
        while not stop.is_set():
            q = k % QUERIES
            try:
                hits = reader.search(queries[q], TOP_K)
            except Exception as exc:
                errors.append(repr(exc))
                return
            ids, titles = [h.product.product_id for h in hits], {h.product.title for h in hits}
            which = "old" if ids == want_old[q] and titles == {"old"} else (
                "new" if ids == want_new[q] and titles == {"new"} else f"half-built: {ids} {titles}")
            answers.append((time.perf_counter(), which, q))
            k += 1

    threads = [threading.Thread(target=loop, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    rebuilding = as_rebuildable(index)
    start = time.perf_counter()
    name = rebuilding.begin_rebuild(DIM)
    version = index.version
    items = catalog(new, "new")
    for b in range(0, N, 20):
        assert rebuilding.rebuild_upsert(name, items[b:b + 20]) == len(items[b:b + 20])
        time.sleep(0.02)  # let the query threads run against the served collection while the new one fills
    switched_at = time.perf_counter()
    new_version = rebuilding.commit_rebuild(name, version)
    committed = time.perf_counter()
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()

    assert not errors
    assert new_version == version + 1 and index.version == version + 1
    bad = [a for a in answers if a[1] not in ("old", "new")]
    assert not bad, bad[:3]
    during = [a for a in answers if start <= a[0] <= switched_at]
    assert during and all(a[1] == "old" for a in during)  # the old collection served all through the build
    assert any(a[1] == "new" and a[0] > committed for a in answers)
    assert all(a[1] == "new" for a in answers if a[0] > committed)
    assert index.stats().count == N


def test_a_rebuild_with_other_dims_replaces_the_collection_and_survives_a_reopen(settings: Settings) -> None:
    index = make_local_index(settings, DIM)
    index.upsert(catalog(unit(N, seed=1), "old"))
    rebuilding = as_rebuildable(index)
    name = rebuilding.begin_rebuild(DIM + 4, garment_vector_dim(settings, DIM + 4))
    new = unit(N, seed=2, dim=DIM + 4)
    rebuilding.rebuild_upsert(name, catalog(new, "new"))
    assert rebuilding.rebuild_delete(name, ["p0", "nope"]) == 1
    assert rebuilding.commit_rebuild(name, index.version) is not None
    assert index.search(new[5], 1)[0].product.product_id == "p5"
    with pytest.raises(ValueError, match="shape"):
        index.search(unit(1, seed=4)[0], 1)  # the old dims are gone with the old collection
    version = index.version
    index.close()
    reopened = make_local_index(settings, DIM + 4)
    try:
        assert reopened.stats().count == N - 1 and reopened.version == version
        assert reopened.search(new[7], 1)[0].product.title == "new"
    finally:
        reopened.close()
    leftovers = sorted(p.name for p in settings.data_dir.rglob("*") if "rebuild" in p.name or ".replaced" in p.name)
    assert not leftovers


def test_a_write_during_the_build_stops_the_switch_and_an_abort_leaves_the_old_collection(settings: Settings) -> None:
    index = make_local_index(settings, DIM)
    try:
        old = unit(N, seed=1)
        index.upsert(catalog(old, "old"))
        rebuilding: RebuildableIndex = as_rebuildable(index)
        name = rebuilding.begin_rebuild(DIM)
        version = index.version
        rebuilding.rebuild_upsert(name, catalog(unit(N, seed=2), "new"))
        index.delete(["p3"])  # written after the copy was read: the rebuild must not switch
        assert rebuilding.commit_rebuild(name, version) is None
        rebuilding.abort_rebuild(name)
        with pytest.raises(ValueError, match="no rebuild"):
            rebuilding.rebuild_upsert(name, catalog(old[:1], "x"))
        assert index.search(old[4], 1)[0].product.title == "old" and index.stats().count == N - 1
    finally:
        index.close()


def test_ingestor_rebuild_recomputes_every_product_catches_up_writes_and_serves_throughout(
    settings: Settings, shared_models: dict,
) -> None:
    """The one implementation the CLI and the worker run: real photos, a changed model, writes during the build."""
    from fashion_search.pipeline.ingest import Ingestor
    from fashion_search.pipeline.search_pipeline import SearchPipeline
    from tests.test_reindex import CLASSES, VAL, recolored

    old_model, new_model = shared_models["embedder"], recolored(shared_models["embedder"], 1.0)
    det, seg = shared_models["detector"], shared_models["segmenter"]
    index = make_local_index(settings, old_model.dim)
    try:
        images = [sorted((VAL / c).glob("*.jpg"))[0].read_bytes() for c in CLASSES]
        payloads = [{"product_id": f"p{i}", "image_path": "", "title": f"Product {i}", "category": c, "price": 1.0}
                    for i, c in enumerate(CLASSES)]
        old = SearchPipeline(settings, det, seg, old_model, index)
        assert Ingestor(old, settings).ingest_payloads(payloads, images).indexed == len(CLASSES)
        queries = [index.vectors(f"p{i}")[IMAGE_VECTOR] for i in range(len(CLASSES))]  # type: ignore[index]

        def top3(qs: list) -> list[list[tuple[str, float]]]:
            """Ids and scores: the new model keeps the order of these few products but not their scores."""
            return [[(h.product.product_id, round(h.score, 4)) for h in index.search(q, 3)] for q in qs]

        before = top3(queries)

        rebuilding = as_rebuildable(index)
        written = rebuilding.rebuild_upsert
        calls: list[int] = []
        meanwhile: list[list[tuple[str, float]]] = []  # the old collection's answers after the writes

        def write_meanwhile(rebuild: str, items: list) -> int:
            """A shop's writes while the first pass embeds: one product's price changes, another is deleted."""
            if not calls:
                index.update_fields("p1", {"price": 99.0})
                index.delete(["p4"])
                meanwhile.extend(top3(queries[:4]))
            calls.append(len(items))
            return written(rebuild, items)

        rebuilding.rebuild_upsert = write_meanwhile  # type: ignore[method-assign]
        stop, errors, answers = threading.Event(), [], []

        def loop() -> None:
            while not stop.is_set():
                try:
                    for q in range(4):  # each search on its own: a switch may fall between two of them
                        answers.append((q, top3([queries[q]])[0]))
                except Exception as exc:  # any failure of a query during the rebuild fails the test
                    errors.append(repr(exc))
                    return

        reader = threading.Thread(target=loop)
        reader.start()
        try:
            report = Ingestor(SearchPipeline(settings, det, seg, new_model, index), settings).rebuild()
        finally:
            stop.set()
            reader.join()
        assert not errors and answers
        assert report.version == index.version and report.passes == 2 and not report.failed
        assert report.indexed == len(CLASSES) - 1
        stats = index.stats()
        new_name = SearchPipeline(settings, det, seg, new_model, index).vectors_model()
        assert stats.count == len(CLASSES) - 1 and stats.embedders == {new_name: len(CLASSES) - 1}
        assert index.get("p1").price == 99.0 and index.get("p4") is None  # type: ignore[union-attr]
        after = top3(queries[:4])
        # A query answered during the rebuild saw the old collection (before or after the writes) or the new one.
        assert after != before[:4] and after != meanwhile
        assert all(a in (before[q], meanwhile[q], after[q]) for q, a in answers)
    finally:
        index.close()


def test_an_edge_swap_cut_short_by_a_crash_serves_the_old_shard_again(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    index = make_local_index(settings, DIM)
    index.upsert(catalog(unit(N, seed=1), "old"))
    index.close()
    # The crash window of replace_tree: the served shard moved aside, the new one not yet in its place.
    settings.index_path.rename(settings.index_path.with_name(settings.index_path.name + ".replaced"))
    reopened = make_local_index(settings, DIM)
    try:
        assert reopened.stats().count == N
    finally:
        reopened.close()


def test_reindex_rebuild_refuses_product_ids() -> None:
    from fashion_search.cli.main import main

    assert main(["reindex", "--rebuild", "p1"]) == 2


def test_a_qdrant_collection_made_before_aliases_is_served_through_an_alias_after_its_first_rebuild(
    tmp_path: Path,
) -> None:
    from qdrant_client import QdrantClient

    from fashion_search.services.search.points import vector_sizes
    from fashion_search.services.search.qdrant_index import QdrantServerIndex, collection_config

    settings = make_settings(tmp_path, index_backend="qdrant")
    location = str(tmp_path / "qdrant")
    sizes = vector_sizes(DIM, garment_vector_dim(settings, DIM))
    legacy = QdrantClient(path=location)  # the layout of earlier releases: the served name is the collection
    legacy.create_collection(settings.collection, **collection_config(settings, sizes))
    legacy.close()
    with QdrantServerIndex(settings, DIM, location, garment_dim=sizes["garment"]) as index:
        index.upsert(catalog(unit(N, seed=1), "old"))
        name = index.begin_rebuild(DIM, sizes["garment"])
        index.rebuild_upsert(name, catalog(unit(N, seed=2), "new"))
        assert index.commit_rebuild(name, index.version) is not None
        assert index._real_collection() == name and index.search(unit(1, seed=5)[0], 1)[0].product.title == "new"
    with QdrantServerIndex(settings, DIM, location, garment_dim=sizes["garment"]) as reopened:
        assert reopened.stats().count == N and reopened._real_collection() == name
