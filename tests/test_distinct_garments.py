"""Fine mode searches each garment once, even when the detector scores it under two classes."""

from __future__ import annotations

from fashion_search.domain import Box, Detection
from fashion_search.pipeline import distinct_garments


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
