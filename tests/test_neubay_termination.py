"""The shared termination functions agree with Gymnasium's MuJoCo v5 envs on states from real rollouts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from offbench.errors import OffbenchError
from offbench.termination import termination_fn


def rollout_terminations(env_id: str, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(obs, actions, next_obs, terminated) of `steps` random-action steps, resetting after each episode end."""
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]] = []
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        next_obs, _, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, terminated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return tuple(np.array(column) for column in zip(*rows))  # type: ignore[return-value]


@pytest.mark.parametrize(("env_id", "steps", "min_terminals"), [("Hopper-v5", 600, 10), ("Walker2d-v5", 600, 5), ("HalfCheetah-v5", 200, 0)])
def test_termination_matches_the_env_on_real_rollouts(env_id: str, steps: int, min_terminals: int) -> None:
    obs, actions, next_obs, terminated = rollout_terminations(env_id, steps)
    done = termination_fn(env_id)(*(torch.as_tensor(x) for x in (obs, actions, next_obs))).numpy()
    assert terminated.sum() >= min_terminals  # both outcomes are exercised where the env can terminate
    np.testing.assert_array_equal(done, terminated)


def test_hopper_terminates_on_non_finite_or_huge_states_and_keeps_batch_shape() -> None:
    healthy = torch.tensor([1.2, 0.0, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    states = healthy.repeat(2, 3, 1)
    states[0, 1, 5] = float("nan")
    states[1, 2, 4] = 150.0
    done = termination_fn("Hopper-v4")(states, torch.zeros(2, 3, 3), states)
    assert done.shape == (2, 3) and done.tolist() == [[False, True, False], [False, False, True]]


def test_an_env_without_a_termination_function_is_one_error_line() -> None:
    with pytest.raises(OffbenchError, match="no termination function for env Ant-v5"):
        termination_fn("Ant-v5")
