"""Category-vote re-ranking: a result's score gains weight × the share of the top results that share its category.

The nearest catalog photos vote for the query's category (a k-nearest-neighbour classifier over the catalog's own
labels); results of the winning category move up, strays of other categories move down. One array function serves
the pipeline (one query's hits) and the evaluations (many queries' exact-kNN candidates).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fashion_search.core.domain import Hit

NO_CATEGORY = -1  # a candidate without a category gets no vote and no bonus


def category_vote_scores(scores: np.ndarray, labels: np.ndarray, depth: int, weight: float) -> np.ndarray:
    """Scores (n, m) of candidates sorted best first, each plus weight × the share of the first `depth` candidates
    whose label (n, m; ints, NO_CATEGORY for none) it shares; depth 0 or weight 0: unchanged."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    labels = np.atleast_2d(np.asarray(labels))
    if depth <= 0 or weight == 0 or scores.shape[1] == 0:
        return scores
    voters = labels[:, :depth]
    same = (labels[:, :, None] == voters[:, None, :]) & (voters[:, None, :] != NO_CATEGORY)
    return scores + weight * same.sum(axis=2) / voters.shape[1]


def vote_order(scores: np.ndarray, labels: np.ndarray, depth: int, weight: float) -> np.ndarray:
    """Column order (n, m) of candidates by their category-vote scores, best first; ties keep the search's order."""
    return np.argsort(-category_vote_scores(scores, labels, depth, weight), axis=1, kind="stable")


def rerank_hits(hits: Sequence[Hit], depth: int, weight: float) -> list[Hit]:
    """One query's hits (best first) re-ranked by category vote, their scores replaced by the re-ranked ones."""
    if not hits or depth <= 0 or weight == 0:
        return list(hits)
    names = sorted({h.product.category for h in hits if h.product.category})
    labels = [names.index(h.product.category) if h.product.category else NO_CATEGORY for h in hits]
    scores = category_vote_scores(np.array([h.score for h in hits]), np.array(labels), depth, weight)[0]
    order = np.argsort(-scores, kind="stable")
    return [Hit(hits[i].product, float(scores[i])) for i in order]
