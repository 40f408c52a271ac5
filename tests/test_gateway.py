"""The HTTP API over the embedded pipeline: modes, products, cache, degraded answers and every bad input."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import IMAGE_VECTOR, Product
from fashion_search.core.grpc_common import ServiceUnavailable
from fashion_search.gateway.app import create_app
from fashion_search.gateway.cache import SearchCache
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.pipeline.search_pipeline import SearchPipeline
from tests.conftest import TEST_REDIS, jpeg_bytes, make_settings, model_pipeline


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, shared_models: dict, small_records: list[CatalogRecord]
) -> Iterator[SearchPipeline]:
    settings = make_settings(tmp_path_factory.mktemp("gateway"))
    pipe = model_pipeline(settings, shared_models)
    report = Ingestor(pipe, settings).ingest_records(small_records)
    assert report.indexed == len(small_records) and not report.failed
    yield pipe
    pipe.index.close()


def _client(pipe: SearchPipeline, **overrides: object) -> TestClient:
    settings = make_settings(pipe.settings.data_dir, **overrides)
    return TestClient(create_app(settings, pipe))


@pytest.fixture(scope="module")
def client(pipeline: SearchPipeline) -> Iterator[TestClient]:
    with _client(pipeline) as c:
        yield c


def _photo(rec: CatalogRecord) -> bytes:
    return Path(rec.image_path).read_bytes()


def _search(client: TestClient, data: bytes, **form: object) -> dict:
    resp = client.post("/v1/search", files={"image": ("q.jpg", data, "image/jpeg")}, data=form)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_simple_mode_finds_the_product_itself_first(client: TestClient, small_records: list) -> None:
    rec = small_records[5]
    body = _search(client, _photo(rec), mode="simple", top_k=5)
    assert body["results"][0]["product_id"] == rec.product_id
    # The query is the catalog photo itself, so the one neighbour the default expansion adds is itself too: the
    # expanded query points the same way and scores 1 (deeper expansion is tested in test_query_expansion).
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(body["results"]) == 5 and body["garments"] == []
    assert body["results"][0]["image_url"].endswith("/image")


def test_fine_mode_groups_results_per_detected_garment(client: TestClient, small_records: list) -> None:
    rec = small_records[0]
    body = _search(client, _photo(rec), mode="fine", top_k=4)
    assert body["garments"], "a product photo must yield at least one garment"
    g = body["garments"][0]
    w, h = body["image_size"]
    assert 0 <= g["box"][0] < g["box"][2] <= w and 0 <= g["box"][1] < g["box"][3] <= h
    assert 1 <= len(g["results"]) <= 4
    grouped = {r["product_id"] for gg in body["garments"] for r in gg["results"]}
    assert {r["product_id"] for r in body["results"]} <= grouped
    assert set(body["timings_ms"]) >= {"detect", "segment", "embed", "search", "total"}


def test_tag_mode_filters_on_one_kind(client: TestClient, small_records: list) -> None:
    rec = small_records[10]
    body = _search(client, _photo(rec), mode="tag", top_k=10)
    assert body["garments"]
    # A product photo: one kind, the trusted label backed by the image model's neighbours or their own kind.
    assert body["suggested_mode"] is None
    assert {r["category"] for r in body["results"]} == {rec.category}


@pytest.mark.parametrize("mode", ["simple", "fine", "tag"])
def test_search_with_a_catalog_product_instead_of_an_upload(
    client: TestClient, small_records: list, mode: str
) -> None:
    rec = small_records[7]
    resp = client.post("/v1/search", data={"product_id": rec.product_id, "mode": mode, "top_k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == mode and body["results"]
    # "More like this" shows other products: the product itself is left out.
    ids = [r["product_id"] for r in body["results"]]
    assert rec.product_id not in ids
    upload = [r["product_id"] for r in _search(client, _photo(rec), mode=mode, top_k=6)["results"]]
    assert len(set(ids) & set(upload)) >= 3, (ids, upload)


@pytest.mark.parametrize(
    ("form", "files", "status", "words"),
    [
        ({"product_id": "no-such-product"}, None, 404, "unknown product"),
        ({"product_id": "bad id!"}, None, 422, "product_id"),
        ({}, None, 422, "image or a product_id"),
        ({"product_id": "x"}, {"image": ("q.jpg", b"x", "image/jpeg")}, 422, "either"),
    ],
)
def test_product_id_search_errors(client: TestClient, form: dict, files: dict | None, status: int, words: str) -> None:
    resp = client.post("/v1/search", data=form, files=files) if files else client.post("/v1/search", data=form)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["detail"]


def test_results_carry_a_calibrated_confidence_and_the_currency(client: TestClient, small_records: list) -> None:
    for mode in ("simple", "fine", "tag"):
        body = _search(client, _photo(small_records[3]), mode=mode, top_k=6)
        assert body["currency"] == "EUR"
        confidences = [r["confidence"] for r in body["results"]]
        assert all(0.0 <= c <= 1.0 for c in confidences)
        assert all(r["match"] in ("good", "possible") for r in body["results"])
        if mode == "simple":  # one list in score order: confidence falls with it
            assert confidences == sorted(confidences, reverse=True)
            assert body["results"][0]["match"] == "good"  # the product itself


class _FixedDetector:
    """Two trusted garments of other kinds, whatever the photo: mixing is pipeline logic."""

    model_name = "fixed"

    def detect(self, image: object, min_score: float | None = None) -> list:
        from fashion_search.core.domain import Box, Detection

        return [Detection(Box(0, 0, 50, 50), "shoes", 0.9), Detection(Box(60, 0, 110, 50), "pants", 0.8)]


@pytest.mark.parametrize("mode", ["simple", "tag"])
def test_several_kinds_in_a_photo_mix_the_results_and_suggest_fine_mode(
    pipeline: SearchPipeline, small_records: list, mode: str
) -> None:
    mixing = SearchPipeline(pipeline.settings, _FixedDetector(), pipeline.segmenter, pipeline.embedder,  # type: ignore[arg-type]
                            pipeline.index)
    with TestClient(create_app(pipeline.settings, mixing)) as c:
        body = _search(c, _photo(small_records[0]), mode=mode, top_k=6)
    assert body["suggested_mode"] == "fine"
    assert [g["category"] for g in body["garments"]] == ["shoes", "pants"]
    kinds = [r["category"] for r in body["results"]]
    assert kinds[:2] == ["shoes", "pants"] and set(kinds) == {"shoes", "pants"}


class _DownEmbedder:
    @property
    def model_name(self) -> str:
        raise ServiceUnavailable("embedder", "connection refused")


def test_vectors_of_another_embedder_flag_the_index_stale(client: TestClient, pipeline: SearchPipeline) -> None:
    vector = np.ones(pipeline.embedder.dim, dtype=np.float32)
    pipeline.index.upsert([(Product("old-vectors", embedder="old-model"), {IMAGE_VECTOR: vector})])
    try:
        stale = client.get("/v1/stats").json()["stale_index"]
        assert stale.startswith(f"1 of {pipeline.index.stats().count} products") and "old-model" in stale
        assert "fashion-search reindex" in stale
        ready = client.get("/readyz")
        # Still answering, so still ready; the check says why results may be off.
        assert ready.status_code == 200 and ready.json()["checks"]["index"] == "stale"
        assert ready.json()["stale_index"] == stale
        # An embedder service that is down cannot name its model: the check is left to its health probe.
        down = copy.copy(pipeline)
        down.embedder = _DownEmbedder()  # type: ignore[assignment]
        assert down.stale_index() is None
    finally:
        pipeline.index.delete(["old-vectors"])
    assert client.get("/readyz").json()["checks"]["index"] == "ok"


def test_category_filter(client: TestClient, small_records: list) -> None:
    body = _search(client, _photo(small_records[0]), mode="simple", top_k=10, category="shoes")
    assert body["results"] and {r["category"] for r in body["results"]} == {"shoes"}


def test_stats_and_pages(client: TestClient, pipeline: SearchPipeline, small_records: list) -> None:
    stats = client.get("/v1/stats").json()
    assert stats["count"] == len(small_records) and "dress" in stats["categories"]
    # Ingestion records which embedder computed the vectors.
    assert stats["embedders"] == {pipeline.vectors_model(): len(small_records)}
    assert stats["stale_index"] is None
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert "/v1/search" in client.get("/openapi.json").json()["paths"]
    assert "<html" in client.get("/").text.lower()
    assert client.get("/metrics").status_code == 200


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("files", "form", "status", "words"),
    [
        ({"image": ("a.txt", b"hello, not an image", "text/plain")}, {}, 400, "not an image"),
        ({"image": ("a.jpg", b"", "image/jpeg")}, {}, 400, "empty"),
        ("truncated", {}, 400, "truncated"),
        ({"image": ("b.png", _bomb(), "image/png")}, {}, 413, "too large"),
        ("photo", {"mode": "psychic"}, 422, "mode"),
        ("photo", {"top_k": 0}, 422, "top_k"),
        ("photo", {"top_k": 1000}, 422, "top_k"),
        ("photo", {"top_k": "ten"}, 422, "top_k"),
        ({"picture": ("a.jpg", b"x", "image/jpeg")}, {}, 422, "image"),
    ],
)
def test_bad_search_requests_get_a_clear_4xx(
    client: TestClient, small_records: list, files: object, form: dict, status: int, words: str
) -> None:
    data = _photo(small_records[0])
    if files == "truncated":
        files = {"image": ("t.jpg", data[: len(data) // 3], "image/jpeg")}
    elif files == "photo":
        files = {"image": ("p.jpg", data, "image/jpeg")}
    before = client.get("/v1/stats").json()
    resp = client.post("/v1/search", files=files, data=form)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["detail"].lower()
    assert client.get("/v1/stats").json() == before


def test_fields_in_the_query_string_are_refused_not_ignored(client: TestClient, small_records: list) -> None:
    files = {"image": ("p.jpg", _photo(small_records[0]), "image/jpeg")}
    resp = client.post("/v1/search?mode=fine&top_k=3", files=files)
    assert resp.status_code == 422, resp.text
    assert "query string: mode, top_k" in resp.json()["detail"]


def test_cache_key_changes_with_the_ranking_settings_and_the_embedder(pipeline: SearchPipeline) -> None:
    # A restart with another FS_QUERY_EXPANSION or category vote must not serve answers ranked the old way.
    def ranking(mode: str, **update: object) -> str:
        settings = pipeline.settings.model_copy(update=update)
        models = (pipeline.detector, pipeline.segmenter, pipeline.embedder)
        return SearchPipeline(settings, *models, pipeline.index).ranking(mode)

    rankings = {
        ranking("simple", query_expansion=0, category_vote_depth=0),
        ranking("simple", query_expansion=1, category_vote_depth=0),
        ranking("simple", category_vote_depth=10, category_vote_weight=0.2),
        ranking("simple", category_vote_depth=10, category_vote_weight=0.3),
        ranking("simple", category_vote_depth=20, category_vote_weight=0.3),
        ranking("simple", category_vote_depth=20, category_vote_weight=0.3, category_vote_candidates=30),
    }
    assert len({SearchCache.key(b"img", "simple", 5, None, 7, r) for r in rankings}) == 6
    # Fine mode uses neither, so its answers survive a change of either.
    assert ranking("fine", query_expansion=0) == ranking("fine", category_vote_depth=20, category_vote_weight=0.3)
    # The gate that keeps a clear nearest garment first ranks fine mode's answers too.
    assert ranking("fine", kind_keep_margin=0.12) != ranking("fine", kind_keep_margin=0.2)
    # Another embedder (retrained weights keep the variant name but not the digest) must not reuse old answers.
    old, new = (SearchCache.key(b"img", "simple", 5, None, 7, "qe1:vote0", m) for m in ("fv2.aa", "fv2.bb"))
    assert old != new


def test_cached_answers_are_keyed_by_the_models_each_mode_runs(pipeline: SearchPipeline) -> None:
    embedder, detector = pipeline.embedder.model_name, pipeline.detector.model_name
    segmenter, cap = pipeline.segmenter.model_name, pipeline.settings.max_garments
    # Simple mode runs the detector too: several kinds in one photo mix its results (FS_MIX_MIN_KINDS).
    assert pipeline.models_used("simple") == f"{embedder}|{detector}<={cap}"
    alone = copy.copy(pipeline)
    alone.settings = pipeline.settings.model_copy(update={"mix_min_kinds": 0})
    assert alone.models_used("simple") == embedder  # without mixing, the embedder alone
    assert pipeline.models_used("tag") == f"{embedder}|{detector}<={cap}"
    assert pipeline.models_used("fine") == f"{embedder}|{detector}<={cap}|{segmenter}"
    # Another detection threshold or garment cap finds other garments: each keys other answers.
    other = copy.copy(pipeline)
    other.settings = pipeline.settings.model_copy(update={"detector_min_score": 0.3, "max_garments": 2})
    assert other.models_used("fine") == f"{embedder}|{detector}@0.3<=2|{segmenter}"
    down = copy.copy(pipeline)
    down.detector = _DownDetector()  # type: ignore[assignment]
    assert down.models_used("fine") == f"{embedder}||{segmenter}"


class _DownDetector:
    @property
    def model_name(self) -> str:
        raise ServiceUnavailable("detector", "connection refused")


def test_product_lifecycle(client: TestClient, small_records: list) -> None:
    rec = small_records[-1]
    v0 = client.get("/v1/stats").json()["version"]
    resp = client.post(
        "/v1/products",
        files={"image": ("p.jpg", _photo(rec), "image/jpeg")},
        data={"product_id": "new-1", "title": "Test item", "price": "12.5", "tags": "a, b"},
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["category"], "category falls back to the detector's"
    assert body["tags"] == ["a", "b"] and body["box"] is not None
    assert client.get("/v1/products/new-1").json()["title"] == "Test item"
    img = client.get("/v1/products/new-1/image")
    assert img.status_code == 200 and img.content == _photo(rec)
    assert img.headers["content-type"] == "image/jpeg"
    assert client.get("/v1/stats").json()["version"] > v0
    assert client.delete("/v1/products/new-1").status_code == 204
    assert client.get("/v1/products/new-1").status_code == 404


def test_a_stored_photo_is_served_as_the_format_it_is(client: TestClient, small_records: list) -> None:
    buf = io.BytesIO()
    Image.open(small_records[0].image_path).save(buf, "PNG")
    assert client.post("/v1/products", files={"image": ("p", buf.getvalue())}, data={"product_id": "png-1"}).is_success
    img = client.get("/v1/products/png-1/image")
    assert img.headers["content-type"] == "image/png" and img.content == buf.getvalue()
    assert client.delete("/v1/products/png-1").status_code == 204


def test_ingest_reports_a_bad_id_and_indexes_the_rest(pipeline: SearchPipeline, small_records: list) -> None:
    data = _photo(small_records[0])
    payloads: list[dict] = [
        {"product_id": pid, "image_path": "", "title": "", "category": "", "price": 0.0, "tags": []}
        for pid in ("sku 1/a", "batch-ok")
    ]
    payloads.append({"product_id": "no-image-field", "titel": "typo"})  # a queue producer's malformed record
    report = Ingestor(pipeline, pipeline.settings).ingest_payloads(payloads, [data, data, data])
    failed = dict(report.failed)
    assert report.indexed == 1 and len(report.failed) == 2 and set(failed) == {"sku 1/a", "no-image-field"}
    assert "1-128 characters" in failed["sku 1/a"] and "bad record" in failed["no-image-field"]
    assert pipeline.index.get("batch-ok") is not None and pipeline.index.delete(["batch-ok"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("get", "/v1/products/nope", 404), ("delete", "/v1/products/nope", 404),
     ("get", "/v1/products/nope/image", 404), ("get", "/v1/products/bad%20id", 422)],
)
def test_unknown_products(client: TestClient, method: str, path: str, status: int) -> None:
    before = client.get("/v1/stats").json()
    resp = getattr(client, method)(path)
    assert resp.status_code == status and resp.json()["detail"]
    if status == 422:  # the id rule in words, not FastAPI's regex
        assert resp.json()["detail"] == "product_id: must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
    assert client.get("/v1/stats").json() == before


def test_a_wrong_method_is_told_every_method_of_the_path(client: TestClient) -> None:
    resp = client.put("/v1/products/p1")
    assert resp.status_code == 405 and resp.headers["allow"] == "DELETE, GET, PATCH" and resp.json()["detail"]


def test_bad_product_uploads_change_nothing(client: TestClient, small_records: list) -> None:
    before = client.get("/v1/stats").json()
    bad = [
        ({"image": ("p.txt", b"nope", "text/plain")}, {"product_id": "x1"}, 400),
        ({"image": ("p.jpg", _photo(small_records[0]), "image/jpeg")}, {"product_id": "has space"}, 422),
        ({"image": ("p.jpg", _photo(small_records[0]), "image/jpeg")}, {"product_id": "x2", "price": "-3"}, 422),
        ({"image": ("p.jpg", _photo(small_records[0]), "image/jpeg")}, {}, 422),
    ]
    for files, form, status in bad:
        resp = client.post("/v1/products", files=files, data=form)
        assert resp.status_code == status, resp.text
        assert resp.json()["detail"]
    assert client.get("/v1/stats").json() == before


def test_a_product_refused_for_its_fields_leaves_no_stored_photo(
    client: TestClient, pipeline: SearchPipeline, small_records: list
) -> None:
    images = pipeline.settings.images_dir
    before = sorted(images.rglob("*")) if images.exists() else []
    photo = jpeg_bytes(Image.open(small_records[1].image_path).transpose(Image.Transpose.ROTATE_90))
    for price in ("inf", "nan"):
        resp = client.post("/v1/products", files={"image": ("p.jpg", photo)}, data={"product_id": "x3", "price": price})
        assert resp.status_code == 422 and "price" in resp.json()["detail"], resp.text
    assert (sorted(images.rglob("*")) if images.exists() else []) == before
    assert client.get("/v1/products/x3").status_code == 404


def test_cache_hits_and_invalidation_on_write(pipeline: SearchPipeline, small_records: list) -> None:
    import redis

    redis.Redis.from_url(f"{TEST_REDIS}/15").flushdb()
    with _client(pipeline, cache_enabled=True, redis_url=f"{TEST_REDIS}/15") as c:
        data = _photo(small_records[3])
        first = _search(c, data, top_k=3)
        second = _search(c, data, top_k=3)
        assert (first["cached"], second["cached"]) == (False, True)
        assert second["results"] == first["results"]
        c.post("/v1/products", files={"image": ("p.jpg", data, "image/jpeg")}, data={"product_id": "cache-1"})
        third = _search(c, data, top_k=3)
        assert third["cached"] is False and third["index_version"] > first["index_version"]
        c.delete("/v1/products/cache-1")


def test_redis_down_still_answers(pipeline: SearchPipeline, small_records: list) -> None:
    with _client(pipeline, cache_enabled=True, redis_url="redis://127.0.0.1:1/0") as c:
        body = _search(c, _photo(small_records[2]), top_k=3)
        assert body["cached"] is False and body["results"]
        assert c.get("/readyz").status_code == 200


def test_down_detector_degrades_fine_mode_to_simple(pipeline: SearchPipeline, small_records: list) -> None:
    from fashion_search.services.detector.client import RemoteDetector

    settings = make_settings(pipeline.settings.data_dir, grpc_timeout_s=1.0)
    degraded = SearchPipeline(
        settings, RemoteDetector("127.0.0.1:1", settings), pipeline.segmenter, pipeline.embedder, pipeline.index
    )
    with TestClient(create_app(settings, degraded)) as c:
        body = _search(c, _photo(small_records[1]), mode="fine", top_k=3)
        assert body["degraded"] and "detector" in body["degraded"] and body["results"]


def test_down_embedder_is_a_clear_503(pipeline: SearchPipeline, small_records: list) -> None:
    from fashion_search.services.embedder.client import RemoteEmbedder

    settings = make_settings(pipeline.settings.data_dir, grpc_timeout_s=1.0)
    broken = SearchPipeline(
        settings, pipeline.detector, pipeline.segmenter, RemoteEmbedder("127.0.0.1:1", settings), pipeline.index
    )
    with TestClient(create_app(settings, broken)) as c:
        resp = c.post("/v1/search", files={"image": ("q.jpg", _photo(small_records[1]), "image/jpeg")})
        assert resp.status_code == 503 and "embedder" in resp.json()["detail"]


def test_photo_of_a_photo_still_matches(client: TestClient, small_records: list) -> None:
    rec = small_records[7]
    img = Image.open(rec.image_path).convert("RGB")
    w, h = img.size
    altered = img.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((w // 2, h // 2))
    body = _search(client, jpeg_bytes(altered, quality=60), top_k=3)
    assert rec.product_id in [r["product_id"] for r in body["results"]]
