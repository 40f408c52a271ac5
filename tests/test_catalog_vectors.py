"""Catalog vectors: fine mode's garment vector is the product photo itself, the main detected garment cut out, or
a blend of the two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import GARMENT_VECTOR, IMAGE_VECTOR
from fashion_search.core.garment_colour import HISTOGRAM_DIM, colour_histogram
from fashion_search.pipeline.search_pipeline import SearchPipeline, prepare
from tests.conftest import make_settings


def _pipeline(tmp: Path, models: dict[str, object], catalog_garment: str, **overrides: object) -> SearchPipeline:
    # Without the colour histogram unless asked: these tests compare the embedder's part of the vectors.
    overrides = {"garment_colour_weight": 0.0, **overrides}
    settings = make_settings(tmp, catalog_garment=catalog_garment, **overrides)
    return SearchPipeline(settings, models["detector"], models["segmenter"], models["embedder"], None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def photos(small_records: list[CatalogRecord]) -> list[Image.Image]:
    return [Image.open(r.image_path).convert("RGB") for r in small_records[:6]]


def test_photo_mode_matches_garments_against_the_whole_product_photo(
    tmp_path: Path, shared_models: dict[str, object], photos: list[Image.Image]
) -> None:
    pipeline = _pipeline(tmp_path, shared_models, "photo")
    indexed = pipeline.catalog_vectors(photos)
    whole = pipeline.embed_catalog([prepare(p, pipeline.settings) for p in photos])
    for vecs, expected in zip(indexed, whole, strict=True):
        np.testing.assert_allclose(vecs.vectors[GARMENT_VECTOR], vecs.vectors[IMAGE_VECTOR])
        np.testing.assert_allclose(vecs.vectors[IMAGE_VECTOR], expected, atol=1e-5)
    # The detector still names the product's garment and its box.
    assert any(v.detection is not None for v in indexed)


def test_detection_mode_embeds_the_main_garment_cut_out(
    tmp_path: Path, shared_models: dict[str, object], photos: list[Image.Image]
) -> None:
    pipeline = _pipeline(tmp_path, shared_models, "detection")
    indexed = pipeline.catalog_vectors(photos)
    for photo, vecs in zip(photos, indexed, strict=True):
        if vecs.detection is None:
            continue
        img = prepare(photo, pipeline.settings)
        cut = pipeline.garment_cutouts(img, [vecs.detection])[0][0]
        np.testing.assert_allclose(vecs.vectors[GARMENT_VECTOR], pipeline.embed_catalog([cut])[0], atol=1e-5)
    assert any(
        v.detection is not None and not np.allclose(v.vectors[GARMENT_VECTOR], v.vectors[IMAGE_VECTOR])
        for v in indexed
    )


def test_blend_mode_mixes_the_photo_and_its_cut_out_and_names_the_mix(
    tmp_path: Path, shared_models: dict[str, object], photos: list[Image.Image]
) -> None:
    blend = _pipeline(tmp_path, shared_models, "blend", catalog_cutout_weight=0.3)
    photo = _pipeline(tmp_path, shared_models, "photo").catalog_vectors(photos)
    cut = _pipeline(tmp_path, shared_models, "detection").catalog_vectors(photos)
    for mixed, whole, alone in zip(blend.catalog_vectors(photos), photo, cut, strict=True):
        np.testing.assert_allclose(mixed.vectors[IMAGE_VECTOR], whole.vectors[IMAGE_VECTOR], atol=1e-5)
        expected = 0.7 * whole.vectors[GARMENT_VECTOR] + 0.3 * alone.vectors[GARMENT_VECTOR]
        np.testing.assert_allclose(mixed.vectors[GARMENT_VECTOR], expected / np.linalg.norm(expected), atol=1e-5)
    # Vectors stored under one recipe read as stale under another.
    names = {
        _pipeline(tmp_path, shared_models, mode, catalog_cutout_weight=w).vectors_model()
        for mode, w in (("photo", 0.15), ("detection", 0.15), ("blend", 0.15), ("blend", 0.3))
    }
    assert len(names) == 4


def test_garment_colour_appends_the_main_garments_masked_histogram(
    tmp_path: Path, shared_models: dict[str, object], photos: list[Image.Image]
) -> None:
    weight = 0.3
    coloured = _pipeline(tmp_path, shared_models, "blend", garment_colour_weight=weight)
    plain = _pipeline(tmp_path, shared_models, "blend").catalog_vectors(photos)
    for photo, with_hist, without in zip(photos, coloured.catalog_vectors(photos), plain, strict=True):
        img = prepare(photo, coloured.settings)
        garment = with_hist.vectors[GARMENT_VECTOR] * np.sqrt(1 + weight)
        embedded, hist = garment[: -HISTOGRAM_DIM], (garment[-HISTOGRAM_DIM:] / np.sqrt(weight)) ** 2
        np.testing.assert_allclose(embedded, without.vectors[GARMENT_VECTOR], atol=1e-5)
        np.testing.assert_allclose(with_hist.vectors[IMAGE_VECTOR], without.vectors[IMAGE_VECTOR], atol=1e-5)
        main = with_hist.detection
        if main is None:
            expected = colour_histogram(img)
        else:
            expected = colour_histogram(img, main.box, coloured.garment_masks(img, [main])[0])
        np.testing.assert_allclose(hist, expected, atol=1e-5)
    assert "+hsv0.3" in coloured.vectors_model()


def test_catalog_mirror_averaging_indexes_a_photo_and_its_mirror_alike_and_leaves_queries_alone(
    tmp_path: Path, shared_models: dict[str, object], photos: list[Image.Image]
) -> None:
    pipeline = _pipeline(tmp_path, shared_models, "photo", mirror_averaging="catalog")
    photo = prepare(photos[0], pipeline.settings)
    indexed = pipeline.catalog_vectors([photo, ImageOps.mirror(photo)], with_garment=False)
    plain = pipeline.embedder.embed([photo, ImageOps.mirror(photo)])  # the query side: no averaging
    np.testing.assert_allclose(indexed[0].vectors[IMAGE_VECTOR], indexed[1].vectors[IMAGE_VECTOR], atol=1e-4)
    assert float(plain[0] @ plain[1]) < 0.999
    np.testing.assert_allclose(
        indexed[0].vectors[IMAGE_VECTOR], (plain[0] + plain[1]) / np.linalg.norm(plain[0] + plain[1]), atol=1e-5
    )


def test_a_separate_image_embedder_makes_the_image_vectors_and_answers_simple_mode(
    tmp_path: Path, shared_models: dict[str, object], small_records: list[CatalogRecord]
) -> None:
    from fashion_search.pipeline.ingest import Ingestor
    from fashion_search.services.search.factory import make_index

    image_embedder = shared_models["image_embedder"]
    assert image_embedder is not shared_models["embedder"]
    settings = make_settings(tmp_path, garment_colour_weight=0.0, query_expansion=0)
    models = [shared_models[name] for name in ("detector", "segmenter", "embedder")]
    one = SearchPipeline(settings, *models, None)  # type: ignore[arg-type]
    index = make_index(settings, image_embedder.dim)  # type: ignore[attr-defined]
    two = SearchPipeline(settings, *models, index, image_embedder)  # type: ignore[arg-type]
    assert two.separate_image_embedder and not one.separate_image_embedder
    records = small_records[:6]
    photos = [prepare(Image.open(r.image_path), settings) for r in records]
    for alone, both, photo in zip(one.catalog_vectors(photos), two.catalog_vectors(photos), photos, strict=True):
        np.testing.assert_allclose(both.vectors[GARMENT_VECTOR], alone.vectors[GARMENT_VECTOR], atol=1e-5)
        expected = image_embedder.embed([photo])[0]  # type: ignore[attr-defined]
        np.testing.assert_allclose(both.vectors[IMAGE_VECTOR], expected, atol=1e-5)
        assert float(both.vectors[IMAGE_VECTOR] @ alone.vectors[IMAGE_VECTOR]) < 0.99
    # Stored vectors name both models, so a change of either reads as stale.
    assert two.vectors_model() == f"{one.vectors_model()}|image:{image_embedder.model_name}"  # type: ignore[attr-defined]
    # Simple mode's vectors come from the image model (the detector it also runs only mixes kinds).
    assert two.models_used("simple").split("|")[0] == image_embedder.model_name  # type: ignore[attr-defined]
    assert one.embedder_model() in two.models_used("fine")
    try:
        assert Ingestor(two, settings).ingest_records(records).indexed == len(records)
        assert two.stale_index() is None
        # A catalog photo as the query finds itself at cosine 1 only when both sides use the image embedder.
        hit = two.search(Image.open(records[2].image_path), "simple", 3).hits[0]
        assert hit.product.product_id == records[2].product_id and hit.score > 0.999
        one.index = index
        assert one.stale_index() is not None
    finally:
        index.close()


@pytest.mark.parametrize("mirror", ["off", "catalog"])
def test_two_embedders_share_their_imagenet_blocks_and_give_the_same_vectors(
    tmp_path: Path, shared_models: dict[str, object], photos: list[Image.Image], mirror: str
) -> None:
    garment, image = shared_models["embedder"], shared_models["image_embedder"]
    blocks = garment.shared_blocks(image)  # type: ignore[attr-defined]
    assert blocks > 0  # the stem and the blocks before the image model's tuned ones
    settings = make_settings(tmp_path, mirror_averaging=mirror)
    pipeline = SearchPipeline(
        settings, shared_models["detector"], shared_models["segmenter"], garment, None, image,  # type: ignore[arg-type]
    )
    prepared = [prepare(p, settings) for p in photos]
    shared = pipeline.embed_photos(prepared)
    assert ("trunk", blocks) in garment._parts  # type: ignore[attr-defined]
    apart = pipeline.embed_catalog(prepared), pipeline.embed_catalog(prepared, image)  # type: ignore[arg-type]
    for got, expected in zip(shared, apart, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(shared[0], shared[1], atol=1e-2)  # two models, two sets of vectors
