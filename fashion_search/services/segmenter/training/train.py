"""Train the mask network's decoder on generated scenes (the encoder stays at its ImageNet weights).

    python -m fashion_search.services.segmenter.training.train --scenes data/scenes/train --val data/scenes/validation

Every training garment is cropped VIEWS times with a jittered box (detector boxes are never exact), a random
mirror and colour jitter; the frozen encoder's features of these crops are computed once, so only the decoder
trains. A tenth of the train scenes is held out (true boxes) to pick the epoch; the validation scenes (validation
photos only) are used once at the end, through MaskSegmenter.segment, for the reported mIoU and pixel accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from PIL import Image

from fashion_search.core.domain import Box
from fashion_search.core.feature_cache import cached
from fashion_search.core.settings import Settings
from fashion_search.datasets.scenes import decode_mask, load_scenes
from fashion_search.evaluation.models import mask_scores, score_true_boxes
from fashion_search.services.segmenter.mask_net import (
    INPUT_SIZE,
    OUTPUT_SIZE,
    SKIP_BLOCKS,
    WEIGHTS,
    FrozenEncoder,
    MaskDecoder,
    MaskSegmenter,
    Window,
    box_pixels,
    context_window,
    crop_window,
    input_crop,
    logits_to_mask,
    to_tensor,
)
from fashion_search.services.segmenter.model import MIN_SEGMENT_SIDE

log = logging.getLogger("train-segmenter")

HOLDOUT_FRACTION = 0.1
VIEWS = 2
# Box jitter: with this probability the box centre moves by up to BOX_SHIFT of its size and each side is scaled
# by a factor in BOX_SCALE, like the error of a detector box; otherwise the true box is used.
BOX_JITTER_P = 0.8
BOX_SHIFT = 0.1
BOX_SCALE = (0.87, 1.15)
FLIP_P = 0.5
# Colour jitter of the crop: brightness, contrast (about the crop mean), saturation, per-channel gain.
BRIGHTNESS = 0.2
CONTRAST = 0.2
SATURATION = 0.3
CHANNEL_GAIN = 0.05
ENCODE_BATCH = 8  # the frozen encoder runs fastest per crop in small batches on one CPU thread
EVAL_BATCH = 64
DICE_WEIGHT = 1.0
DICE_SMOOTH = 1.0


@dataclass
class Cached:
    """Frozen-encoder features (float16, one tensor per skip level) of a set of crops, with their soft targets."""

    feats: list[torch.Tensor]
    targets: torch.Tensor  # N×1×(S/2)×(S/2), float16 in [0, 1]


@dataclass
class HeldOut:
    """True-box crops of held-out garments, with what is needed to score their box masks."""

    cached: Cached
    windows: list[Window]
    frames: list[Window]
    truths: list[np.ndarray]


def jitter_box(rng: np.random.Generator, box: list[int]) -> Box:
    """The box with its centre shifted and its sides scaled (with probability BOX_JITTER_P)."""
    x0, y0, x1, y1 = box
    if rng.random() >= BOX_JITTER_P:
        return Box(x0, y0, x1, y1)
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2 + rng.uniform(-BOX_SHIFT, BOX_SHIFT) * w
    cy = (y0 + y1) / 2 + rng.uniform(-BOX_SHIFT, BOX_SHIFT) * h
    w, h = w * rng.uniform(*BOX_SCALE), h * rng.uniform(*BOX_SCALE)
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def colour_jitter(rng: np.random.Generator, crop: np.ndarray) -> np.ndarray:
    """Brightness, contrast, saturation and white-balance jitter of a uint8 RGB crop."""
    rgb = crop.astype(np.float32)
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + (rgb - grey) * rng.uniform(1 - SATURATION, 1 + SATURATION)
    rgb = rgb.mean() + (rgb - rgb.mean()) * rng.uniform(1 - CONTRAST, 1 + CONTRAST)
    rgb = rgb * rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS) * rng.uniform(1 - CHANNEL_GAIN, 1 + CHANNEL_GAIN, 3)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def target_crop(mask: np.ndarray, window: Window) -> np.ndarray:
    """The window of a full-scene bool mask as a soft (S/2)² target (area share of garment per output cell)."""
    part = crop_window(mask, window, False).astype(np.float32)
    return cv2.resize(part, (OUTPUT_SIZE, OUTPUT_SIZE), interpolation=cv2.INTER_AREA)


@torch.inference_mode()
def encode(encoder: FrozenEncoder, crops: list[np.ndarray], targets: list[np.ndarray]) -> Cached:
    """Frozen features of all crops, batch by batch, stored in float16."""
    feats: list[list[torch.Tensor]] = [[] for _ in SKIP_BLOCKS]
    for b in range(0, len(crops), ENCODE_BATCH):
        for level, f in enumerate(encoder(to_tensor(crops[b:b + ENCODE_BATCH]))):
            feats[level].append(f.half())
    target = torch.from_numpy(np.stack(targets))[:, None].half()
    return Cached([torch.cat(f) for f in feats], target)


def detector_boxes(scenes: list[dict[str, Any]], cache_dir: Path) -> list[list[list[float] | None]]:
    """Per scene and garment, the box of the detection fine mode would search for it (the shipped detector's, matched
    with IoU ≥ MATCH_IOU as the street-to-shop evaluation does), or None where none matches; cached."""
    from fashion_search.evaluation.scenes import matching
    from fashion_search.pipeline.components import local_detector
    from fashion_search.pipeline.search_pipeline import fine_mode_garments

    settings = Settings(torch_threads=0, cpu_runtime="torchscript", detector_url="")
    detector = local_detector(settings)

    def build() -> list[list[list[float] | None]]:
        found: list[list[list[float] | None]] = []
        for scene in scenes:
            boxes = [d.box for d in fine_mode_garments(detector, Image.open(scene["image_path"]).convert("RGB"),
                                                       settings)]
            matched = [matching(boxes, Box(*obj["box"])) for obj in scene["objects"]]
            found.append([None if m is None else [boxes[m].x0, boxes[m].y0, boxes[m].x1, boxes[m].y1]
                          for m in matched])
        return found

    key = [[s["image_path"] for s in scenes], detector.model_name, settings.max_garments, "detector-boxes-v1"]
    return cached(cache_dir, "segmenter-detector-boxes", key, build)


def build_training_set(
    encoder: FrozenEncoder, scenes: list[dict[str, Any]], views: int, rng: np.random.Generator,
    found: list[list[list[float] | None]] | None = None,
) -> Cached:
    """VIEWS augmented crops of every garment of the scenes, encoded. With `found` (detector_boxes of the scenes),
    a garment's first view is cut from the detector's box where it has one: detector errors are not uniform jitter."""
    crops, targets = [], []
    start = time.time()
    for n, scene in enumerate(scenes):
        rgb = np.asarray(Image.open(scene["image_path"]).convert("RGB"))
        img_h, img_w = rgb.shape[:2]
        for k, obj in enumerate(scene["objects"]):
            mask = decode_mask(obj)
            for view in range(views):
                detected = found[n][k] if found is not None and view == 0 else None
                box = Box(*detected) if detected is not None else jitter_box(rng, obj["box"])
                frame = box_pixels(box, img_w, img_h)
                if min(frame[2] - frame[0], frame[3] - frame[1]) < MIN_SEGMENT_SIDE:
                    frame = box_pixels(Box(*obj["box"]), img_w, img_h)
                window = context_window(*frame)
                crop, target = input_crop(rgb, window), target_crop(mask, window)
                if rng.random() < FLIP_P:
                    crop, target = crop[:, ::-1], target[:, ::-1]
                crops.append(colour_jitter(rng, crop))
                targets.append(np.ascontiguousarray(target))
        if (n + 1) % 500 == 0:
            log.info("cropped %d/%d scenes (%.0f s)", n + 1, len(scenes), time.time() - start)
    log.info("encoding %d training crops", len(crops))
    cached = encode(encoder, crops, targets)
    log.info("encoded %d crops in %.0f s", len(crops), time.time() - start)
    return cached


def build_held_out(encoder: FrozenEncoder, scenes: list[dict[str, Any]]) -> HeldOut:
    """True-box crops (no augmentation) of the held-out garments, encoded, with their truth box masks."""
    crops, targets, windows, frames, truths = [], [], [], [], []
    for scene in scenes:
        rgb = np.asarray(Image.open(scene["image_path"]).convert("RGB"))
        img_h, img_w = rgb.shape[:2]
        for obj in scene["objects"]:
            mask = decode_mask(obj)
            frame = box_pixels(Box(*obj["box"]), img_w, img_h)
            if min(frame[2] - frame[0], frame[3] - frame[1]) < MIN_SEGMENT_SIDE:
                continue  # the segmenter returns the full box for these: nothing to choose an epoch by
            window = context_window(*frame)
            crops.append(input_crop(rgb, window))
            targets.append(target_crop(mask, window))
            windows.append(window)
            frames.append(frame)
            x0, y0, x1, y1 = frame
            truths.append(mask[y0:y1, x0:x1])
    return HeldOut(encode(encoder, crops, targets), windows, frames, truths)


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft dice (per crop), on the soft targets."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    flat = target.flatten(1)
    dice = 1 - (2 * (prob * flat).sum(1) + DICE_SMOOTH) / (prob.sum(1) + flat.sum(1) + DICE_SMOOTH)
    return bce + DICE_WEIGHT * dice.mean()


@torch.inference_mode()
def held_out_miou(decoder: MaskDecoder, held: HeldOut) -> float:
    """Mean IoU of the box masks (the segmenter's post-processing included) on the held-out garments."""
    decoder.eval()
    ious = []
    n = len(held.truths)
    for b in range(0, n, EVAL_BATCH):
        logits = decoder([f[b:b + EVAL_BATCH].float() for f in held.cached.feats])[:, 0].numpy()
        for k, logit in enumerate(logits):
            i = b + k
            pred = logits_to_mask(logit, held.windows[i], held.frames[i])
            ious.append(mask_scores(pred, held.truths[i])[0])
    return statistics.fmean(ious)


def train(
    train_set: Cached, held: HeldOut, epochs: int, batch: int, lr: float, rng: np.random.Generator
) -> tuple[MaskDecoder, int, list[float]]:
    """Train for up to `epochs` epochs; returns the decoder of the epoch with the best held-out mIoU."""
    decoder = MaskDecoder()
    n = len(train_set.targets)
    per_epoch = n // VIEWS  # an epoch sees each garment about once, in one of its views
    steps_per_epoch = math.ceil(per_epoch / batch)
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    best_state, best_epoch, history = None, 0, []
    for epoch in range(1, epochs + 1):
        decoder.train()
        start, total = time.time(), 0.0
        order = rng.permutation(n)[:per_epoch]
        for s in range(steps_per_epoch):
            idx = torch.from_numpy(np.sort(order[s * batch:(s + 1) * batch]))
            logits = decoder([f[idx].float() for f in train_set.feats])
            loss = loss_fn(logits, train_set.targets[idx].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        miou = held_out_miou(decoder, held)
        history.append(round(miou, 4))
        log.info("epoch %d/%d loss %.4f (%.0f s) held-out mIoU %.4f", epoch, epochs, total / steps_per_epoch,
                 time.time() - start, miou)
        if best_state is None or miou > max(history[:-1]):
            best_state, best_epoch = copy.deepcopy(decoder.state_dict()), epoch
    assert best_state is not None
    decoder.load_state_dict(best_state)
    return decoder.eval(), best_epoch, history


def evaluate_segmenter(segmenter: Any, scenes: list[dict[str, Any]]) -> dict[str, float]:
    """mIoU, pixel accuracy and median ms per box given the true boxes, as `fashion-search eval models` does."""
    ious, accs, ms = [], [], []
    for scene in scenes:
        scene_ious, scene_accs, ms_per_box = score_true_boxes(
            segmenter, Image.open(scene["image_path"]).convert("RGB"), scene
        )
        ious += scene_ious
        accs += scene_accs
        ms.append(ms_per_box)
    return {"miou": round(statistics.fmean(ious), 4), "pixel_accuracy": round(statistics.fmean(accs), 4),
            "ms_per_box_median": round(statistics.median(ms), 1), "garments": len(ious)}


def save(decoder: MaskDecoder, meta: dict[str, Any], path: Path) -> None:
    """Decoder weights in float16 with the meta dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in decoder.state_dict().items()}
    torch.save({"state": state, "meta": meta}, path)


def main(argv: list[str] | None = None) -> None:
    """Encode augmented crops, train the decoder, pick the epoch on held-out train scenes, report, save."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", default="data/scenes/train")
    parser.add_argument("--val", default="data/scenes/validation")
    parser.add_argument("--out", default=str(WEIGHTS))
    parser.add_argument("--epochs", type=int, default=10, help="most epochs; the best on the held-out split is kept")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads (other jobs share the CPU)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N train scenes (quick runs)")
    parser.add_argument("--detector-boxes", action="store_true",
                        help="cut each garment's first view from the shipped detector's box for it, where it finds one")
    parser.add_argument("--cache-dir", default="data/cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    began = time.time()

    scenes = load_scenes(args.scenes)[: args.limit or None]
    order = rng.permutation(len(scenes))
    n_held = max(1, round(len(scenes) * HOLDOUT_FRACTION))
    held_scenes = [scenes[i] for i in sorted(order[:n_held])]
    fit_scenes = [scenes[i] for i in sorted(order[n_held:])]
    encoder = FrozenEncoder()
    found = detector_boxes(fit_scenes, Path(args.cache_dir)) if args.detector_boxes else None
    train_set = build_training_set(encoder, fit_scenes, VIEWS, rng, found)
    held = build_held_out(encoder, held_scenes)
    decoder, best_epoch, history = train(train_set, held, args.epochs, args.batch, args.lr, rng)
    train_seconds = time.time() - began

    meta: dict[str, Any] = {
        "input_size": INPUT_SIZE, "epochs": best_epoch, "max_epochs": args.epochs, "held_out_miou": history,
        "seed": args.seed, "views": VIEWS, "train_scenes": len(fit_scenes), "held_out_scenes": len(held_scenes),
        "train_garments": len(train_set.targets) // VIEWS, "train_seconds": round(train_seconds),
        "detector_boxes": sum(b is not None for row in found for b in row) if found is not None else 0,
    }
    out = Path(args.out)
    save(decoder, meta, out)  # validation goes through the saved float16 weights, as they ship
    segmenter = MaskSegmenter(Settings(torch_threads=0, cpu_runtime="torchscript"), weights=out)
    val_scenes = load_scenes(args.val)
    val = evaluate_segmenter(segmenter, val_scenes)
    meta.update({"validation_scenes": len(val_scenes), "validation_miou": val["miou"],
                 "validation_pixel_accuracy": val["pixel_accuracy"]})
    save(decoder, meta, out)
    log.info("validation (true boxes, %d garments): mIoU %.4f, pixel accuracy %.4f, %.1f ms per box",
             val["garments"], val["miou"], val["pixel_accuracy"], val["ms_per_box_median"])
    log.info("saved %s (%.0f KB) after %.0f s: %s", out, out.stat().st_size / 1024, time.time() - began,
             json.dumps(meta))


if __name__ == "__main__":
    main()
