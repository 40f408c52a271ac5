"""Train the fashion embedder: seed 001's fine-tuned CNN → FC 512 on clothing classes, plus instance matching.

    fashion-search train embedder --stage classes                     # fashion-v1
    fashion-search train embedder --stage instances --scenes data/scenes/train   # fashion-v2, from fashion-v1
    fashion-search train embedder --backbone efficientnet-lite2 --stage classes   # fashion-v3-classes
    fashion-search train embedder --backbone efficientnet-lite2 --stage instances # fashion-v3, from the above
    fashion-search train embedder --stage classes --tail-start 8  # fashion-v1-b8, the image vectors' model

The ImageNet stem and early blocks stay frozen (their outputs are cached, see train_views); --tail-start moves the
cut earlier (Lite0's default: block 12, the 7×7 stage).
Stage "classes" (fashion-v1) trains the last stage, the conv head and the 512-d FC with a normalised softmax over the
classes plus a batch-hard triplet loss (seed 001: category similarity).
Stage "instances" (fashion-v2) starts from fashion-v1, keeps its last stage frozen but for its final blocks (the
frozen part is cached as well: CPU training time) and trains those, the conv head and the FC with the same two
losses plus an InfoNCE loss that pulls a garment cut
from a generated street scene to its own catalog photo, away from other products of its class (street-to-shop).
The epoch count is chosen on a seeded split of train/ products (never on validation/), then the model is retrained
on all of train/ and saved.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from fashion_search.core.catalog import load_catalog
from fashion_search.datasets.scenes import SourceBank, load_scenes
from fashion_search.datasets.splits import HOLDOUT, split_products
from fashion_search.services.embedder.backbone import LITE0, LITE2, load_imagenet_network
from fashion_search.services.embedder.fashion_net import (
    FashionTail,
    load_tail,
    save_tail,
    shipped_weights,
    tail_start,
    weights_backbone,
)
from fashion_search.services.embedder.training.views import (
    CUTOUT_VIEW,
    PRODUCT_VIEWS,
    STREET_CROPS_PER_OBJECT,
    pipeline_street_features,
    product_features,
    street_features,
)

log = logging.getLogger("train-embedder")

CLASSES_PER_BATCH = 8
PER_CLASS = 4
# Instance batches are drawn a few classes at a time, so most negatives are products of the same class.
INSTANCE_CLASSES = 4
INSTANCE_PER_CLASS = 12
COS_SCALE = 16.0  # temperature of the normalised softmax
TRIPLET_MARGIN = 0.2
TRIPLET_WEIGHT = 1.0
INSTANCE_TEMPERATURE = 0.07
INSTANCE_WEIGHT = 1.0
LABEL_SMOOTHING = 0.1
CLASS_EPOCHS = 8
INSTANCE_EPOCHS = 8
# The instances stage also trains fashion-v1's tail blocks but the first (at the body learning rate): best on the
# clean product holdout (docs/decisions/2026-12-03-embedder-train-blocks.md).
ALL_BUT_FIRST = -1
# A second scene set of the same train photos (seed 3) doubles the instance stage's street crops, which gained street
# R@1 (docs/decisions/2026-12-04-embedder-street-crops.md).
EXTRA_SCENES = ("data/scenes/train-extra",)
# How the extra scene sets' garments are cut: "simulated" (a jittered true box and mask, as the first set's),
# "pipeline" (fine mode's own cut-out: the shipped detector's box and segmenter's mask; garments it misses give none)
# or "both", the default (docs/decisions/2026-12-04-embedder-street-crops.md).
EXTRA_CROPS = ("both", "simulated", "pipeline")
INSTANCE_STEPS = 100
# Catalog-side views a street crop is matched to: the whole photo, its mirror, and the cut-out garment.
POSITIVE_VIEWS = (0, 1, CUTOUT_VIEW)
# The weight file each (backbone, stage) trains; the instances stage starts from the classes stage's.
VARIANTS = {
    (LITE0, "classes"): "fashion-v1", (LITE0, "instances"): "fashion-v2",
    (LITE2, "classes"): "fashion-v3-classes", (LITE2, "instances"): "fashion-v3",
}


@dataclass
class TrainingSet:
    """Cached frozen features: catalog photos (N×V×…) with class labels, street crops with their product index."""

    products: torch.Tensor
    labels: np.ndarray
    street: torch.Tensor
    owners: np.ndarray

    def subset(self, keep: np.ndarray) -> TrainingSet:
        """The products at indices `keep` and the street crops of those products (owners renumbered)."""
        new_index = np.full(len(self.labels), -1)
        new_index[keep] = np.arange(len(keep))
        crops = np.flatnonzero(np.isin(self.owners, keep))
        return TrainingSet(self.products[keep], self.labels[keep], self.street[crops], new_index[self.owners[crops]])


def batch_hard_triplet(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Hardest positive and hardest negative per anchor, on cosine distance."""
    dist = 1.0 - emb @ emb.T
    same = labels[:, None] == labels[None, :]
    pos = (dist * same.float()).max(dim=1).values
    neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    return F.relu(pos - neg + margin).mean()


def class_batches(
    labels: np.ndarray, rng: np.random.Generator, steps: int, n_classes: int, per_class: int
) -> list[np.ndarray]:
    """Batches of n_classes classes × per_class distinct items (with replacement only for tiny classes)."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    out = []
    for _ in range(steps):
        classes = rng.choice(len(by_class), size=min(n_classes, len(by_class)), replace=False)
        out.append(np.concatenate([
            rng.choice(by_class[c], size=per_class, replace=len(by_class[c]) < per_class) for c in classes
        ]))
    return out


@torch.inference_mode()
def embed_all(forward: Callable[[torch.Tensor], torch.Tensor], tail: FashionTail, feats: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings of many cached feature maps, in eval mode."""
    tail.eval()
    return torch.cat([F.normalize(forward(feats[i:i + 128]), dim=1) for i in range(0, len(feats), 128)])


def precision_at_10(
    catalog: torch.Tensor, cat_labels: np.ndarray, queries: torch.Tensor, q_labels: np.ndarray
) -> float:
    """Seed-001 P@10 by exact cosine kNN."""
    top = (queries @ catalog.T).topk(10, dim=1).indices.numpy()
    return float((cat_labels[top] == q_labels[:, None]).mean())


def instance_recall_at_1(gallery: torch.Tensor, queries: torch.Tensor, owners: np.ndarray) -> float:
    """Share of street crops whose nearest catalog product is their own."""
    return float(((queries @ gallery.T).argmax(dim=1).numpy() == owners).mean())


def holdout_scores(
    forward: Callable[[torch.Tensor], torch.Tensor], tail: FashionTail, fit: TrainingSet, hold: TrainingSet
) -> tuple[float, float]:
    """(category P@10: held-out photos vs fit photos; street-to-shop R@1: held-out crops vs held-out products)."""
    p10 = precision_at_10(embed_all(forward, tail, fit.products[:, 0]), fit.labels,
                          embed_all(forward, tail, hold.products[:, 0]), hold.labels)
    if not len(hold.owners):
        return p10, 0.0
    r1 = instance_recall_at_1(embed_all(forward, tail, hold.products[:, CUTOUT_VIEW]),
                              embed_all(forward, tail, hold.street), hold.owners)
    return p10, r1


def _optimizer(tail: FashionTail, body: list[torch.nn.Parameter], total_steps: int) -> tuple:
    head = [*tail.fc.parameters(), *tail.classifier.parameters()]  # type: ignore[union-attr]
    opt = torch.optim.AdamW([{"params": head, "lr": 1e-3}, {"params": body, "lr": 2e-4}], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[1e-3, 2e-4], total_steps=total_steps, pct_start=0.15)
    return opt, sched


def _freeze_batchnorm(tail: FashionTail) -> None:
    # Keep BatchNorm statistics at their pretrained values: small class-skewed batches would skew them.
    for m in tail.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def _init_classifier(tail: FashionTail, data: TrainingSet, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Class weights = the mean direction of each class's embeddings (the shipped tail has no classifier)."""
    with torch.inference_mode():
        emb = torch.cat([F.normalize(forward(data.products[i:i + 128, 0]), dim=1)
                         for i in range(0, len(data.labels), 128)])
    means = torch.stack([emb[torch.from_numpy(data.labels == c)].mean(0) for c in range(int(data.labels.max()) + 1)])
    tail.classifier.weight.data.copy_(F.normalize(means, dim=1))  # type: ignore[union-attr]


def train(
    data: TrainingSet, epochs: int, seed: int, stage: str, holdout: TrainingSet | None = None,
    instance_steps: int = 0, train_blocks: int = 0, init: Path | None = None, backbone: str = LITE0,
    keep_best: bool = False, start: int | None = None,
) -> tuple[FashionTail, list[tuple[float, float]]]:
    """Train a tail for the stage; with a holdout, return its (P@10, street R@1) after every epoch.

    keep_best (with a holdout): return the tail as it was after its best epoch (P@10 + R@1), not after the last.
    start: the classes stage's first tail block (default tail_start); the instances stage keeps its init's.

    "classes": data holds frozen features (before the tail) and the whole tail trains from ImageNet weights.
    "instances": data holds the classes-stage tail's outputs before its last train_blocks blocks; those blocks, the
    conv head and the FC train from that tail (`init`, default fashion-v1).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_classes = int(data.labels.max()) + 1
    net = load_imagenet_network(backbone)  # every run starts from the same weights
    if stage == "classes":
        tail = FashionTail(net, n_classes=n_classes, start=start)
        forward: Callable[[torch.Tensor], torch.Tensor] = lambda x: tail.embed(tail.feature_map(x.float()))  # noqa: E731
        body = [p for n, p in tail.named_parameters() if not n.startswith(("fc.", "classifier."))]
        steps_per_epoch = max(1, len(data.labels) // (CLASSES_PER_BATCH * PER_CLASS))
    else:
        base, _ = load_tail(net, init or shipped_weights(VARIANTS[backbone, "classes"]))
        tail = FashionTail(net, n_classes=n_classes, start=base.start)
        tail.load_state_dict(base.state_dict(), strict=False)
        trained = slice(len(tail.blocks) - train_blocks, None)
        forward = lambda x: tail.embed(tail.head_map(tail.stage(x.float(), trained)))  # noqa: E731
        for p in tail.blocks.parameters():
            p.requires_grad_(False)
        body = [*tail.conv_head.parameters(), *tail.bn1.parameters()]
        for block in tail.blocks[trained]:
            for p in block.parameters():
                p.requires_grad_(True)
                body.append(p)
        _init_classifier(tail, data, forward)
        steps_per_epoch = instance_steps
    opt, sched = _optimizer(tail, body, epochs * steps_per_epoch)
    y_all = torch.from_numpy(data.labels)
    crops_of = [np.flatnonzero(data.owners == p) for p in range(len(data.labels))]
    street_products = np.flatnonzero([len(c) > 0 for c in crops_of])
    history: list[tuple[float, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    if holdout is not None:
        log.info("start: holdout P@10 %.4f street R@1 %.4f", *holdout_scores(forward, tail, data, holdout))
    for epoch in range(epochs):
        tail.train()
        _freeze_batchnorm(tail)
        start, total = time.time(), 0.0
        cls_steps = class_batches(data.labels, rng, steps_per_epoch, CLASSES_PER_BATCH, PER_CLASS)
        inst_steps = class_batches(
            data.labels[street_products], rng, steps_per_epoch, INSTANCE_CLASSES, INSTANCE_PER_CLASS
        ) if stage == "instances" else [np.zeros(0, int)] * steps_per_epoch
        for cls_idx, inst_pos in zip(cls_steps, inst_steps, strict=True):
            owners = np.unique(street_products[inst_pos])
            crops = np.array([rng.choice(crops_of[p]) for p in owners], dtype=int)
            views = rng.integers(0, data.products.shape[1], size=len(cls_idx))
            pos_views = rng.choice(POSITIVE_VIEWS, size=len(owners))
            x = torch.cat([
                data.products[torch.from_numpy(cls_idx), torch.from_numpy(views)],
                data.products[torch.from_numpy(owners), torch.from_numpy(pos_views)],
                data.street[torch.from_numpy(crops)],
            ])
            emb = F.normalize(forward(x), dim=1)
            y = torch.cat([y_all[cls_idx], y_all[owners], y_all[owners]])
            logits = COS_SCALE * emb @ F.normalize(tail.classifier.weight, dim=1).T  # type: ignore[union-attr]
            loss = F.cross_entropy(logits, y, label_smoothing=LABEL_SMOOTHING)
            n_cls = len(cls_idx)
            loss = loss + TRIPLET_WEIGHT * batch_hard_triplet(emb[:n_cls], y[:n_cls], TRIPLET_MARGIN)
            if len(owners):
                shop, street = emb[n_cls:n_cls + len(owners)], emb[n_cls + len(owners):]
                sim = street @ shop.T / INSTANCE_TEMPERATURE
                target = torch.arange(len(owners))
                loss = loss + INSTANCE_WEIGHT * 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        msg = f"epoch {epoch + 1}/{epochs} loss {total / steps_per_epoch:.3f} ({time.time() - start:.0f} s)"
        if holdout is not None:
            scores = holdout_scores(forward, tail, data, holdout)
            # Strictly better only: ties keep the earlier epoch, as run()'s argmax does.
            if keep_best and (not history or sum(scores) > max(sum(h) for h in history)):
                best_state = copy.deepcopy(tail.state_dict())
            history.append(scores)
            msg += f" holdout P@10 {scores[0]:.4f} street R@1 {scores[1]:.4f}"
        log.info(msg)
    if best_state is not None:
        tail.load_state_dict(best_state)
    tail.eval()
    return tail, history


def resolve_train_blocks(net: torch.nn.Module, requested: int, start: int | None = None) -> int:
    """How many tail blocks the instances stage trains: `requested`, or all but the first for ALL_BUT_FIRST (the tail
    starting at `start`, default tail_start)."""
    return len(net._blocks) - tail_start(net, start) - 1 if requested == ALL_BUT_FIRST else requested


def split_training_set(
    products: torch.Tensor, labels: np.ndarray, crop_sets: list[tuple[torch.Tensor, np.ndarray]], seed: int
) -> tuple[TrainingSet, TrainingSet, TrainingSet]:
    """(all, fit, held out): products split by split_products; street crops from every set (features, owners).

    The held-out share keeps the first set's crops only, so adding scene sets leaves what it measures unchanged.
    """
    data = TrainingSet(products, labels, torch.cat([f for f, _ in crop_sets]),
                       np.concatenate([o for _, o in crop_sets]))
    held = split_products(labels, seed)
    primary = TrainingSet(products, labels, *crop_sets[0])
    return data, data.subset(np.flatnonzero(~held)), primary.subset(np.flatnonzero(held))


def build_parser() -> argparse.ArgumentParser:
    """Options of `fashion-search train embedder` (also `python -m fashion_search.services.embedder.training.train`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("instances", "classes"), default="instances",
                        help="instances: fashion-v2 (from fashion-v1); classes: fashion-v1 (from ImageNet); with "
                        "--backbone efficientnet-lite2: fashion-v3 and fashion-v3-classes")
    parser.add_argument("--backbone", choices=(LITE0, LITE2), default=LITE0,
                        help="the ImageNet network whose last stage is fine-tuned")
    parser.add_argument("--data", default="../shared/data/clothing-small/train", help="ImageFolder of train photos")
    parser.add_argument("--scenes", default="data/scenes/train", help="scenes generated from the same photos")
    parser.add_argument("--extra-scenes", nargs="*", default=list(EXTRA_SCENES),
                        help="instances stage: more scene sets of the same photos, for more street crops of the fit "
                        "products (the holdout keeps to --scenes, so its figures stay comparable); none: "
                        "`--extra-scenes` alone")
    parser.add_argument("--extra-crops", choices=EXTRA_CROPS, default=EXTRA_CROPS[0],
                        help="instances stage: how the extra scene sets' garments are cut (simulated detector and "
                        "segmenter errors, the shipped detector's and segmenter's own, or both)")
    parser.add_argument("--out", default="",
                        help="weights file (default: the variant's shipped file; a classes stage with another "
                        "--tail-start is its own variant, fashion-v1-b8 for block 8)")
    parser.add_argument("--epochs", type=int, default=0, help="maximum epochs tried on the split (0: stage default)")
    parser.add_argument("--steps", type=int, default=INSTANCE_STEPS, help="steps per epoch of the instances stage")
    parser.add_argument("--train-blocks", type=int, default=ALL_BUT_FIRST,
                        help="instances stage: how many of the classes-stage tail's last blocks train too (0: none; "
                        "default: all but the first)")
    parser.add_argument("--tail-start", type=int, default=0,
                        help="classes stage: the first fine-tuned block (0: the network's default, the second block "
                        "of its 7×7 stage); earlier blocks stay at ImageNet weights. The instances stage keeps its "
                        "--init's")
    parser.add_argument("--product-views", type=int, default=PRODUCT_VIEWS,
                        help="cached views of each catalog photo: plain, mirrored, cut out, then random crops")
    parser.add_argument("--street-crops", type=int, default=STREET_CROPS_PER_OBJECT,
                        help="instances stage: jittered crops cut from each scene garment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--holdout-only", action="store_true",
                        help="save the fit split's model as it was after its best holdout epoch instead of retraining "
                        "on all of train/: its held-out products stay unseen, for choosing search settings on them")
    parser.add_argument("--init", default="",
                        help="instances stage: the classes-stage weights to start from (default: the shipped file "
                        "of --backbone)")
    return parser


@torch.inference_mode()
def stage_outputs(feats: torch.Tensor, tail: FashionTail, train_blocks: int = 0) -> torch.Tensor:
    """The init tail's frozen stage blocks (all but the last train_blocks) on cached frozen features, float16."""
    frozen = slice(0, len(tail.blocks) - train_blocks)
    flat = feats.reshape(-1, *feats.shape[-3:])
    out = torch.cat([tail.stage(flat[i:i + 256].float(), frozen).half() for i in range(0, len(flat), 256)])
    return out.reshape(*feats.shape[:-3], *out.shape[-3:])


def street_crop_sets(
    net: torch.nn.Module, product_ids: list[str], args: argparse.Namespace, cache: Path, start: int | None = None
) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(frozen features, product index) of the street crops: simulated ones of --scenes first (the holdout's), then
    each extra scene set's, cut as --extra-crops says."""
    scenes = load_scenes(args.scenes)
    crop_sets = [street_features(net, scenes, product_ids, args.seed, cache, args.street_crops, start)]
    for extra in args.extra_scenes:
        scenes = load_scenes(extra)
        if args.extra_crops != "pipeline":
            crop_sets.append(street_features(net, scenes, product_ids, args.seed, cache, args.street_crops, start))
        if args.extra_crops != "simulated":
            crop_sets.append(pipeline_street_features(net, scenes, product_ids, cache, start))
    return crop_sets


def variant_name(backbone: str, stage: str, start: int, default_start: int) -> str:
    """The variant a run trains: its stage's, or for a classes stage cut at another block its own ("fashion-v1-b8"),
    so that its default file is not the shipped classes model the detector reads."""
    variant = VARIANTS[backbone, stage]
    return variant if stage == "instances" or start == default_start else f"{variant}-b{start}"


def run(args: argparse.Namespace) -> dict[str, object]:
    """Select the epoch count on a split of train/, retrain on all of train/, save the weights; return the meta."""
    if args.holdout_only and not args.out:
        raise SystemExit("--holdout-only needs --out: it must not replace the shipped weights")
    if args.product_views <= CUTOUT_VIEW:
        raise SystemExit(f"--product-views must be at least {CUTOUT_VIEW + 1} (the plain, mirrored and cut-out views)")
    init = Path(args.init) if args.init else shipped_weights(VARIANTS[args.backbone, "classes"])
    if args.stage == "instances" and (init_backbone := weights_backbone(init)) != args.backbone:
        raise SystemExit(f"--init {init} was trained on {init_backbone}, not --backbone {args.backbone}")
    if args.threads:
        torch.set_num_threads(args.threads)
    net = load_imagenet_network(args.backbone)
    # A network of its own: load_tail rewrites the network's tail blocks, and `net` stays at ImageNet weights.
    init_tail = load_tail(load_imagenet_network(args.backbone), init)[0] if args.stage == "instances" else None
    start = init_tail.start if init_tail is not None else tail_start(net, args.tail_start or None)
    if init_tail is not None and args.tail_start not in (0, start):
        raise SystemExit(f"--init {init} starts its tail at block {start}: the instances stage keeps it")
    if not 0 < start < len(net._blocks):
        raise SystemExit(f"--tail-start must be a block of {args.backbone}: 1 to {len(net._blocks) - 1}")
    records = load_catalog(args.data)
    classes = sorted({r.category for r in records})
    labels = np.array([classes.index(r.category) for r in records])
    bank = SourceBank(records, Path(args.scenes) / "garment_masks.jsonl")
    args.train_blocks = resolve_train_blocks(net, args.train_blocks, start)
    cache = Path(args.cache_dir)
    products = product_features(net, records, bank, args.seed, cache, args.product_views, start)
    if init_tail is not None:
        crop_sets = street_crop_sets(net, [r.product_id for r in records], args, cache, start)
        products = stage_outputs(products, init_tail, args.train_blocks)
        crop_sets = [(stage_outputs(f, init_tail, args.train_blocks), o) for f, o in crop_sets]
        epochs = args.epochs or INSTANCE_EPOCHS
    else:
        crop_sets = [(products[:0, 0], np.zeros(0, dtype=int))]
        epochs = args.epochs or CLASS_EPOCHS
    data, fit, hold = split_training_set(products, labels, crop_sets, args.seed)
    log.info("split: %d/%d products, %d/%d street crops (fit/held out)",
             len(fit.labels), len(hold.labels), len(fit.owners), len(hold.owners))
    # A holdout-only run keeps its best epoch's tail: retraining for fewer epochs would shorten the one-cycle
    # schedule and give another model than the one the holdout scored (docs/decisions/2026-12-03-adoption-rules.md).
    tail, history = train(fit, epochs, args.seed, args.stage, hold, args.steps, args.train_blocks, init, args.backbone,
                          keep_best=args.holdout_only, start=start)
    # Both goals count equally: category precision (seed 001) and finding the product itself (street-to-shop).
    best_epochs = int(np.argmax([p10 + r1 for p10, r1 in history])) + 1
    log.info("best holdout after %d epochs: P@10 %.4f, street R@1 %.4f", best_epochs, *history[best_epochs - 1])
    if not args.holdout_only:
        tail, _ = train(data, best_epochs, args.seed, args.stage, None, args.steps, args.train_blocks, init,
                        args.backbone, start=start)
    variant = variant_name(args.backbone, args.stage, start, tail_start(net))
    meta: dict[str, object] = {
        "variant": variant, "stage": args.stage, "backbone": args.backbone, "classes": classes,
        "embed_dim": tail.fc.out_features,
        "epochs": best_epochs, "schedule_epochs": epochs if args.holdout_only else best_epochs,
        "steps_per_epoch": args.steps if args.stage == "instances" else None,
        "train_blocks": args.train_blocks if args.stage == "instances" else None,
        "street_crops": args.street_crops if args.stage == "instances" else None,
        "product_views": args.product_views,
        "seed": args.seed, "holdout_p10": round(history[best_epochs - 1][0], 4),
        "holdout_street_r1": round(history[best_epochs - 1][1], 4),
        "holdout_history": [[round(a, 4), round(b, 4)] for a, b in history],
        "tail_start": tail.start, "trained_on": str(args.data), "scenes": str(args.scenes),
        "extra_scenes": [str(d) for d in args.extra_scenes] if args.stage == "instances" else [],
        "extra_crops": args.extra_crops if args.stage == "instances" else None,
        "n_train": len(records), "n_street_crops": len(data.owners),
        "holdout_only": bool(args.holdout_only), "holdout_share": HOLDOUT, "init": str(init),
    }
    out = Path(args.out) if args.out else shipped_weights(variant)
    save_tail(tail, out, meta)
    log.info("saved %s (%.1f MB): %s", out, out.stat().st_size / 1e6, json.dumps(meta)[:400])
    return meta


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
