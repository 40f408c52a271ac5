"""ONNX Runtime and frozen TorchScript (settings.cpu_runtime) give what eager PyTorch gives, for each network."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.domain import Box
from fashion_search.core.onnx_runtime import OrtNetwork
from fashion_search.services.detector.centernet import SceneDetector
from fashion_search.services.embedder.model import GarmentEmbedder
from fashion_search.services.segmenter.mask_net import MaskSegmenter
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def photos(sample_records: list[CatalogRecord]) -> list[Image.Image]:
    """One real catalog photo from each of four classes."""
    return [Image.open(r.image_path).convert("RGB") for r in sample_records[::25][:4]]


RUNTIMES = {"onnxruntime": OrtNetwork, "torchscript": torch.jit.ScriptModule}


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request: pytest.FixtureRequest) -> str:
    """Each runtime other than eager PyTorch."""
    return str(request.param)


def _pair(tmp_path: Path, cls: type, runtime: str) -> tuple[object, object]:
    eager = cls(make_settings(tmp_path, torch_device="cpu", cpu_runtime="torch"))
    script = cls(make_settings(tmp_path, torch_device="cpu", cpu_runtime=runtime))
    eager.load()
    script.load()
    assert isinstance(script._network, RUNTIMES[runtime])
    assert isinstance(eager._network, torch.nn.Module)
    return eager, script


def test_embedder_vectors_match_eager(tmp_path: Path, photos: list[Image.Image], runtime: str) -> None:
    eager, script = _pair(tmp_path, GarmentEmbedder, runtime)
    assert eager.model_name == script.model_name  # the same vectors: an index built either way serves both
    for batch in (photos[:1], photos):  # traced on one image, run on others and on a batch
        np.testing.assert_allclose(script.embed(batch), eager.embed(batch), atol=1e-4)
    # The gateway and the gRPC servers call one model from several threads at once.
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda img: script.embed([img])[0], photos * 3))
    np.testing.assert_allclose(np.stack(parallel), np.concatenate([script.embed([p]) for p in photos] * 3), atol=1e-5)


def test_detector_finds_the_same_garments(tmp_path: Path, photos: list[Image.Image], runtime: str) -> None:
    eager, script = _pair(tmp_path, SceneDetector, runtime)
    found = 0
    for photo in photos:
        expected, got = eager.detect(photo), script.detect(photo)
        found += len(expected)
        assert [d.category for d in got] == [d.category for d in expected]
        for a, b in zip(got, expected, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-3)
            assert np.allclose(a.box.to_list(), b.box.to_list(), atol=0.5)
    assert found >= len(photos)  # each product photo shows a garment


def test_segmenter_masks_match_eager(tmp_path: Path, photos: list[Image.Image], runtime: str) -> None:
    eager, script = _pair(tmp_path, MaskSegmenter, runtime)
    for photo in photos:
        w, h = photo.size
        boxes = [Box(w * 0.1, h * 0.1, w * 0.9, h * 0.9), Box(0, 0, w / 2, h)]
        for a, b in zip(script.segment(photo, boxes), eager.segment(photo, boxes), strict=True):
            assert a.shape == b.shape and (a != b).mean() < 0.002
