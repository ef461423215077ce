"""The shared termination functions agree with Gymnasium's MuJoCo v5 envs on states from real rollouts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from offbench.errors import OffbenchError
from offbench.termination import termination_fn


def rollout_terminations(env_id: str, steps: int, seed: int = 0, **kwargs: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(obs, actions, next_obs, terminated) of `steps` random-action steps, resetting after each episode end."""
    env = gym.make(env_id, **kwargs)
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
    done = termination_fn(env_id, obs.shape[1])(*(torch.as_tensor(x) for x in (obs, actions, next_obs))).numpy()
    assert terminated.sum() >= min_terminals  # both outcomes are exercised where the env can terminate
    np.testing.assert_array_equal(done, terminated)


@pytest.mark.parametrize(("env_id", "steps", "width"), [("Hopper-v5", 600, 12), ("Walker2d-v5", 600, 18), ("HalfCheetah-v5", 200, 18)])
def test_a_layout_that_keeps_the_x_position_gets_its_own_indices(env_id: str, steps: int, width: int) -> None:
    """NeoRL's layout (x position kept): the env's own terminations, exactly; D4RL's indices would read x as the height."""
    obs, actions, next_obs, terminated = rollout_terminations(env_id, steps, exclude_current_positions_from_observation=False)
    assert obs.shape[1] == width
    tensors = [torch.as_tensor(x) for x in (obs, actions, next_obs)]
    np.testing.assert_array_equal(termination_fn(env_id, width)(*tensors).numpy(), terminated)
    if terminated.any():  # D4RL's function on these observations ends other steps
        d4rl_layout = termination_fn(env_id, width - 1)(*[t[..., 1:] for t in tensors]).numpy()
        np.testing.assert_array_equal(d4rl_layout, terminated)  # the same steps once x is dropped
        from offbench.termination import hopper, walker2d

        misread = {"Hopper-v5": hopper, "Walker2d-v5": walker2d}[env_id](*tensors).numpy()
        assert (misread != terminated).any()


@pytest.mark.parametrize(("env_id", "width"), [("Hopper-v5", 13), ("Walker2d-v4", 11), ("AdroitHandPen-v1", 24)])
def test_a_layout_of_another_width_is_one_error_line(env_id: str, width: int) -> None:
    with pytest.raises(OffbenchError, match=f"no termination function for {env_id} observations of {width} values"):
        termination_fn(env_id, width)


def test_pen_ends_when_the_pen_drops_and_door_hammer_never() -> None:
    states = torch.zeros(3, 45)
    states[:, 26] = torch.tensor([0.2, 0.074, 0.075])
    assert termination_fn("AdroitHandPen-v1", 45)(states, torch.zeros(3, 24), states).tolist() == [False, True, False]
    assert not termination_fn("AdroitHandDoor-v1", 39)(torch.zeros(2, 39), torch.zeros(2, 28), torch.ones(2, 39)).any()
    assert not termination_fn("AdroitHandHammer-v1", 46)(torch.zeros(2, 46), torch.zeros(2, 26), torch.ones(2, 46)).any()


def test_hopper_terminates_on_non_finite_or_huge_states_and_keeps_batch_shape() -> None:
    healthy = torch.tensor([1.2, 0.0, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    states = healthy.repeat(2, 3, 1)
    states[0, 1, 5] = float("nan")
    states[1, 2, 4] = 150.0
    done = termination_fn("Hopper-v4", 11)(states, torch.zeros(2, 3, 3), states)
    assert done.shape == (2, 3) and done.tolist() == [[False, True, False], [False, False, True]]


def test_an_env_without_a_termination_function_is_one_error_line() -> None:
    with pytest.raises(OffbenchError, match="no termination function for env Ant-v5"):
        termination_fn("Ant-v5", 27)


@pytest.mark.parametrize(("env_id", "goal"), [("AntMaze_UMaze-v4", (0.75, 8.75)), ("AntMaze_Medium-v4", (20.75, 20.75)),
                                              ("AntMaze_Large-v4", (32.75, 24.75))])
def test_antmaze_ends_within_a_quarter_of_the_mazes_goal_in_d4rls_frame(env_id: str, goal: tuple[float, float]) -> None:
    states = torch.zeros(4, 29)
    states[:, :2] = torch.tensor(goal) + torch.tensor([[0.0, 0.0], [0.24, 0.0], [0.0, -0.26], [0.18, 0.18]])
    states[:, 2:] = 5.0  # the rest of the state plays no part
    assert termination_fn(env_id, 29)(states, torch.zeros(4, 8), states).tolist() == [True, True, False, False]


def test_antmaze_in_minaris_frame_is_refused() -> None:
    """Minari's ports (31 dims: achieved goal, observation, desired goal in Gymnasium-Robotics' centred frame) have no goal here."""
    with pytest.raises(OffbenchError, match="no termination function for AntMaze_UMaze-v4 observations of 31 values"):
        termination_fn("AntMaze_UMaze-v4", 31)
