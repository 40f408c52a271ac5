"""Shared fixtures: settings on temporary storage, real sample images, one in-process model set per session."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from PIL import Image

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.core.domain import Box
from fashion_search.core.settings import Settings
from fashion_search.datasets.splits import HOLDOUT
from fashion_search.services.embedder.fashion_net import shipped_weights

if TYPE_CHECKING:
    from fashion_search.pipeline.search_pipeline import SearchPipeline

ROOT = Path(__file__).resolve().parents[1]
# The Redis the tests use (CI: the machine's own on 6379); a developer can point parallel runs at their own.
TEST_REDIS = os.environ.get("FS_TEST_REDIS", "redis://127.0.0.1:6379")
SAMPLE = ROOT / "fashion_search" / "sample_catalog" / "catalog.jsonl"

# Boxes a segmenter must survive on a 320x300 image: each gets a box-sized (clipped) boolean mask.
ODD_BOXES = [
    Box(10.4, 20.6, 200.2, 280.9),  # fractional
    Box(-50, -30, 100, 120),  # partly outside
    Box(250, 200, 400, 500),  # partly outside, other corner
    Box(100, 100, 103, 104),  # tiny
    Box(50, 50, 50, 90),  # zero width
    Box(60, 60, 59, 70),  # inverted
    Box(400, 400, 500, 500),  # entirely outside
    Box(0, 0, 320, 300),  # the whole image
    Box(0, 0, 320, 9),  # a thin strip just above the minimum side
]


@pytest.fixture(scope="session")
def sample_records() -> list[CatalogRecord]:
    """The bundled sample catalog (real CC0 photos, 10 classes)."""
    return load_catalog(SAMPLE)


@pytest.fixture(scope="session")
def small_records(sample_records: list[CatalogRecord]) -> list[CatalogRecord]:
    """Four products per class: enough for retrieval checks, fast to index."""
    seen: dict[str, int] = {}
    out = []
    for rec in sample_records:
        if seen.get(rec.category, 0) < 4:
            seen[rec.category] = seen.get(rec.category, 0) + 1
            out.append(rec)
    return out


def make_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings isolated from the environment's FS_* variables where it matters."""
    base: dict[str, object] = {
        "data_dir": tmp, "index_backend": "edge", "detector_url": "", "segmenter_url": "", "embedder_url": "",
        "search_url": "", "broker_url": "", "cache_enabled": False, "redis_url": f"{TEST_REDIS}/15",
        "grpc_timeout_s": 10.0, "torch_threads": 0,
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run apart from the environment's FS_* variables: its data under tmp_path/data, no result cache."""
    for name in [k for k in os.environ if k.startswith("FS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FS_CACHE_ENABLED", "false")


@pytest.fixture
def small_catalog_dir(tmp_path: Path, small_records: list[CatalogRecord]) -> Path:
    """small_records as an ImageFolder (<class>/<image>, symlinks), the layout the evaluations read."""
    folder = tmp_path / "catalog"
    for rec in small_records:
        (folder / rec.category).mkdir(parents=True, exist_ok=True)
        (folder / rec.category / Path(rec.image_path).name).symlink_to(rec.image_path)
    return folder


@pytest.fixture
def holdout_weights(tmp_path: Path) -> Path:
    """The shipped fashion-v2 tail, labelled as a --holdout-only model (the sweep reads only the split from meta)."""
    blob = torch.load(shipped_weights("fashion-v2"), map_location="cpu", weights_only=True)
    blob["meta"] = {**blob["meta"], "holdout_only": True, "holdout_share": HOLDOUT, "seed": 3}
    path = tmp_path / "fit.pt"
    torch.save(blob, path)
    return path


def image_model() -> str:
    """The image vectors' own model the tests run: the default, or fashion-v1 where the default is "same"."""
    default = str(Settings.model_fields["image_embedder_model"].default)
    return "fashion-v1" if default == "same" else default


@pytest.fixture(scope="session")
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """In-process detector, segmenter and embedder, loaded once for the whole session."""
    from fashion_search.pipeline.components import build_detector, build_embedder, build_image_embedder, build_segmenter
    from fashion_search.services.embedder.backbone import EfficientNetBackbone

    settings = make_settings(tmp_path_factory.mktemp("models"))
    backbone = EfficientNetBackbone(settings)
    embedder = build_embedder(settings, backbone)
    models = {
        "detector": build_detector(settings, backbone),
        "segmenter": build_segmenter(settings),
        "embedder": embedder,
        "image_embedder": build_image_embedder(
            settings.model_copy(update={"image_embedder_model": image_model()}), embedder, backbone
        ),
    }
    yield models


def model_pipeline(settings: Settings, shared_models: dict, *, image_embedder: bool = False) -> SearchPipeline:
    """A SearchPipeline over the session's models with these settings, on a new index of them (image_embedder: the
    image vectors' own embedder, as the shipped pipeline has)."""
    from fashion_search.pipeline.search_pipeline import SearchPipeline
    from fashion_search.services.search.factory import make_index

    embedder = shared_models["embedder"]
    return SearchPipeline(
        settings, shared_models["detector"], shared_models["segmenter"], embedder,  # type: ignore[arg-type]
        make_index(settings, embedder.dim),
        shared_models["image_embedder"] if image_embedder else None,  # type: ignore[arg-type]
    )


@contextmanager
def two_pipelines(
    tmp: Path, shared_models: dict, records: list[CatalogRecord], base: dict[str, object], update: dict[str, object]
) -> Iterator[tuple[SearchPipeline, SearchPipeline]]:
    """Two pipelines over one index of records (ingested once): with settings `base`, and with `update` on top."""
    from fashion_search.pipeline.ingest import Ingestor
    from fashion_search.pipeline.search_pipeline import SearchPipeline
    from fashion_search.services.search.factory import make_index

    settings = make_settings(tmp, **base)
    models = [shared_models[name] for name in ("detector", "segmenter", "embedder")]
    index = make_index(settings, shared_models["embedder"].dim)
    plain = SearchPipeline(settings, *models, index)  # type: ignore[arg-type]
    assert Ingestor(plain, settings).ingest_records(records).indexed == len(records)
    try:
        yield plain, SearchPipeline(settings.model_copy(update=update), *models, index)  # type: ignore[arg-type]
    finally:
        index.close()


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    """Encode an image as JPEG."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
