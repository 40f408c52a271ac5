"""Synthetic scene generator: RLE, garment masks of product photos, deterministic scenes with consistent labels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fashion_search.datasets.garment_mask import garment_mask
from fashion_search.datasets.scenes import (
    ANNOTATIONS,
    MIN_VISIBLE,
    decode_mask,
    decode_rle,
    encode_rle,
    generate_scenes,
    load_scenes,
    mask_box,
    product_photo_scenes,
)

REAL_DATA = Path("/work/shared/data/clothing-small")


def _tshirt_mask(h: int, w: int) -> np.ndarray:
    """A T-shirt silhouette (body plus sleeves) centred in an h x w frame."""
    m = np.zeros((h, w), np.uint8)
    cv2.rectangle(m, (int(w * 0.3), int(h * 0.25)), (int(w * 0.7), int(h * 0.85)), 1, -1)
    sleeves = np.array([[0.3, 0.25], [0.12, 0.45], [0.22, 0.52], [0.3, 0.4],
                        [0.7, 0.4], [0.78, 0.52], [0.88, 0.45], [0.7, 0.25]]) * (w, h)
    cv2.fillPoly(m, [sleeves[:4].astype(np.int32)], 1)
    cv2.fillPoly(m, [sleeves[4:].astype(np.int32)], 1)
    return m.astype(bool)


def _product_photo(
    colour: tuple[int, int, int], seed: int, h: int = 320, w: int = 240
) -> tuple[Image.Image, np.ndarray]:
    """A plain light background with a slight gradient and sensor noise, a textured garment on it; and its mask."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 12, w, dtype=np.float32)[None, :, None]
    img = np.full((h, w, 3), 235, np.float32) - ramp + rng.normal(0, 2, (h, w, 3))
    mask = _tshirt_mask(h, w)
    garment = np.array(colour, np.float32) + rng.normal(0, 6, (h, w, 3))
    img[mask] = garment[mask]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), mask


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    """Two classes of three synthetic product photos each, in the ImageFolder layout of the catalog loader."""
    root = tmp_path / "source"
    colours = {
        "dress": [(180, 30, 40), (30, 60, 160), (40, 120, 50)],
        "shoes": [(20, 20, 20), (120, 70, 30), (200, 160, 0)],
    }
    for c, (cls, cols) in enumerate(colours.items()):
        (root / cls).mkdir(parents=True)
        for i, col in enumerate(cols):
            _product_photo(col, seed=10 * c + i)[0].save(root / cls / f"item{i}.jpg", quality=92)
    return root


def test_rle_round_trip() -> None:
    rng = np.random.default_rng(0)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool), np.array([[0, 1], [1, 1]], bool), np.ones((1, 9), bool),
             rng.random((37, 53)) > 0.5, _tshirt_mask(60, 40)]
    for m in cases:
        rle = encode_rle(m)
        assert rle["size"] == list(m.shape)
        assert sum(rle["counts"]) == m.size
        np.testing.assert_array_equal(decode_rle(json.loads(json.dumps(rle))), m)
    # COCO convention: column-major runs, the first run counts zeros (here none).
    assert encode_rle(np.array([[0, 1], [1, 1]], bool))["counts"] == [1, 3]
    assert encode_rle(np.array([[1, 0], [1, 1]], bool))["counts"] == [0, 2, 1, 1]
    with pytest.raises(ValueError):
        decode_rle({"size": [2, 2], "counts": [1, 2]})


def test_garment_mask_on_plain_background() -> None:
    photo, truth = _product_photo((180, 30, 40), seed=1)
    mask, quality = garment_mask(photo)
    assert mask is not None and mask.shape == truth.shape
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou >= 0.95
    assert quality >= 0.8


def test_garment_mask_rejects_busy_background() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (320, 240, 3), dtype=np.uint8)
    img[_tshirt_mask(320, 240)] = (180, 30, 40)
    mask, quality = garment_mask(Image.fromarray(img))
    assert mask is None and quality == 0.0


def test_garment_mask_rejects_frame_filling_garment() -> None:
    img = np.full((320, 240, 3), (30, 60, 160), np.uint8)
    img[:4], img[-4:] = 235, 235  # only a sliver of background left at the top and bottom
    assert garment_mask(Image.fromarray(img))[0] is None


def test_generate_scenes_deterministic_and_consistent(source_dir: Path, tmp_path: Path) -> None:
    stats = generate_scenes(source_dir, tmp_path / "a", 5, seed=3, split_name="train")
    generate_scenes(source_dir, tmp_path / "b", 5, seed=3, split_name="train")
    generate_scenes(source_dir, tmp_path / "c", 5, seed=4, split_name="train")
    generate_scenes(source_dir, tmp_path / "d", 3, seed=3, split_name="train")
    ann_a = (tmp_path / "a" / ANNOTATIONS).read_bytes()
    assert ann_a == (tmp_path / "b" / ANNOTATIONS).read_bytes()
    assert ann_a != (tmp_path / "c" / ANNOTATIONS).read_bytes()
    # Scene i depends on (seed, i) only: a shorter run is a prefix of a longer one.
    assert ann_a.splitlines()[:3] == (tmp_path / "d" / ANNOTATIONS).read_bytes().splitlines()
    for name in sorted(p.name for p in (tmp_path / "a" / "images").iterdir()):
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()

    scenes = load_scenes(tmp_path / "a")
    assert len(scenes) == 5 and stats["scenes"] == 5
    assert stats["objects"] == sum(len(s["objects"]) for s in scenes) > 0
    for scene in scenes:
        w, h = scene["width"], scene["height"]
        with Image.open(scene["image_path"]) as im:
            assert im.size == (w, h) and im.format == "JPEG"
        assert scene["scene"].startswith("images/train_")
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            mask = decode_mask(obj)
            assert mask.shape == (h, w)
            assert mask_box(mask) == obj["box"]  # tight box of the visible mask
            assert obj["visible"] >= MIN_VISIBLE
            category, stem = obj["product_id"].split(":")
            assert category == obj["category"] and category in {"dress", "shoes"}
            assert Path(obj["source"]) == (source_dir / category / f"{stem}.jpg").resolve()
        # Occlusion is applied: visible masks of one scene never overlap.
        if len(scene["objects"]) > 1:
            stack = np.stack([decode_mask(o) for o in scene["objects"]])
            assert stack.sum(axis=0).max() == 1


def test_mask_cache_reuse_is_identical(source_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "masks.jsonl"
    first = generate_scenes(source_dir, tmp_path / "a", 4, seed=5, split_name="train", mask_cache=cache)
    assert cache.is_file() and first["mask_seconds"] > 0
    second = generate_scenes(source_dir, tmp_path / "b", 4, seed=5, split_name="train", mask_cache=cache)
    assert second["mask_seconds"] == 0  # every mask came from the cache
    assert (tmp_path / "a" / ANNOTATIONS).read_bytes() == (tmp_path / "b" / ANNOTATIONS).read_bytes()


def test_product_photos_become_one_garment_scenes(source_dir: Path, tmp_path: Path) -> None:
    # One photo stored sideways with an EXIF orientation: its record must describe the upright photo.
    upright = Image.open(source_dir / "dress" / "item0.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(source_dir / "dress" / "item0.jpg", quality=92, exif=exif)
    scenes = product_photo_scenes(source_dir, tmp_path / "masks.jsonl")
    assert len(scenes) == 6 and (tmp_path / "masks.jsonl").is_file()
    truth = mask_box(_tshirt_mask(320, 240))
    assert truth is not None
    for scene in scenes:
        assert (scene["width"], scene["height"]) == (240, 320) and Path(scene["image_path"]).is_file()
        (obj,) = scene["objects"]
        assert obj["product_id"].split(":")[0] == obj["category"]
        box = np.array(obj["box"])
        assert np.abs(box - truth).max() <= 6, (obj["product_id"], box, truth)


@pytest.mark.skipif(not (REAL_DATA / "validation").is_dir(), reason="clothing-small data set not present")
def test_real_scenes_load(tmp_path: Path) -> None:
    generate_scenes(REAL_DATA / "validation", tmp_path, 3, seed=0, split_name="validation")
    scenes = load_scenes(tmp_path)
    assert len(scenes) == 3
    assert any(scene["objects"] for scene in scenes)
    for scene in scenes:
        with Image.open(scene["image_path"]) as im:
            assert im.size == (scene["width"], scene["height"])
        for obj in scene["objects"]:
            assert Path(obj["source"]).is_file()
            assert obj["source"].startswith(str((REAL_DATA / "validation").resolve()))
            assert decode_mask(obj).sum() > 0
