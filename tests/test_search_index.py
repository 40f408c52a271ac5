"""The VectorIndex backends (Qdrant Edge and qdrant-client local mode) behave the same."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import models

from fashion_search.core.domain import GARMENT_VECTOR, IMAGE_VECTOR, Box, Product, VectorIndex
from fashion_search.core.garment_colour import HISTOGRAM_DIM
from fashion_search.core.settings import Settings
from fashion_search.services.search.edge_index import EdgeIndex
from fashion_search.services.search.factory import make_index, stored_dim
from fashion_search.services.search.points import REVISION_FIELD, expand_query, point_id, product_payload
from fashion_search.services.search.qdrant_index import QdrantServerIndex

DIM = 8
CATEGORIES = ("dress", "shirt", "shoe")
BACKENDS = ("edge", "qdrant")

Factory = Callable[..., VectorIndex]


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """n random unit vectors, reproducible."""
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def catalog(n: int = 12, dim: int = DIM) -> list[tuple[Product, dict[str, np.ndarray]]]:
    """n products spread over CATEGORIES with distinct image and garment vectors."""
    image, garment = unit_vectors(n, dim, seed=1), unit_vectors(n, dim, seed=2)
    return [
        (
            Product(
                product_id=f"p{i}", category=CATEGORIES[i % len(CATEGORIES)], title=f"Product {i}",
                price=10.0 + i, image_ref=f"/img/{i}.jpg", tags=["new", f"t{i}"],
                box=Box(1.0, 2.0, 30.5, 40.0) if i % 2 else None,
            ),
            {IMAGE_VECTOR: image[i], GARMENT_VECTOR: garment[i]},
        )
        for i in range(n)
    ]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, max_top_k=20)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(backend: str, settings: Settings, tmp_path: Path) -> Iterator[Factory]:
    """Opens an index of the parametrised backend at a fixed place under tmp_path (so it can be reopened)."""
    opened: list[VectorIndex] = []

    def factory(dim: int = DIM, persistent: bool = False, **kwargs: int) -> VectorIndex:
        if backend == "edge":
            index: VectorIndex = EdgeIndex(settings, dim, tmp_path / "edge", **kwargs)
        else:
            # Local mode on disk writes every upsert through SQLite (slow); memory is enough unless reopening.
            index = QdrantServerIndex(settings, dim, str(tmp_path / "qdrant") if persistent else ":memory:")
        opened.append(index)
        return index

    yield factory
    for index in opened:
        index.close()


@pytest.fixture
def index(make: Factory) -> VectorIndex:
    idx = make()
    idx.upsert(catalog())
    return idx


def test_search_returns_nearest_first_with_payload(index: VectorIndex) -> None:
    items = catalog()
    product, vectors = items[5]
    query = vectors[IMAGE_VECTOR] + 0.05 * unit_vectors(1, DIM, seed=9)[0]
    hits = index.search(query, top_k=5)
    assert len(hits) == 5
    assert hits[0].product == product
    assert hits[0].score > 0.95
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    garment_hits = index.search(items[7][1][GARMENT_VECTOR], top_k=3, vector_name=GARMENT_VECTOR)
    assert garment_hits[0].product.product_id == "p7"
    assert garment_hits[0].score == pytest.approx(1.0, abs=1e-4)


def expansion_catalog() -> list[tuple[Product, dict[str, np.ndarray]]]:
    """Query e0: A is nearest; C is nearer than B, but B lies beyond A, so adding A to the query puts B before C."""
    e = np.eye(DIM, dtype=np.float32)
    vectors = {"A": e[0] + 0.3 * e[1], "B": e[0] + 0.6 * e[1], "C": e[0] + 0.5 * e[2], "D": e[3]}
    return [
        (Product(name, category="dress" if name != "C" else "shoe"),
         {IMAGE_VECTOR: v / np.linalg.norm(v), GARMENT_VECTOR: v / np.linalg.norm(v)})
        for name, v in vectors.items()
    ]


def test_query_expansion_moves_the_query_towards_its_neighbours(make: Factory) -> None:
    index = make()
    index.upsert(expansion_catalog())
    query = np.eye(DIM, dtype=np.float32)[0]
    assert [h.product.product_id for h in index.search(query, top_k=3)] == ["A", "C", "B"]
    expanded = index.search(query, top_k=3, expand=1)
    assert [h.product.product_id for h in expanded] == ["A", "B", "C"]
    # Scores are against the expanded query: A (on the way from the query to B) is not an exact match any more.
    assert expanded[0].score < 0.999
    # The neighbours come from the same filter as the results: among shoes only C is left, expansion or not.
    assert [h.product.product_id for h in index.search(query, top_k=3, categories=["shoe"], expand=2)] == ["C"]
    assert index.search(query, top_k=3, categories=["hat"], expand=2) == []
    assert [h.product.product_id for h in index.search(query, 3, GARMENT_VECTOR, expand=1)] == ["A", "B", "C"]


def test_expand_query_single_and_batch() -> None:
    query, near = unit_vectors(3, DIM, seed=4), unit_vectors(6, DIM, seed=5).reshape(3, 2, DIM)
    batch = expand_query(query, near)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-6)
    for i in range(3):
        single = expand_query(query[i], near[i])
        assert np.allclose(single, batch[i], atol=1e-6)
        want = query[i] + near[i].sum(axis=0)
        assert np.allclose(single, want / np.linalg.norm(want), atol=1e-6)
    # No neighbours: the query itself, at unit length.
    assert np.allclose(expand_query(3 * query[0], np.zeros((0, DIM))), query[0], atol=1e-6)


def test_category_filter_single_and_several(index: VectorIndex) -> None:
    query = catalog()[0][1][IMAGE_VECTOR]
    dresses = index.search(query, top_k=20, categories=["dress"])
    assert len(dresses) == 4
    assert {h.product.category for h in dresses} == {"dress"}
    mixed = index.search(query, top_k=20, categories=["dress", "shoe"])
    assert len(mixed) == 8
    assert {h.product.category for h in mixed} == {"dress", "shoe"}
    assert index.search(query, top_k=5, categories=["hat"]) == []
    assert len(index.search(query, top_k=20, categories=[])) == 12
    assert index.stats().categories == sorted(CATEGORIES)


def test_reupsert_replaces_product(index: VectorIndex) -> None:
    before = index.stats()
    new_vec = unit_vectors(1, DIM, seed=42)[0]
    product = Product(product_id="p3", category="shoe", title="Renamed", price=99.5)
    assert index.upsert([(product, {IMAGE_VECTOR: new_vec, GARMENT_VECTOR: new_vec})]) == 1
    after = index.stats()
    assert after.count == before.count
    assert after.version > before.version
    assert index.get("p3") == product
    hit = index.search(new_vec, top_k=1)[0]
    assert hit.product.title == "Renamed"
    assert hit.score == pytest.approx(1.0, abs=1e-4)


def test_delete_counts_existing_and_bumps_version(index: VectorIndex) -> None:
    before = index.stats()
    assert index.delete(["p1", "p2", "missing"]) == 2
    after = index.stats()
    assert after.count == before.count - 2
    assert after.version > before.version
    assert index.get("p1") is None
    assert all(h.product.product_id not in {"p1", "p2"} for h in index.search(catalog()[1][1][IMAGE_VECTOR], 20))
    assert index.delete(["missing"]) == 0
    assert index.delete([]) == 0
    assert index.stats().version == after.version


def test_every_write_stamps_a_new_revision(index: VectorIndex) -> None:
    items = catalog()
    first = index.get("p0")
    assert first is not None and first.revision
    assert len({index.get(f"p{i}").revision for i in range(len(items))}) == len(items)  # type: ignore[union-attr]
    index.upsert([items[0]])
    again = index.get("p0")
    assert again == first and again.revision not in ("", first.revision)  # type: ignore[union-attr]
    assert index.search(items[0][1][IMAGE_VECTOR], top_k=1)[0].product.revision == again.revision  # type: ignore[union-attr]


def test_replace_unchanged_writes_only_what_nobody_wrote_since_it_was_read(index: VectorIndex) -> None:
    items = catalog()
    read = {pid: index.get(pid) for pid in ("p0", "p1", "p2", "p3")}
    # Meanwhile someone edits p1 and deletes p2.
    index.upsert([(replace(items[1][0], title="edited"), items[1][1])])
    index.delete(["p2"])
    version = index.stats().version
    fresh = items[11][1]
    batch = [(replace(product, title="reindexed"), fresh) for product in read.values()]  # type: ignore[type-var]
    assert sorted(index.replace_unchanged(batch)) == ["p1", "p2"]
    assert [index.get(p).title for p in ("p0", "p1", "p3")] == ["reindexed", "edited", "reindexed"]  # type: ignore[union-attr]
    assert index.get("p0").revision != read["p0"].revision  # type: ignore[union-attr]
    assert index.get("p2") is None, "a deleted product must not come back"
    assert index.stats().count == len(items) - 1 and index.stats().version > version
    assert {h.product.product_id for h in index.search(fresh[IMAGE_VECTOR], top_k=3)} >= {"p0", "p3"}
    # The same read again: every revision has moved on, so nothing is written.
    version = index.stats().version
    assert sorted(index.replace_unchanged(batch)) == ["p0", "p1", "p2", "p3"]
    assert index.stats().version == version
    # A product that was never stored is not inserted.
    assert index.replace_unchanged([(Product("new"), fresh)]) == ["new"]
    assert index.get("new") is None


def _write_without_revision(index: VectorIndex, product: Product, vectors: dict[str, np.ndarray]) -> None:
    """Store a point as versions before revisions did (no revision field in its payload)."""
    payload = {k: v for k, v in product_payload(product).items() if k != REVISION_FIELD}
    vecs = {name: v.tolist() for name, v in vectors.items()}
    if isinstance(index, EdgeIndex):
        index._open().update(qe.UpdateOperation.upsert_points([qe.Point(point_id(product.product_id), vecs, payload)]))
    else:
        assert isinstance(index, QdrantServerIndex)
        index._client.upsert(index.collection, [models.PointStruct(id=point_id(product.product_id), vector=vecs,
                                                                     payload=payload)])


def test_replace_unchanged_of_products_stored_before_revisions(index: VectorIndex) -> None:
    items = catalog()
    _write_without_revision(index, Product("old", title="legacy"), items[3][1])
    legacy = index.get("old")
    assert legacy is not None and legacy.revision == ""
    assert index.replace_unchanged([(replace(legacy, title="reindexed"), items[4][1])]) == []
    assert index.get("old").title == "reindexed" and index.get("old").revision  # type: ignore[union-attr]
    # Read before that write, the product has changed since: left alone.
    assert index.replace_unchanged([(replace(legacy, title="stale"), items[5][1])]) == ["old"]
    assert index.get("old").title == "reindexed"  # type: ignore[union-attr]


def test_get_unknown_is_none(index: VectorIndex) -> None:
    assert index.get("no-such-product") is None
    assert index.get("p0") == catalog()[0][0]


def test_scroll_pages_through_every_product_once(index: VectorIndex) -> None:
    expected = {p.product_id: p for p, _ in catalog()}
    seen: list[str] = []
    offset: str | None = None
    pages = 0
    while True:
        page, offset = index.scroll(offset, 5)
        pages += 1
        assert len(page) <= 5
        for product in page:
            assert product == expected[product.product_id]  # the whole payload, box included
            seen.append(product.product_id)
        if offset is None:
            break
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    assert pages == 3
    everything, last = index.scroll(None, 20)
    assert last is None and [p.product_id for p in everything] == seen
    # Re-upserting the products of a page (what a reindex does) keeps each one's place in the order.
    first, cursor = index.scroll(None, 4)
    index.upsert([(p, {IMAGE_VECTOR: unit_vectors(1, DIM, seed=i)[0]}) for i, p in enumerate(first)])
    assert [p.product_id for p in index.scroll(cursor, 20)[0]] == seen[4:]


def test_scroll_empty_index_and_bad_arguments(make: Factory) -> None:
    index = make()
    assert index.scroll(None, 10) == ([], None)
    index.upsert(catalog(2))
    with pytest.raises(ValueError, match="limit"):
        index.scroll(None, 0)
    with pytest.raises(ValueError, match="limit"):
        index.scroll(None, 1001)
    with pytest.raises(ValueError, match="offset"):
        index.scroll("p0", 5)


def test_stats(index: VectorIndex) -> None:
    s = index.stats()
    assert (s.count, s.dim) == (12, DIM)
    assert s.backend in {"qdrant-edge", "qdrant"}
    assert sorted(s.vector_names) == sorted([IMAGE_VECTOR, GARMENT_VECTOR])
    assert s.version >= 1
    assert s.embedders == {"": 12}  # the catalog's products name no embedder


def test_stats_count_products_per_embedder(index: VectorIndex) -> None:
    items = catalog()
    index.upsert([(replace(p, embedder="model-a"), v) for p, v in items[:5]])
    index.upsert([(replace(p, embedder="model-b"), v) for p, v in items[5:7]])
    assert index.stats().embedders == {"model-a": 5, "model-b": 2, "": 5}
    stored = index.get("p6")
    assert stored is not None and stored.embedder == "model-b"
    assert index.search(items[0][1][IMAGE_VECTOR], top_k=1)[0].product.embedder == "model-a"
    index.upsert([(replace(p, embedder="model-a"), v) for p, v in items])
    assert index.stats().embedders == {"model-a": 12}


def test_reopen_keeps_data_and_version(make: Factory) -> None:
    first = make(persistent=True)
    first.upsert(catalog())
    first.delete(["p0"])
    stats = first.stats()
    first.close()
    reopened = make(persistent=True)
    assert reopened.stats() == stats
    assert reopened.get("p4") == catalog()[4][0]
    assert reopened.search(catalog()[4][1][IMAGE_VECTOR], top_k=1)[0].product.product_id == "p4"
    reopened.upsert(catalog()[:1])
    assert reopened.stats().version > stats.version
    reopened.close()
    with pytest.raises(ValueError, match="dim"):
        make(dim=DIM * 2, persistent=True)


def test_hnsw_recall_after_bulk_load(make: Factory, backend: str) -> None:
    n, dim = 2000, 32
    vecs = unit_vectors(n, dim, seed=7)
    # Thresholds of 1 KB make this small set big enough for Edge to build (and search) HNSW graphs.
    thresholds = {"indexing_threshold_kb": 1, "full_scan_threshold_kb": 1} if backend == "edge" else {}
    index = make(dim=dim, **thresholds)
    items = [(Product(f"p{i}", category=CATEGORIES[i % 3]), {IMAGE_VECTOR: v, GARMENT_VECTOR: v})
             for i, v in enumerate(vecs)]
    index.upsert(items)
    index.optimize()  # type: ignore[attr-defined]
    if isinstance(index, EdgeIndex):
        assert index.indexed_vector_count == 2 * n
    queries = range(0, n, 4)
    found = sum(index.search(vecs[i], top_k=1)[0].product.product_id == f"p{i}" for i in queries)
    assert found / len(queries) >= 0.95
    filtered = index.search(vecs[3], top_k=10, categories=["dress"])
    assert len(filtered) == 10 and {h.product.category for h in filtered} == {"dress"}
    # A point written after the graph was built sits in a plain segment and is found at once.
    extra = unit_vectors(1, dim, seed=8)[0]
    index.upsert([(Product("late"), {IMAGE_VECTOR: extra})])
    assert index.search(extra, top_k=1)[0].product.product_id == "late"


def test_edge_builds_hnsw_once_the_longest_vector_passes_the_threshold(settings: Settings) -> None:
    # 1 KB: 4 points of 64-d garment vectors (1 KB of float32) reach it, their 4-d image vectors would take 64.
    index = EdgeIndex(settings, dim=4, garment_dim=64, indexing_threshold_kb=1, full_scan_threshold_kb=1)
    image, garment = unit_vectors(4, 4, seed=1), unit_vectors(4, 64, seed=2)
    items = [(Product(f"p{i}"), {IMAGE_VECTOR: image[i], GARMENT_VECTOR: garment[i]}) for i in range(4)]
    index.upsert(items[:3])
    assert index.indexed_vector_count == 0
    index.upsert(items[3:])
    assert index.indexed_vector_count == 2 * 4
    index.close()


@pytest.fixture(scope="module", params=BACKENDS)
def shared_index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorIndex]:
    """One filled index per backend for tests that must leave it unchanged (opening one costs ~0.3 s)."""
    tmp = tmp_path_factory.mktemp("shared")
    settings = Settings(data_dir=tmp, max_top_k=20)
    index: VectorIndex = (
        EdgeIndex(settings, DIM, tmp / "edge") if request.param == "edge"
        else QdrantServerIndex(settings, DIM, ":memory:")
    )
    index.upsert(catalog())
    yield index
    index.close()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ix: ix.upsert([(Product("x"), {IMAGE_VECTOR: np.ones(DIM + 1)})]), "shape"),
        (lambda ix: ix.upsert([(Product("x"), {IMAGE_VECTOR: np.full(DIM, np.nan)})]), "NaN"),
        (lambda ix: ix.upsert([(Product("x"), {IMAGE_VECTOR: np.zeros(DIM)})]), "zeros"),
        (lambda ix: ix.upsert([(Product("x"), {"colour": np.ones(DIM)})]), "unknown vector name"),
        (lambda ix: ix.upsert([(Product("x"), {})]), "no vectors"),
        (lambda ix: ix.upsert([(Product(" "), {IMAGE_VECTOR: np.ones(DIM)})]), "product id"),
        (lambda ix: ix.upsert([(Product("x", price=float("nan")), {IMAGE_VECTOR: np.ones(DIM)})]), "price"),
        # One bad product refuses the whole batch: the good one before it must not be written either.
        (lambda ix: ix.upsert([(Product("p0", title="changed"), {IMAGE_VECTOR: np.ones(DIM)}),
                               (Product("y"), {IMAGE_VECTOR: np.ones(3)})]), "shape"),
        (lambda ix: ix.search(np.ones(DIM), top_k=0), "top_k"),
        (lambda ix: ix.search(np.ones(DIM), top_k=21), "top_k"),
        (lambda ix: ix.search(np.ones(DIM - 1), top_k=3), "shape"),
        (lambda ix: ix.search(np.ones(DIM), top_k=3, vector_name="colour"), "unknown vector name"),
        (lambda ix: ix.search(np.ones(DIM), top_k=3, categories="dress"), "list"),
        (lambda ix: ix.replace_unchanged([(Product("p0", revision="r"), {IMAGE_VECTOR: np.ones(DIM + 1)})]), "shape"),
        (lambda ix: ix.search(np.ones(DIM), top_k=3, expand=-1), "expand"),
        (lambda ix: ix.search(np.ones(DIM), top_k=3, expand=21), "expand"),
        # An id the HTTP API could not address (/v1/products/{id}) is never stored, whoever writes it.
        (lambda ix: ix.upsert([(Product("p0", title="changed"), {IMAGE_VECTOR: np.ones(DIM)}),
                               (Product("sku 1/a"), {IMAGE_VECTOR: np.ones(DIM)})]), "product id 'sku 1/a'"),
        (lambda ix: ix.upsert([(Product("x" * 129), {IMAGE_VECTOR: np.ones(DIM)})]), "1-128 characters"),
        (lambda ix: ix.get(""), "product id"),
        (lambda ix: ix.delete(["p1", ""]), "product id"),
        (lambda ix: ix.scroll(None, 0), "limit"),
        (lambda ix: ix.scroll("not-a-cursor", 3), "offset"),
    ],
)
def test_invalid_input_raises_and_changes_nothing(
    shared_index: VectorIndex, call: Callable[[VectorIndex], object], message: str,
) -> None:
    index = shared_index
    before = index.stats()
    with pytest.raises(ValueError, match=message):
        call(index)
    assert index.stats() == before
    assert index.get("p0") == catalog()[0][0]
    assert index.get("p1") == catalog()[1][0]


def test_edge_index_is_thread_safe(settings: Settings, tmp_path: Path) -> None:
    with EdgeIndex(settings, DIM, tmp_path / "edge") as index:
        items = catalog(40)

        def work(i: int) -> None:
            index.upsert([items[i]])
            assert index.search(items[i][1][IMAGE_VECTOR], top_k=1)[0].product.product_id == f"p{i}"

        with ThreadPoolExecutor(max_workers=settings.grpc_workers) as pool:
            list(pool.map(work, range(len(items))))
        assert index.stats().count == len(items)
        assert index.version == len(items)


def test_searches_run_beside_a_search_in_flight_and_writes_wait_for_it(index: VectorIndex) -> None:
    """A search holding the index does not stop other searches and lookups; an upsert waits until it ends."""
    items = catalog()
    query = items[3][1][IMAGE_VECTOR]
    with ThreadPoolExecutor(max_workers=4) as pool:
        with index._lock.read_lock():  # type: ignore[attr-defined]  # as a search in flight holds it
            reads = [
                pool.submit(index.search, query, 1), pool.submit(index.get, "p3"), pool.submit(index.stats),
                pool.submit(index.scroll, None, 5),
            ]
            assert reads[0].result(timeout=60)[0].product.product_id == "p3"
            assert reads[1].result(timeout=60) == items[3][0]
            assert reads[2].result(timeout=60).count == len(items)
            assert len(reads[3].result(timeout=60)[0]) == 5
            moved = replace(items[3][0], title="moved")
            write = pool.submit(index.upsert, [(moved, items[3][1])])
            with pytest.raises(TimeoutError):
                write.result(timeout=0.5)
            assert index.get("p3") == items[3][0]
        assert write.result(timeout=60) == 1
    assert index.get("p3") == moved


def test_edge_sidecar_and_closed_index(settings: Settings, tmp_path: Path) -> None:
    index = EdgeIndex(settings, DIM, tmp_path / "edge")
    index.upsert(catalog(3))
    assert (tmp_path / "edge.meta.json").exists()
    index.close()
    index.close()
    with pytest.raises(RuntimeError, match="closed"):
        index.stats()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_factory_builds_backend_and_reads_stored_dim(tmp_path: Path, backend_name: str) -> None:
    settings = Settings(data_dir=tmp_path, index_backend=backend_name, search_url="")
    assert stored_dim(settings) is None
    index = make_index(settings, DIM)
    try:
        assert isinstance(index, EdgeIndex if backend_name == "edge" else QdrantServerIndex)
        # Fine mode's garment vectors carry the garment's colour histogram; the image vectors do not.
        assert index.sizes == {IMAGE_VECTOR: DIM, GARMENT_VECTOR: DIM + HISTOGRAM_DIM}
        items = catalog(2)
        with pytest.raises(ValueError, match="garment"):
            index.upsert(items)
        index.upsert([(p, {IMAGE_VECTOR: v[IMAGE_VECTOR], GARMENT_VECTOR: unit_vectors(1, DIM + HISTOGRAM_DIM, 3)[0]})
                      for p, v in items])
        assert index.stats().count == 2
    finally:
        index.close()
    assert stored_dim(settings) == DIM
    # Another colour weight would write garment vectors of another length: the index refuses to open.
    with pytest.raises(ValueError, match="dim"):
        make_index(settings.model_copy(update={"garment_colour_weight": 0.0}), DIM)


def test_the_cli_refuses_an_index_of_another_layout_with_a_clear_error_and_keeps_it(tmp_path: Path) -> None:
    """An index built with the colour histogram off, opened by a CLI that has it on (the default)."""
    from fashion_search.services.embedder.model import GarmentEmbedder

    old = Settings(data_dir=tmp_path, index_backend="edge", search_url="", garment_colour_weight=0.0)
    dim = GarmentEmbedder(old).dim  # the embedder's real dim: only the garment vectors' length differs
    index = make_index(old, dim)
    index.upsert(catalog(2, dim))
    index.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")}
    env.update({"FS_DATA_DIR": str(tmp_path), "FS_INDEX_BACKEND": "edge", "FS_CACHE_ENABLED": "false"})
    done = subprocess.run([sys.executable, "-m", "fashion_search.cli", "demo", "--no-serve"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: index at") and "re-index" in done.stderr and "Traceback" not in done.stderr
    assert f"'garment': {dim}" in done.stderr
    with EdgeIndex(old, dim, old.index_path, garment_dim=dim) as reopened:
        assert reopened.stats().count == 2


def test_the_server_backend_works_without_the_edge_engine_installed() -> None:
    """A deployment on a Qdrant server needs qdrant-client only: the shared checks live apart from the Edge index."""
    script = (
        "import sys; sys.modules['qdrant_edge'] = None\n"  # any import of it now raises ImportError
        "import numpy as np\n"
        "from fashion_search.core.domain import Product\n"
        "from fashion_search.core.settings import Settings\n"
        "from fashion_search.services.search.qdrant_index import QdrantServerIndex\n"
        "index = QdrantServerIndex(Settings(), 4, ':memory:')\n"
        "index.upsert([(Product('p1', 'dress'), {'image': np.ones(4), 'garment': np.ones(4)})])\n"
        "print(index.search(np.ones(4), 1)[0].product.product_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "p1"
