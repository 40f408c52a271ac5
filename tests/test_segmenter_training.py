"""The segmenter trainer's detector-box views: the boxes fine mode would cut, matched to their garments."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashion_search.core.domain import Box
from fashion_search.datasets.scenes import generate_scenes, load_scenes
from fashion_search.evaluation.scenes import MATCH_IOU
from fashion_search.services.segmenter.mask_net import FrozenEncoder
from fashion_search.services.segmenter.training.train import VIEWS, build_training_set, detector_boxes

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


def test_detector_views_use_the_matched_boxes_and_are_cached(tmp_path: Path) -> None:
    generate_scenes(VAL_SAMPLE, tmp_path / "scenes", 6, seed=3, split_name="test")
    scenes = load_scenes(tmp_path / "scenes")
    found = detector_boxes(scenes, tmp_path / "cache")
    assert [len(row) for row in found] == [len(s["objects"]) for s in scenes]
    boxes = [(b, obj) for row, s in zip(found, scenes, strict=True) for b, obj in zip(row, s["objects"], strict=True)]
    assert sum(b is not None for b, _ in boxes) >= len(boxes) // 2  # the shipped detector finds most garments
    for box, obj in boxes:
        assert box is None or Box(*box).iou(Box(*obj["box"])) >= MATCH_IOU
    assert detector_boxes(scenes, tmp_path / "cache") == found  # loaded from the cache the first call wrote
    assert len(list((tmp_path / "cache").iterdir())) == 1

    encoder = FrozenEncoder()
    plain = build_training_set(encoder, scenes, VIEWS, np.random.default_rng(0))
    detected = build_training_set(encoder, scenes, VIEWS, np.random.default_rng(0), found)
    assert len(detected.targets) == len(plain.targets) == VIEWS * len(boxes)
    # Only the detector views differ; with no box found anywhere the recipe is the plain one, draw for draw.
    assert not all(np.array_equal(a, b) for a, b in zip(detected.targets, plain.targets, strict=True))
    nothing = [[None] * len(row) for row in found]
    again = build_training_set(encoder, scenes, VIEWS, np.random.default_rng(0), nothing)
    assert all(np.array_equal(a, b) for a, b in zip(again.targets, plain.targets, strict=True))
