"""How long `offbench report` takes on a paper-sized grid: 6 algorithms x 9 datasets x 10 seeds.

Writes synthetic finished runs (1M steps, an evaluation every 5000 steps with 10 episodes: 200
evaluations per run) into a temporary store through the real ResultsStore API, then times
`build_report` at 2000 bootstrap resamples: loading 540 records, per-dataset CIs, rliable aggregates,
performance profiles, probability of improvement for all 15 pairs, learning-curve bands, tables and
figures. Goal: <= 60 s. For comparison it also times rliable's own probability of improvement on one
pair. Prints numbers; asserts nothing.

    python benchmarks/report_speed.py [--reps 2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from analysis_fixtures import write_synthetic_store  # noqa: E402

from offbench.analysis.report import build_report  # noqa: E402
from offbench.analysis.stats import probability_of_improvement  # noqa: E402
from offbench.provenance import cpu_model  # noqa: E402

ALGOS = ["td3bc", "iql", "cql", "bcq", "driftql", "sparse_reg"]
DATASETS = [f"local/{env}-{kind}-v5" for env in ("hopper", "halfcheetah", "walker2d") for kind in ("random", "medium", "expert")]


def rliable_poi_seconds(x: np.ndarray, y: np.ndarray, reps: int) -> float:
    from rliable import library as rly
    from rliable import metrics

    start = time.perf_counter()
    rly.get_interval_estimates({"x,y": (x, y)}, metrics.probability_of_improvement, reps=reps)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="write the store and report here instead of a temp dir")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_model()}, {cores} cores usable ({os.cpu_count()} online), {platform.platform()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        rng = np.random.default_rng(0)
        levels = {(a, d): float(rng.uniform(10, 100)) for a in ALGOS for d in DATASETS}
        start = time.perf_counter()
        store = write_synthetic_store(
            root / "results", levels, range(10), n_evals=200, noise=4.0, steps=1_000_000, eval_episodes=10
        )
        print(f"setup: wrote {len(store.runs())} synthetic runs in {time.perf_counter() - start:.1f} s (not timed)")

        start = time.perf_counter()
        report = build_report(store, root / "report", name="speed", reps=args.reps, seed=0)
        elapsed = time.perf_counter() - start
        print(
            f"report: {len(ALGOS)} algorithms x {len(DATASETS)} datasets x 10 seeds, {args.reps} resamples, "
            f"{len(report.files)} files: {elapsed:.1f} s (goal <= 60 s)"
        )

        x, y = rng.normal(50, 10, (10, len(DATASETS))), rng.normal(45, 10, (10, len(DATASETS)))
        start = time.perf_counter()
        probability_of_improvement(x, y, args.reps, seed=0)
        ours = time.perf_counter() - start
        probe = max(args.reps // 10, 1)
        theirs = rliable_poi_seconds(x, y, probe) * args.reps / probe
        pairs = len(ALGOS) * (len(ALGOS) - 1) // 2
        print(
            f"probability of improvement, one pair, {args.reps} resamples: offbench {ours:.2f} s, "
            f"rliable ~{theirs:.1f} s (extrapolated from {probe} resamples); {pairs} pairs with rliable: ~{theirs * pairs:.0f} s"
        )


if __name__ == "__main__":
    main()
