"""Evaluation: every seed's policy, several episodes each, in Gymnasium vector envs (all seeds x up to 10 episodes at once).

Each episode gives its undiscounted return and, when the env reports one (OGBench's `info["success"]`),
whether it ended in success: the `info["success"]` of its last step, as OGBench's own evaluation reads
it. A success-rate dataset is scored by the latter (`offbench.data.dataset.episode_scores`).
OGBench envs draw start positions from numpy's global generator besides their own: every sub-env
seeds it with its episode seed right before its reset (`SeedGlobalNumpy`), so an episode depends on its
own seed alone (seed s evaluates alike beside other seeds and alone), and `evaluate_episodes` restores
the generator's state afterwards.

A dataset may name evaluation wrappers (`DatasetMetadata.eval_wrappers`, recorded in the run's
protocol): each name is an entry of `EVAL_WRAPPERS`, a function that wraps one sub-environment
(e.g. the pixel protocol's frame skip, grayscale and frame stack), applied in the listed order.
`ALE/...` envs need the `offbench[atari]` extra (`offbench.atari`): a missing one is one error line.

Vector envs are kept between the blocks of one evaluation and, through `EvalEnvs`, between a training's
evaluations: every episode starts from a seeded reset of all sub-envs, so a kept env gives the returns a new
one would (tested), and an OGBench manipulation env (~1.1 s to build) is built once per run, not per evaluation.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from offbench import atari, robotics
from offbench.data.spaces import ActionSpace, ObservationSpace, from_gymnasium, observation_space_from_gymnasium
from offbench.errors import OffbenchError

EVAL_SEED_OFFSET = 100  # as the TD3+BC reference code: the eval env is seeded with seed + 100
# Episodes per seed whose envs exist at once. An OGBench manipulation env holds ~160 MB (measured, cube-single), so
# DriftQL's OGBench protocol (8 seeds x 50 episodes) in one vector env would need ~64 GB; blocks of 10 need ~13 GB.
# Fixed, never derived from the machine: the blocks shape the evaluation's random draws (per seed, so a seed still
# evaluates alike beside other seeds and alone), and a number must not depend on where it was computed.
EPISODES_AT_ONCE = 10
EVAL_WRAPPERS: dict[str, Callable[[gym.Env], gym.Wrapper]] = {
    "atari-pixels": atari.pixel_wrappers,  # the Atari pixel protocol (DQN Replay data, local Atari recipes)
    "atari-minari": atari.minari_wrappers,  # Minari's Atari datasets: their frames as offbench stores them
    "atari-minari-jpeg": atari.minari_jpeg_wrappers,  # ... when Minari stored them as JPEG (the same round trip first)
    **robotics.WRAPPERS,  # Gymnasium-Robotics' Dict observations as the D4RL files and Minari's ports store them
}


ENV_ERRORS = (gym.error.Error, ImportError, TypeError, ValueError, AssertionError, IndexError, KeyError)


def wrappers_named(names: Sequence[str]) -> list[Callable[[gym.Env], gym.Wrapper]]:
    """The wrapper functions for `names`; an unknown name is one error line."""
    if unknown := [name for name in names if name not in EVAL_WRAPPERS]:
        raise OffbenchError(f"unknown evaluation wrapper '{unknown[0]}'", f"known: {', '.join(EVAL_WRAPPERS) or 'none'}")
    return [EVAL_WRAPPERS[name] for name in names]


def episode_seeds(seeds: list[int], episodes: int) -> list[int]:
    """Env seed of episode j for training seed s: (s + 100) * 1000 + j; fixed across evaluations."""
    return [(seed + EVAL_SEED_OFFSET) * 1000 + j for seed in seeds for j in range(episodes)]


def make_env(env_id: str, env_kwargs: dict | None = None, wrappers: Sequence[str] = ()) -> gym.Env:
    """One evaluation environment, wrapped as the vector env's sub-environments are.

    Raises `OffbenchError` (one line) when Gymnasium cannot build it: unknown id, missing dependency, bad kwargs.
    """
    atari.register_if_atari(env_id)
    robotics.register_if_robotics(env_id)
    if "render_mode" in (env_kwargs or {}):
        raise OffbenchError(f"evaluation env {env_id}: its kwargs set render_mode", "the evaluator chooses how (and whether) an env renders")
    wrappers_found = wrappers_named(wrappers)
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
        for wrap in wrappers_found:
            env = wrap(env)
    except ENV_ERRORS as error:  # what an env raises for settings it cannot take (Gymnasium-Robotics asserts on a bad maze map)
        raise OffbenchError(f"evaluation env {env_id} cannot be built: {type(error).__name__}: {error}".splitlines()[0],
                            "the dataset's metadata names the env; check its id and kwargs") from None
    return env


def check_env_spaces(
    env_id: str, env_kwargs: dict | None, wrappers: Sequence[str], observation_space: ObservationSpace, action_space: ActionSpace, dataset_id: str
) -> None:
    """Refuse, before training, an evaluation env whose observations or actions do not fit what the algorithm learns.

    Observations must have the algorithm's shape and kind (uint8 frames or floats); actions the same kind
    and shape (and, for discrete actions, the same n).
    """
    env = make_env(env_id, env_kwargs, wrappers)
    try:
        env_observations = observation_space_from_gymnasium(env.observation_space, f"evaluation env {env_id}")
        env_actions = from_gymnasium(env.action_space, f"evaluation env {env_id}")
    finally:
        env.close()
    if env_observations != observation_space:
        raise OffbenchError(f"{dataset_id}: the algorithm learns from {observation_space.describe()}, "
                            f"but the evaluation env {env_id} returns {env_observations.describe()}",
                            "the dataset's env, env kwargs and evaluation wrappers must produce the observations it was recorded with")
    if env_actions.kind != action_space.kind or env_actions.shape != action_space.shape or getattr(env_actions, "n", None) != getattr(action_space, "n", None):
        raise OffbenchError(f"{dataset_id} has {action_space.describe()}, but the evaluation env {env_id} takes {env_actions.describe()}")


@dataclass(frozen=True)
class Episodes:
    """What the evaluation episodes gave: `returns` (S, episodes) float64 and `successes` (S, episodes)
    bool, True when the episode's last step reported `info["success"]`; None when the env reports none."""

    returns: np.ndarray
    successes: np.ndarray | None


def evaluate(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    env_id: str,
    seeds: list[int],
    episodes: int,
    env_kwargs: dict | None = None,
    wrappers: Sequence[str] = (),
    watch_first: Callable[[gym.Env], None] | None = None,
) -> np.ndarray:
    """Undiscounted returns, shape (S, episodes); see `evaluate_episodes`."""
    return evaluate_episodes(act, env_id, seeds, episodes, env_kwargs, wrappers, watch_first).returns


class SeedGlobalNumpy(gym.Wrapper):
    """Seeds numpy's global generator with the reset seed before a seeded reset (OGBench envs draw from it)."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            np.random.seed(seed % 2**32)
        return self.env.reset(seed=seed, options=options)


class EvalEnvs:
    """The evaluation vector env last used, kept for reuse while the next one asks for the same (env id, kwargs,
    wrappers, sub-env count); another one closes it first, so no more sub-envs exist at once than one block needs.

    A training keeps it for the whole run: the memory of one block's sub-envs (~160 MB per OGBench manipulation
    sub-env, ~13 GB for DriftQL's 8 seeds x 10) stays held between evaluations instead of coming back after each,
    which matters for several trainings sharing a machine. An evaluation of 10 x n episodes per seed uses one size.
    """

    def __init__(self) -> None:
        self._envs: dict[str, gym.vector.VectorEnv] = {}

    def get(self, env_id: str, num_envs: int, env_kwargs: dict, wrappers: Sequence[str]) -> gym.vector.VectorEnv:
        key = json.dumps([env_id, num_envs, env_kwargs, list(wrappers)], sort_keys=True, default=str)
        if key not in self._envs:
            self.close()
            self._envs[key] = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                                           wrappers=[SeedGlobalNumpy, *wrappers_named(wrappers)],
                                           vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}, **env_kwargs)
        return self._envs[key]

    def close(self) -> None:
        for envs in self._envs.values():
            envs.close()
        self._envs.clear()

    def __enter__(self) -> EvalEnvs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _restoring_global_numpy() -> Iterator[None]:
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def evaluate_episodes(
    act: Callable[..., np.ndarray],
    env_id: str,
    seeds: list[int],
    episodes: int,
    env_kwargs: dict | None = None,
    wrappers: Sequence[str] = (),
    watch_first: Callable[[gym.Env], None] | None = None,
    envs: EvalEnvs | None = None,
) -> Episodes:
    """Returns and successes of every seed's episodes, each of shape (S, episodes).

    `act(observations, episode_start)` maps observations (S, episodes, *obs_shape) and a bool mask
    (S, episodes), True on the first observation of an episode, to actions (S, episodes, *action_shape);
    a stateless policy may be `act(observations)`, and one that reads rewards `act(observations,
    episode_start, rewards)`: rewards (S, episodes) returned with the observations (0 after a reset).
    Each sub-env runs exactly one episode; sub-envs that finished keep stepping (the vector env
    autoresets them) until the slowest is done, and their extra rewards are ignored. Episodes run in
    blocks of at most `EPISODES_AT_ONCE` per seed, each block in a vector env of its size (blocks of one
    size share one, see `EvalEnvs`), each block's first observation an episode start.
    `watch_first(env)`, when given, is called with the first sub-env after its reset and after each step
    of its episode (a video recorder renders it): the sub-envs are then made with render_mode="rgb_array",
    which changes no returns. `envs` keeps the vector envs for the next call (closed by its owner); without
    it they are closed on return.
    """
    arity = len(inspect.signature(act).parameters)
    if arity == 1:  # a stateless policy: act(observations)
        stateless = act
        act = lambda observations, episode_start, rewards: stateless(observations)  # noqa: E731
    elif arity == 2:  # act(observations, episode_start)
        recurrent = act
        act = lambda observations, episode_start, rewards: recurrent(observations, episode_start)  # noqa: E731
    atari.register_if_atari(env_id)
    robotics.register_if_robotics(env_id)
    env_kwargs = {**(env_kwargs or {}), **({"render_mode": "rgb_array"} if watch_first else {})}
    env_seeds = np.array(episode_seeds(seeds, episodes)).reshape(len(seeds), episodes)
    returns, successes = [], []
    with contextlib.nullcontext(envs) if envs is not None else EvalEnvs() as kept:
        for first in range(0, episodes, EPISODES_AT_ONCE):
            block = env_seeds[:, first:first + EPISODES_AT_ONCE]
            watch = watch_first if watch_first and first == 0 else (lambda env: None)
            with _restoring_global_numpy():
                block_returns, block_successes = _run(act, kept.get(env_id, block.size, env_kwargs, wrappers), block.ravel().tolist(),
                                                      len(seeds), block.shape[1], watch)
            returns.append(block_returns.reshape(block.shape))
            successes.append(None if block_successes is None else block_successes.reshape(block.shape))
    reported = all(part is not None for part in successes)
    return Episodes(np.concatenate(returns, axis=1), np.concatenate(successes, axis=1) if reported else None)


def _run(act: Callable, envs: gym.vector.VectorEnv, env_seeds: list[int], num_seeds: int, episodes: int,
         watch: Callable[[gym.Env], None]) -> tuple[np.ndarray, np.ndarray | None]:
    """One episode per sub-env: (returns, successes or None), flat over the sub-envs."""
    num_envs = len(env_seeds)
    observations, _ = envs.reset(seed=env_seeds)
    watch(envs.envs[0])
    action_shape = envs.single_action_space.shape
    returns = np.zeros(num_envs)
    successes = np.zeros(num_envs, dtype=bool)
    reported = np.zeros(num_envs, dtype=bool)
    running = np.ones(num_envs, dtype=bool)
    episode_start = np.ones(num_envs, dtype=bool)
    ended = np.zeros(num_envs, dtype=bool)
    rewards = np.zeros(num_envs, dtype=np.float32)
    while running.any():
        grouped = observations.reshape(num_seeds, episodes, *observations.shape[1:])
        last_rewards = np.where(episode_start, 0.0, rewards).astype(np.float32).reshape(num_seeds, episodes)
        actions = act(grouped, episode_start.reshape(num_seeds, episodes), last_rewards).reshape(num_envs, *action_shape)
        observations, rewards, terminated, truncated, infos = envs.step(actions)
        episode_start, ended = ended, terminated | truncated  # next-step autoreset: a step after an end resets
        returns += rewards * running
        if running[0]:
            watch(envs.envs[0])
        last = running & ended
        if "success" in infos:
            successes[last] = np.asarray(infos["success"])[last] > 0
            reported[last] = np.asarray(infos["_success"])[last]
        running &= ~ended
    return returns, successes if reported.all() else None
