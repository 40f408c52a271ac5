"""Catalog fields, every search filter, pages, payload-only updates and stored vectors: the same on Qdrant Edge,
qdrant-client local mode and the search service over gRPC."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from fashion_search.core.domain import GARMENT_VECTOR, IMAGE_VECTOR, Product, SearchFilter, VectorIndex
from fashion_search.core.settings import Settings
from fashion_search.services.search.client import RemoteIndex
from fashion_search.services.search.edge_index import EdgeIndex
from fashion_search.services.search.points import PAYLOAD_INDEXES
from fashion_search.services.search.qdrant_index import QdrantServerIndex, collection_config
from fashion_search.services.search.server import start_server

DIM = 8
N = 30
BRANDS = ("acme", "zeta", "nova")
CATEGORIES = ("dress", "shirt", "shoe")


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def product(i: int) -> Product:
    """Product i: category i % 3, brand i % 3 shifted, price 10 + i, every fourth sold out, tags by divisibility."""
    tags = [t for t, d in (("even", 2), ("third", 3), ("fifth", 5)) if i % d == 0]
    return Product(
        product_id=f"p{i}", category=CATEGORIES[i % 3], title=f"Product {i}", price=10.0 + i, image_ref=f"/i/{i}",
        tags=tags, brand=BRANDS[(i // 3) % 3], in_stock=i % 4 != 0, attributes={"colour": "red" if i % 2 else "blue"},
    )


PRODUCTS = [product(i) for i in range(N)]
IMAGE = unit_vectors(N, seed=1)
GARMENT = unit_vectors(N, seed=2)
ITEMS = [(p, {IMAGE_VECTOR: IMAGE[i], GARMENT_VECTOR: GARMENT[i]}) for i, p in enumerate(PRODUCTS)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, max_top_k=N, max_search_offset=20, grpc_timeout_s=5)


@pytest.fixture(params=("edge", "edge-indexes-in-ram", "qdrant", "remote"))
def index(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[VectorIndex]:
    """A filled index of each backend (remote: the gRPC search service over an EdgeIndex on loopback;
    edge-indexes-in-ram: an Edge index with payload indexes held in RAM, not memory-mapped from disk)."""
    closers: list[Callable[[], object]] = []
    if request.param == "qdrant":
        idx: VectorIndex = QdrantServerIndex(settings, DIM, ":memory:")
    elif request.param == "edge-indexes-in-ram":
        idx = EdgeIndex(settings.model_copy(update={"payload_indexes_on_disk": []}), DIM, tmp_path / "edge")
    else:
        idx = EdgeIndex(settings, DIM, tmp_path / "edge")
        if request.param == "remote":
            server, port = start_server(settings, port=0, index=idx)
            closers.append(lambda: server.stop(None).wait())
            closers.append(idx.close)
            idx = RemoteIndex(f"{settings.bind_host}:{port}", settings)
    closers.insert(0, idx.close)
    idx.upsert(ITEMS)
    yield idx
    for close in closers:
        close()


def exact(query: np.ndarray, keep: Callable[[Product], bool]) -> list[str]:
    """Ids of the products that pass keep, nearest first (exact cosine)."""
    order = np.argsort(-(IMAGE @ query), kind="stable")
    return [PRODUCTS[i].product_id for i in order if keep(PRODUCTS[i])]


QUERY = unit_vectors(1, seed=9)[0]

FILTERS: list[tuple[str, SearchFilter, Callable[[Product], bool]]] = [
    ("category", SearchFilter(categories=("dress", "shoe")), lambda p: p.category in ("dress", "shoe")),
    ("min_price", SearchFilter(min_price=25.0), lambda p: p.price >= 25.0),
    ("max_price", SearchFilter(max_price=18.0), lambda p: p.price <= 18.0),
    ("price range", SearchFilter(min_price=12.0, max_price=20.0), lambda p: 12.0 <= p.price <= 20.0),
    ("brand", SearchFilter(brands=("acme", "nova")), lambda p: p.brand in ("acme", "nova")),
    ("in stock", SearchFilter(in_stock=True), lambda p: p.in_stock),
    ("sold out", SearchFilter(in_stock=False), lambda p: not p.in_stock),
    ("tags all", SearchFilter(tags=("even", "third")), lambda p: {"even", "third"} <= set(p.tags)),
    ("exclude", SearchFilter(exclude=("p1", "p2")), lambda p: p.product_id not in ("p1", "p2")),
    ("combined", SearchFilter(categories=("shirt",), in_stock=True, max_price=30.0),
     lambda p: p.category == "shirt" and p.in_stock and p.price <= 30.0),
]


@pytest.mark.parametrize(("name", "search_filter", "keep"), FILTERS, ids=[f[0] for f in FILTERS])
def test_every_filter_returns_exactly_the_matching_products_in_order(
    index: VectorIndex, name: str, search_filter: SearchFilter, keep: Callable[[Product], bool],
) -> None:
    hits = index.search(QUERY, N, filters=search_filter)
    expected = exact(QUERY, keep)
    assert expected, name  # the fixture catalog holds matches for every filter
    assert [h.product.product_id for h in hits] == expected


def test_catalog_fields_are_stored_and_read_back(index: VectorIndex) -> None:
    got = index.get("p5")
    assert got is not None
    assert (got.brand, got.in_stock, got.attributes, got.tags) == ("zeta", True, {"colour": "red"}, ["fifth"])
    assert index.get("p4").in_stock is False  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [
    SearchFilter(min_price=-1.0), SearchFilter(max_price=float("nan")), SearchFilter(min_price=5.0, max_price=2.0),
    SearchFilter(brands=("",)), SearchFilter(tags=("",)),
])
def test_a_bad_filter_is_refused_naming_the_field(index: VectorIndex, bad: SearchFilter) -> None:
    with pytest.raises(ValueError, match=r"price|brand|tags"):
        index.search(QUERY, 5, filters=bad)


def test_pages_of_a_search_follow_each_other_without_gaps_or_repeats(index: VectorIndex) -> None:
    full = [h.product.product_id for h in index.search(QUERY, 15)]
    pages = [index.search(QUERY, 5, offset=o) for o in (0, 5, 10)]
    assert [h.product.product_id for page in pages for h in page] == full
    filtered = [h.product.product_id for h in index.search(QUERY, 4, offset=2, filters=SearchFilter(in_stock=True))]
    assert filtered == exact(QUERY, lambda p: p.in_stock)[2:6]


def test_an_offset_beyond_the_documented_depth_is_refused(index: VectorIndex) -> None:
    with pytest.raises(ValueError, match="offset"):
        index.search(QUERY, 5, offset=21)


def test_update_fields_changes_the_payload_and_not_the_vectors(index: VectorIndex) -> None:
    before_vectors = index.vectors("p3")
    version = index.version
    updated = index.update_fields("p3", {"price": 99.5, "in_stock": False, "attributes": {"colour": "green"}})
    assert updated is not None and (updated.price, updated.in_stock) == (99.5, False)
    assert updated.attributes == {"colour": "green"} and updated.title == "Product 3"
    assert index.version > version  # cached answers keyed by version are invalidated
    after = index.vectors("p3")
    assert before_vectors is not None and after is not None
    np.testing.assert_allclose(after[IMAGE_VECTOR], before_vectors[IMAGE_VECTOR], atol=1e-6)
    # The filters see the new values at once.
    assert "p3" in [h.product.product_id for h in index.search(QUERY, N, filters=SearchFilter(min_price=99.0))]
    assert "p3" not in [h.product.product_id for h in index.search(QUERY, N, filters=SearchFilter(in_stock=True))]


def test_update_fields_of_an_unknown_product_or_a_bad_field(index: VectorIndex) -> None:
    assert index.update_fields("nope", {"price": 1.0}) is None
    with pytest.raises(ValueError, match="price"):
        index.update_fields("p1", {"price": -3.0})
    with pytest.raises(ValueError, match="cannot be updated"):
        index.update_fields("p1", {"image_ref": "/etc/passwd"})
    assert index.get("p1").price == 11.0  # type: ignore[union-attr]


def test_stored_vectors_find_the_product_itself(index: VectorIndex) -> None:
    vectors = index.vectors("p7")
    assert vectors is not None and set(vectors) == {IMAGE_VECTOR, GARMENT_VECTOR}
    np.testing.assert_allclose(vectors[IMAGE_VECTOR], IMAGE[7], atol=1e-5)
    assert index.search(vectors[IMAGE_VECTOR], 1)[0].product.product_id == "p7"
    assert index.vectors("nope") is None


def test_settings_shape_a_new_server_collection(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, qdrant_shard_number=3, qdrant_replication_factor=2,
                        qdrant_write_consistency=2, index_quantization="int8")
    config = collection_config(settings, {IMAGE_VECTOR: DIM, GARMENT_VECTOR: DIM})
    assert (config["shard_number"], config["replication_factor"], config["write_consistency_factor"]) == (3, 2, 2)
    assert config["quantization_config"].scalar.type.value == "int8"
    assert config["vectors_config"][IMAGE_VECTOR].on_disk is True
    # Local mode accepts the same arguments (a server applies them).
    with QdrantServerIndex(settings, DIM, ":memory:") as idx:
        idx.upsert(ITEMS[:3])
        assert idx.search(IMAGE[1], 1)[0].product.product_id == "p1"


@pytest.mark.parametrize("backend", ["edge", "qdrant"])
def test_binary_quantization_keeps_float32_on_disk_and_answers(backend: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, index_quantization="binary")
    config = collection_config(settings, {IMAGE_VECTOR: DIM, GARMENT_VECTOR: DIM})
    assert config["quantization_config"].binary.always_ram is True
    assert config["vectors_config"][IMAGE_VECTOR].on_disk is True
    idx: VectorIndex = (
        QdrantServerIndex(settings, DIM, ":memory:") if backend == "qdrant" else EdgeIndex(settings, DIM, tmp_path)
    )
    with idx:  # type: ignore[attr-defined]
        idx.upsert(ITEMS)
        assert idx.search(IMAGE[4], 1)[0].product.product_id == "p4"


def photos_of(pid: str, vectors: np.ndarray, **fields: object) -> list[tuple[Product, dict[str, np.ndarray]]]:
    """One item per photo of a product whose photos have the given image vectors."""
    refs = [f"/i/{pid}-{k}.jpg" for k in range(len(vectors))]
    base = Product(product_id=pid, category="dress", title=pid, image_ref=refs[0], images=refs, **fields)  # type: ignore[arg-type]
    return [(Product(**{**base.__dict__, "photo": k}), {IMAGE_VECTOR: v}) for k, v in enumerate(vectors)]


def near(query: np.ndarray, n: int, seed: int, spread: float = 0.05) -> np.ndarray:
    """n unit vectors close to query."""
    x = query + spread * np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_photos_of_one_product_are_grouped_into_one_hit_naming_the_matching_photo(index: VectorIndex) -> None:
    # Three photos of "multi" around the query (the third nearest), and a product of one photo in between.
    photos = near(QUERY, 3, seed=4, spread=0.3)
    photos[2] = QUERY
    index.upsert(photos_of("multi", photos))
    index.upsert([(Product("single", category="dress", image_ref="/i/s.jpg"), {IMAGE_VECTOR: near(QUERY, 1, 5)[0]})])
    hits = index.search(QUERY, 10)
    ids = [h.product.product_id for h in hits]
    assert len(ids) == len(set(ids)) == 10  # no product twice, and still a full page
    first = hits[0].product
    assert first.product_id == "multi" and first.photo == 2 and first.photo_ref == "/i/multi-2.jpg"
    assert first.images == [f"/i/multi-{k}.jpg" for k in range(3)]
    # Pages: no product on two pages, none skipped.
    paged = [h.product.product_id for o in (0, 5, 10) for h in index.search(QUERY, 5, offset=o)]
    assert paged == [h.product.product_id for h in index.search(QUERY, 15)] and len(set(paged)) == 15
    # A product is counted, listed and read once, as its main photo.
    assert index.stats().count == N + 2
    listed = [p.product_id for p in index.scroll(None, 100)[0]]
    assert listed.count("multi") == 1 and index.get("multi").photo == 0  # type: ignore[union-attr]


def test_every_photo_follows_updates_deletes_and_fewer_photos(index: VectorIndex) -> None:
    photos = near(QUERY, 3, seed=6)
    index.upsert(photos_of("multi", photos, price=5.0))
    assert index.update_fields("multi", {"price": 500.0}) is not None
    found = index.search(photos[1], 3, filters=SearchFilter(min_price=400.0))
    assert [h.product.product_id for h in found] == ["multi"] and found[0].product.photo == 1
    # Written again with one photo: the other two are gone.
    index.upsert(photos_of("multi", photos[:1]))
    assert index.search(photos[2], 1)[0].product.photo == 0
    assert index.stats().count == N + 1
    assert index.delete(["multi"]) == 1
    assert "multi" not in [h.product.product_id for h in index.search(photos[1], N)]
    assert index.stats().count == N


def red_share(hits: list) -> float:
    return sum(h.product.attributes.get("colour") == "red" for h in hits) / len(hits)


def test_words_fused_with_the_photo_raise_the_share_of_products_they_name(index: VectorIndex) -> None:
    alone = index.search(QUERY, 10)
    fused = index.search(QUERY, 10, text="red")
    assert red_share(fused) > red_share(alone) and red_share(fused) >= 0.9
    # Filters and pages hold for fused searches too.
    page = index.search(QUERY, 4, text="red", filters=SearchFilter(in_stock=True), offset=2)
    assert all(h.product.in_stock for h in page) and len(page) == 4
    # Words nobody uses leave the photo's order.
    assert [h.product.product_id for h in index.search(QUERY, 5, text="zzzz")] == exact(QUERY, lambda p: True)[:5]
    # A payload-only update re-words the product.
    index.update_fields("p0", {"attributes": {"colour": "green"}})
    assert index.search(QUERY, 1, text="green")[0].product.product_id == "p0"
    with pytest.raises(ValueError, match="text"):
        index.search(QUERY, 5, text="x" * 201)


def test_diversity_spreads_a_page_of_near_copies(index: VectorIndex) -> None:
    copies = near(QUERY, 5, seed=8, spread=0.01)
    index.upsert([(Product(f"copy{i}", category="dress"), {IMAGE_VECTOR: v}) for i, v in enumerate(copies)])
    plain = [h.product.product_id for h in index.search(QUERY, 5)]
    varied = [h.product.product_id for h in index.search(QUERY, 5, diversity=0.9)]
    assert all(p.startswith("copy") for p in plain)
    assert varied[0].startswith("copy") and sum(p.startswith("copy") for p in varied) <= 2
    with pytest.raises(ValueError, match="diversity"):
        index.search(QUERY, 5, diversity=1.5)


@pytest.mark.parametrize("backend", ["edge", "qdrant"])
def test_the_words_weight_sets_how_far_they_move_the_photo_order(
    backend: str, settings: Settings, tmp_path: Path,
) -> None:
    light = settings.model_copy(update={"fusion_text_weight": 0.001})
    idx: VectorIndex = (
        QdrantServerIndex(light, DIM, ":memory:") if backend == "qdrant" else EdgeIndex(light, DIM, tmp_path / "w")
    )
    try:
        idx.upsert(ITEMS)
        photo = [h.product.product_id for h in idx.search(QUERY, 5)]
        # Weighted a thousandth, the words only break ties: the photo's order stands.
        assert [h.product.product_id for h in idx.search(QUERY, 5, text="red")] == photo
        idx.settings = settings  # type: ignore[attr-defined]  # the words at the photo's weight reorder it
        assert [h.product.product_id for h in idx.search(QUERY, 5, text="red")] != photo
    finally:
        idx.close()


def test_payload_indexes_on_disk_are_those_named_in_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, payload_indexes_on_disk=["product_id", "text"])
    with EdgeIndex(settings, DIM, tmp_path / "edge") as idx:
        schema = idx._open().info().payload_schema
    assert {name for name, info in schema.items() if info.params.memory == qe.Memory.Cold} == {"product_id", "text"}
    with pytest.raises(ValueError, match="colour"):
        EdgeIndex(Settings(data_dir=tmp_path, payload_indexes_on_disk=["colour"]), DIM, tmp_path / "other")


def test_payload_indexes_on_disk_answer_every_filter_exactly_once_the_segment_is_built(tmp_path: Path) -> None:
    n = 600
    products = [product(i) for i in range(n)]
    vectors = unit_vectors(n, seed=5)
    settings = Settings(data_dir=tmp_path, max_top_k=50, payload_indexes_on_disk=list(PAYLOAD_INDEXES))
    # Built (immutable) segment; filters under the full-scan threshold are answered through the payload indexes.
    with EdgeIndex(settings, DIM, tmp_path / "edge", indexing_threshold_kb=1) as idx:
        idx.upsert([(p, {IMAGE_VECTOR: vectors[i]}) for i, p in enumerate(products)])
        idx.optimize()
        assert idx.indexed_vector_count >= n
        schema = idx._open().info().payload_schema
        assert set(schema) == set(PAYLOAD_INDEXES)
        assert all(info.params.memory == qe.Memory.Cold for info in schema.values())
        order = np.argsort(-(vectors @ QUERY), kind="stable")
        for name, search_filter, keep in FILTERS:
            expected = [products[i].product_id for i in order if keep(products[i])][:50]
            assert [h.product.product_id for h in idx.search(QUERY, 50, filters=search_filter)] == expected, name
