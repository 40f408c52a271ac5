"""Detection metrics: VOC-style average precision at an IoU threshold, per class and mean."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from fashion_search.domain import Box, Detection


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated area under the precision/recall curve (VOC 2010+)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    idx = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def detection_map(
    predictions: Sequence[Sequence[Detection]],
    truths: Sequence[Sequence[tuple[Box, str]]],
    iou_threshold: float = 0.5,
    class_agnostic: bool = False,
) -> tuple[float, dict[str, float]]:
    """mAP over classes present in the ground truth, and AP per class; each truth matches one prediction."""
    scored: dict[str, list[tuple[float, int, Box]]] = defaultdict(list)
    gt: dict[str, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for i, (preds, objs) in enumerate(zip(predictions, truths, strict=True)):
        for d in preds:
            scored["garment" if class_agnostic else d.category].append((d.score, i, d.box))
        for box, cat in objs:
            gt["garment" if class_agnostic else cat][i].append(box)
    per_class = {}
    for cat, images in gt.items():
        n_true = sum(len(b) for b in images.values())
        used = {i: [False] * len(b) for i, b in images.items()}
        tp, fp = [], []
        for _, i, box in sorted(scored.get(cat, []), key=lambda s: -s[0]):
            cands = images.get(i, [])
            ious = [box.iou(t) for t in cands]
            j = int(np.argmax(ious)) if ious else -1
            if j >= 0 and ious[j] >= iou_threshold and not used[i][j]:
                used[i][j] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        tps, fps = np.cumsum(tp), np.cumsum(fp)
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
    hits: list[tuple[float, int]] = []
    for preds, objs in zip(predictions, truths, strict=True):
        used = [False] * len(objs)
        for d in sorted(preds, key=lambda p: -p.score):
            ious = [d.box.iou(box) for box, _ in objs]
            j = int(np.argmax(ious)) if ious else -1
            found = j >= 0 and ious[j] >= iou_threshold and not used[j]
            if found:
                used[j] = True
            hits.append((d.score, int(found)))
    n_true = sum(len(objs) for objs in truths)
    if not hits or n_true == 0:
        return float("inf"), 0.0, 0.0, 0.0
    hits.sort(key=lambda h: -h[0])
    scores = np.array([s for s, _ in hits])
    tps = np.cumsum([t for _, t in hits])
    kept = np.arange(1, len(hits) + 1)
    # A threshold keeps every detection scoring at least as much: only the last of equal scores is a cut point.
    cut = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    precision, recall = tps[cut] / kept[cut], tps[cut] / n_true
    f = (1 + beta**2) * precision * recall / np.maximum(beta**2 * precision + recall, 1e-12)
    best = int(np.argmax(f))
    return float(scores[cut[best]]), float(f[best]), float(precision[best]), float(recall[best])
