"""Local PointMaze recordings by the published recipe of D4RL's maze2d and Minari's `D4RL/pointmaze/*-v2`.

Both are made by a planner driving a PD controller with action noise (Minari's generation scripts,
`scripts/pointmaze/{create_pointmaze_dataset,controller,maze_solver}.py`, a port of D4RL's
`waypoint_controller.py`, `q_iteration.py` and `scripts/generation/generate_maze2d_datasets.py`):

    planner      Q-value iteration over the maze's grid cells (`q_values`): 50 sweeps, discount 0.99,
                 reward 1 for a move into the goal cell, a move into a wall or off the map worth 0 and
                 leaving the agent nowhere; the next cell is the argmax over the moves (0, +1), (0, -1),
                 (-1, 0), (+1, 0) in (row, col), the first one winning a tie, as Minari's QIteration orders
                 them. The waypoints are the cells met following the argmax from the agent's cell until
                 the goal cell (at least one move: an agent already in the goal cell goes out and back).
    controller   `WaypointController`: plans again whenever the observed desired goal moves by more than
                 1e-3; heads for the next waypoint's cell centre (the first one exactly, later ones minus
                 U(0, 1)^2 * 0.2, the goal cell itself at the exact goal) and moves on when within 0.1 of
                 it; action = 10 (target - position) - 1 velocity.
    noise        N(0, 0.5^2) added to each action component, then clipped to [-1, 1]; the result is rounded
                 to 1e-6 and cast to float32 (the action space's dtype) before the env steps it, as the
                 behaviour-policy recipes do (`offbench.behavior.policy.ACTION_DECIMALS`), so the stored
                 action is the executed one.
    goals        the env runs with `continuing_task=True, reset_target=True` (the catalogue's `env_kwargs`):
                 it never terminates, and draws a new goal (from its own seeded generator) in the step that
                 reaches the current one (distance <= 0.45). That step ends the episode as a truncation
                 (Minari's step callback), and the next episode starts from its observation, whose
                 `desired_goal` is still the reached goal: the env reports the new goal from the next step
                 on, exactly as in Minari's data.
    horizon      an episode that has not reached its goal after `max_episode_steps` steps (300, 600, 800:
                 the env's registered limit, D4RL's `max_episode_steps` rule) is truncated too and the env
                 draws a new goal (as its reset would, without moving the ball); the last episode is cut by
                 the step budget.

One env, reset once with `seed`, steps `steps` times: a single continuing trajectory cut into episodes, as
Minari's collector records it. The noise and the waypoint offsets come from two numpy generators seeded with
(seed, 0) and (seed, 1) (PCG64: the same bits on every CPU); the controller's arithmetic is float64 scalar
IEEE arithmetic. So the recording depends on the entry alone, and a shorter recording with the same seed is
a prefix of a longer one (its last episode cut earlier). Observations are the env's Dict observation, float64
(`observation` (T+1, 4) = x, y, vx, vy; `achieved_goal` and `desired_goal` (T+1, 2)).

Not the same as Minari's or D4RL's files: Gymnasium-Robotics 1.4 PointMaze v3 on MuJoCo 4 (Minari: the same
env on the MuJoCo of its time; D4RL: its own maze2d env on mujoco-py), other seeds, seeded generators in place of
numpy's global one, distances compared as sqrt(dx^2 + dy^2) in Python floats, and D4RL's per-episode horizon,
which Minari's continuing recording does not apply (it ends episodes only at the goal).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from offbench.behavior.policy import ACTION_DECIMALS
from offbench.errors import OffbenchError
from offbench.robotics import register_if_robotics

Episodes = list[dict[str, Any]]
Cell = tuple[int, int]

MOVES: tuple[Cell, ...] = ((0, 1), (0, -1), (-1, 0), (1, 0))  # (row, col) steps in Minari's QIteration order (ties go to the first)
ITERATIONS = 50
DISCOUNT = 0.99
P_GAIN = 10.0
D_GAIN = -1.0
WAYPOINT_THRESHOLD = 0.1  # move on to the next waypoint within this distance of the current one
WAYPOINT_OFFSET = 0.2  # an intermediate waypoint is its cell centre minus U(0, 1)^2 * 0.2
GOAL_MOVED = 1e-3  # the controller plans again when the desired goal moves farther than this
ACTION_NOISE = 0.5  # std of the Gaussian noise added to each action component
SUCCESS_DISTANCE = 0.45  # the env's goal radius (gymnasium_robotics.envs.maze.maze_v4)
NOISE_STREAM, OFFSET_STREAM = 0, 1

# Reference returns (min = a uniform-random policy, max = the planner's controller without noise), each the
# mean over 100 episodes of the evaluation env (the catalogue's `eval_env_kwargs`: one fixed goal cell, the
# registered time limit, continuing_task=True, reset_target=False), measured Minari's way (reset seed 123 once,
# the random policy's action space seeded 123) by `OMP_NUM_THREADS=1 python benchmarks/maze_references.py`.
# Keys are the catalogue's `reference = "maze:<key>"`; values (min, max). Measured on 2026-12-07 (AMD EPYC, gymnasium-robotics
# 1.4.2, mujoco 4.0.0); the standard errors of the means are 1.5-10 (datasets/README.md lists them).
MAZE_REFERENCES: dict[str, tuple[float, float]] = {
    "umaze": (14.18, 218.55),
    "umaze-dense": (59.7164, 223.8265),
    "medium": (16.17, 424.43),
    "medium-dense": (49.1919, 430.8425),
    "large": (3.30, 555.29),
    "large-dense": (25.8868, 572.7559),
}


# ---- planner ---------------------------------------------------------------------------------------


def walls(maze_map: list[list[Any]]) -> np.ndarray:
    """(rows, cols) bool: True where the maze map holds a wall (1); 0 and the "g"/"r"/"c" markers are free."""
    return np.array([[not isinstance(cell, str) and cell == 1 for cell in row] for row in maze_map], dtype=bool)


def q_values(wall: np.ndarray, goal: Cell, iterations: int = ITERATIONS, discount: float = DISCOUNT) -> np.ndarray:
    """(rows, cols, 4) Q-values of the moves `MOVES` from every cell (walls too) toward `goal`, by value iteration.

    Q <- R + discount * V(next), V = max over the moves; R = 1 for a move into `goal`; a move into a wall or
    off the map has R = 0 and no successor (Q = 0), as in Minari's QIteration (rows of its transition matrix
    are zero for such moves). Starts from Q = 0 and sweeps `iterations` times.
    """
    rows, cols = wall.shape
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    next_r = np.stack([r + dr for dr, _ in MOVES], axis=-1)
    next_c = np.stack([c + dc for _, dc in MOVES], axis=-1)
    inside = (next_r >= 0) & (next_r < rows) & (next_c >= 0) & (next_c < cols)
    clipped_r, clipped_c = np.clip(next_r, 0, rows - 1), np.clip(next_c, 0, cols - 1)
    valid = inside & ~wall[clipped_r, clipped_c]
    reward = (valid & (next_r == goal[0]) & (next_c == goal[1])).astype(np.float64)
    q = np.zeros((rows, cols, len(MOVES)))
    for _ in range(iterations):
        value = q.max(axis=-1)
        q = reward + discount * np.where(valid, value[clipped_r, clipped_c], 0.0)
    return q


class MazePlanner:
    """The next cell toward a goal from every cell of one maze, by `q_values`; the table of each goal is kept."""

    def __init__(self, maze_map: list[list[Any]]) -> None:
        self.wall = walls(maze_map)
        self._tables: dict[Cell, np.ndarray] = {}

    def next_cell(self, cell: Cell, goal: Cell) -> Cell:
        """The cell the argmax move leads to from `cell` toward `goal` (the first of `MOVES` on a tie)."""
        table = self._tables.get(goal)
        if table is None:
            table = self._tables[goal] = np.argmax(q_values(self.wall, goal), axis=-1)
        dr, dc = MOVES[int(table[cell])]
        return cell[0] + dr, cell[1] + dc

    def waypoints(self, start: Cell, goal: Cell) -> dict[Cell, Cell]:
        """{cell: next cell} along the argmax path from `start` until it enters `goal` (at least one move)."""
        path: dict[Cell, Cell] = {}
        cell = start
        for _ in range(self.wall.size + 1):
            path[cell] = self.next_cell(cell, goal)
            if path[cell] == goal:
                return path
            cell = path[cell]
        raise OffbenchError(f"the maze planner found no path from cell {start} to cell {goal}")


# ---- controller ------------------------------------------------------------------------------------


class WaypointController:
    """The PD waypoint controller of Minari's PointMaze recipe (module docstring): `(observation dict, generator) -> action (2,)`.

    Non-Markovian: it remembers its plan and the waypoint it is heading for. `rng` draws the offsets of the
    intermediate waypoints. The action is not clipped here (the recipe adds noise, then clips).
    """

    def __init__(self, maze: Any, planner: MazePlanner | None = None) -> None:
        self.maze = maze  # a gymnasium_robotics Maze: cell_xy_to_rowcol, cell_rowcol_to_xy
        self.planner = planner or MazePlanner(maze.maze_map)
        self.goal_xy: np.ndarray | None = None
        self.goal_cell: Cell = (-1, -1)
        self.target_cell: Cell = (-1, -1)
        self.target_xy = np.zeros(2)
        self.path: dict[Cell, Cell] = {}

    def cell(self, xy: np.ndarray) -> Cell:
        i, j = self.maze.cell_xy_to_rowcol(xy)
        return int(i), int(j)

    def centre(self, cell: Cell) -> np.ndarray:
        return np.asarray(self.maze.cell_rowcol_to_xy(np.array(cell)), dtype=np.float64)

    def __call__(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        position, goal = observation["achieved_goal"], observation["desired_goal"]
        if self.goal_xy is None or _distance(self.goal_xy, goal) > GOAL_MOVED:
            start = self.cell(position)
            self.goal_cell, self.goal_xy = self.cell(goal), np.array(goal, dtype=np.float64)
            self.path = self.planner.waypoints(start, self.goal_cell)
            self.target_cell = self.path[start]
            self.target_xy = self.centre(self.target_cell)  # the first waypoint is its cell centre, even the goal's cell
        if _distance(self.target_xy, position) <= WAYPOINT_THRESHOLD and self.target_cell != self.goal_cell:
            self.target_cell = self.path[self.target_cell]
            if self.target_cell == self.goal_cell:
                self.target_xy = self.goal_xy
            else:
                self.target_xy = self.centre(self.target_cell) - rng.uniform(size=2) * WAYPOINT_OFFSET
        return P_GAIN * (self.target_xy - position) + D_GAIN * observation["observation"][2:]


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    dx, dy = float(a[0]) - float(b[0]), float(a[1]) - float(b[1])
    return math.sqrt(dx * dx + dy * dy)


# ---- recipe ----------------------------------------------------------------------------------------


def recording_env(entry: dict[str, Any]) -> Any:
    """The unwrapped PointMaze env of an entry (`env_id` with its `env_kwargs`): no time limit, the recipe keeps its own."""
    register_if_robotics(entry["env_id"])
    return gym.make(entry["env_id"], **entry.get("env_kwargs", {})).unwrapped


def pointmaze_recipe(entry: dict[str, Any], on_steps: Callable[[int], None] | None) -> Episodes:
    """`entry["steps"]` steps of the planner-driven PD controller with action noise, as Minari-style episodes
    with Dict observations (module docstring)."""
    env = recording_env(entry)
    try:
        return _record(env, entry, on_steps)
    finally:
        env.close()


def _record(env: Any, entry: dict[str, Any], on_steps: Callable[[int], None] | None) -> Episodes:
    steps, horizon, seed = int(entry["steps"]), int(entry["max_episode_steps"]), int(entry["seed"])
    noise = np.random.default_rng([seed, NOISE_STREAM]).standard_normal((steps, 2)) * entry.get("action_noise", ACTION_NOISE)
    offsets = np.random.default_rng([seed, OFFSET_STREAM])
    controller = WaypointController(env.maze)
    keys = list(env.observation_space.spaces)
    observation, _ = env.reset(seed=seed)
    episodes: Episodes = []
    current = _new_episode(observation, keys)
    for step in range(steps):
        action = np.clip(controller(observation, offsets) + noise[step], -1.0, 1.0)
        action = np.round(action, ACTION_DECIMALS).astype(np.float32)
        observation, reward, terminated, _, info = env.step(action)
        for key in keys:
            current[key].append(observation[key])
        current["actions"].append(action)
        current["rewards"].append(float(reward))
        current["terminations"].append(bool(terminated))
        length = len(current["actions"])
        capped = length >= horizon and not info["success"]
        if not (info["success"] or capped or terminated or step == steps - 1):
            continue
        current["truncations"] = [False] * (length - 1) + [not terminated]
        episodes.append(_close_episode(current, keys))
        if on_steps is not None:
            on_steps(length)
        if terminated:  # only without continuing_task: the env is reset, its generator continuing
            observation, _ = env.reset()
        elif capped:
            _draw_goal(env, observation["achieved_goal"])
        current = _new_episode(observation, keys)
    return episodes


def _draw_goal(env: Any, position: np.ndarray) -> None:
    """A new goal from the env's own generator and noise, at least the goal radius away (as the env's update_goal)."""
    while True:
        goal = env.add_xy_position_noise(env.generate_target_goal())
        if _distance(position, goal) > SUCCESS_DISTANCE:
            break
    env.goal = goal
    env.update_target_site_pos()


def _new_episode(observation: dict[str, np.ndarray], keys: list[str]) -> dict[str, list]:
    return {**{key: [observation[key]] for key in keys}, "actions": [], "rewards": [], "terminations": []}


def _close_episode(episode: dict[str, list], keys: list[str]) -> dict[str, Any]:
    return {
        "observations": {key: np.asarray(episode[key], dtype=np.float64) for key in keys},
        "actions": np.asarray(episode["actions"], dtype=np.float32),
        "rewards": np.asarray(episode["rewards"], dtype=np.float64),
        "terminations": np.asarray(episode["terminations"], dtype=bool),
        "truncations": np.asarray(episode["truncations"], dtype=bool),
    }


def reached_goal(episode: dict[str, Any]) -> bool:
    """Whether the episode ended at its goal: its last observation within the goal radius of its desired goal
    (the last row still holds the goal the episode was after; see the module docstring)."""
    observations = episode["observations"]
    return _distance(observations["achieved_goal"][-1], observations["desired_goal"][-1]) <= SUCCESS_DISTANCE
