"""Train the detector's second stage (`services/detector/box_head.py`) on CenterNet's proposals for cached scenes.

Each scene gives the first stage's proposals plus its true boxes and jittered copies of them. A box overlapping
a garment by IoU ≥ POSITIVE_IOU learns that garment's class and the deltas to its box; one under NEGATIVE_IOU
learns "background"; those between are left out. Called by `train_detector.py`, which owns the data splits.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from fashion_search.core.domain import Box, Detection
from fashion_search.services.detector.box_head import (
    BACKGROUND,
    BoxHead,
    Proposal,
    Scoring,
    encode_deltas,
    finish,
    proposal_tensor,
)
from fashion_search.services.detector.centernet import MID_CHANNELS, PROPOSAL_MIN_SCORE, CenterHead, peaks
from fashion_search.services.detector.head import CATEGORIES
from fashion_search.services.detector.metrics import best_f_threshold, detection_map
from fashion_search.services.detector.training.common import mirrored_features, one_cycle, train_epoch

log = logging.getLogger("train-detector")
POSITIVE_IOU, NEGATIVE_IOU = 0.5, 0.4
JITTERED_COPIES = 3  # jittered copies of each true box, besides the box itself
JITTER_SHIFT, JITTER_SCALE = 0.15, (0.8, 1.25)
REGRESSION_WEIGHT = 1.0
# Fine mode's detection threshold weighs recall twice as much as precision (F2): a garment left undetected cannot be
# found at all, while a false detection costs one more crop to embed and search, and a result group of its own.
THRESHOLD_F_BETA = 2.0
IGNORE = -1
SCORING_GRID = [
    Scoring(alpha=alpha, box_class_weight=weight, per_class=per_class, nms_iou=0.5 if per_class else 0.7)
    for alpha, weight, per_class in itertools.product((0.5, 0.75, 1.0), (0.0, 0.25, 0.5, 0.75, 1.0), (True, False))
]


@dataclass
class Samples:
    """Training boxes of the scenes: boxes (R×4, fractions), owning scene, class (or background/ignore), deltas."""

    boxes: torch.Tensor
    owner: torch.Tensor
    labels: torch.Tensor
    deltas: torch.Tensor
    aspect: torch.Tensor


def proposals_of(
    head: CenterHead, feats: tuple, scenes: list[dict[str, Any]], rows: np.ndarray
) -> list[list[Proposal]]:
    """First-stage proposals (peak score ≥ PROPOSAL_MIN_SCORE) of each scene in rows, indexed like scenes."""
    out: list[list[Proposal]] = [[] for _ in scenes]
    head.eval()
    with torch.inference_mode():
        for i in rows:
            heat, size, offset = head(feats[0][i:i + 1].float(), feats[1][i:i + 1].float())
            out[i] = peaks(heat, size, offset, scenes[i]["width"], scenes[i]["height"], PROPOSAL_MIN_SCORE)
    return out


def _iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes a (N×4) and b (M×4)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-9)


def build_samples(
    scenes: list[dict[str, Any]], proposals: list[list[Proposal]], rows: np.ndarray, seed: int
) -> Samples:
    """Labelled training boxes of the scenes in rows."""
    rng = np.random.default_rng(seed)
    parts: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, float]] = []
    for i in rows:
        scene = scenes[i]
        w, h = scene["width"], scene["height"]
        truths = torch.tensor([o["box"] for o in scene["objects"]], dtype=torch.float32) / torch.tensor([w, h, w, h])
        classes = torch.tensor([CATEGORIES.index(o["category"]) for o in scene["objects"]])
        size = truths[:, 2:] - truths[:, :2]
        centre = (truths[:, :2] + truths[:, 2:]) / 2
        copies = [truths]
        for _ in range(JITTERED_COPIES):
            c = centre + torch.from_numpy(rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, size.shape)).float() * size
            s = size * torch.from_numpy(rng.uniform(*JITTER_SCALE, size.shape)).float()
            copies.append(torch.cat([c - s / 2, c + s / 2], dim=1).clamp(0, 1))
        if proposals[i]:
            copies.append(proposal_tensor(proposals[i], w, h))
        boxes = torch.cat(copies)
        boxes = boxes[((boxes[:, 2:] - boxes[:, :2]) > 1e-3).all(dim=1)]
        iou, match = _iou_matrix(boxes, truths).max(dim=1)
        labels = torch.where(iou >= POSITIVE_IOU, classes[match], torch.full_like(match, BACKGROUND))
        labels[(iou >= NEGATIVE_IOU) & (iou < POSITIVE_IOU)] = IGNORE
        parts.append((boxes, int(i), labels, encode_deltas(boxes, truths[match]), w / h))
    return Samples(
        boxes=torch.cat([p[0] for p in parts]),
        owner=torch.cat([torch.full((len(p[0]),), p[1]) for p in parts]),
        labels=torch.cat([p[2] for p in parts]),
        deltas=torch.cat([p[3] for p in parts]),
        aspect=torch.cat([torch.full((len(p[0]),), p[4]) for p in parts]),
    )


def _batch_loss(head: BoxHead, feats: tuple, samples: Samples, idx: np.ndarray, flip: np.ndarray) -> torch.Tensor:
    """Classification + box regression loss over the samples of the scenes idx (mirrored where flip)."""
    chosen = torch.from_numpy(np.isin(samples.owner.numpy(), idx))
    boxes, labels = samples.boxes[chosen].clone(), samples.labels[chosen]
    deltas, aspect = samples.deltas[chosen].clone(), samples.aspect[chosen]
    local = {int(s): k for k, s in enumerate(idx)}
    owner = torch.tensor([local[int(s)] for s in samples.owner[chosen]])
    mid, deep = mirrored_features(feats, idx, flip)
    m = torch.from_numpy(flip.astype(bool))[owner]
    boxes[m] = torch.stack([1 - boxes[m, 2], boxes[m, 1], 1 - boxes[m, 0], boxes[m, 3]], dim=1)
    deltas[m, 0] = -deltas[m, 0]
    keep = labels != IGNORE
    logits, predicted = head(mid, deep, boxes[keep], owner[keep], aspect[keep])
    loss = F.cross_entropy(logits, labels[keep])
    positive = labels[keep] != BACKGROUND
    if positive.any():
        loss = loss + REGRESSION_WEIGHT * F.smooth_l1_loss(predicted[positive], deltas[keep][positive], beta=1 / 9)
    return loss


def detect_all(
    head: BoxHead, feats: tuple, scenes: list[dict[str, Any]], proposals: list[list[Proposal]], rows: np.ndarray,
    scorings: list[Scoring],
) -> list[list[list[Detection]]]:
    """Second-stage detections of the scenes in rows, for each way of scoring them: [scoring][row]."""
    head.eval()
    out: list[list[list[Detection]]] = [[] for _ in scorings]
    with torch.inference_mode():
        for i in rows:
            scene, props = scenes[i], proposals[i]
            w, h = scene["width"], scene["height"]
            if props:
                boxes = proposal_tensor(props, w, h)
                logits, deltas = head(feats[0][i:i + 1].float(), feats[1][i:i + 1].float(), boxes,
                                      torch.zeros(len(props), dtype=torch.long), torch.full((len(props),), w / h))
            for k, scoring in enumerate(scorings):
                out[k].append(finish(props, logits, deltas, w, h, scoring, PROPOSAL_MIN_SCORE) if props else [])
    return out


def truths_of(scenes: list[dict[str, Any]], rows: np.ndarray) -> list[list[tuple[Box, str]]]:
    """True boxes and categories of the scenes in rows."""
    return [[(Box(*o["box"]), o["category"]) for o in scenes[i]["objects"]] for i in rows]


def train_box_head(
    feats: tuple, scenes: list[dict[str, Any]], proposals: list[list[Proposal]], members: np.ndarray,
    epochs: int, batch: int, seed: int, holdout: np.ndarray | None = None,
) -> tuple[BoxHead, list[tuple[float, Scoring]]]:
    """Train a box head on the member scenes; with a holdout, its best mAP@0.5 there (and scoring) per epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    samples = build_samples(scenes, proposals, members, seed)
    head = BoxHead(MID_CHANNELS, int(feats[1].shape[1]))
    opt, sched = one_cycle(head.parameters(), 1e-3, epochs, len(members), batch)
    history: list[tuple[float, Scoring]] = []
    truths = truths_of(scenes, holdout) if holdout is not None else []
    for epoch in range(epochs):
        mean_loss, seconds = train_epoch(
            head, members, batch, rng, opt, sched,
            lambda idx, flip: _batch_loss(head, feats, samples, idx, flip),
        )
        msg = f"box head epoch {epoch + 1}/{epochs} loss {mean_loss:.3f} ({seconds:.0f} s)"
        if holdout is not None:
            runs = detect_all(head, feats, scenes, proposals, holdout, SCORING_GRID)
            scores = [detection_map(r, truths)[0] for r in runs]
            best = int(np.argmax(scores))
            history.append((scores[best], SCORING_GRID[best]))
            msg += f" train-holdout mAP@0.5 {scores[best]:.4f} with {SCORING_GRID[best]}"
        log.info(msg)
    head.eval()
    return head, history


def choose_min_score(
    head: BoxHead, scoring: Scoring, feats: tuple, scenes: list[dict[str, Any]], proposals: list[list[Proposal]],
    rows: np.ndarray, beta: float = THRESHOLD_F_BETA,
) -> tuple[float, float, float, float]:
    """The detection threshold with the best class-agnostic F-beta (IoU 0.5) over the garments fine mode would
    search in the scenes of rows: (threshold, F-beta, precision, recall).

    Call it with heads fit on other products than those rows show: scores on scenes a head was trained on run
    higher than on a shopper's photo, so a threshold set there drops unseen garments.
    """
    from fashion_search.pipeline.search_pipeline import (
        distinct_garments,  # the pipeline's own de-duplication of garments
    )

    found = detect_all(head, feats, scenes, proposals, rows, [scoring])[0]
    return best_f_threshold([distinct_garments(f) for f in found], truths_of(scenes, rows), beta)
