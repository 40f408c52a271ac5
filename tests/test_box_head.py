"""The detector's second stage: box pooling, box deltas and how its outputs become detections."""

from __future__ import annotations

import torch

from fashion_search.core.domain import Box, Detection
from fashion_search.services.detector.box_head import (
    BACKGROUND,
    Scoring,
    apply_deltas,
    encode_deltas,
    finish,
    geometry,
    roi_pool,
)
from fashion_search.services.detector.head import CATEGORIES


def test_deltas_take_proposals_to_their_truths() -> None:
    proposals = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.4, 0.9]])
    truths = torch.tensor([[0.15, 0.1, 0.55, 0.7], [0.2, 0.35, 0.5, 0.8]])
    assert torch.allclose(apply_deltas(proposals, encode_deltas(proposals, truths)), truths, atol=1e-6)
    assert torch.allclose(encode_deltas(truths, truths), torch.zeros(2, 4), atol=1e-6)


def test_roi_pool_reads_the_box_not_the_whole_map() -> None:
    # A map whose value is the x coordinate of the cell centre (as a fraction): pooled bins follow the box.
    width = 20
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    fmap = xs.expand(1, 1, 10, width).clone()
    left, right = torch.tensor([[0.0, 0.0, 0.5, 1.0]]), torch.tensor([[0.5, 0.0, 1.0, 1.0]])
    owner = torch.zeros(1, dtype=torch.long)
    pooled_left, pooled_right = roi_pool(fmap, left, owner, 3), roi_pool(fmap, right, owner, 3)
    assert pooled_left.shape == (1, 1, 3, 3)
    assert float(pooled_left.max()) < 0.5 < float(pooled_right.min())
    # Bins run left to right across the box.
    assert (pooled_right[0, 0, 0].diff() > 0).all()


def test_geometry_uses_the_true_aspect_ratio() -> None:
    square_in_wide_image = geometry(torch.tensor([[0.0, 0.0, 0.5, 1.0]]), torch.tensor([2.0]))
    assert abs(float(square_in_wide_image[0, 4])) < 1e-6


def _logits(rows: list[tuple[int, float]]) -> torch.Tensor:
    """Logits that give class c probability p (the rest spread evenly)."""
    out = torch.zeros(len(rows), len(CATEGORIES) + 1)
    for i, (c, p) in enumerate(rows):
        out[i] = torch.log(torch.full((len(CATEGORIES) + 1,), (1 - p) / len(CATEGORIES)))
        out[i, c] = torch.log(torch.tensor(p))
    return out


def test_finish_renames_rescores_and_merges_duplicate_peaks() -> None:
    box = Box(10, 10, 60, 90)
    # CenterNet peaked twice on one garment (as dress and as skirt) and once on background clutter.
    dress, skirt, hat = (CATEGORIES.index(c) for c in ("dress", "skirt", "hat"))
    proposals = [
        (Detection(box, "dress", 0.6), _heat({dress: 0.6, skirt: 0.5})),
        (Detection(box, "skirt", 0.5), _heat({dress: 0.6, skirt: 0.5})),
        (Detection(Box(70, 5, 95, 30), "hat", 0.3), _heat({hat: 0.3})),
    ]
    logits = _logits([(skirt, 0.9), (skirt, 0.9), (BACKGROUND, 0.95)])
    one_name = Scoring(alpha=0.5, nms_iou=0.6, per_class=False)
    found = finish(proposals, logits, torch.zeros(3, 4), 100, 100, one_name, 0.1)
    assert [d.category for d in found] == ["skirt"]
    assert found[0].box.iou(box) > 0.99
    # peak^0.5 · P(garment)^0.5 · P(skirt | garment), P(background) = 0.1 / 10
    assert abs(found[0].score - 0.6**0.5 * 0.99**0.5 * (0.9 / 0.99)) < 1e-4
    everything = finish(proposals, logits, torch.zeros(3, 4), 100, 100, Scoring(alpha=0.5, nms_iou=1.01,
                                                                                 per_class=False), 0.0)
    assert len(everything) == 3 and everything[-1].score < 0.1
    # Per class, the box also comes back as its second likeliest class (lower), and as one skirt, not two.
    mixed = Scoring(alpha=0.5, nms_iou=0.6, box_class_weight=0.5)
    per_class = finish(proposals, logits, torch.zeros(3, 4), 100, 100, mixed, 0.1)
    assert [d.category for d in per_class] == ["skirt", "dress"]
    assert per_class[0].box.iou(per_class[1].box) > 0.99
    # Trusting CenterNet's classes instead, the garment is a dress (its heatmap is higher there).
    heatmap_only = Scoring(alpha=0.5, nms_iou=0.6, box_class_weight=0.0, per_class=False)
    assert [d.category for d in finish(proposals, logits, torch.zeros(3, 4), 100, 100, heatmap_only, 0.1)] == ["dress"]


def _heat(values: dict[int, float]) -> torch.Tensor:
    """Heatmap probabilities at a peak: these classes at these values, the rest near zero."""
    out = torch.full((len(CATEGORIES),), 0.01)
    for c, v in values.items():
        out[c] = v
    return out
