"""Where the models run: settings.torch_device, resolved when a model first loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.model_base import resolve_device
from fashion_search.pipeline.search_pipeline import prepare
from fashion_search.services.segmenter.mask_net import MaskSegmenter
from tests.conftest import make_settings


def test_auto_takes_the_gpu_only_when_torch_sees_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there_fails_at_load_and_says_why(tmp_path: Path) -> None:
    segmenter = MaskSegmenter(make_settings(tmp_path, torch_device="cuda"))
    with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
        segmenter.load()
    assert not segmenter.loaded


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", ""])
def test_unknown_device_names_are_refused_by_the_settings(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="torch_device"):
        make_settings(tmp_path, torch_device=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the model services' GPU node)")
def test_models_on_the_gpu_give_what_they_give_on_the_cpu(tmp_path: Path, small_records: list[CatalogRecord]) -> None:
    from fashion_search.pipeline.components import build_detector, build_embedder, build_segmenter

    photos = [prepare(Image.open(r.image_path).convert("RGB"), make_settings(tmp_path)) for r in small_records[::4]]
    models = {}
    for device in ("cpu", "cuda"):
        settings = make_settings(tmp_path, torch_device=device)
        models[device] = (build_detector(settings), build_segmenter(settings), build_embedder(settings))
    (cpu_det, cpu_seg, cpu_emb), (gpu_det, gpu_seg, gpu_emb) = models["cpu"], models["cuda"]
    cosines = np.sum(cpu_emb.embed(photos) * gpu_emb.embed(photos), axis=1)
    assert cosines.min() > 0.999, cosines
    for photo in photos:
        on_cpu, on_gpu = cpu_det.detect(photo), gpu_det.detect(photo)
        # Scores near the threshold may flip with float rounding; the best garment must not move.
        assert on_cpu and on_gpu and on_cpu[0].category == on_gpu[0].category
        assert on_cpu[0].box.iou(on_gpu[0].box) > 0.95
        boxes = [d.box for d in on_cpu]
        for a, b in zip(cpu_seg.segment(photo, boxes), gpu_seg.segment(photo, boxes), strict=True):
            assert (a & b).sum() / max((a | b).sum(), 1) > 0.98
