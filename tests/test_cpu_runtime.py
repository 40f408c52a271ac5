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


def test_an_exported_graph_is_kept_for_the_next_load_and_renewed_when_the_weights_change(
    tmp_path: Path, photos: list[Image.Image], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fashion_search.core.onnx_runtime as ort_module

    exports: list[str] = []
    export = ort_module.export_onnx
    monkeypatch.setattr(ort_module, "export_onnx", lambda m, x: exports.append(type(m).__name__) or export(m, x))
    first = GarmentEmbedder(make_settings(tmp_path, torch_device="cpu"))
    first.load()
    assert exports == ["EmbeddingNetwork"] and len(list((tmp_path / "onnx").glob("EmbeddingNetwork-*.onnx"))) == 1
    again = GarmentEmbedder(make_settings(tmp_path, torch_device="cpu"))
    again.load()
    assert exports == ["EmbeddingNetwork"]  # read back, not exported again
    np.testing.assert_array_equal(again.embed(photos), first.embed(photos))
    # Other weights are another graph: never served from the first one's file.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    example = torch.rand(1, 3, 16, 16)
    one = OrtNetwork(net, example, cache_dir=tmp_path / "onnx")
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    two = OrtNetwork(net, example, cache_dir=tmp_path / "onnx")
    assert exports[1:] == ["Sequential", "Sequential"]
    np.testing.assert_allclose(two(example), net(example).detach(), atol=1e-5)
    assert not np.allclose(one(example), two(example))


def test_a_cache_that_cannot_be_written_only_costs_the_export(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    net = torch.nn.Sequential(torch.nn.Linear(8, 3), torch.nn.ReLU())
    example = torch.rand(2, 8)
    network = OrtNetwork(net, example, cache_dir=blocked / "onnx")
    np.testing.assert_allclose(network(example), net(example).detach(), atol=1e-5)
