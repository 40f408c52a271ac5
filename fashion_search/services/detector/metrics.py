"""Detection metrics: VOC-style average precision at an IoU threshold, per class and mean."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from fashion_search.core.domain import Box, Detection


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated area under the precision/recall curve (VOC 2010+)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    idx = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def ranked_matches(
    predictions: Sequence[Sequence[Detection]],
    truths: Sequence[Sequence[tuple[Box, str]]],
    iou_threshold: float = 0.5,
    class_agnostic: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per class present in the ground truth: prediction scores best first, whether each matched a truth of its
    image not matched before (IoU ≥ iou_threshold; 1 or 0), and the number of truths."""
    scored: dict[str, list[tuple[float, int, Box]]] = defaultdict(list)
    gt: dict[str, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for i, (preds, objs) in enumerate(zip(predictions, truths, strict=True)):
        for d in preds:
            scored["garment" if class_agnostic else d.category].append((d.score, i, d.box))
        for box, cat in objs:
            gt["garment" if class_agnostic else cat][i].append(box)
    out = {}
    for cat, images in gt.items():
        used = {i: [False] * len(b) for i, b in images.items()}
        scores, tp = [], []
        for score, i, box in sorted(scored.get(cat, []), key=lambda s: -s[0]):
            cands = images.get(i, [])
            ious = [box.iou(t) for t in cands]
            j = int(np.argmax(ious)) if ious else -1
            found = j >= 0 and ious[j] >= iou_threshold and not used[i][j]
            if found:
                used[i][j] = True
            scores.append(score)
            tp.append(int(found))
        out[cat] = (np.array(scores, dtype=float), np.array(tp, dtype=int), sum(len(b) for b in images.values()))
    return out


def detection_map(
    predictions: Sequence[Sequence[Detection]],
    truths: Sequence[Sequence[tuple[Box, str]]],
    iou_threshold: float = 0.5,
    class_agnostic: bool = False,
) -> tuple[float, dict[str, float]]:
    """mAP over classes present in the ground truth, and AP per class; each truth matches one prediction."""
    per_class = {}
    for cat, (_, tp, n_true) in ranked_matches(predictions, truths, iou_threshold, class_agnostic).items():
        tps, fps = np.cumsum(tp), np.cumsum(1 - tp)
        recall = tps / max(n_true, 1)
        precision = tps / np.maximum(tps + fps, 1)
        per_class[cat] = average_precision(recall, precision) if len(tp) else 0.0
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return mean, dict(sorted(per_class.items()))


def best_f_threshold(
    predictions: Sequence[Sequence[Detection]],
    truths: Sequence[Sequence[tuple[Box, str]]],
    beta: float = 1.0,
    iou_threshold: float = 0.5,
) -> tuple[float, float, float, float]:
    """The score threshold with the best class-agnostic F-beta (each truth matches one prediction, best-scored
    first; beta > 1 weighs recall more). Returns (threshold, F-beta, precision, recall) there; (inf, 0, 0, 0)
    when nothing can be found.
    """
    matches = ranked_matches(predictions, truths, iou_threshold, class_agnostic=True)
    if "garment" not in matches or not len(matches["garment"][0]):
        return float("inf"), 0.0, 0.0, 0.0
    scores, tp, n_true = matches["garment"]
    tps = np.cumsum(tp)
    kept = np.arange(1, len(scores) + 1)
    # A threshold keeps every detection scoring at least as much: only the last of equal scores is a cut point.
    cut = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    precision, recall = tps[cut] / kept[cut], tps[cut] / n_true
    f = (1 + beta**2) * precision * recall / np.maximum(beta**2 * precision + recall, 1e-12)
    best = int(np.argmax(f))
    return float(scores[cut[best]]), float(f[best]), float(precision[best]), float(recall[best])


def f_at_threshold(
    predictions: Sequence[Sequence[Detection]],
    truths: Sequence[Sequence[tuple[Box, str]]],
    threshold: float,
    beta: float = 1.0,
    iou_threshold: float = 0.5,
) -> tuple[float, float, float]:
    """Class-agnostic (F-beta, precision, recall) of the detections scoring at least threshold."""
    kept = [[d for d in preds if d.score >= threshold] for preds in predictions]
    matches = ranked_matches(kept, truths, iou_threshold, class_agnostic=True)
    _, tp, n_true = matches.get("garment", (np.zeros(0), np.zeros(0, int), 0))
    precision = float(tp.sum() / len(tp)) if len(tp) else 0.0
    recall = float(tp.sum() / n_true) if n_true else 0.0
    f = (1 + beta**2) * precision * recall / max(beta**2 * precision + recall, 1e-12)
    return f, precision, recall
