"""Cosine distances of the shipped image vector that FS_DUPLICATE_DISTANCE is chosen from: a photo against its
re-encoded / resized copy, and each photo against the nearest photo of another product (clothing-small train, the
first PER_CLASS photos of each class; variants of every STEP-th). Usage:
.venv/bin/python tools/measure_duplicate_distance.py [PER_CLASS (default 20)] [STEP (default 4)]"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_search.core.domain import IMAGE_VECTOR
from fashion_search.core.settings import Settings
from fashion_search.pipeline.components import build_pipeline

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "clothing-small" / "train"
THRESHOLDS = (0.005, 0.01, 0.015, 0.02, 0.03)
VARIANTS = {"jpeg85_same_size": (85, 1.0), "jpeg70_resize80": (70, 0.8), "jpeg50_resize50": (50, 0.5)}


def variant(img: Image.Image, quality: int, scale: float) -> Image.Image:
    """The photo resized and saved again as JPEG."""
    small = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def main() -> None:
    """Print the distances as JSON."""
    per_class = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    step = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    paths = [p for c in sorted(ROOT.iterdir()) for p in sorted(c.glob("*.jpg"))[:per_class]]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), index_backend="edge", search_url="", detector_url="",
                            segmenter_url="", embedder_url="")
        pipe = build_pipeline(settings)

        def vectors(images: list[Image.Image]) -> np.ndarray:
            out = [v.vectors[IMAGE_VECTOR] for i in range(0, len(images), 16)
                   for v in pipe.catalog_vectors(images[i:i + 16], with_garment=False)]
            a = np.asarray(out, np.float32)
            return a / np.linalg.norm(a, axis=1, keepdims=True)

        imgs = [Image.open(p).convert("RGB") for p in paths]
        base = vectors(imgs)
        res: dict[str, object] = {"photos": len(paths), "model": pipe.vectors_model()}
        for name, (quality, scale) in VARIANTS.items():
            d = 1 - np.sum(vectors([variant(im, quality, scale) for im in imgs[::step]]) * base[::step], axis=1)
            res[name] = {"p50": float(np.median(d)), "p95": float(np.percentile(d, 95)), "max": float(d.max()),
                         "found_at": {str(t): float((d <= t).mean()) for t in THRESHOLDS}}
        sim = base @ base.T
        np.fill_diagonal(sim, -2)
        nearest = 1 - sim.max(axis=1)
        res["nearest_other_product"] = {"min": float(nearest.min()), "p1": float(np.percentile(nearest, 1)),
                                        "p50": float(np.median(nearest))}
        res["distinct_under"] = {str(t): float((nearest <= t).mean()) for t in THRESHOLDS}
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
