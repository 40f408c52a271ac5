"""A garment's colour from its mask: an HSV histogram of the garment's own pixels, appended to its vector.

The seed-001 colour feature samples ten positions of the whole crop; a histogram over the mask sees all of the
garment and none of the background (fine-mode R@1 +0.023 on fresh train scenes, docs/EVALUATION.md).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from fashion_search.core.domain import Box
from fashion_search.core.images import garment_pixels
from fashion_search.core.settings import Settings
from fashion_search.core.vectors import l2_normalize

# Hue carries most of a garment's colour; saturation and value separate greys, pastels and dark shades.
HUE_BINS, SATURATION_BINS, VALUE_BINS = 12, 4, 4
HISTOGRAM_DIM = HUE_BINS * SATURATION_BINS * VALUE_BINS
_RANGES = [0, 180, 0, 256, 0, 256]  # OpenCV's 8-bit HSV: hue in [0, 180)


def colour_histogram(image: Image.Image, box: Box | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """L1-normalised HSV histogram of the pixels inside `mask` (a bool array the size of the clipped box, as the
    segmenter returns it); the whole box where the mask does not fit or is empty, the whole image without a box."""
    weights = None
    _, _, x1, y1 = box.clip(image.width, image.height).as_int() if box is not None else (0, 0, 0, 0)
    if box is not None and x1 <= image.width and y1 <= image.height:
        rgb, garment = garment_pixels(image, box, mask)  # the pixels the cut-out keeps
        weights = garment.astype(np.uint8) if garment is not None else None
    else:  # no box, or one wholly outside the image (its colour is unknown): the whole image
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], weights, [HUE_BINS, SATURATION_BINS, VALUE_BINS], _RANGES).ravel()
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float32)


def with_colour(vectors: np.ndarray, histograms: np.ndarray, weight: float) -> np.ndarray:
    """[v ‖ √weight · √h], unit length. Both parts have unit norm, so the cosine of two such vectors ranks as
    cos(v, v') + weight · BC(h, h'), BC being the histograms' Bhattacharyya coefficient."""
    return l2_normalize(np.concatenate([vectors, np.sqrt(weight * np.asarray(histograms, np.float32))], axis=1))


def garment_vector_dim(settings: Settings, embed_dim: int) -> int:
    """Length of fine mode's garment vectors: the embedder's, plus the histogram unless its weight is 0."""
    return embed_dim + (HISTOGRAM_DIM if settings.garment_colour_weight > 0 else 0)
