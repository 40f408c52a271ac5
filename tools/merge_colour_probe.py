"""Same-kind boxes that fine mode merges by containment, and whether their colours tell one garment from two.

For every pair of same-kind detections with at least FS_GARMENT_MERGE_CONTAINMENT of the smaller box inside the
larger, the colour agreement is the Bhattacharyya coefficient of the smaller box's HSV histogram and that of the
rest of the larger box. On product photos (one garment each) every such pair is one garment; on generated scenes a
pair is harmful when merging loses a garment a box had found (the union box overlaps it with IoU < 0.5).

    python tools/merge_colour_probe.py --photos DIR --scenes DIR --out rows.json
    python tools/merge_colour_probe.py --rows rows.json     # decisions per threshold
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from fashion_search.core.domain import Box, Detection
from fashion_search.core.garment_colour import colour_histogram
from fashion_search.core.settings import Settings

THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


def agreement(image: Any, inner: Box, outer: Box) -> float:
    """Bhattacharyya coefficient of the colours in inner and in the rest of outer (1 when the rest is under 5 %)."""
    ox0, oy0, ox1, oy1 = outer.clip(image.width, image.height).as_int()
    ix0, iy0, ix1, iy1 = inner.clip(image.width, image.height).as_int()
    rest = np.ones((max(0, oy1 - oy0), max(0, ox1 - ox0)), dtype=bool)
    rest[max(0, iy0 - oy0):max(0, iy1 - oy0), max(0, ix0 - ox0):max(0, ix1 - ox0)] = False
    if rest.sum() < 0.05 * max(1, rest.size):
        return 1.0
    return float(np.sqrt(colour_histogram(image, inner) * colour_histogram(image, outer, rest)).sum())


def candidates(dets: list[Detection], settings: Settings) -> list[tuple[Box, Box]]:
    """(smaller, larger) boxes of the same-kind pairs that merge by containment."""
    from fashion_search.pipeline.kinds import _containment

    out = []
    for i, a in enumerate(dets):
        for b in dets[i + 1:]:
            if a.category == b.category and _containment(a.box, b.box) >= settings.garment_merge_containment:
                out.append((a.box, b.box) if a.box.area <= b.box.area else (b.box, a.box))
    return out


def record(args: argparse.Namespace) -> None:
    """Every candidate pair of the photos and scenes with its agreement and label (1: one garment, 0: harmful)."""
    from fashion_search.core.catalog import load_catalog
    from fashion_search.core.images import decode_image
    from fashion_search.datasets.scenes import load_scenes
    from fashion_search.pipeline.components import build_detector
    from fashion_search.pipeline.search_pipeline import distinct_garments, prepare

    settings = Settings()
    detector = build_detector(settings)
    rows: list[dict[str, Any]] = []
    for rec in load_catalog(args.photos) if args.photos else []:
        image = prepare(decode_image(Path(rec.image_path).read_bytes(), settings), settings)
        found = distinct_garments(detector.detect(image, settings.detector_min_score))
        for small, large in candidates(found, settings):
            rows.append({"source": "photo", "label": 1, "agreement": agreement(image, small, large)})
    for scene in load_scenes(args.scenes) if args.scenes else []:
        raw = decode_image(Path(scene["image_path"]).read_bytes(), settings)
        image = prepare(raw, settings)
        scale = image.width / raw.width
        truths = [Box(*(v * scale for v in o["box"])) for o in scene["objects"]]
        found = distinct_garments(detector.detect(image, settings.detector_min_score))
        for small, large in candidates(found, settings):
            union = Box(min(small.x0, large.x0), min(small.y0, large.y0), max(small.x1, large.x1),
                        max(small.y1, large.y1))
            matched = {max(range(len(truths)), key=lambda k, b=b: b.iou(truths[k])) for b in (small, large)}
            lost = [k for k in matched if max(small.iou(truths[k]), large.iou(truths[k])) >= 0.5
                    and union.iou(truths[k]) < 0.5]
            rows.append({"source": "scene", "label": 0 if lost else 1, "agreement": agreement(image, small, large)})
    Path(args.out).write_text(json.dumps(rows))
    print(f"{len(rows)} candidate pairs written to {args.out}")


def replay(args: argparse.Namespace) -> None:
    """Per threshold: one-garment pairs left apart (duplicates kept) and harmful pairs still merged."""
    rows = json.loads(Path(args.rows).read_text())
    print("| threshold | photo pairs left apart | scene one-garment pairs left apart | harmful pairs merged | wrong |")
    print("|--:|--:|--:|--:|--:|")
    for t in THRESHOLDS:
        photo = sum(r["agreement"] < t for r in rows if r["source"] == "photo")
        scene = sum(r["agreement"] < t for r in rows if r["source"] == "scene" and r["label"] == 1)
        harmful = sum(r["agreement"] >= t for r in rows if r["label"] == 0)
        print(f"| {t:g} | {photo} | {scene} | {harmful} | {photo + scene + harmful} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="", help="product photos (one garment each)")
    parser.add_argument("--scenes", default="", help="generated scenes")
    parser.add_argument("--out", default="merge-pairs.json")
    parser.add_argument("--rows", default="", help="replay a recording instead")
    args = parser.parse_args()
    if args.rows:
        replay(args)
    else:
        record(args)


if __name__ == "__main__":
    main()
