"""A linear softmax garment classifier over EfficientNet-Lite0 pooled features, stored as a small .npz."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_HEAD_PATH = WEIGHTS_DIR / "garment_head_v0.npz"

# The garment categories every detector version must keep (the catalog and API filter on them).
CATEGORIES = (
    "dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt",
)
# Guards the feature standardisation against constant feature dimensions.
MIN_STD = 1e-6


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax that ignores -inf entries (disallowed classes get probability 0)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class GarmentHead:
    """Multinomial logistic regression: p(class | x) = softmax(W · (x - mean) / std + b)."""

    classes: tuple[str, ...]
    weight: np.ndarray  # C×D
    bias: np.ndarray  # C
    mean: np.ndarray  # D
    std: np.ndarray  # D

    @classmethod
    def load(cls, path: Path | str = DEFAULT_HEAD_PATH) -> GarmentHead:
        """Read a head saved with `save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                classes=tuple(str(c) for c in data["classes"]),
                weight=data["weight"].astype(np.float32),
                bias=data["bias"].astype(np.float32),
                mean=data["mean"].astype(np.float32),
                std=np.maximum(data["std"].astype(np.float32), MIN_STD),
            )

    def save(self, path: Path | str) -> None:
        """Write the head as a compressed .npz (float16 weights: well under 1 MB, no accuracy change)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, classes=np.array(self.classes), weight=self.weight.astype(np.float16),
            bias=self.bias.astype(np.float32), mean=self.mean.astype(np.float16), std=self.std.astype(np.float16),
        )

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Class scores (B×C) for pooled backbone features (B×D)."""
        x = (np.asarray(features, dtype=np.float32) - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def probabilities(self, features: np.ndarray, allowed: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities (B×C); with `allowed`, renormalised over those classes only (others 0)."""
        logits = self.logits(features)
        if allowed is not None:
            keep = np.array([c in allowed for c in self.classes])
            if not keep.any():
                raise ValueError(f"none of {list(allowed)} is a class of this head")
            logits = np.where(keep, logits, -np.inf)
        return softmax(logits)

    def predict(self, features: np.ndarray, allowed: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """The most probable class and its probability for each row."""
        probs = self.probabilities(features, allowed)
        best = probs.argmax(axis=1)
        return [(self.classes[i], float(probs[row, i])) for row, i in enumerate(best)]
