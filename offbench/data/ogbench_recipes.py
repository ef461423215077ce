"""Local OGBench recordings made by OGBench's published recipes, written as OGBench files.

A recipe (DATA_SOURCES.md §4, "Generation recipes", from OGBench's `data_gen_scripts/commands.sh`)
drives an OGBench env with the oracle the `ogbench` wheel ships and returns the rows of OGBench's file
layout (`offbench.data.ogbench_io`): observations, actions, terminals (True on each episode's last row),
qpos and qvel of each row's state. The first `episodes` episodes are the training file, the next
`episodes // 10` the validation file, as OGBench splits them. The files are written under
`<data dir>/local/ogbench-<dataset>/` and read back by the OGBench reader, so every single-task variant
(`local/ogbench-<dataset minus -v0>-singletask[-task<k>]-v0`) comes from one recording.

Determinism: episode i draws everything from generators seeded with (seed, i): the recipe's own draws
(cells, action noise, random actions) from `numpy.random.default_rng([seed, i])`, the env's from
`env.reset(seed=...)` and its action space's sampler, and numpy's global generator (OGBench's maze and
oracles draw from `np.random`), which is seeded per episode and restored afterwards. Episodes are
therefore independent, and `workers` processes give the same bytes as one.

    pointmaze-navigate   the maze's oracle subgoal direction (`get_oracle_subgoal`, normalised) plus
                         Gaussian noise (sigma `noise`, 0.5 in commands.sh), clipped to [-1, 1]; the
                         start is a random free cell, the goal a random vertex cell (a free cell that
                         is not a straight corridor), redrawn each time it is reached; the env never
                         terminates at the goal and each episode has `episode_steps` rows (1001).
    manipspace-play      a cube, scene or puzzle env in `data_collection` mode driven by the wheel's plan
                         oracle of the task the env names (`privileged/target_task`; noise 0.1, smoothing
                         0.5), re-targeted with `set_new_target(p_stack)` each time the oracle is done
                         (`p_stack`: a number, or [low, high] drawn per episode: 0 for one cube, U(0, 0.25)
                         for two); actions clipped to [-1, 1]; 1001 rows; puzzle and scene record
                         `button_states`; a scene episode that fails OGBench's health check is redrawn.
    manipspace-noisy     the same with the wheel's Markov oracles (min_norm 0.4) plus Gaussian noise of
                         scale xi ~ U(0, `noise`) drawn per episode (sigma xi, xi, xi, 3 xi, 10 xi on x, y, z,
                         yaw, gripper), and with probability `p_random_action` (0.1; 0.2 for puzzle) a
                         uniform random action.

`p_random_action` (default 0) also applies to pointmaze-navigate and manipspace-play: at each step, with that
probability, a uniform action in [-1, 1] is executed and stored instead of the oracle's (the oracle is not
queried). This is DriftQL's degraded-data rule (spec shared/specs/driftql.md, "Degraded data"): the data
are re-collected, so s', the reward and the rest of the episode follow from the random action, unlike
the `relabel-random-actions` transform (offbench.data.corruption). With 0 no coin is drawn, so a recipe
without the key gives the same bytes as before it existed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offbench.data import ogbench_io
from offbench.errors import OffbenchError
from offbench.io import atomic_write, json_text, replace_folder, staging_folder

Rows = dict[str, np.ndarray]
SIDECAR = "offbench.json"
DIRECTION_EPS = 1e-6  # the oracle direction is d / (|d| + 1e-6), as OGBench's generate_locomaze


@contextlib.contextmanager
def global_numpy_seed(seed: list[int]) -> Iterator[None]:
    """numpy's global generator seeded with `seed` inside the block, its previous state restored after."""
    state = np.random.get_state()
    np.random.seed(np.random.SeedSequence(seed).generate_state(1)[0])
    try:
        yield
    finally:
        np.random.set_state(state)


def maze_cells(maze_map: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(free cells, vertex cells) of a maze map (1 = wall): a vertex cell is a free cell that is not a
    straight corridor (free on both sides along one axis and walled on both sides along the other)."""
    free, vertex = [], []
    for i, j in zip(*np.nonzero(maze_map == 0)):
        i, j = int(i), int(j)
        free.append((i, j))
        vertical = maze_map[i - 1, j] == 0 and maze_map[i + 1, j] == 0 and maze_map[i, j - 1] == 1 and maze_map[i, j + 1] == 1
        horizontal = maze_map[i, j - 1] == 0 and maze_map[i, j + 1] == 0 and maze_map[i - 1, j] == 1 and maze_map[i + 1, j] == 1
        if not (vertical or horizontal):
            vertex.append((i, j))
    return free, vertex


@functools.lru_cache(maxsize=2)
def recording_env(env_id: str, episode_steps: int, manipulation: bool) -> gym.Env:
    """The env a recipe records in, made once per process (a manipulation env takes seconds to build) and
    reused: every episode resets it with its own seed, so an episode does not depend on those before it."""
    ogbench_io.require_ogbench()
    kwargs = {"mode": "data_collection"} if manipulation else {}
    return gym.make(env_id, terminate_at_goal=False, max_episode_steps=episode_steps, **kwargs)


def pointmaze_episode(entry: dict[str, Any], index: int) -> Rows:
    """Episode `index` of a pointmaze-navigate recording: `episode_steps` rows (see the module docstring)."""
    env = recording_env(entry["ogbench_env"], entry["episode_steps"], manipulation=False)
    rng = np.random.default_rng([entry["seed"], index])
    maze = env.unwrapped
    free, vertex = maze_cells(maze.maze_map)
    rows: dict[str, list] = {"observations": [], "actions": [], "terminals": [], "qpos": [], "qvel": []}
    with global_numpy_seed([entry["seed"], index]):
        maze.action_space.seed(int(rng.integers(2**31)))
        task = {"init_ij": free[rng.integers(len(free))], "goal_ij": vertex[rng.integers(len(vertex))]}
        observation, _ = env.reset(seed=int(rng.integers(2**31)), options={"task_info": task})
        done = False
        while not done:
            xy = maze.get_xy()
            subgoal, _ = maze.get_oracle_subgoal(xy, maze.cur_goal_xy)
            direction = (subgoal - xy) / (np.linalg.norm(subgoal - xy) + DIRECTION_EPS)
            if entry.get("p_random_action", 0.0) > 0.0 and rng.uniform() < entry["p_random_action"]:
                action = rng.uniform(-1.0, 1.0, size=direction.shape)  # executed and stored (DriftQL's degraded data)
            else:
                action = np.clip(direction + rng.normal(0.0, entry["noise"], size=direction.shape), -1.0, 1.0)
            next_observation, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if info["success"]:
                maze.set_goal(goal_ij=vertex[rng.integers(len(vertex))])
            for key, value in (("observations", observation), ("actions", action), ("terminals", done),
                               ("qpos", info["prev_qpos"]), ("qvel", info["prev_qvel"])):
                rows[key].append(value)
            observation = next_observation
    return {key: np.asarray(value, dtype=bool if key == "terminals" else np.float32) for key, value in rows.items()}


ORACLES = {  # (module, class) in ogbench.manipspace.oracles, by the kind of oracle and the task the env names in info
    ("plan", "cube"): ("plan.cube_plan", "CubePlanOracle"),
    ("plan", "button"): ("plan.button_plan", "ButtonPlanOracle"),
    ("plan", "drawer"): ("plan.drawer_plan", "DrawerPlanOracle"),
    ("plan", "window"): ("plan.window_plan", "WindowPlanOracle"),
    ("markov", "cube"): ("markov.cube_markov", "CubeMarkovOracle"),
    ("markov", "button"): ("markov.button_markov", "ButtonMarkovOracle"),
    ("markov", "drawer"): ("markov.drawer_markov", "DrawerMarkovOracle"),
    ("markov", "window"): ("markov.window_markov", "WindowMarkovOracle"),
}


def manipspace_oracles(entry: dict[str, Any], env: gym.Env) -> dict[str, Any]:
    """The wheel's oracles for the env's tasks (`privileged/target_task`), built as OGBench's recipes build them:
    plan oracles with `noise` and `noise_smoothing`, Markov ones with `min_norm` (scene's cube oracle with
    max_step 100); puzzle's button oracles keep the gripper closed."""
    import importlib

    kind = "plan" if entry["recipe"].endswith("-play") else "markov"
    family = entry["ogbench_env"].split("-")[0]
    tasks = {"cube": ("cube",), "scene": ("cube", "button", "drawer", "window"), "puzzle": ("button",)}[family]
    oracles = {}
    for task in tasks:
        module, name = ORACLES[(kind, task)]
        oracle_class = getattr(importlib.import_module(f"ogbench.manipspace.oracles.{module}"), name)
        kwargs: dict[str, Any] = {"noise": entry["noise"], "noise_smoothing": entry["noise_smoothing"]} if kind == "plan" else {"min_norm": entry["min_norm"]}
        if family == "puzzle":
            kwargs["gripper_always_closed"] = True
        if family == "scene" and kind == "markov" and task == "cube":
            kwargs["max_step"] = 100
        oracles[task] = oracle_class(env=env, **kwargs)
    return oracles


def scene_healthy(qpos: np.ndarray) -> bool:
    """OGBench's health check of a scene episode: the cube stays in view unless it is in the drawer
    (qpos 14:17 is its xyz; y >= 0.29 is too far right, y <= -0.3 outside z in [0.06, 0.08] too far left)."""
    y, z = qpos[:, 15], qpos[:, 16]
    return not ((y >= 0.29).any() or ((y <= -0.3) & ((z < 0.06) | (z > 0.08))).any())


def manipspace_episode(entry: dict[str, Any], index: int) -> Rows:
    """Episode `index` of a cube/scene/puzzle play or noisy recording: `episode_steps` rows (module docstring).

    A scene episode that fails `scene_healthy` is recorded again, from where the episode's generators are.
    """
    env = recording_env(entry["ogbench_env"], entry["episode_steps"], manipulation=True)
    oracles = manipspace_oracles(entry, env)
    rng = np.random.default_rng([entry["seed"], index])
    with global_numpy_seed([entry["seed"], index]):  # the oracles draw their plans and targets from np.random
        while True:
            rows = _manipspace_rows(entry, env, oracles, rng)
            if not entry["ogbench_env"].startswith("scene") or scene_healthy(rows["qpos"]):
                return rows


def _manipspace_rows(entry: dict[str, Any], env: gym.Env, oracles: dict[str, Any], rng: np.random.Generator) -> Rows:
    plan = entry["recipe"].endswith("-play")
    low, high = env.action_space.low, env.action_space.high
    p_stack = entry["p_stack"] if np.isscalar(entry["p_stack"]) else rng.uniform(*entry["p_stack"])
    xi = 0.0 if plan else rng.uniform(0.0, entry["noise"])
    observation, info = env.reset(seed=int(rng.integers(2**31)))
    oracle = oracles[info["privileged/target_task"]]
    oracle.reset(observation, info)
    keys = ("observations", "actions", "terminals", "qpos", "qvel", *(("button_states",) if "prev_button_states" in info else ()))
    rows: dict[str, list] = {key: [] for key in keys}
    done = False
    while not done:
        if entry.get("p_random_action", 0.0) > 0.0 and rng.uniform() < entry["p_random_action"]:
            action = rng.uniform(low, high)  # the oracle is not queried on a replaced step, as in OGBench's generator
        else:
            action = np.asarray(oracle.select_action(observation, info), dtype=np.float64)
            action = action if plan else action + rng.normal(0.0, [xi, xi, xi, 3 * xi, 10 * xi])
        action = np.clip(action, -1.0, 1.0)
        next_observation, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if oracle.done:
            target_observation, target_info = env.unwrapped.set_new_target(p_stack=p_stack)
            oracle = oracles[target_info["privileged/target_task"]]
            oracle.reset(target_observation, target_info)
        step = {"observations": observation, "actions": action, "terminals": done, "qpos": info["prev_qpos"], "qvel": info["prev_qvel"]}
        for key in keys:
            rows[key].append(info["prev_button_states"] if key == "button_states" else step[key])
        observation = next_observation
    dtypes = {"terminals": bool, "button_states": np.int64}
    return {key: np.asarray(value, dtype=dtypes.get(key, np.float32)) for key, value in rows.items()}


EPISODE_RECIPES: dict[str, Callable[[dict[str, Any], int], Rows]] = {
    "ogbench-pointmaze-navigate": pointmaze_episode,
    "ogbench-manipspace-play": manipspace_episode,
    "ogbench-manipspace-noisy": manipspace_episode,
}


def record(entry: dict[str, Any], on_steps: Callable[[int], None] | None = None, workers: int = 1) -> tuple[Rows, Rows]:
    """(training rows, validation rows) of the recipe `entry` (a catalogue table), in OGBench's layout.

    `workers` > 1 runs episodes in that many processes; the result does not depend on it.
    `on_steps(n)` is called with each finished episode's row count, in episode order.
    """
    if entry["recipe"] not in EPISODE_RECIPES:
        raise OffbenchError(f"unknown OGBench recipe '{entry['recipe']}'", f"known: {', '.join(EPISODE_RECIPES)}")
    if entry["episodes"] < 10:
        raise OffbenchError(f"an OGBench recording needs at least 10 episodes (its validation file holds episodes // 10), got {entry['episodes']}")
    total = entry["episodes"] + entry["episodes"] // 10
    episodes: list[Rows] = []
    with _episode_map(workers) as mapper:
        for rows in mapper(_run_episode, [(entry, index) for index in range(total)]):
            episodes.append(rows)
            if on_steps is not None:
                on_steps(len(rows["terminals"]))
    return _concatenate(episodes[: entry["episodes"]]), _concatenate(episodes[entry["episodes"]:])


def recording_hash(train: Rows, val: Rows) -> str:
    """sha256 over both files' arrays (split, key, dtype, shape and bytes, keys sorted): the recording's identity."""
    digest = hashlib.sha256()
    for split, rows in (("train", train), ("val", val)):
        for key in sorted(rows):
            array = np.ascontiguousarray(rows[key])
            digest.update(f"{split}:{key}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def write_recording(folder: Path, dataset: str, train: Rows, val: Rows, sidecar: dict[str, Any], overwrite: bool = False) -> None:
    """Write `<dataset>.npz`, `<dataset>-val.npz` (compressed, as OGBench's) and the sidecar into `folder`.

    The files are staged beside `folder` and renamed into place when complete, so a killed write never
    leaves a folder that looks present. Raises `OffbenchError` when it exists and not `overwrite`.
    """
    if folder.exists() and not overwrite:
        raise OffbenchError(f"{folder} already exists", "pass --force to make it again")
    staging = staging_folder(folder)
    np.savez_compressed(staging / f"{dataset}.npz", **train)
    np.savez_compressed(staging / f"{dataset}-val.npz", **val)
    atomic_write(staging / SIDECAR, lambda tmp: Path(tmp).write_text(json_text(sidecar)))
    replace_folder(staging, folder)


def _run_episode(job: tuple[dict[str, Any], int]) -> Rows:
    entry, index = job
    return EPISODE_RECIPES[entry["recipe"]](entry, index)


@contextlib.contextmanager
def _episode_map(workers: int) -> Iterator[Callable]:
    if workers <= 1:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
        yield lambda function, jobs: pool.imap(function, jobs, chunksize=4)


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def _concatenate(episodes: list[Rows]) -> Rows:
    return {key: np.concatenate([rows[key] for rows in episodes]) for key in episodes[0]}
