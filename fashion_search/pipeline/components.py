"""Wires the pipeline from settings: each model in-process unless its service URL is set."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fashion_search.core.domain import Detector, Embedder, Segmenter, VectorIndex
from fashion_search.core.settings import Settings
from fashion_search.pipeline.search_pipeline import SearchPipeline
from fashion_search.services.detector.loader import local_detector
from fashion_search.services.segmenter.loader import local_segmenter


def build_embedder(settings: Settings, backbone: object | None = None) -> Embedder:
    """The embedder: remote if FS_EMBEDDER_URL is set, else in-process."""
    if settings.embedder_url:
        from fashion_search.services.embedder.client import RemoteEmbedder

        return RemoteEmbedder(settings.embedder_url, settings)
    from fashion_search.services.embedder.model import GarmentEmbedder

    return GarmentEmbedder(settings, backbone)  # type: ignore[arg-type]


def build_image_embedder(settings: Settings, embedder: Embedder, backbone: object | None = None) -> Embedder:
    """The image vectors' embedder (settings.image_embedder_model): `embedder` itself when "same", else its own
    model, remote if FS_IMAGE_EMBEDDER_URL is set."""
    if not settings.separate_image_embedder:
        return embedder
    return build_embedder(settings.image_embedder_settings(), backbone)


def build_detector(settings: Settings, backbone: object | None = None) -> Detector:
    """The detector: remote if FS_DETECTOR_URL is set, else in-process."""
    if settings.detector_url:
        from fashion_search.services.detector.client import RemoteDetector

        return RemoteDetector(settings.detector_url, settings)
    return local_detector(settings, backbone)


def build_segmenter(settings: Settings) -> Segmenter:
    """The segmenter: remote if FS_SEGMENTER_URL is set, else in-process."""
    if settings.segmenter_url:
        from fashion_search.services.segmenter.client import RemoteSegmenter

        return RemoteSegmenter(settings.segmenter_url, settings)
    return local_segmenter(settings)


def build_index(settings: Settings, embedder: Embedder | None = None) -> VectorIndex:
    """The vector index: the search service if FS_SEARCH_URL is set, else Qdrant Edge / qdrant-client."""
    from fashion_search.services.search.factory import make_index

    if settings.search_url:
        return make_index(settings, 0)
    if embedder is None:
        from fashion_search.services.embedder.model import GarmentEmbedder

        embedder = GarmentEmbedder(settings)
    return make_index(settings, embedder.dim)


@contextmanager
def temporary_pipeline(settings: Settings, prefix: str) -> Iterator[SearchPipeline]:
    """An in-process pipeline over a fresh Qdrant Edge index in a temporary folder (evaluations, benchmarks)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        local = settings.model_copy(update={"data_dir": Path(tmp), "index_backend": "edge", "search_url": ""})
        pipeline = build_pipeline(local)
        try:
            yield pipeline
        finally:
            pipeline.index.close()


def build_pipeline(settings: Settings, index: VectorIndex | None = None) -> SearchPipeline:
    """A complete pipeline; in-process models share one backbone to save memory and load time."""
    backbone = None
    if not (settings.embedder_url and settings.detector_url):
        from fashion_search.services.embedder.backbone import EfficientNetBackbone

        backbone = EfficientNetBackbone(settings)
    embedder = build_embedder(settings, backbone)
    return SearchPipeline(
        settings,
        detector=build_detector(settings, backbone),
        segmenter=build_segmenter(settings),
        embedder=embedder,
        index=index or build_index(settings, embedder),
        image_embedder=build_image_embedder(settings, embedder, backbone),
    )
