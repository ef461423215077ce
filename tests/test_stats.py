"""Statistics on synthetic arrays with known answers, reproducibility, and agreement with rliable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rliable import library as rly
from rliable import metrics

from offbench.analysis import stats

# 4 runs x 3 tasks. Sorted values: 1..11, 200. IQM trims 3 from each end -> mean(4..9) = 6.5.
KNOWN = np.array([[1, 5, 9], [2, 6, 10], [3, 7, 11], [4, 8, 200]], dtype=float)


def test_aggregate_metrics_of_a_known_array() -> None:
    frame = stats.aggregate_intervals({"a": KNOWN}, reps=200, seed=0).set_index("metric")
    assert frame.loc["IQM", "estimate"] == pytest.approx(6.5)
    assert frame.loc["Mean", "estimate"] == pytest.approx(266 / 12)
    assert frame.loc["Median", "estimate"] == pytest.approx(6.5)  # task means 2.5, 6.5, 57.5
    # gamma = 100 for x100 scores: the 200 is clipped to 100 -> 100 - (66 + 100) / 12
    assert frame.loc["Optimality gap", "estimate"] == pytest.approx(100 - 166 / 12)
    assert (frame["ci_low"] <= frame["estimate"]).all() and (frame["estimate"] <= frame["ci_high"]).all()


def test_interval_narrows_with_more_runs() -> None:
    # The same empirical distribution with 10x the runs: the CI of the mean shrinks by ~sqrt(10).
    few = np.random.default_rng(0).normal(50, 10, 5)
    many = np.tile(few, 10)
    width_few, width_many = (stats.mean_interval(x, 500, 1) for x in (few, many))
    assert (width_many.high - width_many.low) < 0.5 * (width_few.high - width_few.low)
    matrix = np.random.default_rng(1).normal(50, 10, (3, 4))
    iqm = stats.aggregate_intervals({"few": matrix, "many": np.tile(matrix, (10, 1))}, 500, 1)
    widths = iqm.query("metric == 'IQM'").set_index("algo").eval("ci_high - ci_low")
    assert widths["many"] < 0.5 * widths["few"]


def test_same_seed_same_intervals_and_global_rng_untouched() -> None:
    matrices = {"a": np.random.default_rng(1).normal(40, 10, (5, 3))}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = stats.aggregate_intervals(matrices, 200, seed=7)
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's global stream is restored
    pd.testing.assert_frame_equal(first, stats.aggregate_intervals(matrices, 200, seed=7))
    assert not first["ci_low"].equals(stats.aggregate_intervals(matrices, 200, seed=8)["ci_low"])


def test_adding_an_algorithm_does_not_change_another_algorithms_interval() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(40, 10, (5, 3)), rng.normal(60, 10, (5, 3))
    alone = stats.aggregate_intervals({"a": a}, 200, seed=0)
    together = stats.aggregate_intervals({"a": a, "b": b}, 200, seed=0)
    pd.testing.assert_frame_equal(alone, together[together["algo"] == "a"].reset_index(drop=True))


def test_probability_of_improvement_known_values() -> None:
    high, low = np.full((3, 2), 80.0), np.full((4, 2), 20.0)
    assert stats.probability_of_improvement(high, low, 200, 0) == (1.0, 1.0, 1.0)
    assert stats.probability_of_improvement(high, high, 200, 0) == (0.5, 0.5, 0.5)
    # one task: x = {1, 3}, y = {2, 3}: pairs (1,2) 0, (1,3) 0, (3,2) 1, (3,3) 0.5 -> 1.5 / 4
    assert stats.probability_of_improvement(np.array([[1.0], [3.0]]), np.array([[2.0], [3.0]]), 200, 0).estimate == 0.375


def test_probability_of_improvement_matches_rliable() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, (6, 3)).astype(float)  # small integers: many ties
    y = rng.integers(0, 6, (4, 3)).astype(float)
    np.random.seed(11)
    point, interval = rly.get_interval_estimates({"x,y": (x, y)}, metrics.probability_of_improvement, reps=300)
    ours = stats.probability_of_improvement(x, y, reps=300, seed=11)
    np.testing.assert_allclose(ours, [point["x,y"], *interval["x,y"].ravel()], rtol=0, atol=1e-12)


def test_pairwise_improvement_covers_each_pair_once() -> None:
    rng = np.random.default_rng(4)
    matrices = {name: rng.normal(level, 5, (5, 2)) for name, level in (("a", 20), ("b", 50), ("c", 80))}
    poi = stats.pairwise_improvement(matrices, 200, 0)
    assert list(zip(poi["algo_x"], poi["algo_y"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert (poi["estimate"] < 0.1).all()  # a < b < c by 30 points with sd 5


def test_performance_profile_counts_runs_above_threshold() -> None:
    profile = stats.performance_profiles({"a": np.array([[10.0, 20.0], [30.0, 40.0]])}, np.array([0.0, 25.0, 50.0]), 200, 0)["a"]
    np.testing.assert_array_equal(profile.values, [1.0, 0.5, 0.0])
    assert (profile.low <= profile.values).all() and (profile.values <= profile.high).all()


def test_curve_band_is_the_mean_with_a_band_that_vanishes_without_spread() -> None:
    values = np.array([[0.0, 10.0, 20.0], [2.0, 14.0, 20.0]])
    mean, low, high = stats.curve_band(values, 200, 0)
    np.testing.assert_allclose(mean, [1.0, 12.0, 20.0])
    assert low[2] == high[2] == 20.0 and low[1] < 12.0 < high[1]


def test_difference_of_means() -> None:
    reference = np.array([50.0, 52.0, 48.0, 51.0, 49.0])
    shifted = stats.difference_of_means(reference - 10, reference, 500, 0)
    assert shifted.estimate == pytest.approx(-10.0)
    assert shifted.low < -10.0 < shifted.high
    assert stats.difference_of_means(reference, reference, 500, 0).estimate == 0.0
