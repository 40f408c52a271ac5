"""Score the v0 detector on an ImageFolder (default: the validation split).

    python -m fashion_search.services.detector.training.evaluate [--data DIR] [--limit N]

Prints the head's accuracy on whole photos (overall and per class), the category accuracy of the
detector's best detection, and the mean detection and segmentation time per image.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_search.core.settings import Settings
from fashion_search.services.detector.head import CATEGORIES
from fashion_search.services.detector.model import GarmentDetector
from fashion_search.services.detector.training.head import list_images
from fashion_search.services.segmenter.model import GarmentSegmenter

DEFAULT_DATA = Path("/work/shared/data/clothing-small/validation")
BATCH_SIZE = 32


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: print head accuracy, detection accuracy and per-image timings."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder to score (never train/)")
    parser.add_argument("--limit", type=int, default=0, help="at most N images per class (0 = all)")
    args = parser.parse_args(argv)

    settings = Settings()
    detector = GarmentDetector(settings)
    segmenter = GarmentSegmenter(settings)
    detector.load()
    segmenter.load()
    paths, labels = list_images(args.data, CATEGORIES)
    if args.limit > 0:
        keep = np.concatenate([np.flatnonzero(labels == c)[:args.limit] for c in np.unique(labels)])
        paths, labels = [paths[i] for i in keep], labels[keep]
    images = [Image.open(p).convert("RGB") for p in paths]

    # The head alone, on whole photos (what train_head scores as "full").
    features = np.concatenate([
        detector.backbone.forward(images[i:i + BATCH_SIZE]).pooled for i in range(0, len(images), BATCH_SIZE)
    ])
    predicted = detector.head.logits(features).argmax(axis=1)
    print(f"head accuracy (whole photo): {(predicted == labels).mean():.3f} on {len(labels)} images")
    for i, name in enumerate(detector.head.classes):
        members = labels == i
        if members.any():
            print(f"  {name:<10} {(predicted[members] == i).mean():.3f}  (n={members.sum()})")

    detect_s: list[float] = []
    segment_s: list[float] = []
    boxes_seen = 0
    correct = 0
    for image, label in zip(images, labels, strict=True):
        start = time.perf_counter()
        found = detector.detect(image, min_score=0.0)
        detect_s.append(time.perf_counter() - start)
        correct += bool(found) and found[0].category == detector.head.classes[label]
        start = time.perf_counter()
        segmenter.segment(image, [d.box for d in found])
        segment_s.append(time.perf_counter() - start)
        boxes_seen += len(found)
    n = len(images)
    print(f"detector best-detection category accuracy: {correct / n:.3f}")
    print(f"detection time per image: mean {1000 * np.mean(detect_s):.1f} ms, "
          f"p95 {1000 * np.quantile(detect_s, 0.95):.1f} ms")
    print(f"segmentation time per image: mean {1000 * np.mean(segment_s):.1f} ms "
          f"({boxes_seen / n:.2f} boxes per image, {1000 * sum(segment_s) / max(1, boxes_seen):.1f} ms per box)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
