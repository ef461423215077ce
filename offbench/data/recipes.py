"""Recipes that make local datasets. A recipe turns a catalogue entry into Minari-style episodes.

Each recipe is `recipe(entry, on_steps) -> list of episodes`, where an episode holds `observations`
(T+1 rows), `actions`, `rewards`, `terminations` and `truncations` (T rows), and `entry` is the
dataset's table from `datasets/catalogue.toml`. Behaviour policies are snapshot files under
`datasets/policies/` (see `offbench.behavior.policy`); entries name them relative to that folder.

    random              uniform-random actions (D4RL's random)
    policy              one policy's sampled (tanh-Gaussian) actions (D4RL's medium and expert); with
                        `p_random_action = p`, each step executes a uniform action from the box instead,
                        with probability p (DriftQL's degraded-data rule, re-collected: s', r and the rest
                        of the episode follow from the random action; the policy is still queried, so its
                        sampling noise does not depend on p)
    snapshot-sequence   the learner's snapshots in training order, each acting for as many steps as the
                        learner took between it and the next one, the first `random_steps` uniform as in
                        the learner's warm-up, ending at the `until` policy (stand-in for medium-replay)
    union               the episodes of other recipes, in order (D4RL's medium-expert)
    noisy-dqn           a DQN behaviour policy with discrete BCQ's per-episode noise (sfujim/BCQ main.py
                        --generate_buffer): low_noise_p of the episodes act with eval_eps, the rest take a
                        uniform action with probability rand_action_p - eval_eps (offbench.behavior.dqn)
    pointmaze-planner   a PointMaze env driven by a value-iteration planner and a PD waypoint controller with
                        action noise, goals redrawn when reached (Minari's D4RL/pointmaze and D4RL's maze2d
                        recipe; offbench.data.maze_recipes); episodes carry the env's Dict observations
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offbench.behavior.dqn import GreedyQPolicy, NoisyGreedyPolicy
from offbench.behavior.dqn import load_snapshot as load_dqn_snapshot
from offbench.behavior.policy import TanhGaussianActor, load_snapshot
from offbench.data.catalogue import catalogue
from offbench.data.generate import Policy, collect_episodes, uniform_random_policy
from offbench.data.maze_recipes import pointmaze_recipe
from offbench.errors import OffbenchError
from offbench.paths import resource_dir

Episodes = list[dict[str, np.ndarray]]
Recipe = Callable[[dict[str, Any], Callable[[int], None] | None], Episodes]


def policies_dir() -> Path:
    """The committed behaviour policies (`datasets/policies`)."""
    return resource_dir("datasets") / "policies"


def random_recipe(entry: dict[str, Any], on_steps: Callable[[int], None] | None) -> Episodes:
    """Uniform-random actions in the environment (D4RL's `random`)."""
    env = gym.make(entry["env_id"])
    try:
        policy = uniform_random_policy(env.action_space, seed=entry["seed"])
    finally:
        env.close()
    return _collect(entry, policy, entry["steps"], on_steps)


def policy_recipe(entry: dict[str, Any], on_steps: Callable[[int], None] | None) -> Episodes:
    """Rollouts of one behaviour policy, actions sampled from its tanh-Gaussian (or its mean if `sampled = false`)."""
    actor = TanhGaussianActor.from_snapshot(_snapshot(entry, entry["policy"]))
    rng = np.random.default_rng(entry["seed"])
    policy = (lambda obs: actor.sample(obs, rng)) if entry.get("sampled", True) else actor.mean_action
    if entry.get("p_random_action", 0.0) > 0.0:
        with gym.make(entry["env_id"]) as env:
            policy = with_random_actions(policy, env.action_space, entry["p_random_action"], seed=entry["seed"])
    return _collect(entry, policy, entry["steps"], on_steps)


RANDOM_ACTION_STREAM = 0x52414E44  # keeps the replacement coin flips apart from the policy's own noise


def with_random_actions(policy: Policy, action_space: gym.spaces.Box, p: float, seed: int) -> Policy:
    """`policy` whose action for each row is replaced, with probability `p`, by a uniform sample of the box.

    (n, obs_dim) -> (n, act_dim) float32. One coin and one uniform draw per row from a generator of its own
    (`seed`, RANDOM_ACTION_STREAM); numpy's PCG64 and uniform draws give the same bits on every CPU.
    """
    rng = np.random.default_rng([seed, RANDOM_ACTION_STREAM])
    low, high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)

    def act(observations: np.ndarray) -> np.ndarray:
        actions = policy(observations)
        replace = rng.uniform(size=len(observations)) < p
        uniform = rng.uniform(low, high, size=(len(observations), len(low)))
        return np.where(replace[:, None], uniform, actions).astype(np.float32)

    return act


def snapshot_sequence_recipe(entry: dict[str, Any], on_steps: Callable[[int], None] | None) -> Episodes:
    """The learner's snapshots in order up to `until`: a reproducible stand-in for its replay buffer."""
    schedule, total_steps = snapshot_schedule(entry)
    env = gym.make(entry["env_id"])
    try:
        action_space = env.action_space
    finally:
        env.close()
    return _collect(entry, ScheduledPolicy(schedule, action_space, seed=entry["seed"]), total_steps, on_steps)


def noisy_dqn_recipe(entry: dict[str, Any], on_steps: Callable[[int], None] | None) -> Episodes:
    """Rollouts of a DQN snapshot with discrete BCQ's buffer noise (`offbench.behavior.dqn.NoisyGreedyPolicy`)."""
    snapshot = _dqn_snapshot(entry)
    policy = NoisyGreedyPolicy(GreedyQPolicy(snapshot), entry.get("num_envs", 8), entry["seed"],
                               entry["low_noise_p"], entry["rand_action_p"], entry["eval_eps"])
    return _collect(entry, policy, entry["steps"], on_steps)


def union_recipe(entry: dict[str, Any], on_steps: Callable[[int], None] | None) -> Episodes:
    """The episodes of each part in order; a part is a catalogue id or an inline recipe table."""
    episodes: Episodes = []
    for part in _parts(entry):
        episodes += RECIPES[part["recipe"]](part, on_steps)
    return episodes


RECIPES: dict[str, Recipe] = {
    "random": random_recipe,
    "policy": policy_recipe,
    "snapshot-sequence": snapshot_sequence_recipe,
    "union": union_recipe,
    "noisy-dqn": noisy_dqn_recipe,
    "pointmaze-planner": pointmaze_recipe,
}


def recipe_available(entry: dict[str, Any]) -> bool:
    """Whether every behaviour-policy file the recipe needs is present (random, Atari random, OGBench and PointMaze recipes need none)."""
    try:
        return not missing_policies(entry)
    except OffbenchError:
        return False


def missing_policies(entry: dict[str, Any]) -> list[str]:
    """The behaviour-policy files (under datasets/policies/) the recipe needs and this checkout lacks, in recipe order.

    Raises `OffbenchError` for an unknown recipe or a union part missing from the catalogue.
    """
    kind = entry.get("recipe")
    if kind in ("random", "atari-random", "pointmaze-planner") or str(kind).startswith("ogbench-"):  # OGBench: the wheel's oracles; pointmaze: a planner
        return []
    if kind in ("policy", "noisy-dqn", "atari-dqn"):
        return [] if (policies_dir() / entry["policy"]).is_file() else [entry["policy"]]
    if kind == "snapshot-sequence":
        needed = [] if (policies_dir() / entry["until"]).is_file() else [entry["until"]]
        return needed + ([] if any((policies_dir() / entry["snapshots"]).glob("*.pt")) else [f"{entry['snapshots']}/*.pt"])
    if kind == "union":
        return list(dict.fromkeys(path for part in _parts(entry) for path in missing_policies(part)))
    raise OffbenchError(f"unknown recipe '{kind}'")


def no_policy_note(entry: dict[str, Any]) -> str:
    """Why a catalogued recipe cannot be made here: the policy files it lacks, and where their training is described."""
    try:
        missing = missing_policies(entry)
    except OffbenchError as error:
        return error.message
    files = ", ".join(f"datasets/policies/{path}" for path in missing)
    return (f"its behaviour policy ({files}) is not committed yet: datasets/README.md says how it is trained "
            "and which issue tracks it")


# ---- snapshot sequences ---------------------------------------------------------------------------


class ScheduledPolicy:
    """Acts with the policy whose phase covers the steps taken so far (counted over all envs).

    `schedule` is [(first step, actor), ...] in increasing order; steps before the first phase are
    uniform-random actions (the learner's warm-up). One seeded generator draws all the randomness.
    The phase is chosen once per batched call, so phase boundaries fall on multiples of the number of
    running envs.
    """

    def __init__(self, schedule: list[tuple[int, TanhGaussianActor]], action_space: gym.spaces.Box, seed: int) -> None:
        self.starts = [start for start, _ in schedule]
        self.actors = [actor for _, actor in schedule]
        self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)
        self.taken = 0

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        phase = int(np.searchsorted(self.starts, self.taken, side="right")) - 1
        self.taken += observations.shape[0]
        if phase < 0:
            return self.rng.uniform(self.low, self.high, size=(observations.shape[0], self.low.shape[0])).astype(np.float32)
        return self.actors[phase].sample(observations, self.rng)


def snapshot_schedule(entry: dict[str, Any]) -> tuple[list[tuple[int, TanhGaussianActor]], int]:
    """([(first step, actor)], total steps) for a snapshot-sequence entry.

    Snapshot k acts from max(its env step, random_steps) until the next snapshot's env step; the
    sequence ends at the env step of the `until` policy, so the total equals the steps the learner
    had taken when that policy was saved.
    """
    until = int(_snapshot(entry, entry["until"])["env_steps"])
    folder = policies_dir() / entry["snapshots"]
    snapshots = sorted((load_snapshot(path) for path in folder.glob("*.pt")), key=lambda s: s["env_steps"])
    snapshots = [s for s in snapshots if s["env_steps"] < until]
    if not snapshots or snapshots[0]["env_steps"] != 0:
        raise OffbenchError(f"{folder} must hold the learner's snapshots from env step 0 up to {until}")
    random_steps = entry.get("random_steps", 0)
    schedule = [(max(int(s["env_steps"]), random_steps), TanhGaussianActor.from_snapshot(s)) for s in snapshots]
    return [(start, actor) for start, actor in schedule if start < until], until


# ---- helpers --------------------------------------------------------------------------------------


def _collect(entry: dict[str, Any], policy: Policy, steps: int, on_steps: Callable[[int], None] | None) -> Episodes:
    return collect_episodes(
        entry["env_id"],
        policy,
        total_steps=steps,
        seed=entry["seed"],
        num_envs=entry.get("num_envs", 8),
        max_episode_steps=entry.get("max_episode_steps", 1000),
        on_steps=on_steps,
    )


def _snapshot(entry: dict[str, Any], relative_path: str) -> dict[str, Any]:
    snapshot = load_snapshot(policies_dir() / relative_path)
    if snapshot["env_id"] != entry["env_id"]:
        raise OffbenchError(f"policy {relative_path} was trained in {snapshot['env_id']}, not {entry['env_id']}")
    return snapshot


def _dqn_snapshot(entry: dict[str, Any]) -> dict[str, Any]:
    snapshot = load_dqn_snapshot(policies_dir() / entry["policy"])
    if snapshot["env_id"] != entry["env_id"]:
        raise OffbenchError(f"policy {entry['policy']} was trained in {snapshot['env_id']}, not {entry['env_id']}")
    return snapshot


def _parts(entry: dict[str, Any]) -> list[dict[str, Any]]:
    parts = []
    for part in entry["parts"]:
        if isinstance(part, str):
            if part not in catalogue():
                raise OffbenchError(f"union part '{part}' is not in the dataset catalogue")
            part = catalogue()[part]
        parts.append(part)
    return parts
