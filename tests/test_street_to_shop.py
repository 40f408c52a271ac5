"""Street-to-shop on scenes built from held-out photos: fine mode finds each garment's own product, simple mode
(one vector for the whole scene) mostly does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fashion_search.datasets.scenes import generate_scenes
from fashion_search.evaluation.scenes import street_to_shop
from tests.conftest import make_settings

VAL_SAMPLE = Path(__file__).resolve().parent / "data" / "val_sample"


@pytest.fixture(scope="module")
def recall(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    scenes = tmp_path_factory.mktemp("s2s-scenes")
    # Validation photos only (never trained on); the catalog is those same 39 products.
    generate_scenes(str(VAL_SAMPLE), str(scenes), 16, 7, "test")
    return street_to_shop(make_settings(tmp_path_factory.mktemp("s2s")), str(scenes), [str(VAL_SAMPLE)])


def test_fine_mode_finds_the_garments_own_product(recall: dict[str, Any]) -> None:
    fine, simple = recall["recall"]["fine"], recall["recall"]["simple"]
    assert recall["garments"] >= 30, recall
    # Measured: fine 0.83 (0.74 matching catalog detections instead of photos), simple 0.37.
    assert fine["recall@1"] >= 0.75, recall
    assert fine["recall@1"] > simple["recall@1"] + 0.3, recall
    # A gain this large on 30+ garments is not chance: its paired interval stays above zero.
    assert fine["Δrecall@1 vs simple low"] > 0, recall
    assert fine["Δrecall@1 vs simple"] == pytest.approx(fine["recall@1"] - simple["recall@1"], abs=2e-4)
    for row in recall["recall"].values():
        assert row["recall@1 low"] <= row["recall@1"] <= row["recall@1 high"], recall
    # Scenes of several kinds: fine mode answers each garment, so it shows at least as many kinds as simple mode.
    if recall["multi_kind_scenes"]:
        covered = recall["kinds_covered"]
        assert 0.0 < covered["simple"] <= 1.0 and covered["fine"] >= covered["simple"] - 0.1, recall
