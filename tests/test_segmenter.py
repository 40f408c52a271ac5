"""The v0 segmenter on synthetic garments with known masks, and its handling of odd boxes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fashion_search.core.domain import Box, Segmenter
from fashion_search.core.settings import Settings
from fashion_search.services.segmenter.model import GarmentSegmenter
from tests.conftest import ODD_BOXES

DATA = Path("/work/shared/data/clothing-small")


@pytest.fixture(scope="module")
def segmenter() -> GarmentSegmenter:
    model = GarmentSegmenter(Settings())
    model.load()
    return model


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def garment_on(background: Image.Image) -> tuple[Image.Image, np.ndarray]:
    """A T-shaped red 'shirt' with a darker print drawn on the background, and its true mask."""
    image = background.copy()
    draw = ImageDraw.Draw(image)
    shape = [(90, 60), (230, 60), (290, 110), (260, 140), (220, 115), (220, 250), (100, 250), (100, 115),
             (60, 140), (30, 110)]
    draw.polygon(shape, fill=(200, 30, 40))
    draw.rectangle((140, 130, 180, 170), fill=(120, 10, 20))
    mask_img = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask_img).polygon(shape, fill=1)
    return image, np.asarray(mask_img).astype(bool)


def white_background() -> Image.Image:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 3, size=(300, 320, 3))  # JPEG-like noise on a studio white
    return Image.fromarray(np.clip(245 + noise, 0, 255).astype(np.uint8))


def tiled_background() -> Image.Image:
    """A two-tone floor (beige tiles with grey grout), the kind of backdrop common in the real photos."""
    rgb = np.full((300, 320, 3), (215, 200, 170), dtype=np.uint8)
    rgb[::40, :] = (150, 150, 150)
    rgb[:, ::40] = (150, 150, 150)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("background", [white_background, tiled_background])
@pytest.mark.parametrize("box", [Box(15, 45, 305, 265), Box(0, 0, 320, 300)])
def test_synthetic_garment_mask_iou(segmenter: GarmentSegmenter, background: object, box: Box) -> None:
    assert isinstance(segmenter, Segmenter)
    image, truth = garment_on(background())  # type: ignore[operator]
    (mask,) = segmenter.segment(image, [box])
    x0, y0, x1, y1 = box.as_int()
    assert mask.shape == (y1 - y0, x1 - x0)
    assert mask.dtype == bool
    assert iou(mask, truth[y0:y1, x0:x1]) >= 0.9


@pytest.mark.parametrize("box", ODD_BOXES)
def test_mask_shapes_match_boxes(segmenter: GarmentSegmenter, box: Box) -> None:
    image, _ = garment_on(white_background())
    (mask,) = segmenter.segment(image, [box])
    x0, y0, x1, y1 = box.clip(image.width, image.height).as_int()
    assert mask.shape == (y1 - y0, x1 - x0)
    assert mask.dtype == bool


def test_no_boxes_and_plain_images(segmenter: GarmentSegmenter) -> None:
    image = Image.new("RGB", (64, 48), "white")
    assert segmenter.segment(image, []) == []
    (mask,) = segmenter.segment(image, [Box(4, 4, 60, 44)])
    assert mask.shape == (40, 56)
    assert mask.all()  # nothing stands out: the whole box is the safe answer


def test_several_boxes_in_order(segmenter: GarmentSegmenter) -> None:
    image, _ = garment_on(white_background())
    boxes = [Box(15, 45, 305, 265), Box(0, 0, 40, 30), Box(100, 60, 220, 250)]
    masks = segmenter.segment(image, boxes)
    assert [m.shape for m in masks] == [(220, 290), (30, 40), (190, 120)]


def test_real_product_photo(segmenter: GarmentSegmenter) -> None:
    photos = sorted((DATA / "validation" / "pants").glob("*.jpg"))
    if not photos:
        pytest.skip(f"{DATA} not found: the clothing-small data set is not on this machine")
    image = Image.open(photos[0]).convert("RGB")
    (mask,) = segmenter.segment(image, [Box(0, 0, image.width, image.height)])
    # Trousers fill a good part of the frame but not all of it.
    assert 0.1 < mask.mean() < 0.9


def test_masks_are_deterministic_across_calls_and_threads(segmenter: GarmentSegmenter) -> None:
    image, _ = garment_on(tiled_background())
    boxes = [Box(15, 45, 305, 265)]
    first = segmenter.segment(image, boxes)[0]
    assert np.array_equal(first, segmenter.segment(image, boxes)[0])
    with ThreadPoolExecutor(max_workers=2) as pool:
        for other in pool.map(lambda _: segmenter.segment(image, boxes)[0], range(4)):
            assert np.array_equal(first, other)
