"""The v0 segmenter: GrabCut seeded by the box and, on plain backgrounds, by a border-colour prior."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from fashion_search.core.domain import Box
from fashion_search.core.model_base import InferenceModel

# --- Background-colour model (shared with the detector's product-photo path) -------------------------
# The border strip, as a fraction of the shorter side, whose colours define "background".
BORDER_FRACTION = 0.04
# Border colours are clustered so that two-tone backgrounds (tiles, a bed and a floor) are both modelled.
BACKGROUND_CLUSTERS = 3
KMEANS_ITERATIONS = 8
MAX_BORDER_SAMPLES = 2048
# The segmenter refits the background for every box, so it samples fewer border pixels (its k-means
# dominates the non-GrabCut time otherwise); a few hundred pixels pin three colour clusters well.
SEGMENT_BORDER_SAMPLES = 512
# A border cluster with less than this share of the border is usually the garment itself reaching the
# edge (a sleeve, a hem), not background: it is dropped so the garment is not modelled as background.
MIN_CLUSTER_SHARE = 0.15
# A pixel is foreground when its Lab distance to every background cluster exceeds the larger of this
# floor (JPEG noise and soft shadows on white stay below it) and the border's own spread, so that a
# textured border raises the bar instead of turning into foreground.
MIN_FOREGROUND_DISTANCE = 28.0
BORDER_SPREAD_QUANTILE = 0.95
BORDER_SPREAD_FACTOR = 1.15
# A border whose colours sit this close to their cluster centres is "plain" (studio or sheet backdrop):
# only then is the colour prior trusted to seed GrabCut.
PLAIN_BORDER_DISTANCE = 18.0

# --- Segmenter ------------------------------------------------------------------------------------------
# Context around the box, as a fraction of its size: GrabCut learns the background colours from it.
CONTEXT_FRACTION = 0.1
# Boxes smaller than this (pixels per side) carry too little signal for GrabCut: the full box is returned.
MIN_SEGMENT_SIDE = 8
# GrabCut "collapses" when it keeps less than this fraction of the box; then a fallback mask is used.
MIN_MASK_FRACTION = 0.05
# Fixed seed for OpenCV's RNG before each GrabCut call (see _grabcut): masks must be reproducible.
GRABCUT_SEED = 0
# Frame (in work-image pixels) marked probable background when the box has no context around it.
FRAME_PIXELS = 2
# Components at least this fraction of the largest one are kept (a pair of shoes is two blobs);
# smaller ones are specks where background colours repeat.
KEEP_COMPONENT_FRACTION = 0.2


@dataclass(frozen=True)
class BackgroundModel:
    """Lab colour clusters of an image's border, with the distance above which a pixel is foreground."""

    centres: np.ndarray  # K×3 Lab
    threshold: float
    border_spread: float

    @property
    def plain(self) -> bool:
        """Whether the border is a near-uniform backdrop (product photo)."""
        return self.border_spread < PLAIN_BORDER_DISTANCE


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H×W×3) to float32 Lab in OpenCV's 8-bit scaling."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB).astype(np.float32)


def border_pixels(lab: np.ndarray) -> np.ndarray:
    """The pixels of a strip along all four edges (N×3)."""
    h, w = lab.shape[:2]
    strip = max(1, round(min(h, w) * BORDER_FRACTION))
    parts = [lab[:strip].reshape(-1, 3), lab[h - strip:].reshape(-1, 3),
             lab[:, :strip].reshape(-1, 3), lab[:, w - strip:].reshape(-1, 3)]
    return np.concatenate(parts, axis=0)


def _kmeans(points: np.ndarray, k: int) -> np.ndarray:
    """Deterministic k-means (centres seeded at lightness quantiles), so results never vary per call."""
    order = np.argsort(points[:, 0], kind="stable")
    seeds = [order[int((i + 0.5) * len(order) / k)] for i in range(k)]
    centres = points[seeds].copy()
    for _ in range(KMEANS_ITERATIONS):
        labels = _squared_distances(points, centres).argmin(axis=1)
        for j in range(k):
            members = points[labels == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    return centres


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of each point (N×3) to each centre (K×3): N×K."""
    out = np.empty((len(points), len(centres)), dtype=np.float32)
    for j, centre in enumerate(centres):
        diff = points - centre
        out[:, j] = np.einsum("ij,ij->i", diff, diff)
    return out


def _nearest_distance(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Distance of each point to its nearest centre (N)."""
    return np.sqrt(_squared_distances(points, centres).min(axis=1))


def fit_background(lab: np.ndarray, max_samples: int = MAX_BORDER_SAMPLES) -> BackgroundModel:
    """Model the background from the image border (at most about max_samples border pixels)."""
    border = border_pixels(lab)
    # A fixed stride keeps k-means cheap (and deterministic) on large borders.
    border = border[::max(1, len(border) // max_samples)]
    centres = _kmeans(border, min(BACKGROUND_CLUSTERS, len(border)))
    labels = _squared_distances(border, centres).argmin(axis=1)
    shares = np.bincount(labels, minlength=len(centres)) / len(border)
    keep = shares >= MIN_CLUSTER_SHARE  # the largest cluster always has at least 1/K ≥ this share
    centres = centres[keep]
    members = border[keep[labels]]
    spread = float(np.quantile(_nearest_distance(members, centres), BORDER_SPREAD_QUANTILE))
    threshold = max(MIN_FOREGROUND_DISTANCE, spread * BORDER_SPREAD_FACTOR)
    return BackgroundModel(centres, threshold, spread)


def background_distance(lab: np.ndarray, model: BackgroundModel) -> np.ndarray:
    """Per-pixel distance (H×W) to the nearest background cluster."""
    h, w = lab.shape[:2]
    return _nearest_distance(lab.reshape(-1, 3), model.centres).reshape(h, w)


def colour_foreground(lab: np.ndarray, model: BackgroundModel) -> np.ndarray:
    """Boolean foreground mask from the colour distance, cleaned with a small opening and closing."""
    mask = (background_distance(lab, model) > model.threshold).astype(np.uint8)
    side = max(3, (min(lab.shape[:2]) // 60) | 1)  # odd kernel scaling with the image
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return mask.astype(bool)


def resize_to_max_side(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale (never upscale) so the longer side is at most max_side; returns the image and the scale."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def main_components(mask: np.ndarray, keep_fraction: float = KEEP_COMPONENT_FRACTION) -> np.ndarray:
    """Keep components at least keep_fraction of the largest one's area, dropping specks."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= keep_fraction * areas.max()) + 1
    return np.isin(labels, keep)


def _rect(frac: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """A box given as fractions of an image, in that image's integer pixels (at least one pixel)."""
    x0, y0 = min(width - 1, int(np.floor(frac[0] * width))), min(height - 1, int(np.floor(frac[1] * height)))
    x1, y1 = min(width, int(np.ceil(frac[2] * width))), min(height, int(np.ceil(frac[3] * height)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _box_mask(mask: np.ndarray, rect: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """The rect of a work-resolution mask, resized to the box's pixel size (smooth edges, then threshold)."""
    x0, y0, x1, y1 = rect
    region = mask[y0:y1, x0:x1].astype(np.float32)
    return cv2.resize(region, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5


class GarmentSegmenter(InferenceModel):
    """Boolean garment mask for each box, from OpenCV GrabCut with colour-prior and full-box fallbacks."""

    name = "grabcut-v0"

    @property
    def model_name(self) -> str:
        """Name and the settings its masks depend on (GrabCut has no weights)."""
        s = self.settings
        return f"{self.name}@{s.segment_max_side}/{s.segment_grabcut_max_side}x{s.segment_iterations}"

    def _load(self) -> None:
        # Nothing to load: GrabCut has no weights; the servers still call load() on every model alike.
        return None

    def segment(self, image: Image.Image, boxes: Sequence[Box]) -> list[np.ndarray]:
        """One H×W bool mask per box (H, W = the clipped box's integer height and width)."""
        self.load()
        rgb = np.asarray(image.convert("RGB"))
        return [self._segment_one(rgb, box) for box in boxes]

    def _segment_one(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        img_h, img_w = rgb.shape[:2]
        x0, y0, x1, y1 = box.clip(img_w, img_h).as_int()
        # as_int keeps at least one pixel, which may sit just outside the image for an empty clip.
        x0, y0 = min(x0, img_w - 1), min(y0, img_h - 1)
        x1, y1 = min(max(x1, x0 + 1), img_w), min(max(y1, y0 + 1), img_h)
        bw, bh = x1 - x0, y1 - y0
        if bw < MIN_SEGMENT_SIDE or bh < MIN_SEGMENT_SIDE:
            return np.ones((bh, bw), dtype=bool)

        # Context crop around the box, downscaled: GrabCut learns the background from the context.
        mx, my = round(bw * CONTEXT_FRACTION), round(bh * CONTEXT_FRACTION)
        cx0, cy0 = max(0, x0 - mx), max(0, y0 - my)
        cx1, cy1 = min(img_w, x1 + mx), min(img_h, y1 + my)
        crop, _ = resize_to_max_side(rgb[cy0:cy1, cx0:cx1], self.settings.segment_max_side)
        # The box as fractions of the context crop, so it maps onto any downscaled copy.
        ctx_w, ctx_h = cx1 - cx0, cy1 - cy0
        frac = ((x0 - cx0) / ctx_w, (y0 - cy0) / ctx_h, (x1 - cx0) / ctx_w, (y1 - cy0) / ctx_h)

        lab = to_lab(crop)
        background = fit_background(lab, SEGMENT_BORDER_SAMPLES)
        # The colour mask is only needed as GrabCut's prior (plain border) or as its fallback.
        colour = colour_foreground(lab, background) if background.plain else None

        small, _ = resize_to_max_side(crop, self.settings.segment_grabcut_max_side)
        sh, sw = small.shape[:2]
        prior = None
        if colour is not None:
            prior = cv2.resize(colour.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(bool)
        mask = self._grabcut(small, prior, _rect(frac, sw, sh))
        chosen = _box_mask(mask, _rect(frac, sw, sh), bw, bh)
        if chosen.mean() < MIN_MASK_FRACTION:
            if colour is None:
                colour = colour_foreground(lab, background)
            chosen = _box_mask(colour, _rect(frac, crop.shape[1], crop.shape[0]), bw, bh)
            if chosen.mean() < MIN_MASK_FRACTION:
                return np.ones((bh, bw), dtype=bool)
        return chosen

    def _grabcut(self, crop: np.ndarray, prior: np.ndarray | None, rect: tuple[int, int, int, int]) -> np.ndarray:
        """GrabCut initialised from the rectangle (outside = background) and the optional colour prior."""
        ch, cw = crop.shape[:2]
        rx0, ry0, rx1, ry1 = rect
        init = np.full((ch, cw), cv2.GC_BGD, dtype=np.uint8)
        inside = init[ry0:ry1, rx0:rx1]
        inside[:] = cv2.GC_PR_FGD
        if prior is not None:
            inside[~prior[ry0:ry1, rx0:rx1]] = cv2.GC_PR_BGD
        if not (init != cv2.GC_PR_FGD).any():
            # The box fills the work image: GrabCut needs background samples, so call the frame
            # probable background (garments rarely touch all four edges).
            f = FRAME_PIXELS
            init[:f, :] = init[-f:, :] = init[:, :f] = init[:, -f:] = cv2.GC_PR_BGD
        fg_seeds = (init == cv2.GC_PR_FGD).sum()
        if fg_seeds == 0:
            return np.zeros((ch, cw), dtype=bool)
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        # GrabCut seeds its colour mixtures with k-means on OpenCV's per-thread RNG: reseed it so a mask
        # depends only on the input (the same in-process and behind the gRPC service's thread pool).
        cv2.setRNGSeed(GRABCUT_SEED)
        try:
            cv2.grabCut(crop, init, None, bgd_model, fgd_model, self.settings.segment_iterations,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            # GrabCut refuses inputs whose fg or bg sample set is too small for its colour mixtures.
            return np.zeros((ch, cw), dtype=bool)
        result = (init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)
        return main_components(result)
