"""A garment's kind (category) from its evidence, boxes of one garment merged, and calibrated match confidence.

The evidence for a kind: the detector's label where it is trusted, and the categories of the nearest catalog
photos (the image model's, and in fine mode the garment vector's own). docs/decisions/2026-12-07-shopper-quality.md
says how the weights were chosen.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import zip_longest

from fashion_search.core.domain import Box, Detection, Hit
from fashion_search.core.settings import Settings


def kind_shares(hits: Sequence[Hit], depth: int) -> dict[str, float]:
    """Each category's share of the first `depth` hits (hits without a category vote for nothing)."""
    first = hits[:depth]
    if not first:
        return {}
    counts = Counter(h.product.category for h in first if h.product.category)
    return {kind: n / len(first) for kind, n in counts.items()}


def trusted_label(detection: Detection, settings: Settings) -> str | None:
    """The detector's label where tag mode and kind mixing act on it (settings.tag_label_min_score)."""
    return detection.category if detection.score >= settings.tag_label_min_score else None


def photo_coverage(box: Box, size: tuple[int, int], settings: Settings) -> float:
    """How much the whole photo's kind counts for the garment in box: 0 below kind_image_coverage[0] of the photo's
    area, 1 from kind_image_coverage[1] on, linear between."""
    low, high = settings.kind_image_coverage
    share = box.area / max(1, size[0] * size[1])
    if high <= low:
        return float(share >= low)
    return min(1.0, max(0.0, (share - low) / (high - low)))


def rerank_by_kind(
    hits: Sequence[Hit], detection: Detection, image_shares: dict[str, float], size: tuple[int, int],
    settings: Settings,
) -> list[Hit]:
    """One garment's candidates (best first) re-scored by the evidence for their kind, best first."""
    own = kind_shares(hits, settings.kind_vote_depth)
    label = detection.category if detection.score >= settings.kind_label_min_score else None
    image = settings.kind_image_weight * photo_coverage(detection.box, size, settings)

    def bonus(kind: str) -> float:
        return (settings.kind_own_weight * own.get(kind, 0.0) + image * image_shares.get(kind, 0.0)
                + (settings.kind_label_weight if kind and kind == label else 0.0))

    scored = sorted((Hit(h.product, float(h.score) + bonus(h.product.category)) for h in hits), key=lambda h: -h.score)
    return keep_clear_nearest(hits, scored, settings.kind_keep_margin)


def keep_clear_nearest(hits: Sequence[Hit], scored: list[Hit], margin: float) -> list[Hit]:
    """The re-scored list with the nearest candidate of hits (best first) put back first where its score led the
    second's by at least margin; it gets the score of the list's first so that the order stays best first."""
    if len(hits) < 2 or hits[0].score - hits[1].score < margin or not scored:
        return scored
    nearest = hits[0].product.product_id
    if scored[0].product.product_id == nearest:
        return scored
    kept = next(h for h in scored if h.product.product_id == nearest)
    return [Hit(kept.product, scored[0].score), *(h for h in scored if h.product.product_id != nearest)]


def interleave(groups: Sequence[Sequence[Hit]], top_k: int) -> list[Hit]:
    """Results of several lists in turn (the first of each, then the second...), each product once."""
    out: list[Hit] = []
    seen: set[str] = set()
    for row in zip_longest(*groups):
        for hit in row:
            if hit is not None and hit.product.product_id not in seen:
                seen.add(hit.product.product_id)
                out.append(hit)
    return out[:top_k]


def _containment(a: Box, b: Box) -> float:
    """Share of the smaller box inside the other."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    smaller = min(a.area, b.area)
    return max(0.0, w) * max(0.0, h) / smaller if smaller > 0 else 0.0


def _gap(a: Box, b: Box) -> float:
    """Distance between two boxes (0 when they touch or overlap), in units of the smaller box's longer side."""
    gx = max(0.0, max(a.x0, b.x0) - min(a.x1, b.x1))
    gy = max(0.0, max(a.y0, b.y0) - min(a.y1, b.y1))
    side = min(max(a.width, a.height), max(b.width, b.height))
    return max(gx, gy) / side if side > 0 else math.inf


def same_garment(a: Detection, b: Detection, settings: Settings) -> bool:
    """Whether two detections of one kind are one garment: one box (nearly) inside the other, or the two halves of
    a pair (shoes) side by side."""
    if a.category != b.category:
        return False
    if _containment(a.box, b.box) >= settings.garment_merge_containment:
        return True
    return a.category in settings.garment_pair_kinds and _gap(a.box, b.box) <= settings.garment_pair_gap


def merge_garment_parts(detections: Sequence[Detection], settings: Settings) -> list[Detection]:
    """Best-first detections with the boxes of one garment joined: the union box, the best part's label and score."""
    merged: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        for i, kept in enumerate(merged):
            if same_garment(kept, det, settings):
                b, k = det.box, kept.box
                union = Box(min(b.x0, k.x0), min(b.y0, k.y0), max(b.x1, k.x1), max(b.y1, k.y1))
                merged[i] = Detection(union, kept.category, kept.score)
                break
        else:
            merged.append(det)
    return merged


def match_confidence(score: float, mode: str, settings: Settings) -> float:
    """Calibrated probability that a result of this mode and score is of the query's kind (settings.confidence_fit)."""
    slope, offset = settings.confidence_fit.get(mode, settings.confidence_fit["simple"])
    z = slope * score + offset
    return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


def match_band(confidence: float, settings: Settings) -> str:
    """"good" from settings.good_match_confidence on, else "possible"."""
    return "good" if confidence >= settings.good_match_confidence else "possible"
