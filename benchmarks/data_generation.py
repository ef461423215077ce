"""Speed of making local datasets: transitions per second, by recipe and number of lockstep envs.

    OMP_NUM_THREADS=1 python benchmarks/data_generation.py                 # sweep + one full 1M-step make
    OMP_NUM_THREADS=1 python benchmarks/data_generation.py --make-steps 0  # sweep only

The sweep times `collect_episodes` alone (policy forward + env steps) for the hopper medium policy
(the committed one if present, else a randomly initialised actor of the same 2x256 shape) and for
uniform-random actions. The full make times `registry.make_dataset` end to end (rollouts, hashing,
Minari writing) into a temporary data directory and prints the content hash. Goal: 1M steps of
hopper-medium in at most 5 minutes on a 2-core CPU. Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from offbench.behavior import sac
from offbench.behavior.policy import TanhGaussianActor, load_snapshot
from offbench.data import recipes, registry
from offbench.data.generate import Policy, collect_episodes, uniform_random_policy

DATASET = "local/hopper-medium-v5"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    return f"{model}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f}, {platform.system()}"


def medium_policy(seed: int) -> tuple[Policy, str]:
    entry = registry.catalogue()[DATASET]
    rng = np.random.default_rng(seed)
    if recipes.recipe_available(entry):
        actor = TanhGaussianActor.from_snapshot(load_snapshot(recipes.policies_dir() / entry["policy"]))
        source = f"committed {entry['policy']}"
    else:
        torch.manual_seed(seed)
        actor = TanhGaussianActor.from_snapshot(sac.snapshot_dict(sac.Actor(11, 3, 256, -np.ones(3), np.ones(3)), "Hopper-v5", 0))
        source = "randomly initialised 2x256 actor (no committed medium policy)"
    return (lambda obs: actor.sample(obs, rng)), source


def sweep(steps: int, env_counts: list[int]) -> None:
    print(f"\ncollect_episodes only, {steps:,} steps of Hopper-v5")
    print(f"{'policy':<10} {'num_envs':>8} {'steps/s':>9} {'episodes':>9} {'1M steps':>9}")
    for name in ("medium", "random"):
        for num_envs in env_counts:
            if name == "medium":
                policy, _ = medium_policy(seed=0)
            else:
                env = gym.make("Hopper-v5")
                policy = uniform_random_policy(env.action_space, seed=0)
                env.close()
            start = time.perf_counter()
            episodes = collect_episodes("Hopper-v5", policy, steps, seed=0, num_envs=num_envs)
            rate = steps / (time.perf_counter() - start)
            print(f"{name:<10} {num_envs:>8} {rate:>9,.0f} {len(episodes):>9} {1e6 / rate / 60:>7.1f} m")


def full_make(steps: int) -> None:
    entry = {**registry.catalogue()[DATASET], "steps": steps}
    if not recipes.recipe_available(entry):
        print(f"\n{DATASET}: no committed policy, full make skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OFFBENCH_DATA_DIR"] = tmp
        start = time.perf_counter()
        dataset = registry.make_dataset(DATASET, recipe=entry)
        seconds = time.perf_counter() - start
    info = registry.describe(dataset)
    print(f"\nregistry.make_dataset({DATASET}) with {steps:,} steps, num_envs={entry['num_envs']}: "
          f"{seconds:.1f} s = {steps / seconds:,.0f} transitions/s (rollouts + hash + Minari write)")
    print(f"  sha256 {info['sha256']}\n  {info['episodes']} episodes, return {info['return_mean']:.1f} ± {info['return_std']:.1f}, "
          f"normalised {info['normalized_mean']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep-steps", type=int, default=50_000)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--make-steps", type=int, default=1_000_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    print(f"numpy {np.__version__}, gymnasium {gym.__version__}, torch {torch.__version__} (1 thread), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"medium policy: {medium_policy(0)[1]}")
    if args.sweep_steps:
        sweep(args.sweep_steps, args.num_envs)
    if args.make_steps:
        full_make(args.make_steps)


if __name__ == "__main__":
    main()
