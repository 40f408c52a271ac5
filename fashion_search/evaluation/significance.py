"""How sure a figure is: percentile-bootstrap confidence intervals over queries, paired when two settings share them.

The evaluation sets are small (a few hundred queries), so two settings a few thousandths apart may differ by chance;
resampling the queries themselves (not assuming a distribution) says how wide that chance is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A mean over queries with its confidence interval."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """True if the whole interval lies on one side of zero (a difference that is not chance at this level)."""
        return self.low > 0 or self.high < 0

    def fields(self, key: str, with_value: bool = True) -> dict[str, float]:
        """As flat JSON-friendly figures of a results row: key, "key low", "key high" (4 places)."""
        fields = {f"{key} low": round(self.low, 4), f"{key} high": round(self.high, 4)}
        return ({key: round(self.value, 4)} if with_value else {}) | fields

    @classmethod
    def from_fields(cls, row: dict[str, float], key: str) -> Interval | None:
        """The interval `fields` stored in a row under key; None if it has none."""
        if f"{key} low" not in row:
            return None
        return cls(row[key], row[f"{key} low"], row[f"{key} high"])

    def signed(self) -> str:
        """Like "+0.012 [-0.003, +0.027]", for differences."""
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def mean_interval(values: np.ndarray, seed: int = 0) -> Interval:
    """The mean of per-query values and its CONFIDENCE percentile-bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    mean = float(values.mean())
    if np.ptp(values) == 0:  # every resample has the same mean; scipy would warn about a degenerate distribution
        return Interval(mean, mean, mean)
    ci = stats.bootstrap(
        (values,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
        vectorized=True, random_state=np.random.default_rng(seed),
    ).confidence_interval
    return Interval(mean, float(ci.low), float(ci.high))


def summed_difference(pairs: list[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> Interval:
    """Σ (after − before) means over several query sets, each paired within itself and resampled on its own: the
    interval of a choice that adds figures measured on different queries (e.g. P@10 + R@1)."""
    diffs = []
    for before, after in pairs:
        before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
        if before.shape != after.shape or before.size == 0:
            raise ValueError(f"paired figures need the same, non-empty queries: {before.shape} vs {after.shape}")
        diffs.append(after - before)
    total = float(sum(d.mean() for d in diffs))
    if all(np.ptp(d) == 0 for d in diffs):
        return Interval(total, total, total)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return sum(x.mean(axis=axis) for x in samples)

    ci = stats.bootstrap(
        tuple(diffs), statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
        vectorized=True, paired=False, random_state=np.random.default_rng(seed),
    ).confidence_interval
    return Interval(total, float(ci.low), float(ci.high))


def paired_difference(before: np.ndarray, after: np.ndarray, seed: int = 0) -> Interval:
    """after − before, per query (both measured on the same queries, in the same order), with its interval."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError(f"paired figures need the same queries: {before.shape} vs {after.shape}")
    return mean_interval(after - before, seed)
