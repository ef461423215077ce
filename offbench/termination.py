"""Termination functions of the MuJoCo locomotion tasks, for learned (model-based) rollouts.

`termination_fn(env_id)` returns `done(observations, actions, next_observations) -> bool`: tensors of shape
(..., obs_dim), (..., act_dim), (..., obs_dim) -> (...,), True where the true environment would end the
episode on arriving at `next_observations`. They follow MOPO/MOBILE/LEQ as NEUBAY uses them (spec
shared/specs/neubay.md, "Setting and data requirements"; twni2016/neubay offline_world/static_fns.py):

    Hopper       done unless every next state is finite, |next[1:]| < 100, height next[0] > 0.7, |angle next[1]| < 0.2
    Walker2d     done unless 0.8 < height next[0] < 2.0 and -1 < angle next[1] < 1
    HalfCheetah  never done
    pen          done when the object's height next[26] < 0.075 (Adroit; object position next[24:27])
    door, hammer never done
    AntMaze      done when ||next[:2] - the maze's mean goal|| < 0.25: umaze (0.75, 8.75), medium (20.75, 20.75),
                 large (32.75, 24.75), in D4RL's frame (offbench.robotics.D4RLAntMaze gives the evaluation env the same)

Keyed by the data's layout, not the task name alone: the indices above are those of observations that drop
the x position (D4RL, Gymnasium: Hopper 11 dims, Walker2d and HalfCheetah 17). NeoRL's keep it (12, 18, 18), so
height and angle are next[1] and next[2] and Hopper's bound covers next[2:] (the reference's
termination_fn_neorl_*). `termination_fn(env_id, observation_dim)` picks by (task, observation width); a width
no layout has is refused in one line rather than read with another layout's indices.

Gymnasium's v5 envs test the unclipped velocities (qvel) where the observation holds them clipped to
+-10 (Hopper, Walker2d); the functions see observations only, as the reference does.
Environments are matched by the Gymnasium id's name (`Hopper-v5`, `Hopper-v4` -> hopper; Gymnasium-Robotics'
`AdroitHandPen-v1` -> pen; `AntMaze_UMaze-v4` -> AntMaze_UMaze). Not provided: AntMaze in Minari's ports' frame
(31 dims, centred mazes: refused by width) and relocate, for which the reference has none.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from offbench.errors import OffbenchError

Termination = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def hopper(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
    height, angle = next_observations[..., 0], next_observations[..., 1]
    healthy = (torch.isfinite(next_observations).all(-1) & (next_observations[..., 1:].abs() < 100).all(-1)
               & (height > 0.7) & (angle.abs() < 0.2))
    return ~healthy


def walker2d(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
    height, angle = next_observations[..., 0], next_observations[..., 1]
    return ~((height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0))


def neorl_hopper(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
    """Hopper with the x position kept (NeoRL): height next[1], angle next[2], the bound on next[2:]."""
    height, angle = next_observations[..., 1], next_observations[..., 2]
    healthy = (torch.isfinite(next_observations).all(-1) & (next_observations[..., 2:].abs() < 100).all(-1)
               & (height > 0.7) & (angle.abs() < 0.2))
    return ~healthy


def neorl_walker2d(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
    """Walker2d with the x position kept (NeoRL): height next[1], angle next[2]."""
    height, angle = next_observations[..., 1], next_observations[..., 2]
    return ~((height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0))


def pen(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
    """Adroit pen: the pen dropped (object height next[26] below 0.075)."""
    return next_observations[..., 26] < 0.075


# The reference's AntMaze goals (twni2016/neubay static_fns: the mean of each maze's goals in D4RL's frame, x, y from the
# reset cell, offbench.robotics.D4RLAntMaze) and its radius
ANTMAZE_GOALS = {"AntMaze_UMaze": (0.75, 8.75), "AntMaze_Medium": (20.75, 20.75), "AntMaze_Large": (32.75, 24.75)}
ANTMAZE_GOAL_RADIUS = 0.25


def antmaze_goal(goal: tuple[float, float]) -> Termination:
    """AntMaze (D4RL's 29-dim layout, x, y first): done when the next x, y lies within 0.25 of the maze's goal."""
    def reached(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
        target = torch.tensor(goal, dtype=next_observations.dtype, device=next_observations.device)
        return torch.linalg.vector_norm(next_observations[..., :2] - target, dim=-1) < ANTMAZE_GOAL_RADIUS
    return reached


def never(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_observations.shape[:-1], dtype=torch.bool, device=next_observations.device)


# (task, observation width) -> termination: the layouts whose indices the functions read
LAYOUTS: dict[tuple[str, int], Termination] = {
    ("Hopper", 11): hopper, ("Hopper", 12): neorl_hopper,  # x dropped (D4RL, Gymnasium) / kept (NeoRL)
    ("Walker2d", 17): walker2d, ("Walker2d", 18): neorl_walker2d,
    ("HalfCheetah", 17): never, ("HalfCheetah", 18): never,
    ("AdroitHandPen", 45): pen, ("AdroitHandDoor", 39): never, ("AdroitHandHammer", 46): never,
    **{(maze, 29): antmaze_goal(goal) for maze, goal in ANTMAZE_GOALS.items()},  # D4RL's files (Minari's ports: 31 dims, another frame)
}
TERMINATIONS = tuple(dict.fromkeys(task for task, _ in LAYOUTS))  # the tasks with a termination function


def task_name(env_id: str) -> str:
    """The task of a Gymnasium id, namespace and version dropped: `Hopper-v5`, `mujoco/Hopper-v4` -> `Hopper`."""
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


def termination_fn(env_id: str, observation_dim: int) -> Termination:
    """The termination function of `env_id` (any version) for observations of `observation_dim` values; one-line
    `OffbenchError` for an env without one, or for a width none of its layouts has (e.g. a NeoRL-style layout of
    another width), rather than another layout's indices."""
    name = task_name(env_id)
    if name not in TERMINATIONS:
        raise OffbenchError(f"no termination function for env {env_id}", f"model-based rollouts know: {', '.join(TERMINATIONS)} (offbench/termination.py)")
    if (name, observation_dim) not in LAYOUTS:
        widths = ", ".join(str(width) for task, width in LAYOUTS if task == name)
        raise OffbenchError(f"no termination function for {env_id} observations of {observation_dim} values",
                            f"{name}'s layouts have {widths} (x position dropped, or kept as NeoRL's); offbench/termination.py")
    return LAYOUTS[(name, observation_dim)]
