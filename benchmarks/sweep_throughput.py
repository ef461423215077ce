"""Whole-machine throughput of a sweep: seed-steps/s of the local executor vs one process, and Ray vs local.

The same grid each time (TD3+BC at the default config on a small locally made random Hopper dataset, `--jobs` seed
groups of `--seeds` seeds, `--steps` steps, evaluations only at the end), into fresh stores:
  one process:  the jobs one after another in this process (what a hand-written loop of `offbench run` does)
  local:        offbench.execution.LocalExecutor with `--workers` processes
  ray:          offbench.execution.RayExecutor on a local Ray instance with `--workers` CPUs (start-up included)
Prints numbers and the machine; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/sweep_throughput.py --workers 2 --jobs 4 --steps 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from offbench.data.registry import is_present, make_dataset
from offbench.execution import LocalExecutor, RayExecutor, grid, jobs_of, run_job, run_sweep
from offbench.store import ResultsStore

DATASET = "local/hopper-bench-v5"
RECIPE = {"env_id": "Hopper-v5", "recipe": "random", "steps": 5000, "seed": 0, "num_envs": 4, "max_episode_steps": 1000, "reference": "d4rl:hopper"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per job (seed group)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(tempfile.mkdtemp(prefix="offbench-bench-data-"))
    os.environ["OFFBENCH_DATA_DIR"] = str(data)
    if not is_present(DATASET):
        make_dataset(DATASET, recipe=RECIPE)
    cells = grid(["td3bc"], [DATASET], {"steps": args.steps, "eval_every": args.steps, "eval_episodes": 1}, {})
    jobs = jobs_of(cells, range(args.jobs * args.seeds), group_size=args.seeds)
    seed_steps = args.jobs * args.seeds * args.steps
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"grid: td3bc (default config) on {DATASET}, {args.jobs} jobs x {args.seeds} seeds x {args.steps} steps = {seed_steps} seed-steps")

    root = Path(tempfile.mkdtemp(prefix="offbench-bench-one-"))
    start = time.perf_counter()
    for job in jobs:
        assert run_job(job, str(root)).status == "done"
    one = time.perf_counter() - start
    print(f"one process:            {seed_steps / one:7.0f} seed-steps/s ({one:.1f} s)")

    root = Path(tempfile.mkdtemp(prefix="offbench-bench-local-"))
    start = time.perf_counter()
    assert run_sweep(jobs, ResultsStore(root), LocalExecutor(args.workers), print_line=lambda _: None).ok
    local = time.perf_counter() - start
    print(f"local, {args.workers} workers:       {seed_steps / local:7.0f} seed-steps/s ({local:.1f} s; x{one / local:.2f} of one process)")

    if not args.no_ray:
        root = Path(tempfile.mkdtemp(prefix="offbench-bench-ray-"))
        start = time.perf_counter()
        assert run_sweep(jobs, ResultsStore(root), RayExecutor(num_cpus=args.workers), print_line=lambda _: None).ok
        ray_s = time.perf_counter() - start
        print(f"ray, {args.workers} CPUs (with start-up): {seed_steps / ray_s:7.0f} seed-steps/s ({ray_s:.1f} s; "
              f"overhead vs local {ray_s - local:+.1f} s)")


if __name__ == "__main__":
    main()
