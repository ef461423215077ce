"""Bootstrap statistics over seeds, reproducible given a seed.

rliable computes the aggregate metrics (IQM, mean, median, optimality gap), the per-dataset mean
intervals, the learning-curve bands and the performance profiles. Its stratified bootstrap draws its
resampling indices from NumPy's *global* generator (`np.random.choice`); the `random_state` it
accepts is handed to arch and never used for those draws. So every function here seeds the global
generator itself, from the `seed` it is given, and restores the previous state afterwards: the same
inputs and seed give identical intervals, and callers' own use of `np.random` is left untouched.

Callers derive one seed per quantity with `stream_seed(seed, *key)` (e.g. the algorithm name), so an
interval does not change when another algorithm or dataset is added to a report.

The probability of improvement is the one statistic computed here rather than by rliable: rliable
evaluates it with one Mann-Whitney test per task per resample (~10 s per pair at 2000 resamples on a
slow CPU). `probability_of_improvement` draws exactly the indices rliable would draw from the same
seed and evaluates all resamples at once, so it returns rliable's interval in a fraction of the time
(checked against rliable in tests/test_stats.py).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics

CONFIDENCE = 0.95
DEFAULT_REPS = 2000
PAPER_REPS = 50_000
MAX_SCORE = 100.0  # scores are normalised x100: 100 is the expert reference, the optimality-gap target

AGGREGATE_METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "IQM": metrics.aggregate_iqm,
    "Mean": metrics.aggregate_mean,
    "Median": metrics.aggregate_median,
    # rliable's default gamma=1 assumes [0, 1] scores; ours are x100.
    "Optimality gap": partial(metrics.aggregate_optimality_gap, gamma=MAX_SCORE),
}

_POI_CHUNK = 512  # resamples evaluated at once: bounds memory at (chunk, runs_x, runs_y, tasks)


class Interval(NamedTuple):
    """A point estimate with its 95% bootstrap confidence interval."""

    estimate: float
    low: float
    high: float


class Profile(NamedTuple):
    """A performance profile: the fraction of runs scoring above each threshold, with 95% bands."""

    taus: np.ndarray
    values: np.ndarray
    low: np.ndarray
    high: np.ndarray


def stream_seed(seed: int, *key: str) -> int:
    """A 32-bit seed for one named quantity, derived from the report seed (stable across platforms)."""
    entropy = [seed, *(zlib.crc32(part.encode()) for part in key)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator (which rliable draws from) and restore its state on exit."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def mean_interval(scores: np.ndarray, reps: int, seed: int) -> Interval:
    """Mean over seeds of one cell and its percentile-bootstrap CI (resampling seeds)."""
    point, interval = _rliable_intervals(
        np.asarray(scores, float)[:, None], lambda x: np.array([metrics.aggregate_mean(x)]), reps, seed
    )
    return Interval(float(point[0]), float(interval[0, 0]), float(interval[1, 0]))


def curve_band(values: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve over seeds with a pointwise 95% CI. `values`: (runs, evaluations).

    Each evaluation step is a stratum of rliable's stratified bootstrap, so every step gets the
    marginal bootstrap distribution of its mean over seeds (as rliable's sample-efficiency curves).
    """
    point, interval = _rliable_intervals(np.asarray(values, float), lambda x: np.mean(x, axis=0), reps, seed)
    return point, interval[0], interval[1]


def aggregate_intervals(matrices: dict[str, np.ndarray], reps: int, seed: int) -> pd.DataFrame:
    """IQM, mean, median and optimality gap per algorithm with stratified-bootstrap 95% CIs.

    `matrices[algo]` is (runs, datasets); every algorithm must cover the same datasets. Returns one row
    per (algo, metric): algo, metric, estimate, ci_low, ci_high.
    """
    names = list(AGGREGATE_METRICS)

    def all_metrics(scores: np.ndarray) -> np.ndarray:
        return np.array([AGGREGATE_METRICS[name](scores) for name in names])

    rows = []
    for algo, matrix in matrices.items():
        point, interval = _rliable_intervals(matrix, all_metrics, reps, stream_seed(seed, "aggregate", algo))
        rows += [
            {"algo": algo, "metric": name, "estimate": point[i], "ci_low": interval[0, i], "ci_high": interval[1, i]}
            for i, name in enumerate(names)
        ]
    return pd.DataFrame(rows)


def profile_thresholds(matrices: dict[str, np.ndarray], num: int = 101) -> np.ndarray:
    """Thresholds spanning every score and at least [0, 100]."""
    scores = np.concatenate([m.ravel() for m in matrices.values()])
    return np.linspace(min(0.0, scores.min()), max(MAX_SCORE, scores.max()), num)


def performance_profiles(matrices: dict[str, np.ndarray], taus: np.ndarray, reps: int, seed: int) -> dict[str, Profile]:
    """Run-score distributions (fraction of all runs with score > tau) with 95% bands, via rliable."""

    def fraction_above(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        # Vectorised equivalent of rliable's default `score_distributions` (np.vectorize over taus).
        return np.mean(scores[..., None] > thresholds, axis=(0, 1))

    profiles = {}
    for algo, matrix in matrices.items():
        with seeded_global_rng(stream_seed(seed, "profile", algo)):
            values, bands = rly.create_performance_profile(
                {algo: matrix}, taus, custom_profile_func=fraction_above, reps=reps
            )
        profiles[algo] = Profile(taus, values[algo], bands[algo][0], bands[algo][1])
    return profiles


def difference_of_means(new: np.ndarray, reference: np.ndarray, reps: int, seed: int) -> Interval:
    """mean(new) - mean(reference) with a 95% CI; the two samples are resampled independently."""

    def difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([np.mean(x) - np.mean(y)])

    pair = (np.asarray(new, float)[:, None], np.asarray(reference, float)[:, None])
    with seeded_global_rng(seed):
        point, interval = rly.get_interval_estimates({"d": pair}, difference, reps=reps)
    return Interval(float(point["d"][0]), float(interval["d"][0, 0]), float(interval["d"][1, 0]))


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int, seed: int) -> Interval:
    """P(X > Y) averaged over datasets, with rliable's 95% stratified independent-bootstrap CI.

    `x`: (runs_x, datasets), `y`: (runs_y, datasets). Per dataset, P(X > Y) = P(x_i > y_j) + P(x_i = y_j)/2
    over all pairs of runs (the Mann-Whitney U statistic / (runs_x * runs_y)), as in
    `rliable.metrics.probability_of_improvement`. The resampling indices are drawn in the same order
    as rliable's `StratifiedIndependentBootstrap` (x then y, for each resample), so with the same seed
    the interval equals `rly.get_interval_estimates({"x,y": (x, y)}, metrics.probability_of_improvement)`.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y cover different numbers of datasets: {x.shape[1]} vs {y.shape[1]}")
    (nx, tasks), ny = x.shape, y.shape[0]
    with seeded_global_rng(seed):
        draws = [(np.random.choice(nx, (nx, tasks)), np.random.choice(ny, (ny, tasks))) for _ in range(reps)]
    columns = np.arange(tasks)
    results = np.empty(reps)
    for start in range(0, reps, _POI_CHUNK):
        chunk = draws[start : start + _POI_CHUNK]
        x_rep = x[np.stack([ix for ix, _ in chunk]), columns]  # (chunk, nx, tasks)
        y_rep = y[np.stack([iy for _, iy in chunk]), columns]
        results[start : start + len(chunk)] = _poi(x_rep, y_rep)
    alpha = (1.0 - CONFIDENCE) / 2  # the percentiles exactly as arch computes them for rliable
    low, high = np.percentile(results, [100 * alpha, 100 * (1.0 - alpha)])
    return Interval(float(_poi(x[None], y[None])[0]), float(low), float(high))


def pairwise_improvement(matrices: dict[str, np.ndarray], reps: int, seed: int) -> pd.DataFrame:
    """P(X > Y) with 95% CIs for every pair of algorithms (X before Y in `matrices` order)."""
    rows = []
    for x, y in itertools.combinations(matrices, 2):
        interval = probability_of_improvement(matrices[x], matrices[y], reps, stream_seed(seed, "poi", x, y))
        rows.append({"algo_x": x, "algo_y": y, "estimate": interval.estimate, "ci_low": interval.low, "ci_high": interval.high})
    return pd.DataFrame(rows, columns=["algo_x", "algo_y", "estimate", "ci_low", "ci_high"])


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) averaged over tasks for a batch: x (batch, nx, tasks), y (batch, ny, tasks) -> (batch,)."""
    a, b = x[:, :, None, :], y[:, None, :, :]
    per_task = np.mean((a > b) + 0.5 * (a == b), axis=(1, 2))
    return np.mean(per_task, axis=1)


def _rliable_intervals(
    scores: np.ndarray, func: Callable[[np.ndarray], np.ndarray], reps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """rliable's stratified percentile bootstrap of `func` on one (runs, strata) array, seeded."""
    with seeded_global_rng(seed):
        point, interval = rly.get_interval_estimates(
            {"scores": scores}, func, reps=reps, confidence_interval_size=CONFIDENCE
        )
    return point["scores"], interval["scores"]
