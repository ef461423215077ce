"""D4RL beyond locomotion (antmaze, maze2d, Adroit, kitchen) and Minari's D4RL ports: files in each genuine layout load,
validate and evaluate in their Gymnasium-Robotics envs, and a rollout of each env looks like its data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from conftest import FAST_SETTINGS, run_cli

from offbench import robotics
from offbench.data import d4rl, goals, registry
from offbench.errors import OffbenchError
from offbench.evaluate import check_env_spaces, evaluate_episodes, make_env

pytest.importorskip("gymnasium_robotics")

# name -> (qpos, qvel) widths kept under infos/ (antmaze: the ant's 15 + 14; maze2d: the point's 2 + 2), as D4RL's generators write them
INFOS = {"antmaze": (15, 14), "maze2d": (2, 2)}


def write_family_file(path: Path, name: str, episode_lengths: list[int], timeouts: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """A small file in D4RL's layout for `name`: float32 observations and actions of the family's dims, rewards (N,), bool terminals
    (and timeouts, True on each episode's last row, as D4RL's relabelled files), and for the mazes infos/goal, infos/qpos, infos/qvel."""
    rng = np.random.default_rng(seed)
    family = d4rl.family_of(name)
    observation_dims, action_dims = d4rl.layout_dims(name)
    n = sum(episode_lengths)
    ends = np.cumsum(episode_lengths) - 1
    arrays = {
        "observations": rng.normal(size=(n, observation_dims)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, action_dims)).astype(np.float32),
        "rewards": (rng.random(n) < 0.1).astype(np.float32),
        "terminals": np.zeros(n, dtype=bool),
    }
    if timeouts:
        arrays["timeouts"] = np.isin(np.arange(n), ends)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
        if family in INFOS:
            f["infos/goal"] = rng.normal(size=(n, 2)).astype(np.float32)
            arrays["infos/goal"] = f["infos/goal"][()]
            f["infos/qpos"] = rng.normal(size=(n, INFOS[family][0])).astype(np.float32)
            f["infos/qvel"] = rng.normal(size=(n, INFOS[family][1])).astype(np.float32)
    return arrays


def place(empty_roots: Path, name: str, **kwargs) -> dict[str, np.ndarray]:
    return write_family_file(empty_roots / "data" / "d4rl" / d4rl.file_name(name), name, **kwargs)


def test_file_names_and_urls_are_d4rls() -> None:
    assert d4rl.file_name("antmaze-umaze-v2") == "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5"
    assert d4rl.file_name("antmaze-large-play-v0") == "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse.hdf5"
    assert d4rl.file_name("antmaze-medium-diverse-v2") == "Ant_maze_big-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5"
    assert d4rl.file_name("maze2d-umaze-v1") == "maze2d-umaze-sparse-v1.hdf5"
    assert d4rl.file_name("maze2d-large-dense-v1") == "maze2d-large-dense-v1.hdf5"
    assert d4rl.file_name("pen-human-v1") == "pen-human-v1.hdf5"
    assert d4rl.file_name("hammer-cloned-v0") == "hammer-demos-v0-bc-combined.hdf5"
    assert d4rl.file_name("kitchen-complete-v0") == "mini_kitchen_microwave_kettle_light_slider-v0.hdf5"
    assert d4rl.file_name("kitchen-mixed-v0") == "kitchen_microwave_kettle_bottomburner_light-v0.hdf5"
    assert d4rl.download_url("antmaze-umaze-v2").startswith("http://rail.eecs.berkeley.edu/datasets/offline_rl/ant_maze_v2/Ant_maze_u-maze")
    assert d4rl.download_url("door-expert-v1") == "http://rail.eecs.berkeley.edu/datasets/offline_rl/hand_dapg_v1/door-expert-v1.hdf5"
    assert d4rl.download_url("hopper-medium-v2") == "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium-v2.hdf5"
    assert [d4rl.family_of(n) for n in ("hopper-medium-v2", "antmaze-umaze-v2", "maze2d-umaze-dense-v1", "relocate-expert-v1",
                                         "kitchen-partial-v0", "antmaze-umaze-v1", "pen-human-v2")] == [
        "locomotion", "antmaze", "maze2d", "adroit", "kitchen", None, None]


@pytest.mark.parametrize("name, env_id, wrappers, reference", [
    ("antmaze-umaze-v2", "AntMaze_UMaze-v4", ("d4rl-antmaze",), (0.0, 1.0)),
    ("antmaze-large-diverse-v2", "AntMaze_Large-v4", ("d4rl-antmaze",), (0.0, 1.0)),
    ("maze2d-medium-dense-v1", "PointMaze_MediumDense-v3", ("d4rl-maze2d",), (44.264742, 297.4552547777125)),
    ("pen-human-v1", "AdroitHandPen-v1", (), (96.262799, 3076.8331017826877)),
    ("relocate-cloned-v1", "AdroitHandRelocate-v1", (), (-6.425911, 4233.877797728884)),
    ("kitchen-mixed-v0", "FrankaKitchen-v1", ("d4rl-kitchen",), (0.0, 4.0)),
])
def test_each_family_loads_in_its_layout_with_its_env_and_references(empty_roots: Path, name: str, env_id: str, wrappers: tuple, reference: tuple) -> None:
    arrays = place(empty_roots, name, episode_lengths=[30, 25])
    dataset = registry.load_dataset(f"d4rl/{name}")
    meta = dataset.metadata
    assert (meta.env_id, meta.eval_wrappers, (meta.ref_min_score, meta.ref_max_score)) == (env_id, wrappers, reference)
    assert meta.extra["family"] == d4rl.family_of(name) and meta.extra["evaluation"] == robotics.SUBSTITUTES[d4rl.family_of(name)]
    # qlearning_dataset: each episode's time-out row is dropped, its previous row ends the episode
    assert len(dataset) == 53 and dataset.num_episodes == 2 and dataset.timeouts.sum() == 2
    np.testing.assert_array_equal(dataset.observations[:29], arrays["observations"][:29])
    np.testing.assert_array_equal(dataset.next_observations[:29], arrays["observations"][1:30])
    if "infos/goal" in arrays:
        np.testing.assert_array_equal(dataset.extras["goal"], np.concatenate([arrays["infos/goal"][:29], arrays["infos/goal"][30:54]]))
    else:
        assert dataset.extras == {}
    check_env_spaces(meta.env_id, meta.env_kwargs, meta.eval_wrappers, meta.observation_space, meta.action_space, meta.id)


def test_a_file_without_timeouts_gets_d4rls_horizon_rule(empty_roots: Path) -> None:
    """maze2d-umaze (horizon 300) with no `timeouts`: D4RL's qlearning_dataset marks steps 299 and 599 of the stream as final and drops them."""
    place(empty_roots, "maze2d-umaze-v1", episode_lengths=[700], timeouts=False)
    dataset = registry.load_dataset("d4rl/maze2d-umaze-v1")
    assert len(dataset) == 700 - 3  # rows 299 and 599 dropped, and the file's last row (no successor)
    np.testing.assert_array_equal(dataset.episode_lengths(), [299, 299, 99])
    assert "a time-out every 300 steps" in dataset.metadata.extra["timeouts"]
    info = registry.describe(dataset)  # what `offbench data info` shows
    assert info["timeouts_rule"] == dataset.metadata.extra["timeouts"] and info["evaluation"] == robotics.SUBSTITUTES["maze2d"]


def test_horizon_timeouts_restart_after_a_terminal() -> None:
    terminals = np.array([0, 1, 0, 0, 0, 0, 0], dtype=bool)
    # D4RL's count: 0, 1 (terminal), then 1, 2 (final: row 3), 0, 1, 2 (final: row 6)
    np.testing.assert_array_equal(np.flatnonzero(d4rl.horizon_timeouts(terminals, 3)), [3, 6])
    np.testing.assert_array_equal(np.flatnonzero(d4rl.horizon_timeouts(np.zeros(7, bool), 3)), [2, 5])


@pytest.mark.parametrize("name, fault, message", [
    ("antmaze-umaze-v2", "dims", r"observations of 27 dims and actions of 8, but D4RL's antmaze-umaze-v2 has 29 and 8"),
    ("maze2d-umaze-v1", "goal", r"field 'infos/goal' has shape \(20, 3\)"),
])
def test_a_file_that_is_not_its_familys_layout_is_one_line(empty_roots: Path, name: str, fault: str, message: str) -> None:
    path = empty_roots / "data" / "d4rl" / d4rl.file_name(name)
    place(empty_roots, name, episode_lengths=[20])
    with h5py.File(path, "r+") as f:
        if fault == "dims":
            observations = f["observations"][()][:, :27]
            del f["observations"]
            f["observations"] = observations
        else:
            del f["infos/goal"]
            f["infos/goal"] = np.zeros((20, 3), np.float32)
    with pytest.raises(OffbenchError, match=message):
        registry.load_dataset(f"d4rl/{name}")


def test_an_absent_family_dataset_says_where_to_get_it(empty_roots: Path) -> None:
    result = run_cli("run", "--algo", "bc", "--dataset", "antmaze-umaze", "--steps", "2")
    assert result.returncode == 2
    assert "ant_maze_v2/Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5" in result.stderr
    listed = run_cli("data", "list")
    assert all(f"d4rl/{name}" in listed.stdout for name in ("antmaze-large-diverse-v2", "maze2d-umaze-dense-v1", "door-human-v1", "kitchen-partial-v0"))


# ---- the evaluation envs look like the data --------------------------------------------------------------


def rollout(name: str, steps: int, seed: int = 0, policy=None) -> tuple[np.ndarray, np.ndarray, gym.Env]:
    family = d4rl.family_of(name)
    env_id, kwargs, wrappers = robotics.d4rl_eval_env(family, name)
    env = make_env(env_id, kwargs, wrappers)
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    observations, rewards = [observation], []
    for _ in range(steps):
        action = policy(observation) if policy else rng.uniform(-1, 1, env.action_space.shape)
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), env


@pytest.mark.parametrize("name", ["antmaze-umaze-v2", "antmaze-medium-play-v2", "antmaze-large-diverse-v2"])
def test_antmaze_env_is_d4rls_frame(name: str) -> None:
    """D4RL's antmaze: 29 dims, all varying (qpos then qvel), x, y from the reset cell (noise of Gymnasium-Robotics' 0.25 cells),
    sparse rewards in {0, 1}; the goal in D4RL's frame is the goal cell's of D4RL's map (umaze: (0, 8), the cell two rows down)."""
    observations, rewards, env = rollout(name, 60)
    assert observations.shape[1] == 29 and np.all(observations.std(axis=0) > 0)
    assert np.all(np.abs(observations[0, :2]) <= 1.0 + 1e-9)
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    maze_map = robotics.D4RL_ANTMAZE_MAPS[name.split("-")[1]]
    reset, goal = robotics._cell_of(maze_map, "r"), robotics._cell_of(maze_map, "g")
    expected_goal = 4.0 * np.array([goal[1] - reset[1], goal[0] - reset[0]])  # d4rl maze_env: x = column * 4, y = row * 4, from the reset cell
    assert np.all(np.abs(env.unwrapped.goal - env.origin - expected_goal) <= 1.0 + 1e-9)
    if name == "antmaze-umaze-v2":
        np.testing.assert_allclose(expected_goal, [0.0, 8.0])


def test_maze2d_env_is_d4rls_frame() -> None:
    """D4RL's maze2d frame: (x, y) = (row, column) of the map's free cells, cell centres at qpos (row - 0.2, column - 0.2) (the
    particle's body at 1.2, the walls at cell + 1); pushing +x moves down the rows; reward sparse {0, 1}."""
    observations, rewards, env = rollout("maze2d-large-v1", 40, policy=lambda observation: np.array([1.0, 0.0]))
    free = np.array([[cell != "#" for cell in row] for row in robotics.D4RL_MAZE2D_MAPS["large"]])
    rows, columns = np.round(observations[:, 0] + 0.2).astype(int), np.round(observations[:, 1] + 0.2).astype(int)
    assert free[rows, columns].all()
    assert observations[-1, 0] > observations[0, 0] and observations[5, 2] > 0  # +x action: row and x velocity grow
    assert abs(observations[-1, 1] - observations[0, 1]) < 0.25  # no motion across the columns
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    goal = env.unwrapped.goal
    np.testing.assert_allclose(goal[::-1] + env.offset + 0.2, robotics._cell_of(
        [[{"#": 1, "O": 0, "G": "g"}[c] for c in row] for row in robotics.D4RL_MAZE2D_MAPS["large"]], "g"), atol=0.25 + 1e-9)


@pytest.mark.parametrize("name, observation_dims", [("pen-human-v1", 45), ("door-human-v1", 39), ("hammer-expert-v1", 46), ("relocate-cloned-v1", 39)])
def test_adroit_env_has_d4rls_dims_and_reward_scale(name: str, observation_dims: int) -> None:
    """D4RL's Adroit: the DAPG layout; per-step rewards on the scale of its reference returns over the horizon (|r| well below max/T)."""
    observations, rewards, _ = rollout(name, 50)
    assert observations.shape[1] == observation_dims and np.isfinite(observations).all()
    low, high = d4rl.reference_scores(name)
    horizon = d4rl.HORIZONS[name.split("-")[0]]
    assert np.abs(rewards).max() < 5 * (high - low) / horizon


def test_kitchen_env_is_d4rls_layout() -> None:
    """D4RL's kitchen: 60 dims = joint positions (30, varying) and the dataset's constant goal vector (30: the four tasks' element goals)."""
    observations, rewards, _ = rollout("kitchen-complete-v0", 30)
    assert observations.shape[1] == 60
    assert np.all(observations[:, 30:] == observations[0, 30:])
    goal = observations[0, 30:]
    np.testing.assert_allclose(goal[[22, 19]], [-0.75, 0.37])  # microwave, slide cabinet (d4rl/kitchen OBS_ELEMENT_GOALS)
    assert goal[[11, 12, 15, 16, 20, 21]].tolist() == [0.0] * 6  # burners and hinge cabinet: not this dataset's tasks
    assert np.ptp(observations[:, :9], axis=0).min() > 0  # the arm moves
    assert set(np.unique(rewards)) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_kitchen_builds_under_mujoco_4() -> None:
    """Gymnasium-Robotics 1.4.2's joint-type assert fails under MuJoCo 4; registering patches it (offbench.robotics)."""
    env = make_env("FrankaKitchen-v1", {"tasks_to_complete": ["microwave"]})
    observation, _ = env.reset(seed=0)
    assert observation["observation"].shape == (59,)
    env.close()


# ---- Minari's D4RL ports ---------------------------------------------------------------------------------


def record_port(root: Path, minari_id: str, env_id: str, kwargs: dict, episodes: int = 2, steps: int = 15, eval_kwargs: dict | None = None) -> None:
    """A small Minari dataset recorded in the port's own env, written as Minari writes its D4RL ports (Dict observations, eval_env_spec)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    robotics.register_if_robotics(env_id)
    env, rng = gym.make(env_id, **kwargs), np.random.default_rng(0)
    buffers = []
    for index in range(episodes):
        observation, _ = env.reset(seed=index)
        observations, actions, rewards, terminations = [observation], [], [], []
        for _ in range(steps):
            action = rng.uniform(-1, 1, env.action_space.shape)
            observation, reward, terminated, _, _ = env.step(action)
            observations.append(observation)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            if terminated:
                break

        def stack(items):
            return {key: stack([item[key] for item in items]) for key in items[0]} if isinstance(items[0], dict) else np.array(items)

        buffers.append(EpisodeBuffer(id=index, observations=stack(observations), actions=np.array(actions), rewards=rewards,
                                     terminations=terminations, truncations=[False] * (len(actions) - 1) + [not terminations[-1]], infos={}))
    eval_env = gym.make(env_id, **(eval_kwargs or kwargs)).spec
    assert os.environ["MINARI_DATASETS_PATH"] == str(root)  # the empty_roots fixture's
    minari.create_dataset_from_buffers(minari_id, buffers, env=env.spec, eval_env=eval_env, algorithm_name="test", author="test",
                                       author_email="test@example.com", code_permalink="https://example.com", description="test",
                                       ref_min_score=0.0, ref_max_score=4.0 if "kitchen" in minari_id else 1.0)


PORTS = [
    ("D4RL/pointmaze/umaze-v2", "PointMaze_UMaze-v3", {"continuing_task": True, "reset_target": True}, 6, ("goal-observation",)),
    ("D4RL/antmaze/umaze-v1", "AntMaze_UMaze-v4", {"continuing_task": True, "reset_target": False}, 31, ("antmaze-observation",)),
    ("D4RL/pen/human-v2", "AdroitHandPen-v1", {}, 45, ()),
    ("D4RL/kitchen/complete-v2", "FrankaKitchen-v1", {"tasks_to_complete": ["microwave", "kettle", "light switch", "slide cabinet"]}, 59,
     ("kitchen-observation",)),
]


@pytest.mark.parametrize("minari_id, env_id, kwargs, dims, wrappers", PORTS)
def test_each_minari_port_flattens_by_its_rule_and_evaluates_in_its_env(empty_roots: Path, minari_id: str, env_id: str, kwargs: dict,
                                                                        dims: int, wrappers: tuple) -> None:
    record_port(empty_roots / "minari", minari_id, env_id, kwargs, eval_kwargs={**kwargs, **({"reset_target": False} if "Maze" in env_id else {})})
    dataset = registry.load_dataset(f"minari/{minari_id}")
    meta = dataset.metadata
    assert dataset.observations.shape[1] == dims and (meta.env_id, meta.eval_wrappers) == (env_id, wrappers)
    if wrappers and wrappers[0] in goals.LAYOUTS:  # the rule: pointmaze observation, desired_goal; antmaze achieved_goal first
        import minari

        episode = next(iter(minari.load_dataset(minari_id).iterate_episodes([0])))
        keys = {"goal-observation": ("observation", "desired_goal"), "antmaze-observation": ("achieved_goal", "observation", "desired_goal"),
                "kitchen-observation": ("observation",)}[wrappers[0]]
        np.testing.assert_allclose(dataset.observations[0], np.concatenate([episode.observations[key][0] for key in keys]), rtol=1e-6)
        assert "Kitchen" in env_id or meta.env_kwargs["reset_target"] is False  # the port's eval_env_spec, not its recording env
    episodes = evaluate_episodes(lambda o: np.zeros((*o.shape[:2], dataset.actions.shape[1]), np.float32), meta.env_id, [0], 1,
                                 meta.env_kwargs, meta.eval_wrappers)
    assert np.isfinite(episodes.returns).all()


def test_a_dict_layout_offbench_does_not_know_is_one_line_and_exit_2(empty_roots: Path) -> None:
    """A pointmaze port whose Dict lacks the achieved goal is not the layout the rule flattens: refused, never guessed."""
    import minari
    from minari.data_collector import EpisodeBuffer

    space = gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (4,)), "desired_goal": gym.spaces.Box(-1, 1, (2,))})
    observations = {"observation": np.zeros((4, 4), np.float32), "desired_goal": np.zeros((4, 2), np.float32)}
    buffer = EpisodeBuffer(id=0, observations=observations, actions=np.zeros((3, 2), np.float32), rewards=[0.0] * 3,
                           terminations=[False] * 3, truncations=[False, False, True], infos={})
    minari.create_dataset_from_buffers("D4RL/pointmaze/odd-v2", [buffer], observation_space=space, action_space=gym.spaces.Box(-1, 1, (2,)),
                                       algorithm_name="test", author="test", author_email="test@example.com",
                                       code_permalink="https://example.com", description="test")
    result = run_cli("run", "--algo", "bc", "--dataset", "minari/D4RL/pointmaze/odd-v2", "--steps", "2")
    assert result.returncode == 2
    assert "is not the pointmaze layout offbench flattens" in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_one_command_trains_and_scores_a_minari_port(empty_roots: Path) -> None:
    record_port(empty_roots / "minari", "D4RL/pointmaze/umaze-v2", "PointMaze_UMaze-v3", {"continuing_task": True, "reset_target": True},
                eval_kwargs={"continuing_task": True, "reset_target": False})
    result = run_cli("run", "--algo", "td3bc", "--dataset", "pointmaze-umaze", "--steps", "20", "--eval-every", "20", "--eval-episodes", "2",
                     "--results-dir", str(empty_roots / "results"), *FAST_SETTINGS)
    assert result.returncode == 0, result.stderr
    assert "minari/D4RL/pointmaze/umaze-v2: normalised score" in result.stdout
    assert ", success 0%)" in result.stdout or ", success 50%)" in result.stdout or ", success 100%)" in result.stdout  # beside the score
    run_id = result.stdout.split(":")[0].strip()
    again = run_cli("eval", run_id, "--results-dir", str(empty_roots / "results"))  # the recorded env and flattening wrapper
    assert again.returncode == 0, again.stderr
    assert "the same returns as the run's last recorded evaluation (step 20)" in again.stdout


@pytest.mark.parametrize("change, message", [
    ({"max_episode_steps": -1}, r"sets max_episode_steps -1; offbench evaluates 1 to 10,000 steps"),
    ({"max_episode_steps": 10**9}, r"sets max_episode_steps 1000000000"),
    ({"kwargs": {"maze_map": [[1] * 100] * 100}}, r"sets maze_map to"),
    ({"kwargs": {"maze_map": [[1, 1], [1, "x"]]}}, r"sets maze_map to"),
    ({"kwargs": {"continuing_task": {"nested": True}}}, r"sets continuing_task to"),
])
def test_a_ports_evaluation_spec_is_checked_before_use(empty_roots: Path, change: dict, message: str) -> None:
    """A data file's eval_env_spec reaches gym.make: a horizon that would never end an episode, a huge or foreign maze map, a nested
    setting are each one line."""
    record_port(empty_roots / "minari", "D4RL/pointmaze/umaze-v2", "PointMaze_UMaze-v3", {"continuing_task": True, "reset_target": False})
    metadata_path = empty_roots / "minari" / "D4RL" / "pointmaze" / "umaze-v2" / "data" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    spec = json.loads(metadata["eval_env_spec"])
    spec.update({k: v for k, v in change.items() if k != "kwargs"})
    spec["kwargs"].update(change.get("kwargs", {}))
    metadata_path.write_text(json.dumps({**metadata, "eval_env_spec": json.dumps(spec)}))
    with pytest.raises(OffbenchError, match=message):
        registry.load_dataset("minari/D4RL/pointmaze/umaze-v2")


def test_a_wrapper_named_for_a_goal_env_on_another_env_is_one_line() -> None:
    with pytest.raises(OffbenchError, match=r"evaluation env Hopper-v5: its observations are Box.*not the Dict observations"):
        make_env("Hopper-v5", {}, ("goal-observation",))


def test_neubay_trains_on_a_d4rl_antmaze_file_with_its_reward_shift_and_goal_termination(empty_roots: Path) -> None:
    """The alias reaches the D4RL file; NEUBAY's [datasets] row shifts the rewards (+reward-1 in the id) and its rollouts end at the
    maze's goal (offbench.termination, D4RL's frame); the run is scored in the substitute env."""
    place(empty_roots, "antmaze-umaze-v2", episode_lengths=[300, 300])
    tiny = {"ensemble_size": 4, "selected_size": 3, "world_hidden": 16, "world_max_epochs": 2, "world_checkpoint_every": 1, "rollouts": 4,
            "encoder_dim": 16, "lru_hidden": 8, "head_dims": [16, 16], "critic_heads": 4, "tape_length": 48, "utd": 0.2, "buffer_size": 100_000}
    sets = [arg for key, value in tiny.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    result = run_cli("run", "--algo", "neubay", "--dataset", "antmaze-umaze", "--steps", "8", "--eval-every", "8", "--eval-episodes", "1",
                     "--results-dir", str(empty_roots / "results"), *sets)
    assert result.returncode == 0, result.stderr
    assert "d4rl/antmaze-umaze-v2+reward-1: normalised score" in result.stdout and ", success " in result.stdout


def test_maze2d_frame_puts_cell_centres_where_d4rls_qpos_has_them() -> None:
    """A point at the centre of D4RL cell (row i, column j) reads (i - 0.2, j - 0.2) (maze_model.py: body at 1.2, walls at cell + 1),
    whatever row of Gymnasium-Robotics' row-reversed map holds that cell; its velocity and action axes swap with the position's."""
    env_id, kwargs, wrappers = robotics.d4rl_eval_env("maze2d", "maze2d-large-v1")
    env = make_env(env_id, kwargs, wrappers)
    maze, rows = env.unwrapped.maze, len(robotics.D4RL_MAZE2D_MAPS["large"])
    for i, j in [(1, 1), (7, 9), (3, 6)]:
        x, y = maze.cell_rowcol_to_xy(np.array([rows - 1 - i, j]))
        np.testing.assert_allclose(env._observation({"observation": np.array([x, y, 0.5, -0.25])}), [i - 0.2, j - 0.2, -0.25, 0.5])
    env.close()
