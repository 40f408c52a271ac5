"""The HTTP API for shop catalogs: catalog fields, search filters, pages, the listing, PATCH and "more like this"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.gateway.app import create_app
from fashion_search.pipeline.ingest import Ingestor
from fashion_search.pipeline.search_pipeline import SearchPipeline
from tests.conftest import TEST_REDIS, make_settings, model_pipeline

BRANDS = ("acme", "zeta")


def shop_record(i: int, rec: CatalogRecord) -> CatalogRecord:
    """A sample record with shop fields: alternating brand, every third sold out, price 10 + i, a tag per parity."""
    return replace(
        rec, brand=BRANDS[i % 2], in_stock=i % 3 != 0, price=10.0 + i,
        tags=["sale"] + (["even"] if i % 2 == 0 else []), attributes={"colour": "red" if i % 2 else "blue"},
    )


@pytest.fixture(scope="module")
def records(small_records: list[CatalogRecord]) -> list[CatalogRecord]:
    return [shop_record(i, r) for i, r in enumerate(small_records)]


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, shared_models: dict, records: list[CatalogRecord]
) -> Iterator[SearchPipeline]:
    settings = make_settings(tmp_path_factory.mktemp("shop"), max_search_offset=30)
    pipe = model_pipeline(settings, shared_models)
    report = Ingestor(pipe, settings).ingest_records(records, with_garment=True)
    assert report.indexed == len(records) and not report.failed
    yield pipe
    pipe.index.close()


@pytest.fixture(scope="module")
def client(pipeline: SearchPipeline) -> Iterator[TestClient]:
    settings = make_settings(pipeline.settings.data_dir, max_search_offset=30, cache_enabled=True,
                             redis_url=f"{TEST_REDIS}/14")
    # Answers cached by an earlier run were keyed by the same versions of another index.
    redis.Redis.from_url(settings.redis_url).flushdb()
    with TestClient(create_app(settings, pipeline)) as c:
        yield c


def photo(rec: CatalogRecord) -> bytes:
    return Path(rec.image_path).read_bytes()


def search(client: TestClient, data: bytes | None, status: int = 200, **form: object) -> dict:
    files = {"image": ("q.jpg", data, "image/jpeg")} if data is not None else None
    resp = client.post("/v1/search", files=files, data=form)
    assert resp.status_code == status, resp.text
    return resp.json()


def by_id(records: list[CatalogRecord]) -> dict[str, CatalogRecord]:
    return {r.product_id: r for r in records}


def test_search_filters_over_http(client: TestClient, records: list[CatalogRecord]) -> None:
    recs = by_id(records)
    query = photo(records[3])
    cases = {
        "category": ({"category": [records[0].category, records[5].category]},
                     lambda r: r.category in (records[0].category, records[5].category)),
        "price": ({"min_price": "15", "max_price": "30"}, lambda r: 15 <= r.price <= 30),
        "brand": ({"brand": ["zeta"]}, lambda r: r.brand == "zeta"),
        "in_stock": ({"in_stock": "false"}, lambda r: not r.in_stock),
        "tags": ({"tags": ["sale", "even"]}, lambda r: {"sale", "even"} <= set(r.tags)),
    }
    for name, (form, keep) in cases.items():
        body = search(client, query, top_k=40, **form)
        got = [recs[h["product_id"]] for h in body["results"]]
        want = [r for r in records if keep(r)]
        assert got and all(keep(r) for r in got), name
        assert len(got) == len(want), name  # top_k covers the catalog: every match and nothing else
    hit = search(client, query, top_k=1, brand="zeta")["results"][0]
    assert hit["brand"] == "zeta" and isinstance(hit["in_stock"], bool)


@pytest.mark.parametrize(("form", "field"), [
    ({"min_price": "-1"}, "min_price"), ({"max_price": "cheap"}, "max_price"), ({"in_stock": "maybe"}, "in_stock"),
    ({"min_price": "20", "max_price": "10"}, "max_price"), ({"offset": "31"}, "offset"), ({"offset": "-1"}, "offset"),
    ({"brand": ""}, None),
])
def test_a_bad_filter_gets_422_naming_the_field(
    client: TestClient, records: list[CatalogRecord], form: dict, field: str | None,
) -> None:
    resp = client.post("/v1/search", files={"image": ("q.jpg", photo(records[0]), "image/jpeg")}, data=form)
    if field is None:  # a blank repeatable value is dropped, not an error
        assert resp.status_code == 200, resp.text
        return
    assert resp.status_code == 422, resp.text
    assert field in resp.json()["detail"]


def test_search_pages_follow_each_other(client: TestClient, records: list[CatalogRecord]) -> None:
    query = photo(records[7])
    full = [h["product_id"] for h in search(client, query, top_k=12)["results"]]
    pages = [search(client, query, top_k=4, offset=o)["results"] for o in (0, 4, 8)]
    assert [h["product_id"] for page in pages for h in page] == full


def test_more_like_this_in_every_mode(client: TestClient, records: list[CatalogRecord]) -> None:
    rec = records[4]
    for mode in ("simple", "fine", "tag"):
        body = search(client, None, product_id=rec.product_id, mode=mode, top_k=5)
        ids = [h["product_id"] for h in body["results"]]
        assert ids and rec.product_id not in ids, mode
        if mode == "tag":  # the product's own category: the three others of its class
            assert {h["category"] for h in body["results"]} == {rec.category} and len(ids) == 3
        else:
            assert len(ids) == 5, mode
    # Filters apply as to a photo search.
    like = search(client, None, product_id=rec.product_id, top_k=5, brand="acme")["results"]
    assert like and {h["brand"] for h in like} == {"acme"}
    assert search(client, None, status=404, product_id="nope-1")["detail"].startswith("unknown product")
    both = client.post("/v1/search", files={"image": ("q.jpg", photo(rec), "image/jpeg")},
                       data={"product_id": rec.product_id})
    assert both.status_code == 422 and "product_id" in both.json()["detail"]
    assert client.post("/v1/search", data={"mode": "simple"}).status_code == 422


def test_catalog_listing_pages_through_every_product_once(client: TestClient, records: list[CatalogRecord]) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        resp = client.get("/v1/products", params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["products"]) <= 7
        seen += [p["product_id"] for p in page["products"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(r.product_id for r in records)
    assert client.get("/v1/products", params={"limit": 0}).status_code == 422
    bad = client.get("/v1/products", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]


def test_patch_changes_fields_without_reembedding_and_invalidates_the_cache(
    client: TestClient, pipeline: SearchPipeline, records: list[CatalogRecord],
) -> None:
    rec = records[2]
    vectors = pipeline.index.vectors(rec.product_id)
    query = photo(rec)
    first = search(client, query, top_k=3, in_stock="true")
    again = search(client, query, top_k=3, in_stock="true")
    assert again["cached"] is True
    resp = client.patch(f"/v1/products/{rec.product_id}", json={"price": 12.5, "in_stock": False})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["price"], resp.json()["in_stock"]) == (12.5, False)
    after = search(client, query, top_k=3, in_stock="true")
    assert after["cached"] is False and after["index_version"] > first["index_version"]
    assert rec.product_id not in [h["product_id"] for h in after["results"]]
    stored = pipeline.index.vectors(rec.product_id)
    assert vectors is not None and stored is not None
    assert all((vectors[n] == stored[n]).all() for n in vectors)
    assert client.patch("/v1/products/nope-2", json={"price": 1}).status_code == 404
    bad_patches = (({"price": -1}, "price"), ({"image_ref": "x"}, "image_ref"), ({"in_stock": "perhaps"}, "in_stock"))
    for bad, field in bad_patches:
        r = client.patch(f"/v1/products/{rec.product_id}", json=bad)
        assert r.status_code == 422 and field in r.json()["detail"], r.text
    client.patch(f"/v1/products/{rec.product_id}", json={"price": rec.price, "in_stock": rec.in_stock})


def test_post_product_with_shop_fields(client: TestClient, records: list[CatalogRecord]) -> None:
    resp = client.post(
        "/v1/products", files={"image": ("p.jpg", photo(records[1]), "image/jpeg")},
        data={"product_id": "shop-new-1", "brand": "nova", "in_stock": "false",
              "attributes": "colour=green; material=linen", "tags": "a,b", "category": records[1].category},
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["brand"], body["in_stock"], body["attributes"]) == (
        "nova", False, {"colour": "green", "material": "linen"})
    bad = client.post("/v1/products", files={"image": ("p.jpg", photo(records[1]), "image/jpeg")},
                      data={"product_id": "shop-new-2", "attributes": "colour"})
    assert bad.status_code == 422 and "attributes" in bad.json()["detail"]
    assert client.delete("/v1/products/shop-new-1").status_code == 204


def test_catalog_files_carry_shop_fields(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "c.csv").write_text(
        "product_id,image,brand,in_stock,attributes,tags\n"
        "a1,a.jpg,acme,no,colour=red; material=wool,\"x,y\"\n"
        "a2,a.jpg,,,,\n"
    )
    a1, a2 = load_catalog(tmp_path / "c.csv")
    assert (a1.brand, a1.in_stock, a1.attributes, a1.tags) == (
        "acme", False, {"colour": "red", "material": "wool"}, ["x", "y"])
    assert (a2.brand, a2.in_stock, a2.attributes) == ("", True, {})
    rows = [{"product_id": "j1", "image": "a.jpg", "brand": "zeta", "in_stock": True,
             "attributes": {"colour": "black"}}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (j1,) = load_catalog(tmp_path / "c.jsonl")
    assert (j1.brand, j1.in_stock, j1.attributes) == ("zeta", True, {"colour": "black"})
    (tmp_path / "bad.jsonl").write_text(json.dumps({"product_id": "b", "image": "a.jpg", "in_stock": "sometimes"}))
    with pytest.raises(ValueError, match="in_stock"):
        load_catalog(tmp_path / "bad.jsonl")


def test_a_product_with_several_photos_is_one_hit_naming_the_photo_that_matched(
    client: TestClient, records: list[CatalogRecord],
) -> None:
    # A product whose second photo is another record's photo: a search with that photo finds it once, as photo 1.
    main, second = records[0], records[9]
    resp = client.post(
        "/v1/products",
        files=[("image", ("a.jpg", photo(main), "image/jpeg")), ("images", ("b.jpg", photo(second), "image/jpeg"))],
        data={"product_id": "multi-1", "category": second.category},
    )
    assert resp.status_code == 201, resp.text
    assert len(resp.json()["photo_urls"]) == 2
    try:
        body = search(client, photo(second), top_k=40)
        ids = [h["product_id"] for h in body["results"]]
        assert len(ids) == len(set(ids)) and "multi-1" in ids
        hit = body["results"][ids.index("multi-1")]
        assert hit["photo"] == 1 and hit["photo_url"].endswith("/image?photo=1")
        image = client.get(hit["photo_url"])
        assert image.status_code == 200 and image.content == photo(second)
        assert client.get("/v1/products/multi-1/image?photo=2").status_code == 404
    finally:
        assert client.delete("/v1/products/multi-1").status_code == 204


def test_catalog_files_list_several_photos(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "c.csv").write_text("product_id,image,images\nm1,a.jpg,a.jpg; b.jpg\ns1,b.jpg,\n")
    m1, s1 = load_catalog(tmp_path / "c.csv")
    assert m1.photo_paths == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")] and s1.images == []
    (tmp_path / "c.jsonl").write_text(json.dumps({"product_id": "j1", "images": ["b.jpg", "a.jpg"]}))
    (j1,) = load_catalog(tmp_path / "c.jsonl")
    assert j1.image_path == str(tmp_path / "b.jpg") and len(j1.photo_paths) == 2
