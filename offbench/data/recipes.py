"""Recipes that make local datasets. A recipe turns a catalogue entry into Minari-style episodes.

Each recipe is `recipe(entry, on_steps) -> list of episodes`, where an episode holds `observations`
(T+1 rows), `actions`, `rewards`, `terminations` and `truncations` (T rows), and `entry` is the
dataset's table from `datasets/catalogue.toml`.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from offbench.data.generate import collect_episodes, uniform_random_policy

Episodes = list[dict[str, np.ndarray]]
Recipe = Callable[[dict[str, Any], Callable[[int], None] | None], Episodes]


def random_recipe(entry: dict[str, Any], on_steps: Callable[[int], None] | None) -> Episodes:
    """Uniform-random actions in the environment (D4RL's `random`)."""
    env = gym.make(entry["env_id"])
    try:
        policy = uniform_random_policy(env.action_space, seed=entry["seed"])
    finally:
        env.close()
    return collect_episodes(
        entry["env_id"],
        policy,
        total_steps=entry["steps"],
        seed=entry["seed"],
        num_envs=entry.get("num_envs", 8),
        max_episode_steps=entry.get("max_episode_steps", 1000),
        on_steps=on_steps,
    )


RECIPES: dict[str, Recipe] = {"random": random_recipe}
