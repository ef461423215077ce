"""Speed of the local OGBench recordings: rows per second of each catalogued recipe, on a prefix of its episodes.

    OMP_NUM_THREADS=1 python benchmarks/ogbench_generation.py                      # 10 episodes (+1 val) each, 1 worker
    OMP_NUM_THREADS=1 python benchmarks/ogbench_generation.py --episodes 20 --workers 2

Each recipe (`datasets/catalogue.toml`, `local/ogbench-*`) records `--episodes` training episodes plus
episodes // 10 validation episodes of its full length (1001 rows) with `ogbench_recipes.record`, and
prints rows/s and the time the catalogue's 1100 episodes would take at that rate. Writing the npz
files is not timed. Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import platform
import time

from offbench.data import ogbench_recipes
from offbench.data.catalogue import catalogue
from offbench.provenance import cpu_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="training episodes per recipe (at least 10)")
    parser.add_argument("--workers", type=int, default=1, help="processes; the rows do not depend on it")
    args = parser.parse_args()
    print(f"{cpu_model() or platform.processor()}, {args.workers} worker(s)")
    for dataset_id, entry in catalogue().items():
        if entry["recipe"] not in ogbench_recipes.EPISODE_RECIPES:
            continue
        start = time.perf_counter()
        train, val = ogbench_recipes.record({**entry, "episodes": args.episodes}, workers=args.workers)
        seconds = time.perf_counter() - start
        rows = len(train["terminals"]) + len(val["terminals"])
        full = (entry["episodes"] + entry["episodes"] // 10) * entry["episode_steps"]
        print(f"{dataset_id}: {rows} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s; "
              f"the full recording ({full:,} rows) ~ {full / (rows / seconds) / 60:.0f} min", flush=True)


if __name__ == "__main__":
    main()
