"""The detector's second stage (Faster R-CNN's box head, on CenterNet's proposals): features pooled over each
proposed box name its garment and refine its edges.

CenterNet names a garment from the features at its centre only, which is where a dress and a skirt, or a shirt
and a long-sleeve top, look alike; their difference is in the box's extent (hem, sleeves), which the pooled
features see. Trained on generated scenes by `services/detector/train_detector.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn

from fashion_search.core.domain import Box, Detection
from fashion_search.services.detector.head import CATEGORIES

DEEP_BINS = 3  # pooled grid over the stride-32 map (10×10 at 320 px)
MID_BINS = 5  # pooled grid over the stride-16 map (20×20)
DEEP_REDUCED = 128
MID_REDUCED = 64
N_GEOMETRY = 5
HIDDEN = 256
BACKGROUND = len(CATEGORIES)  # index of the "no garment" class, after the garment classes
# Faster R-CNN's weights on box deltas: they bring centre and log-size targets to similar scales.
DELTA_WEIGHTS = torch.tensor([10.0, 10.0, 5.0, 5.0])
MAX_LOG_SCALE = float(np.log(1000.0 / 16))  # clamp on predicted log-size changes (as torchvision does)
MAX_DETECTIONS = 20  # per image, best first
# A first-stage proposal: CenterNet's detection and every class's heatmap probability at its peak (C).
Proposal = tuple[Detection, torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class Scoring:
    """How the second stage turns CenterNet's peak score and its own probabilities into one detection score."""

    # score = peak^alpha · P(garment)^(1 - alpha) · P(class | garment): alpha 1 trusts CenterNet's peak alone
    alpha: float = 0.5
    # P(class | garment) = w · the box head's + (1 - w) · CenterNet's heatmap at the peak, normalised over classes
    box_class_weight: float = 1.0
    # NMS on refined boxes: CenterNet peaks per class, so one garment may come as two proposals.
    nms_iou: float = 0.6
    # True: every box is scored for each class and NMS runs per class (what mAP expects, as in Faster R-CNN;
    # fine mode keeps the likelier of a box's names, pipeline.distinct_garments); False: one name per box.
    per_class: bool = True


def roi_pool(fmap: torch.Tensor, boxes: torch.Tensor, owner: torch.Tensor, bins: int) -> torch.Tensor:
    """RoIAlign by bilinear sampling: 2×2 samples per bin, averaged (R×C×bins×bins).

    boxes: R×4 (x0, y0, x1, y1) as fractions of the image; owner: R image indices into fmap.
    """
    steps = (torch.arange(2 * bins, dtype=fmap.dtype) + 0.5) / (2 * bins)
    x = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])
    y = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    grid = torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1) * 2 - 1
    sampled = F.grid_sample(fmap[owner], grid, mode="bilinear", align_corners=False)
    return F.avg_pool2d(sampled, 2)


def geometry(boxes: torch.Tensor, aspect: torch.Tensor) -> torch.Tensor:
    """Where the box sits and its shape (centre, log size, log true aspect ratio): R×N_GEOMETRY.

    aspect: per box, the image's width / height (the network sees a squashed square).
    """
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return torch.stack([cx, cy, w.log(), h.log(), (w / h * aspect).log()], dim=1)


def encode_deltas(proposals: torch.Tensor, truths: torch.Tensor) -> torch.Tensor:
    """Regression targets taking proposals (R×4) to their true boxes (R×4)."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    tw, th = truths[:, 2] - truths[:, 0], truths[:, 3] - truths[:, 1]
    d = torch.stack([
        ((truths[:, 0] + truths[:, 2]) - (proposals[:, 0] + proposals[:, 2])) / 2 / pw,
        ((truths[:, 1] + truths[:, 3]) - (proposals[:, 1] + proposals[:, 3])) / 2 / ph,
        (tw / pw).log(), (th / ph).log(),
    ], dim=1)
    return d * DELTA_WEIGHTS


def apply_deltas(proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Refined boxes from proposals (R×4) and predicted deltas (R×4)."""
    d = deltas / DELTA_WEIGHTS
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    cx = (proposals[:, 0] + proposals[:, 2]) / 2 + d[:, 0] * pw
    cy = (proposals[:, 1] + proposals[:, 3]) / 2 + d[:, 1] * ph
    w = pw * d[:, 2].clamp(max=MAX_LOG_SCALE).exp()
    h = ph * d[:, 3].clamp(max=MAX_LOG_SCALE).exp()
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


class BoxHead(nn.Module):
    """Pooled box features (stride 16 and 32) + box geometry → class logits (garments + background), deltas."""

    def __init__(self, mid_channels: int, deep_channels: int, n_classes: int = len(CATEGORIES)) -> None:
        super().__init__()
        self.deep_reduce = nn.Sequential(nn.Conv2d(deep_channels, DEEP_REDUCED, 1), nn.ReLU())
        self.mid_reduce = nn.Sequential(nn.Conv2d(mid_channels, MID_REDUCED, 1), nn.ReLU())
        width = DEEP_REDUCED * DEEP_BINS**2 + MID_REDUCED * MID_BINS**2 + N_GEOMETRY
        self.mlp = nn.Sequential(
            nn.Linear(width, HIDDEN), nn.ReLU(), nn.Dropout(0.2), nn.Linear(HIDDEN, HIDDEN), nn.ReLU()
        )
        self.classify = nn.Linear(HIDDEN, n_classes + 1)
        self.regress = nn.Linear(HIDDEN, 4)

    def forward(
        self, mid: torch.Tensor, deep: torch.Tensor, boxes: torch.Tensor, owner: torch.Tensor, aspect: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (R×(C+1), background last) and box deltas (R×4) for boxes (R×4, fractions) of images."""
        return self.from_reduced(*self.reduce(mid, deep), boxes, owner, aspect)

    def reduce(self, mid: torch.Tensor, deep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images' feature maps, fewer channels: the part that does not depend on the boxes."""
        return self.mid_reduce(mid), self.deep_reduce(deep)

    def from_reduced(
        self, mid: torch.Tensor, deep: torch.Tensor, boxes: torch.Tensor, owner: torch.Tensor, aspect: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() after reduce(): the boxes' pooled features and geometry through the MLP."""
        pooled = torch.cat([
            roi_pool(deep, boxes, owner, DEEP_BINS).flatten(1),
            roi_pool(mid, boxes, owner, MID_BINS).flatten(1),
            geometry(boxes, aspect),
        ], dim=1)
        h = self.mlp(pooled)
        return self.classify(h), self.regress(h)


def proposal_tensor(proposals: Sequence[Proposal], width: int, height: int) -> torch.Tensor:
    """Proposals' boxes as fractions of the image (R×4)."""
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = [[d.box.x0, d.box.y0, d.box.x1, d.box.y1] for d, _ in proposals]
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) / scale


def finish(
    proposals: Sequence[Proposal], logits: torch.Tensor, deltas: torch.Tensor, width: int, height: int,
    scoring: Scoring, min_score: float,
) -> list[Detection]:
    """Second-stage detections (best first) from one image's proposals and the box head's outputs for them."""
    if not proposals:
        return []
    probs = torch.softmax(logits.float(), dim=1)
    garment = (1 - probs[:, BACKGROUND]).clamp(min=1e-6)
    heat = torch.stack([p for _, p in proposals]).float()
    heat = heat / heat.sum(dim=1, keepdim=True).clamp(min=1e-6)
    w = scoring.box_class_weight
    conditional = w * probs[:, :BACKGROUND] / garment[:, None] + (1 - w) * heat
    peak = torch.tensor([d.score for d, _ in proposals])
    scores = (peak**scoring.alpha * garment ** (1 - scoring.alpha))[:, None] * conditional
    if not scoring.per_class:  # one name per box: its likeliest
        likeliest = F.one_hot(conditional.argmax(dim=1), BACKGROUND).bool()
        scores = torch.where(likeliest, scores, -1.0)
    boxes = apply_deltas(proposal_tensor(proposals, width, height), deltas.float())
    boxes = boxes * torch.tensor([width, height, width, height], dtype=torch.float32)
    kept: list[Detection] = []
    flat = scores.flatten()
    for idx in flat.argsort(descending=True).tolist():
        score = float(np.float32(flat[idx]))
        if score < min_score or len(kept) >= MAX_DETECTIONS:
            break
        i, cls = divmod(idx, BACKGROUND)
        box = Box(*boxes[i].tolist()).clip(width, height)
        rivals = [k for k in kept if not scoring.per_class or k.category == CATEGORIES[cls]]
        if box.width < 2 or box.height < 2 or any(box.iou(k.box) >= scoring.nms_iou for k in rivals):
            continue
        kept.append(Detection(box, CATEGORIES[cls], score))
    return kept
