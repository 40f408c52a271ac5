"""Train the v0 garment head: seeded multinomial logistic regression on cached backbone features.

    python -m fashion_search.services.detector.training.head --data /work/shared/data/clothing-small/train \
        --out services/detector/weights/garment_head_v0.npz

The regularisation strength and class weighting are chosen on a held-out 20% of train/; the
validation folder (if found beside train/) is only scored, never fitted or selected on.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from fashion_search.core.settings import Settings
from fashion_search.services.detector.head import CATEGORIES, DEFAULT_HEAD_PATH, MIN_STD, GarmentHead
from fashion_search.services.detector.model import crop_for_head, foreground_box
from fashion_search.services.embedder.backbone import EfficientNetBackbone

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
# Feature variants per training image. "full" is the photo as uploaded; "crop" is what the detector
# classifies (the foreground box); a flip adds data for free (garments are left-right symmetric). A
# flipped crop adds little over these three and costs a quarter more backbone time on a shared CPU.
TRAIN_VARIANTS = ("full", "full_flip", "crop")
EVAL_VARIANTS = ("full", "crop")
BATCH_SIZE = 32
HOLDOUT_FRACTION = 0.2
# Grid searched on the holdout split: L2 strength on W (features are standardised, so one scale fits),
# and whether classes are weighted by inverse frequency (skirts are 4% of train/, t-shirts 26%).
L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
BALANCED_GRID = (False, True)
LBFGS_STEPS = 300


@dataclass
class FeatureSet:
    """Pooled features per variant (each N×D) for N images with integer labels."""

    paths: list[str]
    labels: np.ndarray
    features: dict[str, np.ndarray]


def list_images(root: Path, classes: Sequence[str]) -> tuple[list[Path], np.ndarray]:
    """Images of an ImageFolder tree (root/<class>/*), sorted for reproducibility, and their labels."""
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if sorted(classes) != found:
        raise SystemExit(f"{root}: class folders {found} differ from the head's categories {list(classes)}")
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [index] * len(files)
    return paths, np.array(labels, dtype=np.int64)


def _variants(image: Image.Image, names: Sequence[str]) -> dict[str, Image.Image]:
    """The listed variants of one photo ("full", "crop", each optionally "_flip"ped)."""
    bases = {"full": image}
    if any(n.startswith("crop") for n in names):
        bases["crop"] = crop_for_head(image, foreground_box(np.asarray(image)))
    return {n: ImageOps.mirror(bases[n.removesuffix("_flip")]) if n.endswith("_flip") else bases[n] for n in names}


def extract(
    backbone: EfficientNetBackbone, paths: Sequence[Path], labels: np.ndarray, variants: Sequence[str],
    cache: Path | None,
) -> FeatureSet:
    """Backbone features of every image and variant, read from / written to an .npz cache if given."""
    keys = [str(p) for p in paths]
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            if list(data["paths"]) == keys and all(v in data for v in variants):
                log.info("features from cache %s", cache)
                return FeatureSet(keys, labels, {v: data[v] for v in variants})
    out: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    start = time.perf_counter()
    for i in range(0, len(paths), BATCH_SIZE):
        images = [_variants(Image.open(p).convert("RGB"), variants) for p in paths[i:i + BATCH_SIZE]]
        for v in variants:
            out[v].append(backbone.forward([img[v] for img in images]).pooled)
        done = min(i + BATCH_SIZE, len(paths))
        log.info("features %d/%d (%.0f s)", done, len(paths), time.perf_counter() - start)
    features = {v: np.concatenate(out[v]).astype(np.float32) for v in variants}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, paths=np.array(keys), **features)
    return FeatureSet(keys, labels, features)


def stack(fs: FeatureSet, idx: np.ndarray, variants: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the chosen images in every listed variant, with their labels."""
    x = np.concatenate([fs.features[v][idx] for v in variants])
    y = np.concatenate([fs.labels[idx]] * len(variants))
    return x, y


def fit(
    x: np.ndarray, y: np.ndarray, classes: Sequence[str], l2: float, balanced: bool, seed: int,
) -> GarmentHead:
    """Multinomial logistic regression (full-batch L-BFGS, deterministic) with an L2 penalty on W."""
    torch.manual_seed(seed)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), MIN_STD)
    xt = torch.from_numpy((x - mean) / std).double()
    yt = torch.from_numpy(y)
    counts = np.bincount(y, minlength=len(classes)).astype(np.float64)
    class_weight = torch.from_numpy(len(y) / (len(classes) * np.maximum(counts, 1.0))) if balanced else None
    weight = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=LBFGS_STEPS, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(xt @ weight.T + bias, yt, weight=class_weight)
        loss = ce + l2 * (weight * weight).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return GarmentHead(tuple(classes), weight.detach().float().numpy(), bias.detach().float().numpy(),
                       mean.astype(np.float32), std.astype(np.float32))


def accuracy(head: GarmentHead, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the head."""
    return float((head.logits(x).argmax(axis=1) == y).mean())


def per_class_accuracy(head: GarmentHead, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy within each true class."""
    pred = head.logits(x).argmax(axis=1)
    return {c: float((pred[y == i] == i).mean()) for i, c in enumerate(head.classes) if (y == i).any()}


def holdout_score(head: GarmentHead, data: FeatureSet, idx: np.ndarray) -> float:
    """Model-selection score: mean of overall and mean-per-class accuracy (so rare classes count),
    averaged over whole photos and foreground crops."""
    scores = []
    for v in EVAL_VARIANTS:
        x, y = stack(data, idx, [v])
        scores += [accuracy(head, x, y), float(np.mean(list(per_class_accuracy(head, x, y).values())))]
    return float(np.mean(scores))


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image indices (fit, holdout) with `fraction` of each class held out."""
    rng = np.random.default_rng(seed)
    fit_idx: list[np.ndarray] = []
    hold_idx: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_hold = max(1, round(len(members) * fraction))
        hold_idx.append(members[:n_hold])
        fit_idx.append(members[n_hold:])
    return np.sort(np.concatenate(fit_idx)), np.sort(np.concatenate(hold_idx))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: extract features, select L2 on a train split, refit on all train, save, score validation."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="ImageFolder train directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_HEAD_PATH)
    parser.add_argument("--validation", type=Path, default=None,
                        help="ImageFolder to score on (default: 'validation' beside --data, if present)")
    parser.add_argument("--cache", type=Path, default=None, help="directory for cached features (.npz)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)

    settings = Settings(cpu_runtime="torchscript")  # training keeps torch's threads (configure_torch)
    backbone = EfficientNetBackbone(settings)
    classes = CATEGORIES
    paths, labels = list_images(args.data, classes)
    cache = args.cache / "train_features.npz" if args.cache else None
    train = extract(backbone, paths, labels, TRAIN_VARIANTS, cache)

    fit_idx, hold_idx = stratified_holdout(labels, HOLDOUT_FRACTION, args.seed)
    best, best_score = (L2_GRID[0], False), -1.0
    for balanced in BALANCED_GRID:
        for l2 in L2_GRID:
            head = fit(*stack(train, fit_idx, TRAIN_VARIANTS), classes, l2, balanced, args.seed)
            score = holdout_score(head, train, hold_idx)
            print(f"l2={l2:g} balanced={balanced}: holdout score {score:.3f}")
            if score > best_score:
                best, best_score = (l2, balanced), score
    print(f"chosen l2={best[0]:g} balanced={best[1]} (holdout score {best_score:.3f}); refitting on all of train/")
    head = fit(*stack(train, np.arange(len(labels)), TRAIN_VARIANTS), classes, *best, args.seed)
    head.save(args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")

    val_root = args.validation or args.data.parent / "validation"
    if val_root.is_dir():
        val_paths, val_labels = list_images(val_root, classes)
        val_cache = args.cache / "validation_features.npz" if args.cache else None
        val = extract(backbone, val_paths, val_labels, EVAL_VARIANTS, val_cache)
        saved = GarmentHead.load(args.out)  # score the shipped (float16) weights, not the in-memory ones
        for v in EVAL_VARIANTS:
            x, y = val.features[v], val.labels
            print(f"validation accuracy ({v}): {accuracy(saved, x, y):.3f} on {len(y)} images")
        per_class = per_class_accuracy(saved, val.features["full"], val.labels)
        print("per class (full): " + ", ".join(f"{c}={a:.2f}" for c, a in per_class.items()))
        print(f"mean per-class accuracy (full): {np.mean(list(per_class.values())):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
