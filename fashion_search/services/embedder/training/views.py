"""Training views for the embedder: catalog-photo views and "street" garment crops, as cached frozen features.

The ImageNet stem and early blocks stay frozen, so each view goes through them once and the C×7×7 result is
cached on disk (float16), keyed by the inputs and the network; training then only runs the fine-tuned tail.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageEnhance

from fashion_search.core.catalog import CatalogRecord
from fashion_search.core.feature_cache import cached
from fashion_search.datasets.scenes import SourceBank, decode_mask
from fashion_search.services.embedder.backbone import TRAINED_IMAGE_SIZE
from fashion_search.services.embedder.fashion_net import frozen_features, tail_start

log = logging.getLogger("train-embedder")

SIZE = TRAINED_IMAGE_SIZE
# Product views: 0 plain (what inference sees for a whole photo), 1 mirrored, 2 the garment cut out onto white
# (what fine mode indexes for a catalog photo), 3.. random crops with mild light changes. Few views: caching them
# is the slow part of training on a CPU, and 12 views did not pay (docs/decisions/2026-12-04-embedder-product-views.md).
PRODUCT_VIEWS = 4
CUTOUT_VIEW = 2
# Street crops imitate fine mode's query side: a detector box (never exact) around a garment of a generated scene,
# everything outside a segmenter mask (never exact either) painted white.
# One crop per scene garment: a product appears in ~7 scenes, each under another pose, light and background.
STREET_CROPS_PER_OBJECT = 1
BOX_SCALE_RANGE = (0.92, 1.15)
BOX_SHIFT = 0.06
MASK_EDGE_PIXELS = 3  # the mask is eroded or dilated by up to this much
WHITE = 255
CACHE_BATCH = 64


def _resize(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)


def white_outside(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of rgb with everything outside the mask painted white (as the pipeline's cutout)."""
    out = rgb.copy()
    out[~mask] = WHITE
    return out


def product_view(img: Image.Image, mask: np.ndarray | None, index: int, rng: np.random.Generator) -> np.ndarray:
    """One SIZE×SIZE view of a catalog photo; `mask` (the photo's garment mask, or None) drives the cut-out view."""
    if index == 0:
        return _resize(img)
    if index == 1:
        return _resize(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    if index == CUTOUT_VIEW:
        if mask is None:
            return _resize(img)
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        rgb = white_outside(np.asarray(img.convert("RGB")), mask)[y0:y1, x0:x1]
        return _resize(Image.fromarray(rgb))
    w, h = img.size
    area = w * h * rng.uniform(0.55, 1.0)
    ratio = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
    cw, ch = min(w, round(math.sqrt(area * ratio))), min(h, round(math.sqrt(area / ratio)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.9, 1.1))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.9, 1.1))
    return _resize(out)


def street_crop(scene_rgb: np.ndarray, obj: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """A jittered box around one scene garment, outside a jittered copy of its mask painted white."""
    height, width = scene_rgb.shape[:2]
    x0, y0, x1, y1 = obj["box"]
    bw, bh = x1 - x0, y1 - y0
    scale = rng.uniform(*BOX_SCALE_RANGE)
    cx = (x0 + x1) / 2 + rng.uniform(-BOX_SHIFT, BOX_SHIFT) * bw
    cy = (y0 + y1) / 2 + rng.uniform(-BOX_SHIFT, BOX_SHIFT) * bh
    nx0, nx1 = max(0, round(cx - bw * scale / 2)), min(width, round(cx + bw * scale / 2))
    ny0, ny1 = max(0, round(cy - bh * scale / 2)), min(height, round(cy + bh * scale / 2))
    mask = decode_mask(obj).astype(np.uint8)
    edge = int(rng.integers(-MASK_EDGE_PIXELS, MASK_EDGE_PIXELS + 1))
    if edge:
        kernel = np.ones((2 * abs(edge) + 1, 2 * abs(edge) + 1), np.uint8)
        mask = cv2.dilate(mask, kernel) if edge > 0 else cv2.erode(mask, kernel)
    crop = white_outside(scene_rgb, mask.astype(bool))[ny0:max(ny1, ny0 + 2), nx0:max(nx1, nx0 + 2)]
    return _resize(Image.fromarray(crop))


def _cut(net: torch.nn.Module, start: int | None) -> list[str]:
    """Cache-key part for a tail start other than the network's default (the default's keys, and caches, stay as
    they were, whether it is given or not)."""
    return [] if start in (None, tail_start(net)) else [f"tail-start-{start}"]


@torch.inference_mode()
def _frozen(
    net: torch.nn.Module, views: Iterable[np.ndarray], total: int, what: str, start: int | None = None
) -> torch.Tensor:
    """Frozen-part features (float16, blocks before `start`; default tail_start) of a stream of SIZE×SIZE RGB views."""
    chunks, batch, began, done = [], [], time.time(), 0

    def flush() -> None:
        nonlocal batch, done
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2) / 255.0
        chunks.append(frozen_features(net, (x - 0.5) / 0.5, start).half())
        done += len(batch)
        batch = []
        if len(chunks) % 20 == 0:
            log.info("cached %d/%d %s (%.0f s)", done, total, what, time.time() - began)

    for view in views:
        batch.append(view)
        if len(batch) >= CACHE_BATCH:
            flush()
    if batch:
        flush()
    return torch.cat(chunks)


def product_features(
    net: torch.nn.Module, records: list[CatalogRecord], bank: SourceBank, seed: int, cache_dir: Path,
    n_views: int = PRODUCT_VIEWS, start: int | None = None,
) -> torch.Tensor:
    """N×n_views×C×H×W frozen features (blocks before `start`) of every catalog photo's views (views 3.. are random
    crops)."""

    def build() -> torch.Tensor:
        rng = np.random.default_rng(seed)

        def views() -> Iterable[np.ndarray]:
            for i, rec in enumerate(records):
                img = Image.open(rec.image_path).convert("RGB")
                mask = bank.mask(i)
                for v in range(n_views):
                    yield product_view(img, mask, v, rng)

        feats = _frozen(net, views(), len(records) * n_views, "product views", start)
        return feats.reshape(len(records), n_views, *feats.shape[1:])

    key = [[r.image_path for r in records], n_views, seed, SIZE, net.backbone_name, "products-v2", *_cut(net, start)]
    return cached(cache_dir, "embedder-products", key, build)


def street_features(
    net: torch.nn.Module, scenes: list[dict[str, Any]], product_ids: list[str], seed: int, cache_dir: Path,
    per_object: int = STREET_CROPS_PER_OBJECT, start: int | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Frozen features of `per_object` jittered crops of every scene garment, and each crop's product index."""
    index = {pid: i for i, pid in enumerate(product_ids)}
    objects = [(s, o) for s in scenes for o in s["objects"] if o["product_id"] in index]
    owners = np.repeat([index[o["product_id"]] for _, o in objects], per_object)

    def build() -> torch.Tensor:
        rng = np.random.default_rng(seed)

        def views() -> Iterable[np.ndarray]:
            last_path, rgb = None, np.zeros((1, 1, 3), np.uint8)
            for scene, obj in objects:
                if scene["image_path"] != last_path:
                    last_path = scene["image_path"]
                    rgb = np.asarray(Image.open(last_path).convert("RGB"))
                for _ in range(per_object):
                    yield street_crop(rgb, obj, rng)

        return _frozen(net, views(), len(owners), "street crops", start)

    key = [[s["image_path"] for s in scenes], product_ids, per_object, seed, SIZE, net.backbone_name, "street-v1",
           *_cut(net, start)]
    return cached(cache_dir, "embedder-street", key, build), owners


def pipeline_street_features(
    net: torch.nn.Module, scenes: list[dict[str, Any]], product_ids: list[str], cache_dir: Path,
    start: int | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Frozen features of fine mode's own cut-out of every scene garment the shipped detector finds (the detection
    matching it, cut by the shipped segmenter's mask), and each cut-out's product index; missed garments give none."""
    from fashion_search.core.settings import Settings
    from fashion_search.evaluation.embedding import street_garments
    from fashion_search.pipeline.components import temporary_pipeline

    settings = Settings(torch_threads=0, cpu_runtime="torchscript", detector_url="", segmenter_url="", embedder_url="")
    index = {pid: i for i, pid in enumerate(product_ids)}

    with temporary_pipeline(settings, "fs-train-street-") as pipeline:

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            cutouts, owners, total = street_garments(pipeline, scenes, index)
            log.info("fine mode cut %d of %d scene garments", len(cutouts), total)
            feats = _frozen(net, (_resize(c) for c in cutouts), len(cutouts), "pipeline street crops", start)
            return feats, torch.tensor(owners, dtype=torch.long)

        key = [[s["image_path"] for s in scenes], product_ids, pipeline.detector.model_name,
               pipeline.segmenter.model_name, settings.detector_min_score, settings.max_garments,
               settings.work_max_side, SIZE, net.backbone_name, "pipeline-street-v1", *_cut(net, start)]
        feats, owners = cached(cache_dir, "embedder-pipeline-street", key, build)
    return feats, owners.numpy()
