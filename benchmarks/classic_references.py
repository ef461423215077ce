"""The random-policy reference returns of the classic-control discrete tasks (CartPole-v1, Acrobot-v1).

    OMP_NUM_THREADS=1 python benchmarks/classic_references.py [--episodes 1000]

Uniform-random actions (one `numpy.random.default_rng(0)` stream), episode j reset with env seed
2_000_000 + j, the env's own time limit (500 steps for both). Prints mean ± std and the standard error
of the mean; `offbench/data/registry.py` (CLASSIC_REFERENCES) records the means with this command.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np


def random_returns(env_id: str, episodes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    env = gym.make(env_id)
    returns = np.zeros(episodes)
    try:
        for j in range(episodes):
            env.reset(seed=2_000_000 + j)
            done = False
            while not done:
                _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
                returns[j] += reward
                done = terminated or truncated
    finally:
        env.close()
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    args = parser.parse_args()
    for env_id in ("CartPole-v1", "Acrobot-v1"):
        returns = random_returns(env_id, args.episodes)
        print(f"{env_id}: random return {returns.mean():.2f} ± {returns.std():.2f} over {args.episodes} episodes "
              f"(standard error {returns.std() / np.sqrt(args.episodes):.2f})")


if __name__ == "__main__":
    main()
