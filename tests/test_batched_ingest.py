"""Batched ingestion: the models run on whole batches and give what they give one photo at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.images import decode_image
from fashion_search.pipeline.search_pipeline import SearchPipeline, prepare
from tests.conftest import make_settings, model_pipeline

N = 6


@pytest.fixture
def pipeline(tmp_path: Path, shared_models: dict) -> Iterator[SearchPipeline]:
    settings = make_settings(tmp_path)
    pipe = model_pipeline(settings, shared_models, image_embedder=True)
    yield pipe
    pipe.index.close()


def _photos(records: list[CatalogRecord], pipeline: SearchPipeline) -> list:
    # Every other class, so that product photos of several shapes share a batch.
    picked = records[::7][:N]
    return [prepare(decode_image(Path(r.image_path).read_bytes(), pipeline.settings), pipeline.settings)
            for r in picked]


def test_batched_detector_and_segmenter_match_one_photo_at_a_time(
    pipeline: SearchPipeline, small_records: list[CatalogRecord],
) -> None:
    photos = _photos(small_records, pipeline)
    threshold = pipeline.settings.detector_min_score
    batched = pipeline.detector.detect_batch(photos, threshold)  # type: ignore[attr-defined]
    single = [pipeline.detector.detect(img, threshold) for img in photos]
    assert len(batched) == len(photos)
    assert sum(map(len, single)) > 0
    for one, many in zip(single, batched, strict=True):
        assert [d.category for d in one] == [d.category for d in many]
        for a, b in zip(one, many, strict=True):
            assert np.allclose(a.box.to_list(), b.box.to_list(), atol=0.5)
            assert a.score == pytest.approx(b.score, abs=1e-4)
    items = [(img, [d.box.clip(img.width, img.height) for d in dets]) for img, dets in zip(photos, single, strict=True)]
    masks = pipeline.segmenter.segment_batch(items)  # type: ignore[attr-defined]
    for (img, boxes), got in zip(items, masks, strict=True):
        want = pipeline.segmenter.segment(img, boxes)
        assert [m.shape for m in got] == [m.shape for m in want]
        # A pixel may flip at the mask's edge where float rounding differs between batch sizes.
        for a, b in zip(want, got, strict=True):
            assert (a != b).mean() < 0.01


def test_catalog_vectors_of_a_batch_equal_those_of_each_photo_alone(
    pipeline: SearchPipeline, small_records: list[CatalogRecord],
) -> None:
    photos = _photos(small_records, pipeline)
    many = pipeline.catalog_vectors(photos)
    for img, got in zip(photos, many, strict=True):
        want = pipeline.catalog_vectors([img])[0]
        assert sorted(got.vectors) == sorted(want.vectors)
        for name in want.vectors:
            np.testing.assert_allclose(got.vectors[name], want.vectors[name], atol=1e-4)
        assert (got.detection is None) == (want.detection is None)
        if want.detection is not None and got.detection is not None:
            assert got.detection.category == want.detection.category
            assert np.allclose(got.detection.box.to_list(), want.detection.box.to_list(), atol=0.5)
