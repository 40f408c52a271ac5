"""Vector arithmetic shared by the embedder, the catalog side of the pipeline and the evaluations."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation, safe for zero rows."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def mirror_averaged(mode: str, catalog: bool) -> bool:
    """Whether settings.mirror_averaging `mode` averages a catalog photo's (or else a query's) vector with its
    mirror image's: catalog photos unless "off", queries only with "both"."""
    return mode == "both" or (catalog and mode == "catalog")


def mirror_average(vectors: np.ndarray) -> np.ndarray:
    """Rows' second half are the first half's mirror images: each image's unit vector averaged with its mirror's."""
    n = len(vectors) // 2
    return l2_normalize(vectors[:n] + vectors[n:])
