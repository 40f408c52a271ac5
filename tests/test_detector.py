"""The v0 detector: shipped head weights, head accuracy on real validation photos, detection behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_search.core.domain import Box, Detection, Detector
from fashion_search.services.detector.head import CATEGORIES, DEFAULT_HEAD_PATH, GarmentHead
from fashion_search.services.detector.model import REGION_CATEGORIES, GarmentDetector, body_regions, foreground_box
from tests.conftest import make_settings

DATA = Path("/work/shared/data/clothing-small")
PER_CLASS = 3
# Flat-laid garments in which MediaPipe Pose "finds" a person with high landmark visibility.
POSE_FALSE_POSITIVES = ("longsleeve/0deb9798", "outwear/fab99089", "t-shirt/7faa589f")


def validation_sample(per_class: int = PER_CLASS) -> list[tuple[Path, str]]:
    """The first photos of each class in validation/ (skips the test if the data set is absent)."""
    root = DATA / "validation"
    if not root.is_dir():
        pytest.skip(f"{root} not found: the clothing-small data set is not on this machine")
    return [(p, c) for c in CATEGORIES for p in sorted((root / c).glob("*.jpg"))[:per_class]]


def find_validation(stem: str) -> Path:
    """A validation photo by class/name prefix."""
    matches = sorted((DATA / "validation").glob(f"{stem}*.jpg"))
    if not matches:
        pytest.skip(f"{stem} not in {DATA / 'validation'}")
    return matches[0]


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> GarmentDetector:
    model = GarmentDetector(make_settings(tmp_path_factory.mktemp("v0"), detector_model="v0"))
    model.load()
    return model


def test_weights_load_and_are_small() -> None:
    head = GarmentHead.load()
    assert head.classes == CATEGORIES
    assert head.weight.shape == (len(CATEGORIES), 1280)
    assert head.bias.shape == (len(CATEGORIES),)
    assert head.mean.shape == head.std.shape == (1280,)
    assert DEFAULT_HEAD_PATH.stat().st_size < 1_000_000


def test_restricted_probabilities_renormalise_over_allowed_classes() -> None:
    head = GarmentHead.load()
    x = np.random.default_rng(0).normal(size=(2, 1280)).astype(np.float32)
    probs = head.probabilities(x, REGION_CATEGORIES["bottom"])
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])
    outside = [i for i, c in enumerate(head.classes) if c not in REGION_CATEGORIES["bottom"]]
    assert (probs[:, outside] == 0).all()
    with pytest.raises(ValueError):
        head.probabilities(x, ["sock"])


def test_head_beats_chance_by_a_wide_margin(detector: GarmentDetector) -> None:
    sample = validation_sample()
    images = [Image.open(p).convert("RGB") for p, _ in sample]
    predicted = detector.head.predict(detector.backbone.forward(images).pooled)
    accuracy = np.mean([name == label for (name, _), (_, label) in zip(predicted, sample, strict=True)])
    assert accuracy >= 0.6, f"head accuracy {accuracy:.2f} on {len(sample)} validation photos (chance: 0.1)"


def test_product_photo_gives_a_box_inside_the_image(detector: GarmentDetector) -> None:
    assert isinstance(detector, Detector)
    path, _ = validation_sample(1)[4]  # pants: a long garment, well inside the frame
    image = Image.open(path).convert("RGB")
    found = detector.detect(image, min_score=0.0)
    assert found
    best = found[0]
    assert best.category in CATEGORIES
    assert 0.0 < best.score <= 1.0
    assert 0 <= best.box.x0 < best.box.x1 <= image.width
    assert 0 <= best.box.y0 < best.box.y1 <= image.height
    assert best.box.area >= 0.05 * image.width * image.height


def test_detections_are_sorted_and_filtered(detector: GarmentDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    unsorted = [
        Detection(Box(0, 0, 10, 10), "hat", 0.3),
        Detection(Box(0, 10, 10, 40), "t-shirt", 0.9),
        Detection(Box(0, 40, 10, 60), "pants", 0.1),
        Detection(Box(0, 60, 10, 64), "shoes", 0.6),
    ]
    monkeypatch.setattr(detector, "_detect_worn", lambda image, rgb: list(unsorted))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(64, 10, 3), dtype=np.uint8))
    assert [d.category for d in detector.detect(image, min_score=0.0)] == ["t-shirt", "shoes", "hat", "pants"]
    assert [d.category for d in detector.detect(image, min_score=0.5)] == ["t-shirt", "shoes"]


@pytest.mark.parametrize("size", [(320, 240), (1, 1), (5, 300)])
def test_blank_images_have_no_garments(detector: GarmentDetector, size: tuple[int, int]) -> None:
    assert detector.detect(Image.new("RGB", size, (255, 255, 255)), min_score=0.0) == []


@pytest.mark.parametrize("size", [(1, 1), (2, 7), (5, 300), (900, 3)])
def test_tiny_and_thin_images_do_not_crash(detector: GarmentDetector, size: tuple[int, int]) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    found = detector.detect(Image.fromarray(rgb), min_score=0.0)
    for d in found:
        assert d.category in CATEGORIES
        assert 0 <= d.box.x0 <= d.box.x1 <= size[0] and 0 <= d.box.y0 <= d.box.y1 <= size[1]


def test_flat_laid_garments_are_not_taken_for_people(detector: GarmentDetector) -> None:
    for stem in POSE_FALSE_POSITIVES:
        rgb = np.asarray(Image.open(find_validation(stem)).convert("RGB"))
        assert detector._person_landmarks(rgb) is None, stem


def standing_pose() -> np.ndarray:
    """Landmarks (33×2) of a synthetic frontal pose in a 400×800 image: head at the top, feet at the bottom."""
    xy = np.zeros((33, 2))
    points = {
        0: (200, 90), 2: (190, 80), 5: (210, 80), 7: (180, 85), 8: (220, 85),
        11: (150, 160), 12: (250, 160), 13: (130, 260), 14: (270, 260),
        23: (170, 380), 24: (230, 380), 25: (170, 530), 26: (230, 530),
        27: (170, 680), 28: (230, 680), 29: (165, 700), 30: (235, 700), 31: (185, 715), 32: (215, 715),
    }
    for i, p in points.items():
        xy[i] = p
    return xy


def test_body_regions_from_a_standing_pose() -> None:
    regions = {r.name: r for r in body_regions(standing_pose(), np.ones(33), 400, 800)}
    assert set(regions) == set(REGION_CATEGORIES)
    for r in regions.values():
        assert 0 <= r.box.x0 < r.box.x1 <= 400 and 0 <= r.box.y0 < r.box.y1 <= 800
    assert regions["head"].box.y1 < regions["top"].box.y1 < regions["bottom"].box.y1 <= regions["feet"].box.y1
    assert regions["top"].box.y0 < 160 and regions["top"].box.y1 > 380  # shoulders to below the hips
    assert regions["bottom"].box.y1 > 680  # down to the ankles


def test_foreground_box_finds_a_garment_on_white() -> None:
    rgb = np.full((300, 200, 3), 250, dtype=np.uint8)
    rgb[60:250, 40:170] = (30, 60, 150)
    box = foreground_box(rgb)
    assert box.iou(Box(40, 60, 170, 250)) > 0.85
    assert foreground_box(np.full((300, 200, 3), 250, dtype=np.uint8)) == Box(0, 0, 200, 300)


def test_worn_regions_get_categories_their_body_part_allows(
    detector: GarmentDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    visibility = np.ones(33)
    visibility[[29, 30, 31, 32]] = 0.1  # feet hidden: no feet region
    monkeypatch.setattr(detector, "_person_landmarks", lambda rgb: (standing_pose(), visibility))
    image = Image.new("RGB", (400, 800), (240, 240, 240))
    image.paste((40, 40, 160), (110, 130, 290, 400))  # a blue top
    image.paste((60, 60, 60), (140, 370, 260, 690))  # dark trousers
    found = detector.detect(image, min_score=0.0)
    by_category = {d.category: d for d in found}
    assert len(found) == 3
    assert all(d.category in REGION_CATEGORIES["top"] + REGION_CATEGORIES["bottom"] + ("hat",) for d in found)
    assert "shoes" not in by_category
    assert "hat" in by_category
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
