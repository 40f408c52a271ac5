"""Fine mode searches each garment once, even when the detector scores it under two classes, and at most
settings.max_garments of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fashion_search.core.domain import Box, Detection
from fashion_search.pipeline.search_pipeline import SearchPipeline, distinct_garments
from tests.conftest import make_settings


def test_overlapping_detections_of_two_classes_count_as_one_garment() -> None:
    shirt = Detection(Box(10, 10, 110, 160), "shirt", 0.8)
    same_as_longsleeve = Detection(Box(12, 8, 112, 158), "longsleeve", 0.6)
    pants = Detection(Box(20, 150, 100, 300), "pants", 0.5)
    assert distinct_garments([same_as_longsleeve, pants, shirt]) == [shirt, pants]


def test_the_likelier_class_wins_and_separate_garments_stay() -> None:
    weak = Detection(Box(0, 0, 50, 50), "hat", 0.3)
    strong = Detection(Box(1, 1, 50, 50), "shoes", 0.9)
    apart = Detection(Box(60, 0, 110, 50), "shoes", 0.2)
    assert distinct_garments([weak, strong, apart]) == [strong, apart]
    assert distinct_garments([]) == []


class _ListDetector:
    """Returns fixed detections: the cap is pipeline logic, whatever the model."""

    model_name = "fixed"

    def __init__(self, detections: list[Detection]) -> None:
        self.detections = detections

    def detect(self, image: Image.Image, min_score: float | None = None) -> list[Detection]:
        return list(self.detections)


@pytest.mark.parametrize("cap", [1, 3, 5])
def test_fine_mode_keeps_the_best_scored_garments_up_to_the_cap(tmp_path: Path, cap: int) -> None:
    # Five separate boxes in a row, scores rising left to right, and a weaker twin of the best one (one garment twice).
    boxes = [Detection(Box(60 * i, 0, 60 * i + 50, 50), "shirt", 0.1 * (i + 1)) for i in range(5)]
    twin = Detection(Box(241, 1, 291, 51), "t-shirt", 0.45)
    settings = make_settings(tmp_path, max_garments=cap)
    pipeline = SearchPipeline(settings, _ListDetector([*boxes, twin]), None, None, None)  # type: ignore[arg-type]
    found = pipeline.detect(Image.new("RGB", (320, 60)))
    assert found == boxes[::-1][:cap]
