"""Evaluation: every seed's policy, several episodes each, all in one Gymnasium vector env.

A dataset may name evaluation wrappers (`DatasetMetadata.eval_wrappers`, recorded in the run's
protocol): each name is an entry of `EVAL_WRAPPERS`, a function that wraps one sub-environment
(e.g. the pixel protocol's frame skip, grayscale and frame stack), applied in the listed order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np

from offbench.errors import OffbenchError

EVAL_SEED_OFFSET = 100  # as the TD3+BC reference code: the eval env is seeded with seed + 100
EVAL_WRAPPERS: dict[str, Callable[[gym.Env], gym.Wrapper]] = {}


def wrappers_named(names: Sequence[str]) -> list[Callable[[gym.Env], gym.Wrapper]]:
    """The wrapper functions for `names`; an unknown name is one error line."""
    if unknown := [name for name in names if name not in EVAL_WRAPPERS]:
        raise OffbenchError(f"unknown evaluation wrapper '{unknown[0]}'", f"known: {', '.join(EVAL_WRAPPERS) or 'none'}")
    return [EVAL_WRAPPERS[name] for name in names]


def episode_seeds(seeds: list[int], episodes: int) -> list[int]:
    """Env seed of episode j for training seed s: (s + 100) * 1000 + j; fixed across evaluations."""
    return [(seed + EVAL_SEED_OFFSET) * 1000 + j for seed in seeds for j in range(episodes)]


def evaluate(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    env_id: str,
    seeds: list[int],
    episodes: int,
    env_kwargs: dict | None = None,
    wrappers: Sequence[str] = (),
) -> np.ndarray:
    """Undiscounted returns, shape (S, episodes).

    `act(observations, episode_start)` maps observations (S, episodes, *obs_shape) and a bool mask
    (S, episodes), True on the first observation of an episode, to actions (S, episodes, *action_shape).
    Each sub-env runs exactly one episode; sub-envs that finished keep stepping (the vector env
    autoresets them) until the slowest is done, and their extra rewards are ignored.
    """
    num_envs = len(seeds) * episodes
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", wrappers=wrappers_named(wrappers), **(env_kwargs or {}))
    try:
        observations, _ = envs.reset(seed=episode_seeds(seeds, episodes))
        action_shape = envs.single_action_space.shape
        returns = np.zeros(num_envs)
        running = np.ones(num_envs, dtype=bool)
        episode_start = np.ones(num_envs, dtype=bool)
        ended = np.zeros(num_envs, dtype=bool)
        while running.any():
            grouped = observations.reshape(len(seeds), episodes, *observations.shape[1:])
            actions = act(grouped, episode_start.reshape(len(seeds), episodes)).reshape(num_envs, *action_shape)
            observations, rewards, terminated, truncated, _ = envs.step(actions)
            episode_start, ended = ended, terminated | truncated  # next-step autoreset: a step after an end resets
            returns += rewards * running
            running &= ~ended
    finally:
        envs.close()
    return returns.reshape(len(seeds), episodes)
