"""Retrieval and detection metrics on hand-computed examples."""

from __future__ import annotations

import pytest

from fashion_search.domain import Box, Detection
from fashion_search.evaluation import average_precision, precision_at, write_section
from services.detector.metrics import detection_map


def test_precision_and_average_precision() -> None:
    rel = [True, False, True, False]
    assert precision_at(rel, 2) == 0.5
    assert precision_at(rel, 5) == pytest.approx(2 / 5)  # missing results count as misses
    assert average_precision(rel, 4) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision([False, False], 2) == 0.0


def test_detection_map_perfect_and_wrong_class() -> None:
    truth = [[(Box(0, 0, 10, 10), "dress"), (Box(20, 20, 40, 40), "hat")]]
    perfect = [[Detection(Box(0, 0, 10, 10), "dress", 0.9), Detection(Box(20, 20, 40, 40), "hat", 0.8)]]
    assert detection_map(perfect, truth) == (1.0, {"dress": 1.0, "hat": 1.0})
    wrong = [[Detection(Box(0, 0, 10, 10), "hat", 0.9), Detection(Box(20, 20, 40, 40), "hat", 0.8)]]
    _, per_class = detection_map(wrong, truth)
    assert per_class == {"dress": 0.0, "hat": pytest.approx(0.5)}
    assert detection_map(wrong, truth, class_agnostic=True)[0] == 1.0


def test_duplicate_detections_are_false_positives() -> None:
    truth = [[(Box(0, 0, 10, 10), "dress")]]
    dup = [[Detection(Box(0, 0, 10, 10), "dress", 0.9), Detection(Box(0, 0, 10, 10), "dress", 0.95)]]
    assert detection_map(dup, truth)[0] == 1.0  # the first (best) match counts; the duplicate ranks after it
    miss = [[Detection(Box(50, 50, 60, 60), "dress", 0.9)]]
    assert detection_map(miss, truth)[0] == 0.0


def test_write_section_replaces_only_its_block(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "E.md"
    write_section(path, "a", "first\n", "Evaluation")
    write_section(path, "b", "other\n", "Evaluation")
    write_section(path, "a", "second\n", "Evaluation")
    text = path.read_text()
    assert "second" in text and "first" not in text and "other" in text and text.startswith("# Evaluation")
