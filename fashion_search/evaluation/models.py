"""Detector and segmenter evaluation on generated scenes: mAP@0.5 per class, mask mIoU and pixel accuracy; and
how many garments fine mode finds in frame-filling product photos."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from fashion_search.core.domain import Box, Detection, Detector, Segmenter
from fashion_search.core.settings import Settings
from fashion_search.datasets.scenes import decode_mask, load_scenes, load_upright_rgb, product_photo_scenes
from fashion_search.services.detector.metrics import detection_map

EVAL_MIN_SCORE = 0.05  # keep weak detections: the precision/recall curve needs them
PHOTO_IOU = 0.5
PART_OF_GARMENT = 0.8  # a box this much inside the true garment's box shows (part of) that garment


def mask_scores(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """IoU and pixel accuracy of a box mask against the true one of the same box (an empty union has IoU 1)."""
    pred = np.asarray(mask, bool)[: truth.shape[0], : truth.shape[1]]
    union = np.logical_or(pred, truth).sum()
    iou = float(np.logical_and(pred, truth).sum() / union) if union else 1.0
    return iou, float((pred == truth).mean())


def score_true_boxes(segmenter: Segmenter, image: Image.Image, scene: dict[str, Any]) -> tuple[list, list, float]:
    """Segment a scene's garments given their true boxes: per-garment IoU and pixel accuracy, ms per box."""
    boxes = [Box(*o["box"]) for o in scene["objects"]]
    start = time.perf_counter()
    masks = segmenter.segment(image, boxes)
    ms_per_box = (time.perf_counter() - start) * 1000 / max(1, len(boxes))
    ious, accs = [], []
    for obj, box, mask in zip(scene["objects"], boxes, masks, strict=True):
        x0, y0, x1, y1 = box.clip(image.width, image.height).as_int()
        iou, acc = mask_scores(mask, decode_mask(obj)[y0:y1, x0:x1])
        ious.append(iou)
        accs.append(acc)
    return ious, accs, ms_per_box


def product_photo_report(
    detector: Detector, settings: Settings, photos_dir: str, mask_cache: Path | None
) -> dict[str, Any]:
    """Fine mode's garments in each product photo with a usable mask (one garment each): how many per photo, and
    whether one of them is the garment (IoU ≥ 0.5 with its mask's box; named right too)."""
    from fashion_search.pipeline.search_pipeline import select_garments

    photos = product_photo_scenes(photos_dir, mask_cache)
    counts, unmerged, duplicates, unmerged_duplicates, found, named = [], [], 0, 0, 0, 0
    for photo in tqdm(photos, unit="photo", desc="product photos"):
        image = Image.fromarray(load_upright_rgb(photo["image_path"]))
        detections = detector.detect(image, settings.detector_min_score)
        garments = select_garments(detections, settings)
        before = select_garments(detections, settings, merge=False)
        (obj,) = photo["objects"]
        truth = Box(*obj["box"])
        best = max(garments, key=lambda d: d.box.iou(truth), default=None)
        hit = best is not None and best.box.iou(truth) >= PHOTO_IOU
        counts.append(len(garments))
        unmerged.append(len(before))
        duplicates += _parts_of(garments, truth)
        unmerged_duplicates += _parts_of(before, truth)
        found += hit
        named += hit and best is not None and best.category == obj["category"]
    n = max(1, len(photos))
    return {"photos": len(photos), "garments_per_photo": round(statistics.fmean(counts or [0]), 3),
            "one_garment_share": round(sum(c == 1 for c in counts) / n, 4), "found": round(found / n, 4),
            "found_named": round(named / n, 4), "duplicates": duplicates,
            "garments_per_photo_unmerged": round(statistics.fmean(unmerged or [0]), 3),
            "one_garment_share_unmerged": round(sum(c == 1 for c in unmerged) / n, 4),
            "duplicates_unmerged": unmerged_duplicates}


def _parts_of(garments: list[Detection], truth: Box) -> int:
    """Boxes beyond the first that lie (PART_OF_GARMENT of their area) inside the one true garment: duplicates."""
    inside = 0
    for det in garments:
        b = det.box
        w = min(b.x1, truth.x1) - max(b.x0, truth.x0)
        h = min(b.y1, truth.y1) - max(b.y0, truth.y0)
        inside += b.area > 0 and max(0.0, w) * max(0.0, h) / b.area >= PART_OF_GARMENT
    return max(0, inside - 1)


def scene_duplicates(garments: list[Detection], truths: list[Box]) -> int:
    """Boxes matching (IoU ≥ PHOTO_IOU) a true garment that an earlier box matched already."""
    matched: set[int] = set()
    duplicates = 0
    for det in garments:
        best = max(range(len(truths)), key=lambda i: det.box.iou(truths[i]), default=None)
        if best is None or det.box.iou(truths[best]) < PHOTO_IOU:
            continue
        duplicates += best in matched
        matched.add(best)
    return duplicates


def evaluate_models(settings: Settings, scenes_dir: str, limit: int = 0, photos_dir: str = "") -> dict[str, Any]:
    """Run the configured in-process detector and segmenter over held-out scenes (and product photos if given)."""
    from fashion_search.pipeline.components import build_segmenter, local_detector
    from fashion_search.pipeline.search_pipeline import select_garments

    scenes = load_scenes(scenes_dir)[: limit or None]
    detector = local_detector(settings.model_copy(update={"detector_url": ""}))
    segmenter = build_segmenter(settings.model_copy(update={"segmenter_url": ""}))
    preds, truths = [], []
    ious, accs, det_ms, seg_ms = [], [], [], []
    counts = {"merged": [0, 0], "unmerged": [0, 0]}  # fine mode's garments and duplicates among them
    for scene in tqdm(scenes, unit="scene", desc="detect + segment"):
        image = Image.open(scene["image_path"]).convert("RGB")
        start = time.perf_counter()
        preds.append(detector.detect(image, EVAL_MIN_SCORE))
        det_ms.append((time.perf_counter() - start) * 1000)
        truths.append([(Box(*o["box"]), o["category"]) for o in scene["objects"]])
        at_threshold = detector.detect(image, settings.detector_min_score)
        for name, merge in (("merged", True), ("unmerged", False)):
            garments = select_garments(at_threshold, settings, merge)
            counts[name][0] += len(garments)
            counts[name][1] += scene_duplicates(garments, [b for b, _ in truths[-1]])
        scene_ious, scene_accs, ms_per_box = score_true_boxes(segmenter, image, scene)
        ious += scene_ious
        accs += scene_accs
        seg_ms.append(ms_per_box)
    mean_ap, per_class = detection_map(preds, truths)
    agnostic, _ = detection_map(preds, truths, class_agnostic=True)
    photos = {}
    if photos_dir:
        # The scene generator's mask cache holds the photos' masks already when the scenes come from them.
        cache = Path(scenes_dir) / "garment_masks.jsonl"
        photos = {"product_photos": product_photo_report(detector, settings, photos_dir, cache)}
    return photos | {
        "scenes": len(scenes), "garments": len(ious), "detector": settings.detector_model,
        "segmenter": getattr(segmenter, "name", settings.segmenter_model),
        "map50": round(mean_ap, 4), "agnostic_ap50": round(agnostic, 4),
        "per_class_ap50": {k: round(v, 4) for k, v in per_class.items()},
        "mask_miou": round(statistics.fmean(ious), 4), "mask_pixel_accuracy": round(statistics.fmean(accs), 4),
        "detect_ms_median": round(statistics.median(det_ms), 1),
        "segment_ms_per_box_median": round(statistics.median(seg_ms), 1),
        "fine_garments_per_scene": round(counts["merged"][0] / max(1, len(scenes)), 3),
        "fine_duplicates": counts["merged"][1],
        "fine_garments_per_scene_unmerged": round(counts["unmerged"][0] / max(1, len(scenes)), 3),
        "fine_duplicates_unmerged": counts["unmerged"][1],
    }


def models_markdown(result: dict[str, Any], command: str) -> str:
    """Markdown section for docs/EVALUATION.md."""
    lines = [
        f"## Detector `{result['detector']}` and segmenter `{result['segmenter']}` on held-out generated scenes", "",
        f"Command: `{command}`", "",
        f"{result['scenes']} scenes, {result['garments']} garments. Detection mAP@0.5 {result['map50']:.3f} "
        f"(class-agnostic AP@0.5 {result['agnostic_ap50']:.3f}); median detect {result['detect_ms_median']} ms per "
        f"scene. Segmentation given the true box: mIoU {result['mask_miou']:.3f}, pixel accuracy "
        f"{result['mask_pixel_accuracy']:.3f}, median {result['segment_ms_per_box_median']} ms per box.", "",
        f"Fine mode's garments per scene (the detector's threshold, one box per garment: same-kind boxes merged): "
        f"{result['fine_garments_per_scene']:.3f}, {result['fine_duplicates']} duplicates (a second box on a "
        f"garment, IoU ≥ {PHOTO_IOU}); without merging {result['fine_garments_per_scene_unmerged']:.3f}, "
        f"{result['fine_duplicates_unmerged']} duplicates.", "",
        "| class | AP@0.5 |", "|---|---|",
    ]
    lines += [f"| {c} | {ap:.3f} |" for c, ap in result["per_class_ap50"].items()]
    if photos := result.get("product_photos"):
        lines += [
            "", f"Product photos (one frame-filling garment each, {photos['photos']} with a usable mask), fine mode at "
            f"the detector's threshold: {photos['garments_per_photo']:.2f} garments searched per photo, exactly one "
            f"in {photos['one_garment_share']:.1%}; the garment itself found (IoU ≥ {PHOTO_IOU}) in "
            f"{photos['found']:.1%}, named right in {photos['found_named']:.1%}; {photos['duplicates']} duplicate "
            f"boxes (a further box {PART_OF_GARMENT:.0%} inside the garment). Without merging the boxes of one "
            f"garment: "
            f"{photos['garments_per_photo_unmerged']:.2f} per photo, exactly one in "
            f"{photos['one_garment_share_unmerged']:.1%}, {photos['duplicates_unmerged']} duplicate boxes.",
        ]
    return "\n".join(lines) + "\n"
