"""PointMaze recordings by the planner recipe (offbench.data.maze_recipes): planner, controller, episodes."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from offbench.data import maze_recipes, recipes  # noqa: E402
from offbench.data.catalogue import catalogue  # noqa: E402
from offbench.data.maze_recipes import MOVES, MazePlanner, WaypointController, reached_goal  # noqa: E402
from offbench.robotics import register_if_robotics  # noqa: E402

U_MAZE = [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]]
ROOM = [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
TINY = "local/pointmaze-umaze-tiny-v3"


def entry(dataset_id: str = TINY, **changes) -> dict:
    return {key: value for key, value in catalogue()[dataset_id].items() if key != "sha256"} | changes


@pytest.fixture(scope="module")
def umaze_1500():
    return maze_recipes.pointmaze_recipe(entry(steps=1500), None)


# ---- planner ---------------------------------------------------------------------------------------


def test_planner_paths_on_small_maps():
    assert MazePlanner(U_MAZE).waypoints((3, 1), (1, 1)) == {(3, 1): (3, 2), (3, 2): (3, 3), (3, 3): (2, 3), (2, 3): (1, 3), (1, 3): (1, 2), (1, 2): (1, 1)}
    # two shortest paths: the first of MOVES, (0, +1), wins the tie, as Minari's argmax does
    assert MazePlanner(ROOM).waypoints((1, 1), (2, 2)) == {(1, 1): (1, 2), (1, 2): (2, 2)}
    assert MazePlanner(ROOM).waypoints((2, 2), (1, 1)) == {(2, 2): (2, 1), (2, 1): (1, 1)}
    # an agent already in the goal cell goes out and back (at least one move), as the reference's path does
    assert MazePlanner(U_MAZE).waypoints((1, 1), (1, 1)) == {(1, 1): (1, 2), (1, 2): (1, 1)}


@pytest.mark.parametrize("maze_id", ["PointMaze_UMaze-v3", "PointMaze_Medium-v3", "PointMaze_Large-v3"])
def test_value_iteration_gives_the_first_shortest_move(maze_id):
    maze_map = gym.spec(maze_id).kwargs["maze_map"]
    planner = MazePlanner(maze_map)
    free = [(i, j) for i, row in enumerate(maze_map) for j, cell in enumerate(row) if cell != 1]
    for goal in free:
        distance = _bfs(planner.wall, goal)
        for cell in free:
            if cell == goal:
                continue
            shortest = [(cell[0] + dr, cell[1] + dc) for dr, dc in MOVES if distance.get((cell[0] + dr, cell[1] + dc)) == distance[cell] - 1]
            assert planner.next_cell(cell, goal) == shortest[0], (cell, goal)


def _bfs(wall: np.ndarray, goal: tuple[int, int]) -> dict[tuple[int, int], int]:
    distance, queue = {goal: 0}, deque([goal])
    while queue:
        cell = queue.popleft()
        for dr, dc in MOVES:
            nxt = (cell[0] + dr, cell[1] + dc)
            if not wall[nxt] and nxt not in distance:
                distance[nxt] = distance[cell] + 1
                queue.append(nxt)
    return distance


# ---- controller ------------------------------------------------------------------------------------


def _umaze():
    register_if_robotics("PointMaze_UMaze-v3")
    return gym.make("PointMaze_UMaze-v3").unwrapped.maze  # cell (r, c) has centre (c - 2, 2 - r)


def _obs(position, velocity, goal) -> dict:
    return {"observation": np.array([*position, *velocity], dtype=np.float64), "achieved_goal": np.array(position, dtype=np.float64),
            "desired_goal": np.array(goal, dtype=np.float64)}


def test_pd_action_and_waypoint_switching():
    controller, rng = WaypointController(_umaze()), np.random.default_rng(5)
    goal = (-0.875, 1.125)  # in cell (1, 1); the ball starts in cell (3, 1), so the first waypoint is (3, 2), centre (0, -1)
    action = controller(_obs((-1.25, -0.75), (0.5, -0.25), goal), rng)
    assert action.tolist() == [10 * 1.25 - 0.5, 10 * -0.25 + 0.25] == [12.0, -2.25]  # 10 (target - position) - velocity
    assert controller.target_cell == (3, 2) and controller.path[(3, 1)] == (3, 2)
    # within 0.1 of the waypoint: on to (3, 3), its centre (1, -1) minus U(0, 1)^2 * 0.2 from the controller's generator
    action = controller(_obs((0.0625, -1.0), (0.0, 0.0), goal), rng)
    target = np.array([1.0, -1.0]) - np.random.default_rng(5).uniform(size=2) * 0.2
    assert controller.target_cell == (3, 3) and np.array_equal(action, 10.0 * (target - np.array([0.0625, -1.0])) + -1.0 * np.zeros(2))
    # farther than 0.1: no switch, no draw
    state = rng.bit_generator.state
    controller(_obs((0.5, -1.0), (0.0, 0.0), goal), rng)
    assert controller.target_cell == (3, 3) and rng.bit_generator.state == state


def test_goal_waypoint_is_the_exact_goal_and_a_moved_goal_replans():
    controller, rng = WaypointController(_umaze()), np.random.default_rng(0)
    goal = (-0.875, 1.125)
    controller(_obs((1.0, 1.0), (0.0, 0.0), goal), rng)  # cell (1, 3): waypoints (1, 2) then the goal cell (1, 1)
    assert controller.target_cell == (1, 2)
    action = controller(_obs((0.0, 1.0), (0.0, 0.0), goal), rng)  # at (1, 2)'s centre: the next one is the goal cell, so the goal itself
    assert controller.target_cell == (1, 1) and action.tolist() == [10 * -0.875, 10 * 0.125]
    # a goal in the agent's own first waypoint cell is headed for at the cell's centre (the reference's first waypoint)
    controller(_obs((0.0, 1.0), (0.0, 0.0), (1.125, 0.875)), rng)  # moved by more than 1e-3: plan from (1, 2) to (1, 3)
    assert controller.target_cell == (1, 3) and controller.target_xy.tolist() == [1.0, 1.0]


# ---- episodes --------------------------------------------------------------------------------------


def test_recipe_is_registered_and_catalogued():
    assert recipes.RECIPES["pointmaze-planner"] is maze_recipes.pointmaze_recipe
    entries = {key: value for key, value in catalogue().items() if value["recipe"] == "pointmaze-planner"}
    assert len(entries) == 12
    for dataset_id, value in entries.items():
        assert recipes.recipe_available(value)
        assert value["env_kwargs"] == {"continuing_task": True, "reset_target": True}
        assert value["eval_env_kwargs"]["continuing_task"] and not value["eval_env_kwargs"]["reset_target"]
        assert sum(row.count("g") for row in value["eval_env_kwargs"]["maze_map"]) == 1
        assert value["max_episode_steps"] == gym.spec(value["env_id"]).max_episode_steps
        assert value["eval_wrappers"] == ["goal-observation"]
        kind, _, key = value["reference"].partition(":")
        low, high = maze_recipes.MAZE_REFERENCES[key]
        assert kind == "maze" and low < high and ("dense" in key) == ("Dense" in value["env_id"])
        assert value["steps"] == (4000 if "-tiny-" in dataset_id else 1_000_000)


def test_layout(umaze_1500):
    assert sum(len(episode["actions"]) for episode in umaze_1500) == 1500
    for episode in umaze_1500:
        steps = len(episode["actions"])
        observations = episode["observations"]
        assert set(observations) == {"observation", "achieved_goal", "desired_goal"}
        assert observations["observation"].shape == (steps + 1, 4) and observations["observation"].dtype == np.float64
        for key in ("achieved_goal", "desired_goal"):
            assert observations[key].shape == (steps + 1, 2) and observations[key].dtype == np.float64
        assert np.array_equal(observations["achieved_goal"], observations["observation"][:, :2])
        assert episode["actions"].shape == (steps, 2) and episode["actions"].dtype == np.float32
        assert np.abs(episode["actions"]).max() <= 1.0
        assert np.array_equal(episode["actions"], np.round(episode["actions"].astype(np.float64), 6).astype(np.float32))
        assert episode["rewards"].shape == (steps,) and episode["rewards"].dtype == np.float64
        for key in ("terminations", "truncations"):
            assert episode[key].shape == (steps,) and episode[key].dtype == bool
        assert not episode["terminations"].any()
        assert episode["truncations"][-1] and not episode["truncations"][:-1].any()


def test_goal_redraw_ends_episodes(umaze_1500):
    for episode, following in zip(umaze_1500, umaze_1500[1:]):
        goals = episode["observations"]["desired_goal"]
        assert reached_goal(episode) and episode["rewards"][-1] == 1.0 and not episode["rewards"][:-1].any()
        assert (goals[1:] == goals[-1]).all()  # one goal per episode (row 0 of a later episode holds the reached one)
        for key in episode["observations"]:
            assert np.array_equal(following["observations"][key][0], episode["observations"][key][-1])  # one trajectory
        new_goals = following["observations"]["desired_goal"]
        assert np.linalg.norm(new_goals[1] - new_goals[0]) > 1e-3  # the env drew a new goal in the step that reached the old one


def test_bit_identical_and_prefix(umaze_1500):
    again = maze_recipes.pointmaze_recipe(entry(steps=1500), None)
    shorter = maze_recipes.pointmaze_recipe(entry(steps=600), None)
    _assert_same(again, umaze_1500)
    _assert_same(shorter[:-1], umaze_1500[: len(shorter) - 1])
    cut, full = shorter[-1], umaze_1500[len(shorter) - 1]
    steps = len(cut["actions"])
    assert np.array_equal(cut["actions"], full["actions"][:steps])
    assert np.array_equal(cut["observations"]["observation"], full["observations"]["observation"][: steps + 1])


def test_dense_variant_follows_the_same_trajectories(umaze_1500):
    dense = maze_recipes.pointmaze_recipe(entry("local/pointmaze-umaze-dense-tiny-v3", steps=1500), None)
    assert len(dense) == len(umaze_1500)
    for d, s in zip(dense, umaze_1500):
        assert np.array_equal(d["actions"], s["actions"]) and np.array_equal(d["observations"]["observation"], s["observations"]["observation"])
        distance = np.linalg.norm(d["observations"]["achieved_goal"][1:] - d["observations"]["desired_goal"][1:], axis=1)
        np.testing.assert_allclose(d["rewards"][1:], np.exp(-distance[1:]), rtol=1e-12)  # the env's dense reward, exp(-distance)


def test_horizon_truncates_and_draws_a_new_goal():
    episodes = maze_recipes.pointmaze_recipe(entry("local/pointmaze-large-tiny-v3", steps=600, max_episode_steps=25), None)
    assert max(len(episode["actions"]) for episode in episodes) == 25
    capped = [i for i, episode in enumerate(episodes[:-1]) if not reached_goal(episode)]
    assert capped and all(len(episodes[i]["actions"]) == 25 and episodes[i]["truncations"][-1] for i in capped)
    for i in capped:
        goals = episodes[i + 1]["observations"]["desired_goal"]
        assert np.linalg.norm(goals[1] - goals[0]) > 0.45  # a new goal, at least the goal radius from the ball


def test_controller_reaches_umaze_goals_within_the_horizon():
    episodes = maze_recipes.pointmaze_recipe(entry(), None)  # the tiny recording: 4000 steps
    finished = episodes[:-1]
    assert len(finished) >= 40
    assert np.mean([reached_goal(episode) and len(episode["actions"]) < 300 for episode in finished]) >= 0.95


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in ("actions", "rewards", "terminations", "truncations"):
            assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key])
        for key in x["observations"]:
            assert np.array_equal(x["observations"][key], y["observations"][key])


def test_tiny_recording_made_by_the_registry_has_the_catalogued_hash(monkeypatch, tmp_path):
    from offbench.data import registry

    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    made = registry.make_dataset(TINY)
    assert made.metadata.sha256 == catalogue()[TINY]["sha256"]
    assert (made.metadata.ref_min_score, made.metadata.ref_max_score) == maze_recipes.MAZE_REFERENCES["umaze"]
    episodes = maze_recipes.pointmaze_recipe(entry(), None)
    first = episodes[0]["observations"]
    assert made.observations.shape == (4000, 6) and made.observations.dtype == np.float32
    assert np.array_equal(made.observations[0], np.concatenate([first["observation"][0], first["desired_goal"][0]]).astype(np.float32))
    assert int(made.timeouts.sum()) == len(episodes) and not made.terminals.any()
