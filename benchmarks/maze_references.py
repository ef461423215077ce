"""Reference returns of the local PointMaze datasets, measured as Minari measures them; and the recordings' speed and success.

    OMP_NUM_THREADS=1 python benchmarks/maze_references.py              # references (about a minute)
    OMP_NUM_THREADS=1 python benchmarks/maze_references.py --record     # also record each full sparse dataset

For each full `local/pointmaze-*-v3` catalogue entry, the evaluation env (`env_id` with `eval_env_kwargs`: one
fixed goal cell, continuing_task, no goal re-draw, the registered time limit) runs `--episodes` episodes of

    min   a uniform-random policy: the env's action space seeded 123, sampled each step (minari.utils.RandomPolicy)
    max   the planner's PD waypoint controller without noise or clipping (the env clips), one controller for all
          episodes (Minari passes the eval env's WaypointController.compute_action as expert_policy)

with Minari's procedure (`minari.utils.get_average_reference_score`: reset with seed 123 once, then unseeded
resets). Prints the mean return ± std, its standard error, and the share of episodes that reach the goal.
`offbench.data.maze_recipes.MAZE_REFERENCES` records the means with this command. `--record` records each
sparse full dataset with the recipe (the dense ones follow the same trajectories) and prints env steps per
second, episodes, and the share of episodes that end at their goal (the behaviour data's success).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from importlib.metadata import version

import gymnasium as gym
import numpy as np

from offbench.data import maze_recipes
from offbench.data.catalogue import catalogue
from offbench.provenance import cpu_model


def average_return(env: gym.Env, policy: Callable[[dict], np.ndarray], episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(returns, reached the goal at some step) of `episodes` episodes: reset(seed=123) once, then unseeded resets."""
    returns, reached = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    observation, _ = env.reset(seed=123)
    for j in range(episodes):
        while True:
            observation, reward, terminated, truncated, info = env.step(policy(observation))
            returns[j] += reward
            reached[j] |= bool(info["success"])
            if terminated or truncated:
                observation, _ = env.reset()
                break
    return returns, reached


def references(dataset_id: str, entry: dict, episodes: int) -> None:
    env = gym.make(entry["env_id"], **entry["eval_env_kwargs"])
    env.action_space.seed(123)
    controller = maze_recipes.WaypointController(env.unwrapped.maze)
    offsets = np.random.default_rng(123)
    policies = {"random (min)": lambda observation: env.action_space.sample(),
                "planner (max)": lambda observation: controller(observation, offsets)}
    try:
        for name, policy in policies.items():
            start = time.perf_counter()
            returns, reached = average_return(env, policy, episodes)
            print(f"{dataset_id} [{entry['reference']}] {name}: return {returns.mean():.4f} ± {returns.std():.2f} "
                  f"(s.e. {returns.std() / np.sqrt(episodes):.2f}) over {episodes} episodes of {env.spec.max_episode_steps} steps, "
                  f"goal reached in {reached.mean():.0%}; {time.perf_counter() - start:.1f} s", flush=True)
    finally:
        env.close()


def record(dataset_id: str, entry: dict) -> None:
    start = time.perf_counter()
    episodes = maze_recipes.pointmaze_recipe(entry, None)
    seconds = time.perf_counter() - start
    reached = np.array([maze_recipes.reached_goal(episode) for episode in episodes])
    lengths = np.array([len(episode["actions"]) for episode in episodes])
    print(f"{dataset_id}: {entry['steps']:,} steps in {seconds:.1f} s = {entry['steps'] / seconds:,.0f} env steps/s; "
          f"{len(episodes):,} episodes (length {lengths.mean():.1f} mean, {lengths.max()} max), "
          f"{reached.mean():.2%} end at their goal ({(~reached[:-1]).sum()} cut by the {entry['max_episode_steps']}-step horizon)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100, help="episodes per policy (Minari: 100)")
    parser.add_argument("--record", action="store_true", help="also record each full sparse dataset")
    args = parser.parse_args()
    maze_recipes.require_robotics()
    print(f"machine: {cpu_model() or platform.processor()}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f}; "
          f"gymnasium-robotics {version('gymnasium-robotics')}, gymnasium {version('gymnasium')}, mujoco {version('mujoco')}, numpy {np.__version__}")
    entries = {dataset_id: entry for dataset_id, entry in catalogue().items()
               if entry["recipe"] == "pointmaze-planner" and "-tiny-" not in dataset_id}
    for dataset_id, entry in entries.items():
        references(dataset_id, entry, args.episodes)
    if args.record:
        for dataset_id, entry in entries.items():
            if "-dense-" not in dataset_id:
                record(dataset_id, entry)


if __name__ == "__main__":
    main()
