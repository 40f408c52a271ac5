"""The seeded, class-stratified product holdout that the trainers and the evaluations share."""

from __future__ import annotations

import numpy as np

HOLDOUT = 0.15  # share of the train products the embedder's trainer holds out


def split_products(labels: np.ndarray, seed: int, share: float = HOLDOUT) -> np.ndarray:
    """A class-stratified share (default HOLDOUT) of the products (boolean mask), seeded."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        held[rng.choice(members, size=max(1, round(share * len(members))), replace=False)] = True
    return held
