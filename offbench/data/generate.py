"""Roll a batched policy out in several environments at once and keep whole episodes.

Determinism: environment i is reset once with seed `seed * 1000 + i` and then keeps its own RNG
stream; the policy sees the stacked observations of the environments still running, in index order.
Each environment gets an equal share of the step budget; its last episode is cut (time-out) when its
share runs out. Episodes are stored environment by environment, so the output depends only on
(env, policy, steps, seed, num_envs).

A policy whose noise is drawn per episode (discrete BCQ's behaviour recipe: some episodes low-noise,
the rest noisy) is a `PerEnvPolicy`: it is also told, per row, which environment the row comes from
and whether the row is the first observation of an episode.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

Policy = Callable[[np.ndarray], np.ndarray]  # (n, obs_dim) -> (n, act_dim)


class PerEnvPolicy:
    """A policy that sees where each row comes from: `(observations (n, ...), envs (n,) int, episode_starts (n,) bool) -> (n, ...)`.

    `envs` are the indices (0 .. num_envs - 1) of the running environments, in order; `episode_starts`
    is True where the observation is the first of its episode (after a reset).
    """

    def __call__(self, observations: np.ndarray, envs: np.ndarray, episode_starts: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def uniform_random_policy(action_space: gym.spaces.Box | gym.spaces.Discrete, seed: int) -> Policy:
    """Uniform actions inside the box (float32) or over the discrete actions (int64), from a seeded generator."""
    rng = np.random.default_rng(seed)
    if isinstance(action_space, gym.spaces.Discrete):
        return lambda observations: rng.integers(action_space.n, size=observations.shape[0], dtype=np.int64) + int(action_space.start)
    low, high = action_space.low, action_space.high

    def act(observations: np.ndarray) -> np.ndarray:
        return rng.uniform(low, high, size=(observations.shape[0], low.shape[0])).astype(np.float32)

    return act


def collect_episodes(
    env_id: str,
    policy: Policy | PerEnvPolicy,
    total_steps: int,
    seed: int,
    num_envs: int = 8,
    max_episode_steps: int = 1000,
    on_steps: Callable[[int], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Collect exactly `total_steps` transitions as Minari-style episodes (T+1 observations)."""
    envs = [gym.make(env_id, max_episode_steps=max_episode_steps) for _ in range(num_envs)]
    action_dtype = np.int64 if isinstance(envs[0].action_space, gym.spaces.Discrete) else np.float32
    budgets = [total_steps // num_envs + (i < total_steps % num_envs) for i in range(num_envs)]
    finished: list[list[dict[str, np.ndarray]]] = [[] for _ in range(num_envs)]
    current = [_new_episode(env.reset(seed=seed * 1000 + i)[0]) for i, env in enumerate(envs)]
    taken = [0] * num_envs
    starts = [True] * num_envs
    try:
        while True:
            running = [i for i in range(num_envs) if taken[i] < budgets[i]]
            if not running:
                break
            observations = np.stack([current[i]["observations"][-1] for i in running])
            if isinstance(policy, PerEnvPolicy):
                actions = policy(observations, np.asarray(running), np.asarray([starts[i] for i in running]))
            else:
                actions = policy(observations)
            for i, action in zip(running, actions):
                observation, reward, terminated, truncated, _ = envs[i].step(action)
                taken[i] += 1
                starts[i] = False
                out_of_budget = taken[i] == budgets[i]
                episode = current[i]
                episode["observations"].append(observation)
                episode["actions"].append(np.asarray(action, dtype=action_dtype))
                episode["rewards"].append(float(reward))
                episode["terminations"].append(bool(terminated))
                episode["truncations"].append(bool(truncated or (out_of_budget and not terminated)))
                if terminated or truncated or out_of_budget:
                    finished[i].append(_close_episode(episode))
                    if not out_of_budget:
                        current[i] = _new_episode(envs[i].reset()[0])
                        starts[i] = True
            if on_steps is not None:
                on_steps(len(running))
    finally:
        for env in envs:
            env.close()
    return [episode for per_env in finished for episode in per_env]


def _new_episode(observation: np.ndarray) -> dict[str, list]:
    return {"observations": [observation], "actions": [], "rewards": [], "terminations": [], "truncations": []}


def _close_episode(episode: dict[str, list]) -> dict[str, np.ndarray]:
    return {
        "observations": np.asarray(episode["observations"]),
        "actions": np.asarray(episode["actions"]),  # float32 for a box, int64 for discrete actions
        "rewards": np.asarray(episode["rewards"], dtype=np.float64),
        "terminations": np.asarray(episode["terminations"], dtype=bool),
        "truncations": np.asarray(episode["truncations"], dtype=bool),
    }
