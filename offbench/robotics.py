"""Gymnasium-Robotics evaluation envs for D4RL's AntMaze, Maze2D, Adroit and Kitchen and Minari's ports of them.

`pip install 'offbench[robotics]'` brings `gymnasium-robotics`; `register_if_robotics(env_id)` registers its envs
before `gym.make` (a missing extra is one error line), as `offbench.atari.register_if_atari` does for ALE.

The envs return Dict observations (observation, achieved_goal, desired_goal) where the datasets hold flat vectors.
Each layout is one wrapper here (`WRAPPERS`), used by evaluation, `offbench eval` and export alike, and the same
rule flattens the stored data (`offbench.data.goals`):

    goal-observation  Minari's pointmaze ports and local/pointmaze-* recordings: observation, then desired_goal
    antmaze-observation  Minari's antmaze ports: achieved_goal (the ant's x, y, which its observation leaves out), the
                      observation, then desired_goal
    kitchen-observation  Minari's kitchen ports: observation only (the goal is fixed per dataset; the achieved goal is
                      part of the object positions already in the observation)
    d4rl-antmaze      D4RL's antmaze files (29 dims): the ant's x, y in D4RL's frame (origin at the reset cell),
                      then the observation (z, orientation, joints, velocities): D4RL's qpos then qvel
    d4rl-maze2d       D4RL's maze2d files (4 dims): D4RL's point-mass frame, x along the maze's rows and y along its
                      columns in cells (origin at cell (0, 0)); actions are mapped back to the env's frame
    d4rl-kitchen      D4RL's kitchen files (60 dims): robot and object joint positions (30), then D4RL's goal vector (30)

D4RL's own envs (mujoco-py) cannot be installed here; these are documented substitutes (`SUBSTITUTES`), named in
each dataset's metadata. Where a maze's coordinates differ (Gymnasium-Robotics centres its mazes, y pointing up),
the wrapper translates; the maze maps given to the env are D4RL's evaluation maps with rows reversed, so that
Gymnasium-Robotics' y axis runs along D4RL's rows (a translation, not a reflection, of the ant's frame).

Gymnasium-Robotics 1.4.2 compares MuJoCo joint types in a way MuJoCo 4 no longer supports (FrankaKitchen-v1 fails
its assert while building); `register_if_robotics` patches those two functions (`_patch_joint_type_check`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from offbench.errors import OffbenchError

ROBOTICS_PREFIXES = ("PointMaze_", "AntMaze_", "AdroitHand", "FrankaKitchen")
INSTALL = "pip install 'offbench[robotics]'"

# D4RL's evaluation maze maps (d4rl/locomotion/maze_env.py U_MAZE_TEST, BIG_MAZE_TEST, HARDEST_MAZE_TEST; 1 wall,
# 0 free, r reset cell, g goal cell), as written there: row 0 first.
D4RL_ANTMAZE_MAPS: dict[str, list[list[Any]]] = {
    "umaze": [[1, 1, 1, 1, 1], [1, "r", 0, 0, 1], [1, 1, 1, 0, 1], [1, "g", 0, 0, 1], [1, 1, 1, 1, 1]],
    "medium": [[1, 1, 1, 1, 1, 1, 1, 1], [1, "r", 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 1], [1, 1, 0, 0, 0, 1, 1, 1],
               [1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0, 1], [1, 0, 0, 0, 1, 0, "g", 1], [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [[1] * 12, [1, "r", 0, 0, 0, 1, 0, 0, 0, 0, 0, 1], [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
              [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1], [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
              [1, 0, 0, 1, 0, 0, 0, 1, 0, "g", 0, 1], [1] * 12],
}
# D4RL's maze2d maps (d4rl/pointmaze/maze_model.py U_MAZE, MEDIUM_MAZE, LARGE_MAZE; '#' wall, 'O' free, 'G' goal).
# D4RL's episodes start in any free cell or the goal cell; Gymnasium-Robotics' in any free cell at least 0.5 from the goal.
D4RL_MAZE2D_MAPS: dict[str, list[str]] = {
    "umaze": ["#####", "#GOO#", "###O#", "#OOO#", "#####"],
    "medium": ["########", "#OO##OO#", "#OO#OOO#", "##OOO###", "#OO#OOO#", "#O#OO#O#", "#OOO#OG#", "########"],
    "large": ["############", "#OOOO#OOOOO#", "#O##O#O#O#O#", "#OOOOOO#OOO#", "#O####O###O#", "#OO#O#OOOOO#", "##O#O#O#O###",
              "#OO#OOO#OGO#", "############"],
}
D4RL_MAZE2D_BODY_OFFSET = 0.2  # maze_model.py: the particle's body at (1.2, 1.2), walls at (i + 1, j + 1): cell centres at qpos (i, j) - 0.2
D4RL_KITCHEN_TASKS = {  # d4rl/kitchen/kitchen_envs.py: the task elements of each dataset's env
    "complete": ["microwave", "kettle", "light switch", "slide cabinet"],
    "partial": ["microwave", "kettle", "light switch", "slide cabinet"],
    "mixed": ["microwave", "kettle", "bottom burner", "light switch"],
}
SUBSTITUTES = {
    "antmaze": "Gymnasium-Robotics AntMaze_*-v4 with D4RL's evaluation map (reset and goal cells), continuing_task=False (an episode ends "
               "at the goal, as D4RL's eval env), no goal re-draw; start and goal drawn within +-1 of their cells' centres (Gymnasium-"
               "Robotics' 0.25 cells; AntMaze v4 takes no setting for it), where D4RL's ant starts within +-0.1 of the origin; success "
               "within 0.45 of the goal (D4RL: 0.5); D4RL's env ran on mujoco-py",
    "maze2d": "Gymnasium-Robotics PointMaze_*-v3 with D4RL's maze2d map and fixed goal, continuing_task=True (reward keeps counting at the "
              "goal, as D4RL's); success radius 0.45 (D4RL: 0.5); the goal at its cell's centre (D4RL's 0.2 cells off it, qpos = the cell "
              "index); starts in any free cell at least 0.5 from the goal (D4RL's also in the goal cell, which raises its returns); the "
              "point's physics are Gymnasium-Robotics', not mujoco-py's",
    "adroit": "Gymnasium-Robotics AdroitHand*-v1 (the DAPG/D4RL hand envs ported to mujoco bindings; same observation and action layout); "
              "Gymnasium-Robotics notes that door's, hammer's and relocate's rewards changed in its 1.2.1 without a new env version (its PR "
              "220): returns are those of the pinned 1.4.2",
    "kitchen": "Gymnasium-Robotics FrankaKitchen-v1 with the dataset's four tasks (D4RL's kitchen ported to mujoco bindings; the observation "
               "rebuilt as D4RL's joint positions and goal vector)",
}


def register_if_robotics(env_id: str) -> None:
    """Register Gymnasium-Robotics' envs when `env_id` is one of them; raises `OffbenchError` when the extra is missing."""
    if not env_id.startswith(ROBOTICS_PREFIXES):
        return
    try:
        import gymnasium_robotics
    except ImportError:
        raise OffbenchError(f"evaluation env {env_id} needs gymnasium-robotics", INSTALL) from None
    if env_id not in gym.registry:
        gym.register_envs(gymnasium_robotics)
    _patch_joint_type_check()


def _patch_joint_type_check() -> None:
    """Gymnasium-Robotics 1.4.2's `get_joint_qpos`/`get_joint_qvel` assert `joint_type in (mjtJoint...)`, which is False under
    MuJoCo 4 for a hinge (an int32 no longer equals the enum from the tuple's side); the same functions with the type read as an int."""
    import mujoco
    from gymnasium_robotics.utils import mujoco_utils

    if getattr(mujoco_utils, "_offbench_patched", False):
        return
    sizes = {int(mujoco.mjtJoint.mjJNT_FREE): (7, 6), int(mujoco.mjtJoint.mjJNT_BALL): (4, 3)}

    def joint_slice(model, name: str, address_of: Any, which: int) -> slice:
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if joint == -1:
            raise ValueError(f"joint '{name}' is not part of the model")
        start = int(address_of[joint])
        return slice(start, start + sizes.get(int(model.jnt_type[joint]), (1, 1))[which])

    mujoco_utils.get_joint_qpos = lambda model, data, name: data.qpos[joint_slice(model, name, model.jnt_qposadr, 0)].copy()
    mujoco_utils.get_joint_qvel = lambda model, data, name: data.qvel[joint_slice(model, name, model.jnt_dofadr, 1)].copy()
    mujoco_utils._offbench_patched = True


# ---- observation layouts -----------------------------------------------------------------------------


def _flat_box(dims: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (dims,), np.float64)


def _dict_spaces(env: gym.Env) -> dict[str, gym.Space]:
    """The entries of `env`'s Dict observation space; `OffbenchError` when it has none (a wrapper named for another env)."""
    if not isinstance(env.observation_space, gym.spaces.Dict):
        raise OffbenchError(f"evaluation env {env.spec.id if env.spec else env}: its observations are {env.observation_space}, not the Dict "
                            "observations of Gymnasium-Robotics' goal envs that this evaluation wrapper reads")
    return dict(env.observation_space.spaces)


class GoalObservation(gym.ObservationWrapper):
    """The named entries of a Dict observation, concatenated in order: (sum of their sizes,) float64."""

    def __init__(self, env: gym.Env, keys: tuple[str, ...]):
        super().__init__(env)
        spaces = _dict_spaces(env)
        if missing := [key for key in keys if key not in spaces]:
            raise OffbenchError(f"evaluation env {env.spec.id if env.spec else env}: its observation has no '{missing[0]}'")
        self.keys = keys
        self.observation_space = _flat_box(sum(int(np.prod(spaces[key].shape)) for key in keys))

    def observation(self, observation: dict) -> np.ndarray:
        return np.concatenate([np.asarray(observation[key], dtype=np.float64).ravel() for key in self.keys])


class D4RLAntMaze(gym.ObservationWrapper):
    """D4RL's antmaze observation (29,): x, y relative to the reset cell's centre, then Gymnasium-Robotics' 27-dim observation
    (z, orientation, joint angles, velocities), which is D4RL's qpos[2:] and qvel (d4rl/locomotion/ant.py `_get_obs`)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = _flat_box(2 + _dict_spaces(env)["observation"].shape[0])
        maze = env.unwrapped.maze
        self.origin = maze.cell_rowcol_to_xy(np.array(_cell_of(env.unwrapped.maze.maze_map, "r")))

    def observation(self, observation: dict) -> np.ndarray:
        return np.concatenate([observation["achieved_goal"] - self.origin, observation["observation"][:]]).astype(np.float64)


def _cell_of(maze_map: list[list[Any]], mark: str) -> tuple[int, int]:
    return next((i, j) for i, row in enumerate(maze_map) for j, cell in enumerate(row) if cell == mark)


class D4RLMaze2d(gym.Wrapper):
    """D4RL's maze2d frame (d4rl/pointmaze/maze_model.py): observation (x, y, vx, vy), the point's qpos and qvel, with x along
    the map's rows and y along its columns in cells; the particle's body sits at (1.2, 1.2) and wall (i, j) at (i + 1, j + 1),
    so the centre of cell (i, j) is qpos (i - 0.2, j - 0.2). Actions (ax, ay) are in the same frame. On the row-reversed map
    Gymnasium-Robotics' y runs along D4RL's rows and x along its columns, centred: D4RL (x, y) = (y, x) / scaling + (rows / 2
    - 0.7, columns / 2 - 0.7), a reflection (the point mass has no orientation), and the env's action is (ay, ax)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        maze = env.unwrapped.maze
        self.scaling = float(maze.maze_size_scaling)
        self.offset = np.array([maze.map_length / 2 - 0.5, maze.map_width / 2 - 0.5]) - D4RL_MAZE2D_BODY_OFFSET
        self.observation_space = _flat_box(4)

    def _observation(self, observation: dict) -> np.ndarray:
        x, y, vx, vy = observation["observation"]
        return np.array([y / self.scaling + self.offset[0], x / self.scaling + self.offset[1], vy / self.scaling, vx / self.scaling])

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        return self._observation(observation), info

    def step(self, action):
        ax, ay = np.asarray(action, dtype=np.float64)
        observation, reward, terminated, truncated, info = self.env.step(np.array([ay, ax]))
        return self._observation(observation), reward, terminated, truncated, info


class D4RLKitchen(gym.ObservationWrapper):
    """D4RL's kitchen observation (60,): robot joint positions (9) and object joint positions (21), then D4RL's goal vector (30):
    zero but at each task element's indices, which hold that element's goal (d4rl/kitchen/kitchen_envs.py `_get_task_goal`)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS, OBS_ELEMENT_INDICES

        self.goal = np.zeros(30)
        for task in env.unwrapped.goal:
            self.goal[OBS_ELEMENT_INDICES[task]] = OBS_ELEMENT_GOALS[task]
        self.observation_space = _flat_box(60)

    def observation(self, observation: dict) -> np.ndarray:
        state = observation["observation"]  # robot qpos (9), robot qvel (9), object qpos (21), object qvel (20)
        return np.concatenate([state[:9], state[18:39], self.goal])


WRAPPERS: dict[str, Callable[[gym.Env], gym.Env]] = {
    "goal-observation": lambda env: GoalObservation(env, ("observation", "desired_goal")),
    "antmaze-observation": lambda env: GoalObservation(env, ("achieved_goal", "observation", "desired_goal")),
    "kitchen-observation": lambda env: GoalObservation(env, ("observation",)),
    "d4rl-antmaze": D4RLAntMaze,
    "d4rl-maze2d": D4RLMaze2d,
    "d4rl-kitchen": D4RLKitchen,
}


# ---- the envs that evaluate D4RL's files -----------------------------------------------------------------


MAZE_TITLES = {"umaze": "UMaze", "medium": "Medium", "large": "Large"}


def _gymnasium_map(rows: list[list[Any]]) -> list[list[Any]]:
    """D4RL's map with its rows reversed: Gymnasium-Robotics' y then runs along D4RL's rows (see the module docstring)."""
    return [list(row) for row in reversed(rows)]


def d4rl_eval_env(family: str, name: str) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """(env id, kwargs, wrappers) of the documented substitute that evaluates D4RL file `name` of `family`.

    `family`: antmaze, maze2d, adroit or kitchen; `name`: the D4RL name (`antmaze-umaze-diverse-v2`, `maze2d-large-dense-v1`,
    `pen-human-v1`, `kitchen-mixed-v0`). Horizons are D4RL's registrations: antmaze umaze 700, else 1000; maze2d 300/600/800;
    Adroit pen 100, else 200; kitchen 280. Raises `OffbenchError` for a name outside the family's datasets.
    """
    parts = name.split("-")
    if family == "antmaze" and parts[1] in D4RL_ANTMAZE_MAPS:
        maze = parts[1]
        kwargs = {"maze_map": _gymnasium_map(D4RL_ANTMAZE_MAPS[maze]), "continuing_task": False, "reset_target": False,
                  "max_episode_steps": 700 if maze == "umaze" else 1000}
        return f"AntMaze_{MAZE_TITLES[maze]}-v4", kwargs, ("d4rl-antmaze",)
    if family == "maze2d" and parts[1] in D4RL_MAZE2D_MAPS:
        maze, dense = parts[1], "dense" in parts
        grid = [[{"#": 1, "O": 0, "G": "g"}[cell] for cell in row] for row in D4RL_MAZE2D_MAPS[maze]]
        kwargs = {"maze_map": _gymnasium_map(grid), "continuing_task": True, "reset_target": False,
                  "max_episode_steps": {"umaze": 300, "medium": 600, "large": 800}[maze]}
        return f"PointMaze_{MAZE_TITLES[maze]}{'Dense' if dense else ''}-v3", kwargs, ("d4rl-maze2d",)
    if family == "adroit" and parts[0] in ("pen", "door", "hammer", "relocate"):
        return f"AdroitHand{parts[0].capitalize()}-v1", {"max_episode_steps": 100 if parts[0] == "pen" else 200}, ()
    if family == "kitchen" and parts[1] in D4RL_KITCHEN_TASKS:
        return "FrankaKitchen-v1", {"tasks_to_complete": D4RL_KITCHEN_TASKS[parts[1]], "max_episode_steps": 280}, ("d4rl-kitchen",)
    raise OffbenchError(f"D4RL dataset '{name}' is not one of the {family} datasets offbench evaluates")
