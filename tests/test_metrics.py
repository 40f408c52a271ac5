"""Retrieval and detection metrics on hand-computed examples."""

from __future__ import annotations

import pytest

from fashion_search.core.domain import Box, Detection
from fashion_search.evaluation.metrics import average_precision, precision_at, write_section
from fashion_search.services.detector.metrics import best_f_threshold, detection_map, f_at_threshold


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


def test_best_f_threshold_counts_each_garment_once() -> None:
    truth = [[(Box(0, 0, 10, 10), "dress"), (Box(20, 20, 40, 40), "hat")], [(Box(0, 0, 10, 10), "skirt")]]
    found = [
        [Detection(Box(0, 0, 10, 10), "skirt", 0.9),  # right box, wrong class: class-agnostic, it counts
         Detection(Box(0, 0, 10, 10), "dress", 0.8),  # a duplicate is a false positive
         Detection(Box(20, 20, 40, 40), "hat", 0.3)],
        [Detection(Box(50, 50, 60, 60), "skirt", 0.6), Detection(Box(1, 0, 10, 10), "skirt", 0.2)],
    ]
    # Cuts: 0.9 (1/1, r 1/3), 0.8 (1/2), 0.6 (1/3), 0.3 (2/4, r 2/3: F1 0.571), 0.2 (3/5, r 1: F1 0.75).
    threshold, f1, precision, recall = best_f_threshold(found, truth)
    assert (threshold, precision, recall) == (0.2, pytest.approx(0.6), 1.0)
    assert f1 == pytest.approx(0.75)
    # Without the weak last detection: 0.9 gives F1 0.5, 0.3 gives 2/4 precision at 2/3 recall, F1 0.571.
    found[1].pop()
    assert best_f_threshold(found, truth)[:2] == (0.3, pytest.approx(4 / 7))
    # Recall weighed more (beta 2) moves the cut down past false alarms to a garment found late.
    boxes = [Box(10 * k, 0, 10 * k + 8, 8) for k in range(4)]
    scene = [[(b, "hat") for b in boxes]]
    late = [[Detection(boxes[0], "hat", 0.9), Detection(boxes[1], "hat", 0.8),
             *(Detection(Box(100, 100, 108, 108 + k), "hat", 0.5 - k / 20) for k in range(3)),
             Detection(boxes[2], "hat", 0.3)]]
    assert best_f_threshold(late, scene)[:2] == (0.8, pytest.approx(2 / 3))  # P 1, R 1/2 (at 0.3: 0.6)
    assert best_f_threshold(late, scene, beta=2.0)[:2] == (0.3, pytest.approx(15 / 22))  # P 1/2, R 3/4
    assert best_f_threshold([[]], [[]]) == (float("inf"), 0.0, 0.0, 0.0)


def test_f_at_threshold_agrees_with_the_best_cut() -> None:
    boxes = [Box(10 * k, 0, 10 * k + 8, 8) for k in range(4)]
    scene = [[(b, "hat") for b in boxes]]
    late = [[Detection(boxes[0], "hat", 0.9), Detection(boxes[1], "shoes", 0.8),
             *(Detection(Box(100, 100, 108, 108 + k), "hat", 0.5 - k / 20) for k in range(3)),
             Detection(boxes[2], "hat", 0.3)]]
    threshold, f2, precision, recall = best_f_threshold(late, scene, beta=2.0)
    assert f_at_threshold(late, scene, threshold, beta=2.0) == (pytest.approx(f2), precision, recall)
    # At 0.5: two garments of four found among three kept detections.
    assert f_at_threshold(late, scene, 0.5) == (pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)), 2 / 3, 0.5)
    assert f_at_threshold(late, scene, 0.95) == (0.0, 0.0, 0.0)


def test_write_section_replaces_only_its_block(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "E.md"
    write_section(path, "a", "first\n", "Evaluation")
    write_section(path, "b", "other\n", "Evaluation")
    write_section(path, "a", "second\n", "Evaluation")
    text = path.read_text()
    assert "second" in text and "first" not in text and "other" in text and text.startswith("# Evaluation")
