"""The embedder on real photos: unit vectors, the seed-001 colour feature, and class structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fashion_search.core.catalog import CatalogRecord
from fashion_search.services.embedder.model import COLOR_DIM, GarmentEmbedder
from tests.conftest import make_settings


def _load(records: list[CatalogRecord]) -> list[Image.Image]:
    return [Image.open(r.image_path).convert("RGB") for r in records]


def test_vectors_are_unit_length_and_deterministic(shared_models: dict, small_records: list) -> None:
    embedder = shared_models["embedder"]
    images = _load(small_records[:3])
    a, b = embedder.embed(images), embedder.embed(images)
    assert a.shape == (3, embedder.dim) and embedder.dim == embedder.deep_dim + COLOR_DIM
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_colour_part_separates_a_black_and_a_white_garment(shared_models: dict, small_records: list) -> None:
    embedder = shared_models["embedder"]
    photo = np.asarray(_load(small_records[:1])[0], dtype=np.float32)
    gray = photo.mean(axis=2, keepdims=True).repeat(3, axis=2)
    dark = Image.fromarray((gray * 0.25).astype(np.uint8))
    light = Image.fromarray((255 - (255 - gray) * 0.25).astype(np.uint8))
    v = embedder.embed([dark, light])
    colour = v[:, -COLOR_DIM:]
    assert float(np.mean(colour[0])) < float(np.mean(colour[1]))


def test_same_class_photos_are_closer_than_other_classes(shared_models: dict, small_records: list) -> None:
    embedder = shared_models["embedder"]
    vecs = embedder.embed(_load(small_records))
    cats = np.array([r.category for r in small_records])
    sims = vecs @ vecs.T
    same = cats[:, None] == cats[None, :]
    np.fill_diagonal(same, False)
    other = cats[:, None] != cats[None, :]
    assert sims[same].mean() > sims[other].mean() + 0.05


def test_mirror_averaging_gives_a_photo_and_its_mirror_one_vector(shared_models: dict, small_records: list) -> None:
    shared = shared_models["embedder"]
    embedder = GarmentEmbedder(shared.settings.model_copy(update={"mirror_averaging": "both"}), shared.backbone)
    plain = GarmentEmbedder(shared.settings.model_copy(update={"mirror_averaging": "off"}), shared.backbone)
    assert embedder.model_name == plain.model_name + "+mirror"
    photo = _load(small_records[:1])[0]
    averaged = embedder.embed([photo, ImageOps.mirror(photo)])
    np.testing.assert_allclose(averaged[0], averaged[1], atol=1e-4)
    single = plain.embed([photo, ImageOps.mirror(photo)])  # no averaging: a photo and its mirror differ
    assert float(single[0] @ single[1]) < 0.999
    deep, fused = embedder.embed_parts([photo])
    assert deep.shape == (1, embedder.deep_dim)
    np.testing.assert_allclose(fused, averaged[:1], atol=1e-5)


def test_model_name_tells_retrained_weights_apart(tmp_path: Path) -> None:
    shipped = GarmentEmbedder(make_settings(tmp_path))
    retrained = tmp_path / "retrained.pt"
    retrained.write_bytes(shipped.weights.read_bytes() + b"\0")  # same variant, other bytes
    other = GarmentEmbedder(make_settings(tmp_path, embedder_weights=retrained))
    assert shipped.model_name.startswith(f"effnet-lite0-{shipped.variant}.")
    assert other.model_name != shipped.model_name
    assert GarmentEmbedder(make_settings(tmp_path)).model_name == shipped.model_name
    imagenet = make_settings(tmp_path, embedder_model="imagenet", image_embedder_model="same")
    assert GarmentEmbedder(imagenet).model_name.startswith("effnet-lite0-imagenet+color30")
    # Another input size gives other vectors for the same weights, so an index built at one is stale at the other.
    assert GarmentEmbedder(make_settings(tmp_path, embed_image_size=256)).model_name == shipped.model_name + "@256px"


def test_detector_and_segmenter_names_carry_their_weights_digest(tmp_path: Path) -> None:
    from fashion_search.core.model_base import file_digest
    from fashion_search.services.detector.centernet import VARIANTS, SceneDetector
    from fashion_search.services.segmenter.mask_net import MaskSegmenter
    from fashion_search.services.segmenter.model import GarmentSegmenter

    settings = make_settings(tmp_path)
    detector = SceneDetector(settings, "centernet-v3")
    assert detector.model_name == f"centernet-v3.{file_digest(VARIANTS['centernet-v3'].weights)}"
    shipped = MaskSegmenter(settings)
    retrained = tmp_path / "masknet.pt"
    retrained.write_bytes(shipped.weights.read_bytes() + b"\0")
    assert MaskSegmenter(settings, retrained).model_name != shipped.model_name
    assert shipped.model_name.startswith("masknet-v1.") and not shipped.loaded  # named without loading weights
    grabcut = GarmentSegmenter(settings).model_name
    assert GarmentSegmenter(make_settings(tmp_path, segment_iterations=5)).model_name != grabcut
