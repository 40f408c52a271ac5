"""Synthetic "street" scenes from catalog photos: ground truth for detection, segmentation and street-to-shop.

Each scene is a procedural or photo-derived background with 1-4 garment cut-outs (see garment_mask) pasted with
random scale, rotation, mild perspective, flip, small colour jitter and blur; later garments occlude earlier ones.
`out_dir/annotations.jsonl` holds one line per scene; masks are COCO-style uncompressed RLE of the visible part.
Scene i depends only on (seed, i, source photos): its random generator is spawned from the seed with key i.

    python -m fashion_search.datasets.scenes --source .../clothing-small/train --out data/scenes/train --n 2000 --seed 1
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from fashion_search.core.catalog import CatalogRecord, load_catalog
from fashion_search.datasets import garment_mask as garment_mask_module
from fashion_search.datasets.garment_mask import garment_mask

# Scene geometry: the longest side, and the shorter side as a fraction of it.
SCENE_SIDE = 512
SHORT_SIDE_RANGE = (0.6, 1.0)
MAX_OBJECTS = 4
# Source photos are cut at most this large (clothing-small photos are 400 px on the short side, <= 936 px long).
MAX_SOURCE_SIDE = 1024
# Garment longest side as a fraction of the scene's shorter side, before the per-category and crowd factors.
GARMENT_SIZE_RANGE = (0.4, 0.95)
# Small items are smaller than a dress in a street photo, though product photos frame all of them alike.
CATEGORY_SIZE = {"hat": 0.55, "shoes": 0.6}
# Each garment beyond the first shrinks the size range by this fraction: four garments cannot all fill the frame.
CROWD_SHRINK = 0.1
# Objects whose visible share of their (warped) mask is below this are never left in a scene.
MIN_VISIBLE = 0.3
# A pasted garment keeps at least this share of its mask inside the frame (the rest is cut by the border).
MIN_IN_FRAME = 0.7
# Placements tried per garment before it is left out (it would hide an earlier one or fall out of frame).
PLACEMENT_TRIES = 10
# Source draws per garment: photos without a usable mask are redrawn.
MAX_SOURCE_DRAWS = 30
# Geometric jitter: rotation (degrees, normal std and hard cap), corner displacement (fraction of the size).
ROTATION_STD_DEG = 5.0
MAX_ROTATION_DEG = 12.0
PERSPECTIVE_JITTER = 0.05
FLIP_P = 0.5
# Photometric jitter stays small: retrieval must still match the catalog photo of the same product.
COLOUR_JITTER = 0.08
WHITE_BALANCE_JITTER = 0.04
GARMENT_BLUR_P = 0.3
GARMENT_BLUR_SIGMA = (0.4, 1.2)
# Edge clean-up: mask erosion (source-photo pixels, scaled with the cut-out), the box filter that spreads garment
# colour a few pixels past the edge (as far as the warp and feathering below reach), alpha erosion and feathering.
SOURCE_ERODE_PX = 2
EDGE_FILL_BOX = 7
ALPHA_ERODE_PX = 1
ALPHA_FEATHER_SIGMA = 0.7
# Soft drop shadow under a garment: probability, darkening, blur and offset as fractions of the garment size.
SHADOW_P = 0.6
SHADOW_STRENGTH = (0.15, 0.45)
SHADOW_BLUR = (0.01, 0.04)
SHADOW_OFFSET = 0.025
# Whole-scene degradations.
JPEG_QUALITY = (40, 95)
NOISE_P = 0.4
NOISE_SIGMA = (1.0, 6.0)
# Backgrounds: a wall/floor split of two generators, a lighting gradient, and the blur of photo crops.
SPLIT_P = 0.3
LIGHTING_P = 0.5
LIGHTING_RANGE = (0.75, 1.15)
PHOTO_CROP_FRACTION = (0.2, 0.35)
PHOTO_BLUR_SIGMA = (1.5, 6.0)
# A photo corner holding more than this share of the photo's garment mask is not used as a background.
PHOTO_MAX_GARMENT_SHARE = 0.05
ANNOTATIONS = "annotations.jsonl"
EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------------------------------------------------------
# Run-length encoding (COCO uncompressed RLE: column-major runs, the first run counts zeros)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO-style uncompressed RLE of a 2-D bool mask: {"size": [h, w], "counts": [...]}, column-major runs."""
    h, w = mask.shape
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)  # runs alternate 0s, 1s, ... starting with zeros
    return {"size": [h, w], "counts": counts}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of encode_rle: the 2-D bool mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def decode_mask(obj_or_rle: dict[str, Any]) -> np.ndarray:
    """Full-scene bool mask of an annotation object (its "mask_rle") or of an RLE dict."""
    return decode_rle(obj_or_rle.get("mask_rle", obj_or_rle))


def mask_box(mask: np.ndarray) -> list[int] | None:
    """Tight box [x0, y0, x1, y1] (x1, y1 exclusive) of a bool mask, None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def load_scenes(out_dir: str | Path) -> list[dict[str, Any]]:
    """Annotations of a generated scene folder; each gets "image_path", the absolute path of its JPEG."""
    root = Path(out_dir).resolve()
    scenes = []
    with (root / ANNOTATIONS).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                scene = json.loads(line)
                scene["image_path"] = str(root / scene["scene"])
                scenes.append(scene)
    return scenes


# ---------------------------------------------------------------------------------------------------------------
# Source photos and their cut-outs


def load_upright_rgb(path: str) -> np.ndarray:
    """RGB array of a photo, upright, at most MAX_SOURCE_SIDE."""
    with Image.open(path) as im:
        # exif_transpose always copies; only pay for it when the photo is actually rotated.
        img = (ImageOps.exif_transpose(im) if im.getexif().get(EXIF_ORIENTATION, 1) != 1 else im).convert("RGB")
    if max(img.size) > MAX_SOURCE_SIDE:
        img.thumbnail((MAX_SOURCE_SIDE, MAX_SOURCE_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img)


def _mask_version() -> str:
    """Fingerprint of the garment-mask code: cached masks from another version are recomputed."""
    return hashlib.sha1(Path(garment_mask_module.__file__).read_bytes()).hexdigest()[:12]


class SourceBank:
    """Catalog photos of one split with lazily computed garment masks (deterministic per photo).

    Masks are kept bit-packed and cropped to their box (a few KB per photo), and optionally persisted in a JSONL
    cache keyed by mask-code version, photo path, size and mtime, so a later run skips the analysis.
    """

    def __init__(self, records: list[CatalogRecord], cache_path: Path | None = None) -> None:
        self.records = records
        by_cat: dict[str, list[int]] = {}
        for i, rec in enumerate(records):
            by_cat.setdefault(rec.category, []).append(i)
        self.categories = sorted(by_cat)
        self.by_category = by_cat
        self._masks: dict[int, tuple[tuple[int, int], list[int], np.ndarray] | None] = {}
        self.mask_seconds = 0.0
        self._version = _mask_version()
        self._cache_path = cache_path
        self._cache: dict[str, dict[str, Any] | None] = {}
        self._cache_dirty = False
        if cache_path is not None and cache_path.is_file():
            with cache_path.open(encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        entry = json.loads(line)
                        if entry["key"].startswith(self._version + "|"):
                            self._cache[entry["key"]] = entry["rle"]

    def _key(self, idx: int) -> str:
        path = self.records[idx].image_path
        st = os.stat(path)
        return f"{self._version}|{path}|{st.st_size}|{st.st_mtime_ns}"

    def mask(self, idx: int) -> np.ndarray | None:
        """The photo's full-size garment mask (None when unusable), computed once."""
        if idx not in self._masks:
            key = self._key(idx)
            if key in self._cache:
                rle = self._cache[key]
                full = None if rle is None else decode_rle(rle)
            else:
                start = time.perf_counter()
                full = garment_mask(Image.fromarray(load_upright_rgb(self.records[idx].image_path)))[0]
                self.mask_seconds += time.perf_counter() - start
                if self._cache_path is not None:
                    self._cache[key] = None if full is None else encode_rle(full)
                    self._cache_dirty = True
            box = None if full is None else mask_box(full)
            if full is None or box is None:
                self._masks[idx] = None
            else:
                x0, y0, x1, y1 = box
                self._masks[idx] = (full.shape, box, np.packbits(full[y0:y1, x0:x1]))
        stored = self._masks[idx]
        if stored is None:
            return None
        shape, (x0, y0, x1, y1), packed = stored
        full = np.zeros(shape, bool)
        full[y0:y1, x0:x1] = np.unpackbits(packed, count=(y1 - y0) * (x1 - x0)).reshape(y1 - y0, x1 - x0)
        return full

    def usable(self, idx: int) -> bool:
        """Whether the photo has a usable garment mask (computes it if needed)."""
        if idx not in self._masks:
            self.mask(idx)
        return self._masks[idx] is not None

    def save_cache(self) -> None:
        """Write the mask cache (atomically) if this run analysed new photos."""
        if self._cache_path is None or not self._cache_dirty:
            return
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_path.with_suffix(self._cache_path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for key in sorted(self._cache):
                fh.write(json.dumps({"key": key, "rle": self._cache[key]}, separators=(",", ":")) + "\n")
        os.replace(tmp, self._cache_path)

    def stats(self) -> tuple[int, int]:
        """(photos checked so far, from the cache or analysed, and of those the usable ones)."""
        return len(self._masks), sum(m is not None for m in self._masks.values())

    def draw_garment(self, rng: np.random.Generator, exclude: set[int]) -> int | None:
        """A photo with a usable mask: a uniform category, then a uniform photo of it (balances the classes)."""
        for _ in range(MAX_SOURCE_DRAWS):
            cat = self.categories[rng.integers(len(self.categories))]
            pool = self.by_category[cat]
            idx = pool[rng.integers(len(pool))]
            if idx not in exclude and self.usable(idx):
                return idx
        return None


# ---------------------------------------------------------------------------------------------------------------
# Backgrounds: float32 H x W x 3 arrays in 0..255

Background = Callable[[np.random.Generator, int, int], np.ndarray]


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour, mostly muted like walls, pavements and floors, sometimes vivid."""
    sat = rng.uniform(0.0, 0.35) if rng.random() < 0.75 else rng.uniform(0.35, 0.9)
    rgb = colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), sat, rng.uniform(0.2, 0.95))
    return np.array(rgb, np.float32) * 255


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend two colours by a H x W weight map."""
    return a + (b - a) * t[..., None]


def _ramp(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Linear 0..1 ramp across the image at a random angle."""
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = x * np.cos(angle) + y * np.sin(angle)
    return (t - t.min()) / max(float(np.ptp(t)), 1e-6)


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int, octaves: int) -> np.ndarray:
    """Smooth fractal noise in 0..1: random grids upsampled bicubically, halving amplitude per octave."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * 2**o
        grid = rng.random((n, n), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    return np.clip((out - out.min()) / max(float(np.ptp(out)), 1e-6), 0, 1)


def _bg_solid(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return np.broadcast_to(_colour(rng), (h, w, 3)).copy()


def _bg_gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return _lerp(_colour(rng), _colour(rng), _ramp(rng, h, w))


def _bg_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    t = _value_noise(rng, h, w, int(rng.integers(2, 12)), int(rng.integers(1, 5)))
    return _lerp(_colour(rng), _colour(rng), t)


def _bg_stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Planks, awnings or a striped wall: stripes of one colour varied, at a random angle."""
    base = _colour(rng)
    width = rng.uniform(10, 90)
    t = _ramp(rng, h, w) * (np.hypot(h, w) / width)
    idx = np.floor(t).astype(np.int32)
    shades = rng.uniform(0.8, 1.2, size=int(idx.max()) + 1).astype(np.float32)
    img = base * shades[idx][..., None]
    if rng.random() < 0.5:  # a second colour on alternate stripes
        img[idx % 2 == 1] = _colour(rng) * shades[idx[idx % 2 == 1]][:, None]
    grain = _value_noise(rng, h, w, int(rng.integers(8, 32)), 2) - 0.5
    return img * (1 + 0.15 * grain[..., None])


def _bg_tiles(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Pavement or floor tiles with grout lines, optionally foreshortened like a floor seen at an angle."""
    size = int(rng.integers(30, 140))
    grout = int(rng.integers(1, 5))
    big_h, big_w = int(h * 1.5), int(w * 1.5)  # drawn larger so a perspective squeeze still fills the frame
    ny, nx = -(-big_h // size), -(-big_w // size)
    shades = rng.uniform(0.88, 1.12, size=(ny, nx)).astype(np.float32)
    tiles = cv2.resize(shades, (nx * size, ny * size), interpolation=cv2.INTER_NEAREST)[:big_h, :big_w]
    img = tiles[..., None] * _colour(rng)
    # Grout visibly darker or lighter than the tiles, or a colour of its own.
    contrast = rng.uniform(0.5, 0.8) if rng.random() < 0.6 else rng.uniform(1.2, 1.5)
    line = _colour(rng) if rng.random() < 0.3 else img[0, 0] * contrast
    for k in range(0, big_h, size):
        img[k : k + grout] = line
    for k in range(0, big_w, size):
        img[:, k : k + grout] = line
    src = np.float32([[0, 0], [big_w, 0], [big_w, big_h], [0, big_h]])
    if rng.random() < 0.5:  # a floor receding from the camera: the far edge is squeezed
        squeeze = rng.uniform(0.1, 0.35) * w
        dst = np.float32([[-squeeze, 0], [w + squeeze, 0], [w + squeeze * 3, h], [-squeeze * 3, h]])
    else:
        dst = np.float32([[0, 0], [big_w, 0], [big_w, big_h], [0, big_h]])
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _bg_shapes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blurred random shapes: an out-of-focus street, shop window or park."""
    img = _bg_gradient(rng, h, w)
    for _ in range(int(rng.integers(6, 30))):
        colour = tuple(float(c) for c in _colour(rng))
        kind = rng.integers(3)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.uniform(0.03, 0.3) * max(h, w))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, colour, -1)
        elif kind == 1:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + int(rng.integers(r // 2, 3 * r))), colour, -1)
        else:
            pts = (rng.normal(0, r, size=(int(rng.integers(3, 7)), 2)) + np.array([cx, cy])).astype(np.int32)
            cv2.fillPoly(img, [pts], colour)
    return _blur(img, rng.uniform(2.0, 14.0))


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; large sigmas run on a downscaled copy (same look, a fraction of the cost)."""
    h, w = img.shape[:2]
    if sigma < 4:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    f = sigma / 2
    small = cv2.resize(img, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


PROCEDURAL: tuple[Background, ...] = (_bg_solid, _bg_gradient, _bg_noise, _bg_stripes, _bg_tiles, _bg_shapes)


def _bg_photo(rng: np.random.Generator, h: int, w: int, bank: SourceBank, exclude: set[int]) -> np.ndarray | None:
    """A blurred corner of another catalog photo (floors, beds, carpets, walls), avoiding its garment."""
    idx = int(rng.integers(len(bank.records)))
    if idx in exclude:
        return None
    photo = load_upright_rgb(bank.records[idx].image_path)
    mask = bank.mask(idx)
    ph, pw = photo.shape[:2]
    frac = rng.uniform(*PHOTO_CROP_FRACTION)
    # Crop with the scene's aspect ratio, as large as the fraction allows.
    ch = int(min(ph * frac, pw * frac * h / w))
    cw = int(ch * w / h)
    corners = [(0, 0), (0, pw - cw), (ph - ch, 0), (ph - ch, pw - cw)]
    y0, x0 = corners[int(rng.integers(4))]
    if mask is not None:
        shares = [mask[y : y + ch, x : x + cw].sum() for y, x in corners]
        best = int(np.argmin(shares))
        if shares[best] > PHOTO_MAX_GARMENT_SHARE * mask.sum():
            return None
        y0, x0 = corners[best]
    crop = photo[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    return _blur(img, rng.uniform(*PHOTO_BLUR_SIGMA))


def _background(rng: np.random.Generator, h: int, w: int, bank: SourceBank, exclude: set[int]) -> np.ndarray:
    """One background: a procedural or photo texture, sometimes split into wall and floor, with lighting."""

    def one() -> np.ndarray:
        kind = int(rng.integers(len(PROCEDURAL) + 2))  # photo crops get two shares: they are the most realistic
        if kind >= len(PROCEDURAL):
            img = _bg_photo(rng, h, w, bank, exclude)
            if img is not None:
                return img
            kind = int(rng.integers(len(PROCEDURAL)))
        return PROCEDURAL[kind](rng, h, w)

    img = one()
    if rng.random() < SPLIT_P:
        floor = one()
        horizon = rng.uniform(0.3, 0.75) * h
        t = np.clip((np.arange(h, dtype=np.float32) - horizon) / rng.uniform(1.0, 6.0) + 0.5, 0, 1)
        img = img * (1 - t[:, None, None]) + floor * t[:, None, None]
    if rng.random() < LIGHTING_P:
        light = LIGHTING_RANGE[0] + (LIGHTING_RANGE[1] - LIGHTING_RANGE[0]) * _ramp(rng, h, w)
        img = img * light[..., None]
    return np.clip(img, 0, 255).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Garments


def _garment_patch(
    rng: np.random.Generator, photo: np.ndarray, mask: np.ndarray, target_side: float
) -> tuple[np.ndarray, np.ndarray]:
    """The garment cut out, scaled, flipped, rotated, perspective-warped and jittered: (RGB float32, alpha 0..1)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    scale = target_side / max(y1 - y0, x1 - x0)
    size = (max(2, round((x1 - x0) * scale)), max(2, round((y1 - y0) * scale)))
    # Area averaging only pays off (against aliasing) for strong downscales; bilinear is several times cheaper.
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    rgb = cv2.resize(photo[y0:y1, x0:x1], size, interpolation=interp).astype(np.float32)
    solid = cv2.resize(mask[y0:y1, x0:x1].astype(np.float32), size, interpolation=interp) > 0.5
    # The mask edge still holds pixels mixed with the photo's background: cut them, and give everything outside
    # the garment the colour of the nearby garment (normalised convolution), so the soft alpha edge blends garment
    # colour into the scene instead of a light halo.
    erode_px = max(1, round(SOURCE_ERODE_PX * min(scale, 1.0)))
    alpha = cv2.erode(solid.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=erode_px).astype(np.float32)
    box = (EDGE_FILL_BOX, EDGE_FILL_BOX)
    weight = cv2.blur(alpha, box)[..., None]
    spread = cv2.blur(rgb * alpha[..., None], box) / np.maximum(weight, 1e-3)
    rgb = np.where(alpha[..., None] > 0, rgb, spread)
    if rng.random() < FLIP_P:
        rgb, alpha = np.ascontiguousarray(rgb[:, ::-1]), np.ascontiguousarray(alpha[:, ::-1])

    # Small photometric change in one colour transform: saturation (mix with grey), contrast about the garment's
    # mean, brightness and white balance gains.
    sat, con, bright = rng.uniform(1 - COLOUR_JITTER, 1 + COLOUR_JITTER, size=3)
    gains = bright * rng.uniform(1 - WHITE_BALANCE_JITTER, 1 + WHITE_BALANCE_JITTER, size=3)
    mean = float(np.mean(cv2.mean(rgb, mask=(alpha > 0).astype(np.uint8))[:3]))
    matrix = np.zeros((3, 4), np.float32)
    for c in range(3):
        matrix[c, :3] = (1 - sat) * con * gains[c] / 3
        matrix[c, c] += sat * con * gains[c]
        matrix[c, 3] = (1 - con) * mean * gains[c]
    rgb = cv2.transform(rgb, matrix)

    # Rotation about the centre plus independent corner jitter gives a mild perspective.
    w, h = size
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    theta = np.deg2rad(np.clip(rng.normal(0, ROTATION_STD_DEG), -MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    jitter = rng.uniform(-PERSPECTIVE_JITTER, PERSPECTIVE_JITTER, size=(4, 2)) * (w, h)
    dst = ((src - (w / 2, h / 2)) @ rot.T + jitter).astype(np.float32)
    dst -= dst.min(axis=0)
    out_size = (int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1)
    m = cv2.getPerspectiveTransform(src, dst)
    # Replicated borders keep garment colours (not black) under the soft alpha edge.
    rgb = cv2.warpPerspective(rgb, m, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpPerspective(alpha, m, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.erode(alpha, np.ones((2 * ALPHA_ERODE_PX + 1,) * 2, np.uint8))
    alpha = cv2.GaussianBlur(alpha, (0, 0), ALPHA_FEATHER_SIGMA)
    if rng.random() < GARMENT_BLUR_P:  # defocus: colour and edge soften together
        sigma = rng.uniform(*GARMENT_BLUR_SIGMA)
        rgb, alpha = cv2.GaussianBlur(rgb, (0, 0), sigma), cv2.GaussianBlur(alpha, (0, 0), sigma)
    return np.clip(rgb, 0, 255), np.clip(alpha, 0, 1)


def _paste_region(
    shape: tuple[int, int], x0: int, y0: int, ph: int, pw: int
) -> tuple[slice, slice, slice, slice] | None:
    """Scene and patch slices of a patch at (x0, y0) clipped to the scene; None when fully outside."""
    h, w = shape
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + pw), min(h, y0 + ph)
    if sx1 <= sx0 or sy1 <= sy0:
        return None
    return (slice(sy0, sy1), slice(sx0, sx1), slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))


def _make_scene(rng: np.random.Generator, bank: SourceBank) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One scene (uint8 RGB) and its objects with full-scene visible masks (before encoding)."""
    long_side, short_side = SCENE_SIDE, int(SCENE_SIDE * rng.uniform(*SHORT_SIDE_RANGE)) // 8 * 8
    h, w = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    chosen: list[int] = []
    for _ in range(n_objects):
        idx = bank.draw_garment(rng, set(chosen))
        if idx is not None:
            chosen.append(idx)
    scene = _background(rng, h, w, bank, set(chosen))

    objects: list[dict[str, Any]] = []
    for idx in chosen:
        rec = bank.records[idx]
        mask = bank.mask(idx)
        if mask is None:  # draw_garment only returns photos with a mask; this keeps the type checker honest
            continue
        crowd = 1 - CROWD_SHRINK * (len(chosen) - 1)
        side = min(h, w) * rng.uniform(*GARMENT_SIZE_RANGE) * CATEGORY_SIZE.get(rec.category, 1.0) * crowd
        rgb, alpha = _garment_patch(rng, load_upright_rgb(rec.image_path), mask, side)
        ph, pw = alpha.shape
        solid = alpha > 0.5
        total = int(solid.sum())
        if total == 0:
            continue
        placed = None
        for _ in range(PLACEMENT_TRIES):
            # Allow up to (1 - MIN_IN_FRAME) of the patch past each border: street photos cut garments too.
            lo_x, hi_x = sorted((-(1 - MIN_IN_FRAME) * pw, w - MIN_IN_FRAME * pw))
            lo_y, hi_y = sorted((-(1 - MIN_IN_FRAME) * ph, h - MIN_IN_FRAME * ph))
            x0, y0 = int(rng.uniform(lo_x, hi_x)), int(rng.uniform(lo_y, hi_y))
            region = _paste_region((h, w), x0, y0, ph, pw)
            if region is None:
                continue
            sy, sx, py, px = region
            new_vis = np.zeros((h, w), bool)
            new_vis[sy, sx] = solid[py, px]
            if new_vis.sum() < MIN_IN_FRAME * total:
                continue
            # Later garments occlude earlier ones; keep every earlier garment at least MIN_VISIBLE visible.
            if all((o["visible"] & ~new_vis).sum() >= MIN_VISIBLE * o["total"] for o in objects):
                placed = (x0, y0, region, new_vis)
                break
        if placed is None:
            continue
        x0, y0, (sy, sx, py, px), new_vis = placed
        a = alpha[py, px][..., None]
        if rng.random() < SHADOW_P:
            # A blurred, offset copy of the alpha darkens what lies under the garment (drawn in patch coordinates).
            size = max(ph, pw)
            blur = max(1.0, rng.uniform(*SHADOW_BLUR) * size)
            dx, dy = (rng.uniform(-SHADOW_OFFSET, SHADOW_OFFSET, size=2) * size).astype(int)
            pad = int(3 * blur) + 1
            shadow = _blur(cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0), blur)
            strength = rng.uniform(*SHADOW_STRENGTH)
            shifted = _paste_region((h, w), x0 + dx - pad, y0 + dy - pad, *shadow.shape)
            if shifted is not None:
                ssy, ssx, spy, spx = shifted
                scene[ssy, ssx] *= (1 - strength * shadow[spy, spx])[..., None]
        scene[sy, sx] = scene[sy, sx] * (1 - a) + rgb[py, px] * a
        for o in objects:
            o["visible"] &= ~new_vis
        objects.append({"record": rec, "visible": new_vis, "total": total})

    if rng.random() < NOISE_P:
        scene += rng.standard_normal(scene.shape, dtype=np.float32) * np.float32(rng.uniform(*NOISE_SIGMA))
    # Placement already keeps every garment MIN_VISIBLE visible; the filter states the contract.
    kept = [o for o in objects if o["visible"].sum() >= MIN_VISIBLE * o["total"]]
    return np.clip(scene + 0.5, 0, 255).astype(np.uint8), kept


def generate_scenes(
    source_dir: str | Path,
    out_dir: str | Path,
    n_scenes: int,
    seed: int,
    split_name: str,
    mask_cache: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write n_scenes JPEGs under out_dir/images and their annotations to out_dir/annotations.jsonl; return stats.

    mask_cache: optional JSONL file of garment masks, read and extended, so later runs skip the photo analysis.
    """
    records = load_catalog(source_dir)
    if not records:
        raise ValueError(f"no source photos under {source_dir}")
    bank = SourceBank(records, Path(mask_cache) if mask_cache is not None else None)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for stale in (out / "images").glob(f"{split_name}_*.jpg"):  # scenes of an earlier, longer run
        stale.unlink()
    start, n_objects = time.perf_counter(), 0
    tmp = out / (ANNOTATIONS + ".tmp")
    indices: range | Any = range(n_scenes)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"scenes {split_name}", unit="scene")
    with tmp.open("w", encoding="utf-8") as fh:
        for i in indices:
            # Scene i's generator depends on (seed, i) only: a prefix of a longer run is the same scenes.
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
            image, objects = _make_scene(rng, bank)
            rel = f"images/{split_name}_{i:06d}.jpg"
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
            (out / rel).write_bytes(buf.getvalue())
            anns = []
            for o in objects:
                rec: CatalogRecord = o["record"]
                anns.append({
                    "product_id": rec.product_id, "category": rec.category, "source": rec.image_path,
                    "box": mask_box(o["visible"]), "mask_rle": encode_rle(o["visible"]),
                    "visible": round(float(o["visible"].sum()) / o["total"], 3),
                })
            n_objects += len(anns)
            line = {"scene": rel, "split": split_name, "width": image.shape[1], "height": image.shape[0],
                    "objects": anns}
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    os.replace(tmp, out / ANNOTATIONS)
    bank.save_cache()
    checked, usable = bank.stats()
    return {"scenes": n_scenes, "objects": n_objects, "photos": len(records), "photos_checked": checked,
            "photos_usable": usable, "seconds": round(time.perf_counter() - start, 2),
            "mask_seconds": round(bank.mask_seconds, 2)}


def product_photo_scenes(source_dir: str | Path, mask_cache: str | Path | None = None) -> list[dict[str, Any]]:
    """The catalog photos themselves as one-garment scenes (same record layout), for those with a usable mask.

    Product photos are frame-filling, unlike the garments pasted into scenes: a detector that never saw one
    breaks it into parts. Box and size are in the upright photo's frame at most MAX_SOURCE_SIDE, where the
    mask is computed; a reader must open the photo upright (EXIF) and may scale it.
    """
    records = load_catalog(source_dir)
    bank = SourceBank(records, Path(mask_cache) if mask_cache is not None else None)
    scenes = []
    for idx, rec in enumerate(records):
        mask = bank.mask(idx)
        if mask is None:
            continue
        path = str(Path(rec.image_path).resolve())
        obj = {"product_id": rec.product_id, "category": rec.category, "source": rec.image_path,
               "box": mask_box(mask)}
        scenes.append({"scene": path, "split": "photos", "width": mask.shape[1], "height": mask.shape[0],
                       "objects": [obj], "image_path": path})
    bank.save_cache()
    return scenes


def ensure_scenes(out_dir: str | Path, source_dir: str | Path | None, n_scenes: int, seed: int) -> Path:
    """out_dir if it already holds scenes; otherwise generate them from source_dir first (seeded, reproducible)."""
    out = Path(out_dir)
    if (out / ANNOTATIONS).is_file():
        return out
    if source_dir is None:
        raise FileNotFoundError(f"no scenes in {out}; pass the photos to generate them from")
    generate_scenes(source_dir, out, n_scenes, seed, Path(source_dir).resolve().name, out / "garment_masks.jsonl")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: generate a scene split from a folder of catalog photos."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="ImageFolder of catalog photos (class = subfolder)")
    ap.add_argument("--out", required=True, help="output folder (images/ and annotations.jsonl)")
    ap.add_argument("--n", type=int, default=1000, help="number of scenes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default=None, help="split name used in file names (default: source folder name)")
    ap.add_argument("--mask-cache", default=None,
                    help='garment mask cache file (default: OUT/garment_masks.jsonl; "none" disables it)')
    args = ap.parse_args(argv)
    split = args.split or Path(args.source).resolve().name
    cache = None if args.mask_cache == "none" else Path(args.mask_cache or Path(args.out) / "garment_masks.jsonl")
    stats = generate_scenes(args.source, args.out, args.n, args.seed, split, cache, progress=sys.stderr.isatty())
    rate = stats["scenes"] / max(stats["seconds"], 1e-9)
    print(json.dumps({**stats, "scenes_per_second": round(rate, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
