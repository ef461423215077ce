"""Evaluation: episode-start masks for recurrent policies, named wrappers, discrete actions."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from offbench.errors import OffbenchError
from offbench.evaluate import EVAL_WRAPPERS, evaluate


def test_act_sees_episode_starts_on_the_first_step_and_after_each_autoreset(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = itertools.cycle([2, 4, 6])  # sub-env i is cut after limits[i] steps (made in order)
    monkeypatch.setitem(EVAL_WRAPPERS, "cut", lambda env: gym.wrappers.TimeLimit(env, next(limits)))
    starts: list[np.ndarray] = []

    def act(observations: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        assert observations.shape == (1, 3, 4) and episode_start.shape == (1, 3)
        starts.append(episode_start.copy())
        return np.zeros((1, 3), dtype=np.int64)  # discrete actions: one integer per sub-env

    returns = evaluate(act, "CartPole-v1", [0], 3, wrappers=["cut"])
    np.testing.assert_array_equal(returns, [[2.0, 4.0, 6.0]])
    expected = np.zeros((6, 3), dtype=bool)
    expected[0] = True  # every episode starts at the first call
    expected[3, 0] = expected[5, 1] = True  # a step after an end the vector env resets that sub-env
    np.testing.assert_array_equal(np.concatenate(starts), expected)


def test_an_unknown_wrapper_is_one_line() -> None:
    with pytest.raises(OffbenchError, match="unknown evaluation wrapper 'atari-dqn'"):
        evaluate(lambda o, s: o, "CartPole-v1", [0], 1, wrappers=["atari-dqn"])
