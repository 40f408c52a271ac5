"""The detector trainer: the head learns from cached features, and the epoch count comes from a train split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashion_search.datasets.scenes import generate_scenes, load_scenes
from services.detector.centernet import STRIDE, VARIANTS, CenterHead
from services.detector.train_detector import cache_pyramid, evaluate, split_scenes, targets, train_head

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


def test_split_is_seeded_and_a_tenth() -> None:
    held = split_scenes(400, seed=3)
    assert held.sum() == 40
    assert np.array_equal(held, split_scenes(400, seed=3))
    assert not np.array_equal(held, split_scenes(400, seed=4))


def test_trained_head_finds_the_garments_it_was_trained_on(tmp_path: Path) -> None:
    generate_scenes(str(VAL_SAMPLE), str(tmp_path / "scenes"), 24, 5, "test")
    scenes = load_scenes(tmp_path / "scenes")
    variant = VARIANTS["centernet-v2"]
    feats = cache_pyramid(variant, scenes, tmp_path / "cache")
    grid = variant.input_size // STRIDE
    labels = [[targets(s, False, grid), targets(s, True, grid)] for s in scenes]
    fit, hold = np.arange(18), np.arange(18, 24)

    head, history = train_head(variant, feats, labels, fit, 6, 6, 0, scenes, hold)
    assert len(history) == 6 and all(0.0 <= v <= 1.0 for v in history)
    untrained = CenterHead(deep_channels=variant.deep_channels)
    learned, _, _ = evaluate(head, feats, scenes, fit)
    before, _, _ = evaluate(untrained, feats, scenes, fit)
    assert learned > before + 0.3, (learned, before)
    # The cache is reused: a second call returns the same features without recomputing them.
    again = cache_pyramid(variant, scenes, tmp_path / "cache")
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(feats, again, strict=True))


@pytest.mark.parametrize("n", [1, 9, 10, 11])
def test_split_holds_out_at_least_one_scene(n: int) -> None:
    assert 1 <= split_scenes(n, seed=0).sum() <= max(1, round(0.1 * n))
