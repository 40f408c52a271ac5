"""Build the bundled sample catalog from clothing-small/train (seeded, reproducible).

    python -m fashion_search.datasets.make_sample_catalog --source ../shared/data/clothing-small/train
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "sample_catalog"
# Named colours for titles ("Navy t-shirt"); the nearest one to the garment's median colour wins.
PALETTE = {
    "Black": (20, 20, 20), "White": (240, 240, 240), "Grey": (128, 128, 128), "Navy": (30, 40, 90),
    "Blue": (50, 100, 200), "Red": (200, 30, 40), "Pink": (230, 150, 180), "Green": (50, 130, 60),
    "Olive": (110, 110, 50), "Yellow": (230, 210, 60), "Orange": (240, 140, 40), "Brown": (120, 75, 40),
    "Beige": (215, 195, 160), "Purple": (110, 60, 140), "Teal": (30, 130, 130),
}
PRICE_RANGE = {
    "dress": (29, 149), "hat": (9, 39), "longsleeve": (15, 59), "outwear": (49, 249), "pants": (25, 99),
    "shirt": (19, 79), "shoes": (35, 179), "shorts": (12, 49), "skirt": (19, 89), "t-shirt": (7, 35),
}


def colour_name(path: Path) -> str:
    """Name of the median colour of the image centre (where the garment usually is)."""
    img = np.asarray(Image.open(path).convert("RGB").resize((64, 64)), dtype=np.float32)[16:48, 16:48]
    median = np.median(img.reshape(-1, 3), axis=0)
    return min(PALETTE, key=lambda n: float(np.sum((np.array(PALETTE[n]) - median) ** 2)))


def main() -> None:
    """Pick N images per class, copy them and write catalog.jsonl."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="../shared/data/clothing-small/train")
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--seed", type=int, default=20261123)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    images_dir = OUT / "images"
    shutil.rmtree(images_dir, ignore_errors=True)
    rows = []
    for class_dir in sorted(p for p in Path(args.source).iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.jpg"))
        for f in sorted(rng.sample(files, min(args.per_class, len(files)))):
            dest = images_dir / class_dir.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
            lo, hi = PRICE_RANGE.get(class_dir.name, (10, 100))
            rows.append({
                "product_id": f"{class_dir.name}-{f.stem[:8]}",
                "image": dest.relative_to(OUT).as_posix(),
                "title": f"{colour_name(f)} {class_dir.name}",
                "category": class_dir.name,
                "price": rng.randint(lo, hi) - 0.01,
                "tags": [class_dir.name, colour_name(f).lower()],
            })
    with (OUT / "catalog.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} products to {OUT}")


if __name__ == "__main__":
    main()
