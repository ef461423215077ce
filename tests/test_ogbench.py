"""OGBench: the reader on npz files written here in OGBench's own layout, single-task rewards against the
env's own, the local pointmaze recipe, and success-rate evaluation end to end.

Files are written with `np.savez_compressed` and the key names, dtypes and row conventions of OGBench's
`data_gen_scripts` (one row per step, the episode's last state included, `terminals` True on it), never
through offbench's writer; `ogbench.make_env_and_datasets` / `ogbench.load_dataset` (the wheel's own
loader) are the reference the transitions are compared with.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from offbench.config import baseline_values
from offbench.data import ids, ogbench_io, ogbench_recipes, registry
from offbench.errors import OffbenchError

ogbench = pytest.importorskip("ogbench")

MAZE = "pointmaze-medium-navigate"
TINY_MAZE = {"recipe": "ogbench-pointmaze-navigate", "ogbench_env": "pointmaze-medium-v0", "episodes": 10, "episode_steps": 30,
             "noise": 0.5, "seed": 3}
MAZE_ENV = "pointmaze-medium-singletask-task3-v0"


def task_goal(env_name: str) -> np.ndarray:
    """The goal xy of a maze single-task env (its task's goal cell)."""
    env = gym.make(f"ogbench:{env_name}")
    try:
        env.reset(seed=0)
        return np.asarray(env.unwrapped.cur_goal_xy, dtype=np.float32)
    finally:
        env.close()


def maze_rows(lengths: list[int], goal: np.ndarray, at_goal: set[int], seed: int = 0, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """OGBench pointmaze rows: episodes of `lengths` rows, positions (= observations = qpos) random in the
    maze's free area except the rows in `at_goal`, which sit on the goal."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    qpos = rng.uniform(-2.0, 2.0, size=(n, 2)).astype(np.float32)  # cell (1, 1) area: far from every task goal
    for row in at_goal:
        qpos[row] = goal
    terminals = np.zeros(n, dtype=bool)
    terminals[np.cumsum(lengths) - 1] = True
    observations = qpos.copy() if dtype == np.float32 else rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return {"observations": observations, "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32), "terminals": terminals,
            "qpos": qpos, "qvel": rng.normal(size=(n, 2)).astype(np.float32)}


def write_ogbench(folder: Path, dataset: str, train: dict[str, np.ndarray], val: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{dataset}.npz", **train)
    np.savez_compressed(folder / f"{dataset}-val.npz", **val)
    return folder / f"{dataset}.npz"


@pytest.fixture(scope="module")
def maze_goal() -> np.ndarray:
    return task_goal(MAZE_ENV)


@pytest.fixture()
def maze_files(tmp_path: Path, maze_goal: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pointmaze-medium-navigate-v0 in $OFFBENCH_DATA_DIR/ogbench: episodes of 4, 3 and 5 rows; rows 1 and 2
    (inside the first episode) and 11 (the last row of the file) are at task 3's goal."""
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    train = maze_rows([4, 3, 5], maze_goal, at_goal={1, 2, 11})
    val = maze_rows([3, 2], maze_goal, at_goal={0}, seed=1)
    return write_ogbench(tmp_path / "data" / "ogbench", f"{MAZE}-v0", train, val)


# ---- the reader ----------------------------------------------------------------------------------


def test_regular_layout_equals_ogbench_load_dataset(maze_files: Path) -> None:
    dataset = registry.load_dataset(f"ogbench/{MAZE}-singletask-task3-v0")
    _, train, _ = ogbench.make_env_and_datasets(f"{MAZE}-singletask-task3-v0", dataset_path=str(maze_files), add_info=True)
    for ours, theirs in (("observations", "observations"), ("next_observations", "next_observations"), ("actions", "actions"), ("rewards", "rewards")):
        np.testing.assert_array_equal(getattr(dataset, ours), train[theirs])
    np.testing.assert_array_equal(dataset.terminals, train["masks"] == 0)
    assert len(dataset) == 12 - 3  # each episode's last row has no successor
    np.testing.assert_array_equal(dataset.extras["qpos"], train["qpos"])  # the state s of each transition
    assert dataset.metadata.env_id == f"ogbench:{MAZE_ENV}" and dataset.metadata.score == "success-rate"


def test_regular_layout_transitions_by_hand(maze_files: Path, maze_goal: np.ndarray) -> None:
    """Rows 0-3 | 4-6 | 7-11; rows 1, 2 and 11 at the goal. Transitions: rows 0,1,2 | 4,5 | 7,8,9,10."""
    raw = dict(np.load(maze_files))
    dataset = registry.load_dataset(f"ogbench/{MAZE}-singletask-task3-v0")
    rows = np.array([0, 1, 2, 4, 5, 7, 8, 9, 10])
    np.testing.assert_array_equal(dataset.observations, raw["observations"][rows])
    np.testing.assert_array_equal(dataset.next_observations, raw["observations"][rows + 1])  # never across an episode end
    np.testing.assert_array_equal(dataset.rewards, [-1, 0, 0, -1, -1, -1, -1, -1, -1])  # reward of s (ogbench >= 1.2.0)
    np.testing.assert_array_equal(dataset.terminals, [0, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dataset.timeouts, [0, 0, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(dataset.episode_starts, [0, 2, 3, 5])  # a terminal ends an offbench episode
    assert dataset.metadata.extra["recorded_episodes"] == 3
    assert dataset.metadata.extra["behaviour_success"] == pytest.approx(2 / 3)  # episodes 1 and 3 reach the goal


def test_transforms_keep_the_extras_of_the_rows_they_keep(tmp_path: Path) -> None:
    from offbench.data.corruption import corrupt
    from offbench.data.transforms import subset

    path = write_ogbench(tmp_path, f"{MAZE}-v0", *ogbench_recipes.record(TINY_MAZE))
    dataset = ogbench_io.load_ogbench(path, f"ogbench/{MAZE}-singletask-task3-v0", f"{MAZE}-singletask-task3-v0")
    cut = subset(dataset, 50)  # the first 50 transitions: episodes of 29 and 21 (no terminal: task 3's goal is not reached)
    assert not dataset.terminals[:50].any()
    np.testing.assert_array_equal(cut.extras["qpos"], dataset.extras["qpos"][:50])
    np.testing.assert_array_equal(corrupt(dataset, "relabel-random-actions:0.5", seed=0).extras["qvel"], dataset.extras["qvel"])


def test_compact_layout_keeps_every_row_as_ogbench_compact(maze_files: Path) -> None:
    dataset = ogbench_io.load_ogbench(maze_files, "ogbench/x-singletask-task3-v0", f"{MAZE}-singletask-task3-v0", layout="compact")
    _, train, _ = ogbench.make_env_and_datasets(f"{MAZE}-singletask-task3-v0", dataset_path=str(maze_files), compact_dataset=True)
    assert dataset.next_observations is None and len(dataset) == 12
    np.testing.assert_array_equal(dataset.observations, train["observations"])
    np.testing.assert_array_equal(dataset.rewards, train["rewards"])
    np.testing.assert_array_equal(dataset.terminals, train["masks"] == 0)
    # OGBench's invalid rows (an episode's last state) have no successor: time-outs, except the terminal last row 11
    np.testing.assert_array_equal(dataset.timeouts | dataset.terminals, dataset.terminals | (train["valids"] == 0))
    np.testing.assert_array_equal(np.flatnonzero(dataset.timeouts), [3, 6])


def test_uint8_frames_are_read_in_the_compact_layout(tmp_path: Path, maze_goal: np.ndarray) -> None:
    path = write_ogbench(tmp_path, f"{MAZE}-v0", maze_rows([3, 4], maze_goal, set(), dtype=np.uint8), maze_rows([2], maze_goal, set()))
    dataset = ogbench_io.load_ogbench(path, "ogbench/x-v0", f"{MAZE}-singletask-v0")
    assert dataset.metadata.observation_space.dtype == "uint8" and dataset.observations.shape == (7, 4, 4, 3)
    assert dataset.next_observations is None and dataset.metadata.extra["layout"] == "compact"
    assert dataset.metadata.extra["task"] == 1  # the default task of the maze, as the env resolves it


def test_validation_split_loads_under_its_own_id(maze_files: Path) -> None:
    val = registry.load_validation(f"ogbench/{MAZE}-singletask-task3-v0")
    assert val.metadata.id == f"ogbench/{MAZE}-singletask-task3-v0+val"
    assert len(val) == 3  # episodes of 3 and 2 rows
    np.testing.assert_array_equal(val.terminals, [1, 0, 0])
    with pytest.raises(OffbenchError, match="has no validation split"):
        registry.load_validation("local/hopper-tiny-v5")


def test_a_stage_reads_the_validation_split_of_its_data(maze_files: Path) -> None:
    from offbench.algos.base import StageContext
    from offbench.data.corruption import corrupt

    dataset = registry.load_dataset(f"ogbench/{MAZE}-singletask-task3-v0")
    context = StageContext(corrupt(dataset, "relabel-random-actions:0.5", seed=0), None, None, None, save=lambda: None, message=print)
    assert context.validation().metadata.id == f"ogbench/{MAZE}-singletask-task3-v0+val" and len(context.validation()) == 3
    with pytest.raises(OffbenchError, match="has no validation split"):
        d4rl_named = replace(dataset, metadata=replace(dataset.metadata, id="d4rl/hopper-medium-v2"))
        StageContext(d4rl_named, None, None, None, lambda: None, print).validation()


def test_files_in_ogbench_own_folder_are_found_and_listed(tmp_path: Path, maze_goal: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ogbench_utils = pytest.importorskip("ogbench.utils")
    monkeypatch.setattr(registry, "OGBENCH_CACHE", ogbench_utils.DEFAULT_DATASET_DIR)  # conftest points it away from the machine's
    write_ogbench(tmp_path / "home" / ".ogbench" / "data", f"{MAZE}-v0", maze_rows([3], maze_goal, set()), maze_rows([2], maze_goal, set()))
    assert f"ogbench/{MAZE}-singletask-v0" in {row.id for row in registry.list_datasets()}
    assert registry.resolve(f"{MAZE}-singletask-task2") == f"ogbench/{MAZE}-singletask-task2-v0"  # an alias
    assert len(registry.load_dataset(f"{MAZE}-singletask-task2")) == 2


def test_absent_goal_conditioned_and_malformed_files_are_one_line_errors(maze_files: Path, tmp_path: Path) -> None:
    with pytest.raises(OffbenchError, match="never downloads OGBench data: put cube-single-play-v0.npz and cube-single-play-v0-val.npz"):
        registry.load_dataset("ogbench/cube-single-play-singletask-task2-v0")
    with pytest.raises(OffbenchError, match="not an OGBench single-task dataset name; the goal-conditioned datasets have no rewards"):
        registry.load_dataset(f"ogbench/{MAZE}-v0")
    raw = dict(np.load(maze_files))
    nan_row = np.where(np.arange(12)[:, None] == 5, np.nan, raw["observations"]).astype(np.float32)
    for broken, message in (
        ({k: v for k, v in raw.items() if k != "terminals"}, "lacks the key 'terminals'"),
        ({**raw, "terminals": np.zeros(12, dtype=bool)}, "field 'terminals' .*the last row must end an episode"),
        ({**raw, "actions": raw["actions"][:-1]}, r"field 'actions' has shape \(11, 2\) and dtype float32, where the other fields have 12 rows"),
        ({**raw, "observations": nan_row}, "'observations' .* at row 5: value is not finite"),
        ({k: v for k, v in raw.items() if k != "qpos"}, "computed from 'qpos', which the file lacks"),
    ):
        np.savez_compressed(maze_files, **broken)
        with pytest.raises(OffbenchError, match=message):
            registry.load_dataset(f"ogbench/{MAZE}-singletask-v0")
    with pytest.raises(OffbenchError, match=r"ogbench [0-9.]+ has no env powderworld-easy-singletask-task2-v0"):
        ogbench_io.load_ogbench(maze_files, "ogbench/x-v0", "powderworld-easy-play-singletask-task2-v0")
    np.savez(maze_files, **raw)  # stored, not compressed: a flipped byte is caught by the member's CRC alone
    whole = maze_files.read_bytes()
    flipped = bytearray(whole)
    flipped[200] ^= 0xFF
    for damaged, message in ((b"not a zip", "cannot read .* as an npz file"), (whole[: len(whole) // 2], "cannot read .* as an npz file"),
                             (bytes(flipped), "cannot read .* as an npz file .*CRC")):
        maze_files.write_bytes(damaged)
        with pytest.raises(OffbenchError, match=message):
            registry.load_dataset(f"ogbench/{MAZE}-singletask-v0")


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import PackageNotFoundError

    def absent(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(ogbench_io, "version", absent)
    with pytest.raises(OffbenchError, match=r"need the ogbench package.*pip install 'offbench\[ogbench\]'"):
        ogbench_io.require_ogbench()
    monkeypatch.setattr(ogbench_io, "version", lambda name: "1.1.5")
    with pytest.raises(OffbenchError, match="ogbench 1.1.5 computes single-task rewards from s'"):
        ogbench_io.require_ogbench()


@pytest.mark.parametrize("name, parts", [
    ("cube-single-play-singletask-task2-v0", ("cube-single-play-v0", "cube-single-singletask-task2-v0", 2)),
    ("puzzle-3x3-play-singletask-v0", ("puzzle-3x3-play-v0", "puzzle-3x3-singletask-v0", None)),
    ("visual-antmaze-large-navigate-singletask-task5-v0", ("visual-antmaze-large-navigate-v0", "visual-antmaze-large-singletask-task5-v0", 5)),
])
def test_single_task_names_map_to_files_and_envs_as_ogbench_does(name: str, parts: tuple) -> None:
    parsed = ogbench_io.parse_name(name)
    assert (parsed.dataset, parsed.env_name, parsed.task) == parts


# ---- single-task rewards against the env's own -----------------------------------------------------


def test_maze_rewards_and_terminals_are_the_env_step_of_each_state(maze_files: Path) -> None:
    dataset = registry.load_dataset(f"ogbench/{MAZE}-singletask-task3-v0")
    env = gym.make(f"ogbench:{MAZE_ENV}")
    env.reset(seed=0)
    for row in range(len(dataset)):
        env.unwrapped.set_state(dataset.extras["qpos"][row].astype(np.float64), dataset.extras["qvel"][row].astype(np.float64))
        _, reward, terminated, _, _ = env.step(dataset.actions[row])
        assert (reward, terminated) == (dataset.rewards[row], dataset.terminals[row])
    env.close()


def test_cube_rewards_and_terminals_are_the_env_step_of_each_state(tmp_path: Path) -> None:
    """cube-single task 2: states with the cube on its target (reward 0, done) and away from it (-1)."""
    env = gym.make("ogbench:cube-single-singletask-task2-v0")
    env.reset(seed=0)
    data = env.unwrapped._data
    target = data.mocap_pos[0].copy()
    qpos, qvel = [], []
    for offset in (0.0, 0.2, 0.01, 0.3):  # the cube's xyz at the target + offset in x (qpos 14:17, OGBench's layout)
        state = data.qpos.copy()
        state[14:17] = target + np.array([offset, 0.0, 0.0])
        qpos.append(state)
        qvel.append(np.zeros_like(data.qvel))
    n = len(qpos)
    rows = {"observations": np.zeros((n, env.observation_space.shape[0]), np.float32), "actions": np.zeros((n, 5), np.float32),
            "terminals": np.array([False, False, False, True]), "qpos": np.asarray(qpos, np.float32), "qvel": np.asarray(qvel, np.float32)}
    path = write_ogbench(tmp_path, "cube-single-play-v0", rows, rows)
    dataset = ogbench_io.load_ogbench(path, "ogbench/cube-single-play-singletask-task2-v0", "cube-single-play-singletask-task2-v0")
    np.testing.assert_array_equal(dataset.rewards, [0, -1, 0])
    for row in range(len(dataset)):
        env.reset(seed=0)
        env.unwrapped.set_state(qpos[row], qvel[row])
        env.unwrapped.post_step()  # what the env runs after each physics step: caches the success of the state it reached
        _, reward, terminated, _, _ = env.step(np.zeros(5))
        assert (reward, terminated) == (dataset.rewards[row], dataset.terminals[row])
    env.close()


# ---- the local recipe ------------------------------------------------------------------------------



def test_pointmaze_recipe_is_deterministic_split_and_in_ogbench_layout() -> None:
    train, val = ogbench_recipes.record(TINY_MAZE)
    again, again_val = ogbench_recipes.record(TINY_MAZE)
    assert ogbench_recipes.recording_hash(train, val) == ogbench_recipes.recording_hash(again, again_val)
    other, other_val = ogbench_recipes.record({**TINY_MAZE, "seed": 4})
    assert ogbench_recipes.recording_hash(train, val) != ogbench_recipes.recording_hash(other, other_val)
    assert len(train["terminals"]) == 10 * 30 and len(val["terminals"]) == 1 * 30  # episodes // 10 more for validation
    np.testing.assert_array_equal(np.flatnonzero(train["terminals"]), np.arange(29, 300, 30))
    assert {k: v.dtype.name for k, v in train.items()} == {"observations": "float32", "actions": "float32", "terminals": "bool",
                                                           "qpos": "float32", "qvel": "float32"}
    np.testing.assert_array_equal(train["observations"], train["qpos"])  # pointmaze observes its position
    assert np.abs(train["actions"]).max() <= 1.0
    np.testing.assert_allclose(train["qpos"][1:30] - train["qpos"][:29], 0.0, atol=1.0)  # one episode moves continuously


def test_pointmaze_recipe_does_not_depend_on_the_worker_count() -> None:
    one = ogbench_recipes.record({**TINY_MAZE, "episode_steps": 10})
    two = ogbench_recipes.record({**TINY_MAZE, "episode_steps": 10}, workers=2)
    assert ogbench_recipes.recording_hash(*one) == ogbench_recipes.recording_hash(*two)


TINY_CUBE = {"recipe": "ogbench-manipspace-play", "ogbench_env": "cube-single-v0", "episodes": 10, "episode_steps": 15, "noise": 0.1,
             "noise_smoothing": 0.5, "p_stack": 0.0, "min_norm": 0.4, "p_random_action": 0.1, "seed": 0}


@pytest.mark.parametrize("recipe", ["ogbench-manipspace-play", "ogbench-manipspace-noisy"])
def test_cube_recipes_are_deterministic_and_each_episode_stands_alone(recipe: str) -> None:
    entry = {**TINY_CUBE, "recipe": recipe}
    train, val = ogbench_recipes.record(entry)
    assert ogbench_recipes.recording_hash(train, val) == ogbench_recipes.recording_hash(*ogbench_recipes.record(entry))
    alone = ogbench_recipes.manipspace_episode(entry, 7)  # in a fresh order: the env is reused, but every episode reseeds it
    assert all(np.array_equal(alone[key], train[key][7 * 15 : 8 * 15]) for key in alone)
    assert train["observations"].shape == (150, 28) and train["qpos"].shape == (150, 21) and val["actions"].shape == (15, 5)
    assert np.abs(train["actions"]).max() <= 1.0 and "button_states" not in train


@pytest.mark.parametrize("env, tasks, stack", [("puzzle-3x3-v0", {"button"}, 0.5), ("scene-v0", {"cube", "button", "drawer", "window"}, 0.5),
                                               ("cube-double-v0", {"cube"}, [0.0, 0.25])])
def test_scene_puzzle_and_double_recipes_record_button_states_where_the_env_has_them(env: str, tasks: set, stack: object) -> None:
    entry = {**TINY_CUBE, "ogbench_env": env, "p_stack": stack}
    env_made = ogbench_recipes.recording_env(env, 15, manipulation=True)
    assert set(ogbench_recipes.manipspace_oracles(entry, env_made)) == tasks
    rows = ogbench_recipes.manipspace_episode(entry, 0)
    assert rows["terminals"].tolist() == [False] * 14 + [True] and np.abs(rows["actions"]).max() <= 1.0
    assert ("button_states" in rows) == (not env.startswith("cube"))
    if "button_states" in rows:
        assert rows["button_states"].dtype == np.int64 and set(np.unique(rows["button_states"])) <= {0, 1}
    assert np.array_equal(ogbench_recipes.manipspace_episode(entry, 0)["qpos"], rows["qpos"])


def test_scene_health_check_refuses_a_cube_out_of_view() -> None:
    qpos = np.zeros((3, 30))
    qpos[:, 16] = 0.02
    assert ogbench_recipes.scene_healthy(qpos)
    qpos[1, 15] = 0.29  # too far right
    assert not ogbench_recipes.scene_healthy(qpos)
    qpos[1, 15], qpos[2, 15], qpos[2, 16] = 0.0, -0.31, 0.07  # far left but in the drawer's height band
    assert ogbench_recipes.scene_healthy(qpos)


def test_maze_vertex_cells_exclude_straight_corridors() -> None:
    maze = np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 1], [1, 1, 1, 1, 1]])
    free, vertex = ogbench_recipes.maze_cells(maze)
    assert free == [(1, 1), (1, 2), (1, 3), (2, 3)]
    assert vertex == [(1, 1), (1, 3), (2, 3)]  # (1, 2) is a horizontal corridor


def test_local_recording_is_made_once_and_read_as_every_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(registry, "catalogue", lambda: {f"local/ogbench-{MAZE}-v0": TINY_MAZE})
    task2 = f"local/ogbench-{MAZE}-singletask-task2-v0"
    assert registry.recording_id(task2) == f"local/ogbench-{MAZE}-v0" and registry.is_makeable(task2)
    assert registry.recipe_steps(task2) == 11 * 30
    made = registry.load_dataset(task2)
    folder = tmp_path / "local" / f"ogbench-{MAZE}-v0"
    assert sorted(p.name for p in folder.iterdir()) == ["offbench.json", f"{MAZE}-v0-val.npz", f"{MAZE}-v0.npz"]
    assert made.metadata.extra["recording_sha256"] == ogbench_recipes.recording_hash(*ogbench_recipes.record(TINY_MAZE))
    default = registry.load_dataset(f"local/ogbench-{MAZE}-singletask-v0", make_missing=False)
    assert default.metadata.extra["task"] == 1 and len(default) == len(made) == 10 * 29
    np.testing.assert_array_equal(default.observations, made.observations)
    assert registry.load_validation(task2).metadata.extra["recorded_episodes"] == 1
    assert [row.id for row in registry.list_datasets() if "ogbench" in row.id] == [f"local/ogbench-{MAZE}-singletask-v0"]


# ---- success-rate evaluation -----------------------------------------------------------------------


def maze_oracle(env_name: str):
    """A policy (observations (S, E, 2) -> actions) that follows the maze's oracle subgoal to the task's goal."""
    guide = gym.make(f"ogbench:{env_name}")
    guide.reset(seed=0)
    maze = guide.unwrapped

    def act(observations: np.ndarray) -> np.ndarray:
        actions = np.zeros(observations.shape, dtype=np.float32)
        for index in np.ndindex(observations.shape[:2]):
            xy = observations[index].astype(np.float64)
            subgoal, _ = maze.get_oracle_subgoal(xy, maze.cur_goal_xy)
            actions[index] = np.clip((subgoal - xy) / (np.linalg.norm(subgoal - xy) + 1e-6), -1, 1)
        return actions

    return act


def test_success_is_counted_per_episode_from_the_env_report() -> None:
    """An oracle (the maze's subgoal direction) reaches task 1's goal in every episode; standing still never does."""
    from offbench.data.dataset import episode_scores
    from offbench.evaluate import evaluate_episodes

    oracle = maze_oracle("pointmaze-medium-singletask-task1-v0")
    reached = evaluate_episodes(oracle, "ogbench:pointmaze-medium-singletask-task1-v0", [0, 1], 2)
    still = evaluate_episodes(lambda o: np.zeros(o.shape, np.float32), "ogbench:pointmaze-medium-singletask-task1-v0", [0], 3)
    assert reached.successes.tolist() == [[True, True], [True, True]] and still.successes.tolist() == [[False, False, False]]
    assert (reached.returns > -1000).all() and (still.returns == -1000).all()  # -1 per step until the goal; 1000 steps
    np.testing.assert_array_equal(episode_scores("success-rate", still.returns, np.array([True, False, False]), None, None), [100, 0, 0])


def test_an_ogbench_episode_depends_on_its_seed_alone() -> None:
    """OGBench's maze draws its start noise from numpy's global generator: each sub-env seeds it before its reset."""
    from offbench.evaluate import evaluate_episodes

    oracle = maze_oracle("pointmaze-medium-singletask-task1-v0")
    state = np.random.get_state()
    beside = evaluate_episodes(oracle, "ogbench:pointmaze-medium-singletask-task1-v0", [0, 1], 2).returns
    alone = evaluate_episodes(oracle, "ogbench:pointmaze-medium-singletask-task1-v0", [1], 2).returns
    np.testing.assert_array_equal(alone[0], beside[1])
    assert len(set(beside.ravel().tolist())) > 1  # the start noise differs between episodes, and moves the return
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state, strict=True) if isinstance(a, np.ndarray))


def test_an_env_without_success_reports_none_and_cannot_be_scored_by_success() -> None:
    from offbench.data.dataset import episode_scores
    from offbench.evaluate import evaluate_episodes

    episodes = evaluate_episodes(lambda o: np.zeros(o.shape[:2], dtype=np.int64), "CartPole-v1", [0], 2)
    assert episodes.successes is None
    with pytest.raises(OffbenchError, match="scored by success rate, but its evaluation env reports no info"):
        episode_scores("success-rate", episodes.returns, episodes.successes, None, None)


@pytest.mark.parametrize("algo", ["bc", "td3bc"])
def test_offbench_run_on_a_tiny_ogbench_recording_records_success_rates(algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from conftest import FAST_SETTINGS, run_cli

    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    train, val = ogbench_recipes.record(TINY_MAZE)
    write_ogbench(tmp_path / "data" / "ogbench", f"{MAZE}-v0", train, val)
    dataset_id = f"ogbench/{MAZE}-singletask-task1-v0"
    results = tmp_path / "results"
    done = run_cli("run", "--algo", algo, "--dataset", dataset_id, "--steps", "40", "--eval-every", "20", "--eval-episodes", "2",
                   "--seeds", "2", *FAST_SETTINGS, "--results-dir", str(results))
    assert done.returncode == 0, done.stderr
    assert f"{dataset_id}: success rate (last-10 mean: all 2 evaluations)" in done.stdout
    run_dirs = sorted((results / "runs").iterdir())
    config = json.loads((run_dirs[0] / "config.json").read_text())
    assert config["dataset"]["score"] == "success-rate" and config["protocol"]["eval_env"] == "ogbench:pointmaze-medium-singletask-task1-v0"
    curve = json.loads((run_dirs[0] / "curve.json").read_text())
    assert [entry["step"] for entry in curve] == [20, 40]
    for entry in curve:
        assert len(entry["successes"]) == len(entry["returns"]) == 2
        assert entry["normalized_scores"] == [100.0 * s for s in entry["successes"]]
        assert entry["normalized_score"] == pytest.approx(50.0 * sum(entry["successes"]))
    report = run_cli("report", "--results-dir", str(results), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "report" / "tables" / "per_dataset.md").read_text()
    assert table.startswith("Success rate (%) per dataset") and "Aggregate success rate (%)" in (tmp_path / "report" / "tables" / "aggregate.md").read_text()
    evaluated = run_cli("eval", run_dirs[0].name, "--results-dir", str(results))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"success rate {curve[-1]['normalized_score']:.1f}" in evaluated.stdout and "the same returns as" in evaluated.stdout
    board = tmp_path / "leaderboard.json"
    assert run_cli("leaderboard", "update", "--results-dir", str(results), "--leaderboard", str(board)).returncode == 0
    assert json.loads(board.read_text())["entries"][0]["evaluation"]["score"] == "success-rate"  # what `check` labels its cells by


def test_check_table_says_which_cells_hold_success_rates() -> None:
    from offbench.analysis.leaderboard import CellCheck, check_table

    checks = [CellCheck("bc", "ogbench/x-singletask-v0", np.array([50.0, 60.0]), np.array([]), None, "no new runs", score="success-rate"),
              CellCheck("bc", "local/hopper-random-v5", np.array([1.0, 2.0]), np.array([]), None, "no new runs")]
    markdown = check_table(checks, margin=5, reps=100).markdown()
    assert "| bc | ogbench/x-singletask-v0 (success rate) |" in markdown and "| bc | local/hopper-random-v5 |" in markdown
    assert "A dataset marked (success rate) is scored by success rate x100" in markdown


def test_data_make_of_a_local_recording_reports_its_episodes_success_and_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from offbench.cli import app

    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(registry, "catalogue", lambda: {f"local/ogbench-{MAZE}-v0": TINY_MAZE})
    task2 = f"local/ogbench-{MAZE}-singletask-task2-v0"
    made = CliRunner().invoke(app, ["data", "make", task2])
    assert made.exit_code == 0, made.output
    text = " ".join(made.output.split())
    recording = ogbench_recipes.recording_hash(*ogbench_recipes.record(TINY_MAZE))
    dataset = registry.load_dataset(task2, make_missing=False)
    success = 100 * dataset.metadata.extra["behaviour_success"]
    assert (f"made {task2}: 10 recorded episodes, recording sha256 {recording}; {task2}: {len(dataset)} transitions, "
            f"behaviour success {success:.1f}% of recorded episodes (task 2), sha256 {dataset.metadata.sha256}") in text
    again = CliRunner().invoke(app, ["data", "make", f"local/ogbench-{MAZE}-singletask-task4-v0"])
    assert again.exit_code == 0 and "is already present" in again.output  # one recording serves every task


@pytest.mark.parametrize("alias, single_task", [
    ("cube-single-play", "cube-single-play-singletask"),  # OGBench's default task
    ("cube-single-play-singletask", "cube-single-play-singletask"),
    ("pointmaze-medium-navigate-singletask-task2", "pointmaze-medium-navigate-singletask-task2"),
])
def test_an_ogbench_alias_stands_for_its_single_task_data_real_first_then_recorded_here(alias: str, single_task: str) -> None:
    candidates = registry.alias_candidates(alias)
    real, local = f"ogbench/{single_task}-v0", f"local/ogbench-{single_task}-v0"
    assert real in candidates and local in candidates and candidates.index(real) < candidates.index(local)
    recording = registry.recording_id(local)
    assert recording not in candidates or candidates.index(local) < candidates.index(recording)  # never the goal-conditioned recording first
    assert registry.resolve(alias) == local  # no OGBench files here: the recording's single-task view, made on first use
    assert ids.parse(local).alias == ids.parse(real).alias == single_task
    assert ids.selects(alias, local) and ids.selects(alias, real)  # a report by the alias finds the runs it made
    assert not ids.selects("cube-single-play", "local/ogbench-cube-single-play-singletask-task2-v0")  # the default task only


def test_with_ogbench_files_present_an_alias_resolves_to_their_single_task_data_never_the_goal_conditioned_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    (tmp_path / "ogbench").mkdir()
    (tmp_path / "ogbench" / "cube-single-play-v0.npz").write_bytes(b"")  # presence is all resolution looks at
    assert registry.resolve("cube-single-play") == "ogbench/cube-single-play-singletask-v0"
    assert registry.resolve("cube-single-play-singletask-task3") == "ogbench/cube-single-play-singletask-task3-v0"
    assert "ogbench/cube-single-play-v0" not in registry.alias_candidates("cube-single-play")


def test_a_local_recording_gets_the_per_task_config_of_the_real_dataset() -> None:
    """DriftQL's table is keyed by OGBench names; a local recording of the same dataset uses the same row."""
    for task in ("", "-task2"):
        real = baseline_values("driftql", f"ogbench/cube-single-play-singletask{task}-v0")
        assert baseline_values("driftql", f"local/ogbench-cube-single-play-singletask{task}-v0") == real
        assert (real["drift_temp"], real["alpha"], real["discount"], real["kernel"]) == (0.02, 60.0, 0.995, "gaussian")
    assert not any("singletask" in c for c in registry.alias_candidates("hopper-medium"))  # not an OGBench name: no single-task ids


@pytest.mark.parametrize("entry", [{**TINY_CUBE, "p_random_action": 0.0}, {**TINY_MAZE, "episode_steps": 10}], ids=["cube-play", "pointmaze"])
def test_random_actions_are_executed_and_stored_when_asked_and_never_drawn_otherwise(entry: dict) -> None:
    """DriftQL's degraded data, re-collected: p = 1 executes and stores uniform actions; p = 0 draws no coin (same bytes as no key)."""
    without = {key: value for key, value in entry.items() if key != "p_random_action"}
    clean = ogbench_recipes.record(without)
    assert ogbench_recipes.recording_hash(*clean) == ogbench_recipes.recording_hash(*ogbench_recipes.record({**without, "p_random_action": 0.0}))
    random_train, _ = ogbench_recipes.record({**without, "p_random_action": 1.0})
    actions = random_train["actions"]
    assert not np.array_equal(actions, clean[0]["actions"]) and np.abs(actions).max() <= 1.0
    assert (actions.min(axis=0) < -0.8).all() and (actions.max(axis=0) > 0.8).all()  # uniform over the box in every dimension
    assert abs(float(actions.mean())) < 0.15 and not np.array_equal(random_train["observations"], clean[0]["observations"])


@pytest.mark.parametrize("name, cells", [("ogbench-driftql", 50), ("ogbench-local", 20), ("driftql-degraded", 4)])
def test_driftql_ogbench_protocols_score_the_mean_of_the_last_three_of_ten_evaluations(name: str, cells: int) -> None:
    """The paper's metric, the mean of the evaluations at 800K, 900K and 1M steps, is the analysis layer's last-k."""
    from offbench.analysis.leaderboard import load_protocol

    protocol = load_protocol(name)
    assert (protocol.steps, protocol.eval_every, protocol.eval_episodes, protocol.seeds) == (1_000_000, 100_000, 50, 8)
    assert protocol.statistic.to_dict() == {"statistic": "last-k", "k": 3} and len(protocol.datasets) == cells
    assert set(protocol.algos) == {"driftql", "td3bc", "bc"}
    for dataset_id in protocol.datasets:
        single_task = ogbench_io.parse_name(dataset_id.split("/")[1].removeprefix("ogbench-"))
        assert single_task.task in range(1, 6)
        tuned = baseline_values("driftql", dataset_id)
        assert ("ogbench-" not in dataset_id or registry.is_makeable(dataset_id)) and tuned != baseline_values("driftql", None)
