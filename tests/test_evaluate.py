"""Evaluation: episode-start masks for recurrent policies, named wrappers, discrete actions."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from offbench import atari
from offbench.data.spaces import Box, Discrete, ObservationSpace
from offbench.errors import OffbenchError
from offbench.evaluate import EVAL_WRAPPERS, check_env_spaces, evaluate


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


@pytest.mark.parametrize("observation_space, action_space, message", [
    (ObservationSpace((5,)), Discrete(2), r"learns from float32 observations of shape \(5,\), but the evaluation env CartPole-v1 returns .*\(4,\)"),
    (ObservationSpace((4, 4, 4), "uint8"), Discrete(2), r"learns from uint8 observations"),
    (ObservationSpace((4,)), Discrete(3), r"has 3 discrete actions, but the evaluation env CartPole-v1 takes 2 discrete actions"),
    (ObservationSpace((4,)), Box((-1.0,), (1.0,)), r"has a 1-dimensional box action space .* takes 2 discrete actions"),
])
def test_an_env_that_does_not_fit_the_data_is_refused_before_training(observation_space, action_space, message: str) -> None:
    with pytest.raises(OffbenchError, match=message):
        check_env_spaces("CartPole-v1", {}, [], observation_space, action_space, "local/toy-v1")
    check_env_spaces("CartPole-v1", {}, [], ObservationSpace((4,)), Discrete(2), "local/toy-v1")  # the right spaces pass


def test_a_stateless_policy_may_take_observations_only() -> None:
    returns = evaluate(lambda observations: np.zeros(observations.shape[:2], dtype=np.int64), "CartPole-v1", [0, 1], 2)
    assert returns.shape == (2, 2) and (returns > 0).all()


@pytest.mark.parametrize("env_id, kwargs", [("NoSuchEnv-v0", {}), ("CartPole-v1", {"not_a_kwarg": 1})])
def test_an_env_that_cannot_be_built_is_one_line(env_id: str, kwargs: dict) -> None:
    with pytest.raises(OffbenchError, match=f"evaluation env {env_id} cannot be built"):
        check_env_spaces(env_id, kwargs, [], ObservationSpace((4,)), Discrete(2), "local/toy-v1")


def test_many_episodes_run_in_blocks_of_ten_per_seed_and_give_the_returns_of_one_vector_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench import evaluate as evaluation

    made, make_vec = [], gym.make_vec
    monkeypatch.setattr(gym, "make_vec", lambda *args, num_envs, **kwargs: made.append(num_envs) or make_vec(*args, num_envs=num_envs, **kwargs))
    starts: list[np.ndarray] = []

    def act(observations: np.ndarray, episode_start: np.ndarray) -> np.ndarray:  # deterministic: a return depends on its env seed only
        starts.append(episode_start.copy())
        return np.clip(observations[..., 2:3], -2.0, 2.0).astype(np.float32)

    blocks = evaluation.evaluate_episodes(act, "Pendulum-v1", [0, 1], 12).returns
    assert made == [20, 4] and blocks.shape == (2, 12)
    assert starts[0].shape == (2, 10) and starts[0].all() and starts[200].shape == (2, 2) and starts[200].all()  # Pendulum: 200 steps
    monkeypatch.setattr(evaluation, "EPISODES_AT_ONCE", 12)
    np.testing.assert_array_equal(evaluation.evaluate_episodes(act, "Pendulum-v1", [0, 1], 12).returns, blocks)
    assert made[2:] == [24]


def test_kept_envs_are_reused_across_blocks_and_evaluations_and_give_the_returns_of_new_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench import evaluate as evaluation

    made, closed, make_vec = [], [], gym.make_vec

    def counted(*args, num_envs, **kwargs):
        envs = make_vec(*args, num_envs=num_envs, **kwargs)
        made.append(num_envs)
        close = envs.close
        envs.close = lambda **kw: closed.append(num_envs) or close(**kw)
        return envs

    monkeypatch.setattr(gym, "make_vec", counted)
    act = lambda observations: np.clip(observations[..., 2:3], -2.0, 2.0).astype(np.float32)  # noqa: E731
    fresh = evaluation.evaluate_episodes(act, "Pendulum-v1", [0, 1], 20).returns
    assert made == [20] and closed == [20]  # two blocks of 10 episodes per seed share one vector env, closed on return
    with evaluation.EvalEnvs() as kept:
        for _ in range(2):
            np.testing.assert_array_equal(evaluation.evaluate_episodes(act, "Pendulum-v1", [0, 1], 20, envs=kept).returns, fresh)
        assert made[1:] == [20] and closed == [20]  # built by the first evaluation, reused by the second, still open
        evaluation.evaluate_episodes(act, "Pendulum-v1", [0, 1], 5, envs=kept)
        assert made[2:] == [10] and closed == [20, 20]  # another size: the held env is closed before the new one is built
    assert closed == [20, 20, 10]
    np.testing.assert_array_equal(evaluation.evaluate_episodes(act, "Pendulum-v1", [0, 1], 25).returns[:, :20], fresh)


def test_a_kept_atari_env_plays_the_episodes_of_a_new_one() -> None:
    """ALE's reset with a seed reseeds the emulator and its sticky actions: a reused env repeats its episodes frame for frame."""
    import hashlib

    from offbench import evaluate as evaluation

    def played(envs: evaluation.EvalEnvs | None) -> tuple[np.ndarray, str]:
        digest = hashlib.sha256()

        def act(observations: np.ndarray) -> np.ndarray:
            digest.update(observations.tobytes())
            return (observations[..., -1, 40, 40] % 6).astype(np.int64)  # actions depend on the frames

        returns = evaluation.evaluate_episodes(act, "ALE/Pong-v5", [3], 2, atari.PIXEL_ENV_KWARGS, ["atari-pixels"], envs=envs).returns
        return returns, digest.hexdigest()

    fresh = played(None)
    with evaluation.EvalEnvs() as kept:
        for _ in range(2):
            again = played(kept)
            np.testing.assert_array_equal(again[0], fresh[0])
            assert again[1] == fresh[1]
