"""Bootstrap intervals: they hold the mean, shrink with more queries, and tell a real paired gain from chance."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_search.evaluation.category import ablation_markdown, with_intervals
from fashion_search.evaluation.significance import Interval, mean_interval, paired_difference, summed_difference


def test_interval_holds_the_mean_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(0)
    few = mean_interval(rng.random(50) < 0.8)
    many = mean_interval(rng.random(2000) < 0.8)
    for ci in (few, many):
        assert ci.low < ci.value < ci.high
    assert many.high - many.low < (few.high - few.low) / 3
    assert many.low < 0.8 < many.high


def test_identical_values_give_a_zero_width_interval() -> None:
    assert mean_interval(np.ones(10)) == Interval(1.0, 1.0, 1.0)
    assert not paired_difference(np.ones(5), np.ones(5)).excludes_zero


def test_paired_difference_tells_a_consistent_gain_from_noise() -> None:
    rng = np.random.default_rng(1)
    before = rng.random(300)
    # Every query gains a little: small against the spread of the figures, but paired it is clear.
    gain = paired_difference(before, before + 0.02 + rng.normal(0, 0.01, 300))
    assert gain.excludes_zero and gain.low > 0
    assert gain.value == pytest.approx(0.02, abs=0.003)
    # The same figures in another order: no gain on average, and the interval says so.
    assert not paired_difference(before, rng.permutation(before)).excludes_zero


def test_paired_difference_needs_the_same_queries() -> None:
    with pytest.raises(ValueError, match="same queries"):
        paired_difference(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no values"):
        mean_interval(np.array([]))


def test_ablation_rows_carry_intervals_and_paired_gains() -> None:
    rng = np.random.default_rng(2)
    weak = rng.random((200, 20)) < 0.5
    strong = weak | (rng.random((200, 20)) < 0.6)  # every relevant result kept, more added
    table = with_intervals({"weak": weak, "strong": strong})
    assert "ΔP@10" not in table["weak"]
    row = table["strong"]
    assert row["ΔP@10"] == pytest.approx(row["P@10"] - table["weak"]["P@10"], abs=2e-4)
    assert row["ΔP@10 low"] > 0
    assert row["P@10 low"] <= row["P@10"] <= row["P@10 high"]
    text = ablation_markdown(table, "cmd", "catalog")
    assert f"| strong | {row['P@5']:.3f} | {row['P@10']:.3f} [{row['P@10 low']:.3f}, {row['P@10 high']:.3f}]" in text
    assert f"+{row['ΔP@10']:.3f} [+{row['ΔP@10 low']:.3f}, +{row['ΔP@10 high']:.3f}]" in text


def test_summed_difference_adds_figures_from_different_query_sets() -> None:
    rng = np.random.default_rng(3)
    p10, r1 = rng.random(400), (rng.random(250) < 0.8).astype(float)
    # One figure gains on every query, the other is only reshuffled: the sum gains by the first's gain.
    total = summed_difference([(p10, p10 + 0.03), (r1, rng.permutation(r1))])
    assert total.value == pytest.approx(0.03, abs=1e-9)
    assert total.low < 0.03 < total.high
    assert total.high - total.low > paired_difference(p10, p10 + 0.03).high - 0.03  # the reshuffle adds spread
    assert summed_difference([(np.ones(3), np.ones(3)), (np.zeros(2), np.zeros(2))]) == Interval(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same, non-empty"):
        summed_difference([(np.zeros(3), np.zeros(2))])


def test_interval_round_trips_through_a_results_row() -> None:
    ci = Interval(0.81234, 0.76301, 0.86349)
    row = {"n": 3.0} | ci.fields("recall@1")
    assert row == {"n": 3.0, "recall@1": 0.8123, "recall@1 low": 0.763, "recall@1 high": 0.8635}
    assert Interval.from_fields(row, "recall@1") == Interval(0.8123, 0.763, 0.8635)
    assert Interval.from_fields(row, "P@10") is None
    assert "recall@1" not in ci.fields("recall@1", with_value=False)
