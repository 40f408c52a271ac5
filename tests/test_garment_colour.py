"""The garment colour histogram: counted over the mask only, and appended so that cosine adds its similarity."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fashion_search.core.domain import Box
from fashion_search.core.garment_colour import HISTOGRAM_DIM, colour_histogram, with_colour


@pytest.fixture
def red_and_blue() -> Image.Image:
    """Left half red, right half blue, on a 40×20 image."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (220, 20, 20)
    arr[:, 20:] = (20, 20, 220)
    return Image.fromarray(arr)


def _bhattacharyya(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(a * b).sum())


def test_only_the_pixels_inside_the_mask_count(red_and_blue: Image.Image) -> None:
    box = Box(0, 0, 40, 20)
    left = np.zeros((20, 40), bool)
    left[:, :20] = True
    red, blue = colour_histogram(red_and_blue, box, left), colour_histogram(red_and_blue, box, ~left)
    assert red.shape == (HISTOGRAM_DIM,) and red.sum() == pytest.approx(1.0)
    assert red.max() == pytest.approx(1.0) and blue.max() == pytest.approx(1.0)
    assert _bhattacharyya(red, blue) == pytest.approx(0.0)
    # The box alone (or a mask that selects nothing, or does not fit the box) counts every pixel of the box.
    whole = colour_histogram(red_and_blue, box)
    assert sorted(whole[whole > 0]) == pytest.approx([0.5, 0.5])
    np.testing.assert_allclose(colour_histogram(red_and_blue, box, np.zeros((20, 40), bool)), whole)
    np.testing.assert_allclose(colour_histogram(red_and_blue, box, np.ones((5, 5), bool)), whole)
    # A box is cropped first; one wholly outside the image falls back to the whole image.
    np.testing.assert_allclose(colour_histogram(red_and_blue, Box(0, 0, 20, 20)), red)
    np.testing.assert_allclose(colour_histogram(red_and_blue, Box(100, 100, 120, 120)), whole)


def test_cosine_of_the_appended_vectors_adds_the_weighted_histogram_similarity() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    hists = rng.random((2, HISTOGRAM_DIM)).astype(np.float32)
    hists /= hists.sum(axis=1, keepdims=True)
    weight = 0.3
    out = with_colour(vecs, hists, weight)
    assert out.shape == (2, 16 + HISTOGRAM_DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    expected = (float(vecs[0] @ vecs[1]) + weight * _bhattacharyya(hists[0], hists[1])) / (1 + weight)
    assert float(out[0] @ out[1]) == pytest.approx(expected, abs=1e-6)
