"""Train the CenterNet-style garment detector head on generated scenes.

    SRC=../shared/data/clothing-small
    python -m fashion_search.datasets.scenes --source $SRC/train --out data/scenes/train --n 4000 --seed 1
    python -m fashion_search.datasets.scenes --source $SRC/validation --out data/scenes/validation --n 500 --seed 2
    fashion-search train detector --scenes data/scenes/train --val data/scenes/validation --photos $SRC/train

The backbone is frozen, so its features are computed once per scene and cached; only the small head is trained
(mirroring is applied to the cached feature maps and targets). The epoch count is chosen on a split of the train
scenes (those showing any of a seeded HOLDOUT share of the products; the rest never show them, as the validation
scenes show only validation products), then the head is retrained on all train scenes; mAP@0.5 per class on the
validation scenes (validation photos only) is reported once, at the end, and never used for a choice.

Variants with a second stage (centernet-v3) then train the box head the same way: on the proposals of the head fit
on the split, its epoch count and scoring chosen on the held-out part, then again on all train scenes. Their
detection threshold is the one with the best F2 (recall counts twice) on the held-out scenes, for both stages
trained by the same recipe on the fit scenes alone.

The train product photos themselves (--photos, those with a usable garment mask) join the scenes as one-garment
scenes: shoppers also search with frame-filling product photos, which a detector trained on pasted garments alone
breaks into parts. They are split by product like the scenes (the scene split is unchanged); the log reports
held-out scenes and photos apart. The shipped centernet-v3 was trained this way (--photos '' for scenes only).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from fashion_search.core.domain import Box
from fashion_search.core.feature_cache import cached
from fashion_search.datasets.scenes import load_scenes, product_photo_scenes
from fashion_search.datasets.splits import split_products
from fashion_search.services.detector.box_head import BoxHead, Proposal, Scoring
from fashion_search.services.detector.centernet import (
    STRIDE,
    VARIANTS,
    CenterHead,
    Pyramid,
    Variant,
    decode,
    preprocess,
)
from fashion_search.services.detector.head import CATEGORIES
from fashion_search.services.detector.metrics import detection_map, f_at_threshold
from fashion_search.services.detector.training.box_head import (
    THRESHOLD_F_BETA,
    choose_min_score,
    detect_all,
    proposals_of,
    train_box_head,
    truths_of,
)
from fashion_search.services.detector.training.common import mirrored_features, one_cycle, train_epoch

log = logging.getLogger("train-detector")
SIZE_WEIGHT = 1.0
OFFSET_WEIGHT = 1.0
EVAL_MIN_SCORE = 0.05
CACHE_BATCH = 16  # low threshold for mAP: the precision/recall curve needs the weak detections too
HOLDOUT = 0.1  # share of the train products whose scenes pick the epoch count (about a quarter of the scenes)


@torch.inference_mode()
def cache_pyramid(variant: Variant, scenes: list[dict[str, Any]], cache_dir: Path) -> tuple[torch.Tensor, ...]:
    """Frozen features (float16, N×C×H×W, stride 16 and 32) of every scene; cached on disk."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        pyramid = Pyramid(variant)
        mids, deeps = [], []
        start = time.time()
        for i in range(0, len(scenes), CACHE_BATCH):
            # Upright (EXIF), as the annotations of product photos are; generated scenes carry no orientation.
            x = torch.cat([preprocess(ImageOps.exif_transpose(Image.open(s["image_path"])), variant.input_size)
                           for s in scenes[i:i + CACHE_BATCH]])
            mid, deep = pyramid(x)
            mids.append(mid.half())
            deeps.append(deep.half())
            log.info("cached %d/%d scenes (%.0f s)", min(i + CACHE_BATCH, len(scenes)), len(scenes),
                     time.time() - start)
        return torch.cat(mids), torch.cat(deeps)

    key = [[s["image_path"] for s in scenes], variant.name, variant.input_size]
    return cached(cache_dir, "detector-pyramid", key, build)


ObjectTarget = tuple[int, int, float, float, float, float]


def targets(scene: dict[str, Any], flipped: bool, grid: int) -> tuple[np.ndarray, list[ObjectTarget]]:
    """Gaussian centre heatmap (C×G×G) and, per object, (cell x, cell y, log w, log h, offset x, offset y)."""
    heat = np.zeros((len(CATEGORIES), grid, grid), np.float32)
    objs = []
    sx, sy = grid / scene["width"], grid / scene["height"]
    ys, xs = np.mgrid[0:grid, 0:grid]
    for obj in scene["objects"]:
        x0, y0, x1, y1 = obj["box"]
        if flipped:
            x0, x1 = scene["width"] - x1, scene["width"] - x0
        w, h = (x1 - x0) * sx, (y1 - y0) * sy
        cx, cy = (x0 + x1) / 2 * sx, (y0 + y1) / 2 * sy
        gx, gy = min(int(cx), grid - 1), min(int(cy), grid - 1)
        sigma = max(0.5, min(w, h) / 6)
        c = CATEGORIES.index(obj["category"])
        heat[c] = np.maximum(heat[c], np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * sigma**2)))
        objs.append((gx, gy, math.log(max(w, 0.1)), math.log(max(h, 0.1)), cx - gx, cy - gy))
    return heat, objs


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of object centres."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(prob) * (1 - prob) ** 2 * pos
    neg_loss = -torch.log(1 - prob) * prob**2 * (1 - target) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def evaluate(
    head: CenterHead, feats: tuple, scenes: list[dict[str, Any]], members: np.ndarray | None = None
) -> tuple[float, dict[str, float], float]:
    """mAP@0.5 per class and class-agnostic AP@0.5 on cached (unflipped) features of the scenes (or those members)."""
    head.eval()
    preds, truths = [], []
    rows = range(len(scenes)) if members is None else members
    with torch.inference_mode():
        for i in rows:
            scene = scenes[i]
            heat, size, offset = head(feats[0][i:i + 1].float(), feats[1][i:i + 1].float())
            preds.append(decode(heat, size, offset, scene["width"], scene["height"], EVAL_MIN_SCORE))
            truths.append([(Box(*o["box"]), o["category"]) for o in scene["objects"]])
    mean, per_class = detection_map(preds, truths)
    agnostic, _ = detection_map(preds, truths, class_agnostic=True)
    return mean, per_class, agnostic


def train_head(
    variant: Variant, feats: tuple, labels: list, members: np.ndarray, epochs: int, batch: int, seed: int,
    scenes: list[dict[str, Any]], holdout: np.ndarray | None = None,
) -> tuple[CenterHead, list[float]]:
    """Train a head on the member scenes; with a holdout, also its mAP@0.5 after each epoch (and the head is the
    best epoch's)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = CenterHead(deep_channels=variant.deep_channels)
    opt, sched = one_cycle(head.parameters(), 2e-3, epochs, len(members), batch)
    history: list[float] = []
    best_state: dict[str, torch.Tensor] = {}

    def loss_of(idx: np.ndarray, flip: np.ndarray) -> torch.Tensor:
        heat_t = torch.from_numpy(np.stack([labels[i][f][0] for i, f in zip(idx, flip, strict=True)]))
        heat, size, offset = head(*mirrored_features(feats, idx, flip))
        loss = focal_loss(heat, heat_t)
        reg, n = torch.zeros(()), 0
        for k, (i, f) in enumerate(zip(idx, flip, strict=True)):
            for gx, gy, lw, lh, ox, oy in labels[i][f][1]:
                reg = reg + SIZE_WEIGHT * (size[k, :, gy, gx] - torch.tensor([lw, lh])).abs().sum()
                reg = reg + OFFSET_WEIGHT * (offset[k, :, gy, gx] - torch.tensor([ox, oy])).abs().sum()
                n += 1
        return loss + reg / max(n, 1)

    for epoch in range(epochs):
        mean_loss, seconds = train_epoch(head, members, batch, rng, opt, sched, loss_of)
        msg = f"epoch {epoch + 1}/{epochs} loss {mean_loss:.3f} ({seconds:.0f} s)"
        if holdout is not None:
            mean, _, agnostic = evaluate(head, feats, scenes, holdout)
            history.append(mean)
            if mean >= max(history):
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
            msg += f" train-holdout mAP@0.5 {mean:.4f} (class-agnostic AP {agnostic:.4f})"
        log.info(msg)
    if best_state:
        head.load_state_dict(best_state)
    head.eval()
    return head, history


def split_scenes(scenes: list[dict[str, Any]], seed: int, defining: int | None = None) -> np.ndarray:
    """Scenes showing any of a seeded, class-stratified HOLDOUT share of the products (boolean mask); the products
    are those of the first `defining` scenes (all by default), so added scenes do not move the split.

    Held-out scenes then test what validation tests: garments whose products the fit never saw.
    """
    products = sorted({(o["category"], o["product_id"]) for s in scenes[:defining] for o in s["objects"]})
    categories = np.array([c for c, _ in products])
    held_products = {p for (_, p), held in zip(products, split_products(categories, seed, HOLDOUT), strict=True)
                     if held}
    return np.array([any(o["product_id"] in held_products for o in s["objects"]) for s in scenes], dtype=bool)


def holdout_report(
    head: BoxHead, scoring: Scoring, feats: tuple, scenes: list[dict[str, Any]], proposals: list[list[Proposal]],
    rows: np.ndarray, min_score: float,
) -> dict[str, float]:
    """Class-agnostic F2, precision and recall of fine mode's garments at min_score in the scenes of rows, and how
    many garments it searches per scene against how many there are."""
    from fashion_search.pipeline.search_pipeline import distinct_garments

    found = [distinct_garments([d for d in f if d.score >= min_score])
             for f in detect_all(head, feats, scenes, proposals, rows, [scoring])[0]]
    truths = truths_of(scenes, rows)
    f_beta, precision, recall = f_at_threshold(found, truths, min_score, THRESHOLD_F_BETA)
    return {"scenes": len(rows), "f_beta": round(f_beta, 4), "precision": round(precision, 4),
            "recall": round(recall, 4), "garments_per_scene": round(float(np.mean([len(t) for t in truths])), 3),
            "searched_per_scene": round(float(np.mean([len(f) for f in found])), 3)}


def build_parser() -> argparse.ArgumentParser:
    """Options of `fashion-search train detector` (also `python -m fashion_search.services.detector.training.train`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="centernet-v3")
    parser.add_argument("--scenes", default="data/scenes/train")
    parser.add_argument("--val", default="data/scenes/validation")
    # Without product photos a detector breaks a frame-filling photo into several garments
    # (docs/decisions/2026-12-03-detector-product-photos.md).
    parser.add_argument("--photos", default="../shared/data/clothing-small/train",
                        help="the train product photos, added as one-garment scenes ('' for scenes only)")
    parser.add_argument("--photo-masks", default="",
                        help="garment mask cache of those photos (default: SCENES/garment_masks.jsonl)")
    parser.add_argument("--out", default="", help="weights file (default: the variant's shipped file)")
    parser.add_argument("--epochs", type=int, default=8, help="most epochs tried on the train split")
    parser.add_argument("--box-epochs", type=int, default=8, help="most epochs tried for the second stage")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Cache features, train the head, report held-out mAP, save float16 weights."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = VARIANTS[args.variant]
    grid = variant.input_size // STRIDE
    train_scenes, val_scenes = load_scenes(args.scenes), load_scenes(args.val)
    train_feats = cache_pyramid(variant, train_scenes, Path(args.cache_dir))
    val_feats = cache_pyramid(variant, val_scenes, Path(args.cache_dir))
    n_generated = len(train_scenes)
    if args.photos:
        photos = product_photo_scenes(args.photos, args.photo_masks or Path(args.scenes) / "garment_masks.jsonl")
        photo_feats = cache_pyramid(variant, photos, Path(args.cache_dir))
        train_feats = tuple(torch.cat(pair) for pair in zip(train_feats, photo_feats, strict=True))
        train_scenes = train_scenes + photos
        log.info("added %d product photos to %d generated scenes", len(photos), n_generated)
    labels = [[targets(s, False, grid), targets(s, True, grid)] for s in train_scenes]

    held = split_scenes(train_scenes, args.seed, n_generated)
    fit, hold = np.flatnonzero(~held), np.flatnonzero(held)
    log.info("split: %d/%d train scenes (fit/held out)", len(fit), len(hold))
    fit_head, history = train_head(variant, train_feats, labels, fit, args.epochs, args.batch, args.seed,
                                   train_scenes, hold)
    best_epochs = int(np.argmax(history)) + 1
    log.info("best train-holdout mAP@0.5 %.4f after %d epochs; retraining on all train scenes", max(history),
             best_epochs)
    everything = np.arange(len(train_scenes))
    head, _ = train_head(variant, train_feats, labels, everything, best_epochs, args.batch, args.seed, train_scenes)
    meta: dict[str, Any] = {
        "variant": variant.name, "input_size": variant.input_size, "deep": variant.deep, "epochs": best_epochs,
        "max_epochs": args.epochs, "holdout_map50": [round(v, 4) for v in history],
        "train_scenes": n_generated, "train_photos": len(train_scenes) - n_generated, "val_scenes": len(val_scenes),
        "seed": args.seed,
    }
    saved = {"state": _half(head.state_dict())}
    if variant.box_head:
        # The split's proposals come from the head fit on the split, so held-out scenes get unseen-scene proposals.
        fit_props = proposals_of(fit_head, train_feats, train_scenes, everything)
        _, box_history = train_box_head(train_feats, train_scenes, fit_props, fit, args.box_epochs, args.batch,
                                        args.seed, hold)
        best = int(np.argmax([m for m, _ in box_history]))
        box_epochs, scoring = best + 1, box_history[best][1]
        log.info("best box-head train-holdout mAP@0.5 %.4f after %d epochs with %s; retraining on all train scenes",
                 box_history[best][0], box_epochs, scoring)
        all_props = proposals_of(head, train_feats, train_scenes, everything)
        box_head, _ = train_box_head(train_feats, train_scenes, all_props, everything, box_epochs, args.batch,
                                     args.seed)
        val_rows = np.arange(len(val_scenes))
        val_props = proposals_of(head, val_feats, val_scenes, val_rows)
        found = detect_all(box_head, val_feats, val_scenes, val_props, val_rows, [scoring])[0]
        truths = truths_of(val_scenes, val_rows)
        mean, per_class = detection_map(found, truths)
        agnostic, _ = detection_map(found, truths, class_agnostic=True)
        saved["box_state"] = _half(box_head.state_dict())
        # The threshold comes from the shipped recipe (both stages, their chosen epochs) trained on the fit split
        # alone and run on the held-out scenes: unseen products score lower than the ones a head was trained on.
        recipe_head, _ = train_head(variant, train_feats, labels, fit, best_epochs, args.batch, args.seed,
                                    train_scenes)
        recipe_props = proposals_of(recipe_head, train_feats, train_scenes, everything)
        recipe_box, _ = train_box_head(train_feats, train_scenes, recipe_props, fit, box_epochs, args.batch,
                                       args.seed)
        min_score, f_beta, precision, recall = choose_min_score(recipe_box, scoring, train_feats, train_scenes,
                                                                recipe_props, hold)
        log.info("detection threshold %.4f: best train-holdout F%g %.4f (precision %.4f, recall %.4f)", min_score,
                 THRESHOLD_F_BETA, f_beta, precision, recall)
        held_parts = {"scenes": hold[hold < n_generated], "photos": hold[hold >= n_generated]}
        meta["holdout_at_min_score"] = {
            part: holdout_report(recipe_box, scoring, train_feats, train_scenes, recipe_props, rows, min_score)
            for part, rows in held_parts.items() if len(rows)
        }
        log.info("at that threshold, held out: %s", json.dumps(meta["holdout_at_min_score"]))
        meta |= {"min_score": round(min_score, 4),
                 "min_score_rule": f"best class-agnostic F{THRESHOLD_F_BETA:g} on the train holdout",
                 "holdout_f_beta": round(f_beta, 4), "holdout_precision": round(precision, 4),
                 "holdout_recall": round(recall, 4),
                 "box_epochs": box_epochs, "box_max_epochs": args.box_epochs, "scoring": asdict(scoring),
                 "box_holdout_map50": [round(m, 4) for m, _ in box_history]}
    else:
        mean, per_class, agnostic = evaluate(head, val_feats, val_scenes)
    meta |= {"map50": round(mean, 4), "agnostic_ap50": round(agnostic, 4),
             "per_class_ap50": {k: round(v, 4) for k, v in per_class.items()}}
    out = Path(args.out) if args.out else variant.weights
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved | {"meta": meta}, out)
    log.info("saved %s: %s", out, json.dumps(meta))


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors as float16: the shipped files are half the size, detections unchanged within noise."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


if __name__ == "__main__":
    main()
