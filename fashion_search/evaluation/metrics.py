"""Retrieval metrics every evaluation shares: precision, average precision, exact kNN relevance."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

KS = (5, 10, 20)


def precision_at(relevant: list[bool], k: int) -> float:
    """Fraction of the first k results that are relevant (missing results count as misses)."""
    return sum(relevant[:k]) / k


def average_precision(relevant: list[bool], k: int = 20) -> float:
    """AP@k: mean of P@i at each relevant rank i ≤ k, over the relevant results retrieved."""
    hits, total = 0, 0.0
    for i, rel in enumerate(relevant[:k], start=1):
        if rel:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def write_section(path: Path, key: str, body: str, title: str) -> None:
    """Replace (or append) the section between markers `key` in a Markdown file."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.exists() else f"# {title}\n\n"
    block = f"{begin}\n{body}{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def expanded_queries(queries: np.ndarray, catalog: np.ndarray, expand: int) -> np.ndarray:
    """The queries expanded by their `expand` nearest catalog vectors (exact kNN), as the index does; 0: as given."""
    from fashion_search.services.search.points import expand_query

    if not expand:
        return queries
    return expand_query(queries, catalog[np.argsort(-(queries @ catalog.T), axis=1)[:, :expand]])


def knn_relevance(
    queries: np.ndarray, q_labels: np.ndarray, catalog: np.ndarray, cat_labels: np.ndarray, expand: int = 0
) -> np.ndarray:
    """Whether each query's top-20 results by exact cosine kNN share its class, (N, 20); expand > 0 applies query
    expansion as the index does."""
    queries = expanded_queries(queries, catalog, expand)
    top = np.argsort(-(queries @ catalog.T), axis=1)[:, : max(KS)]
    return cat_labels[top] == q_labels[:, None]


def precision_row(relevant: np.ndarray) -> dict[str, float]:
    """P@5/10/20 and mAP@20 from a knn_relevance matrix."""
    row = {f"P@{k}": round(float(relevant[:, :k].mean()), 4) for k in KS}
    row["mAP@20"] = round(statistics.fmean(average_precision(list(r)) for r in relevant), 4)
    return row


def precision_per_query(relevant: np.ndarray, k: int = 10) -> np.ndarray:
    """Each query's P@k from a knn_relevance matrix: what the bootstrap intervals resample (P@10 by default, the
    seed-001 headline figure)."""
    return relevant[:, :k].mean(axis=1)


def knn_precision(
    queries: np.ndarray, q_labels: np.ndarray, catalog: np.ndarray, cat_labels: np.ndarray, expand: int = 0
) -> dict[str, float]:
    """P@5/10/20 and mAP@20 by exact cosine kNN; expand > 0 applies query expansion as the index does."""
    return precision_row(knn_relevance(queries, q_labels, catalog, cat_labels, expand))
