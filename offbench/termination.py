"""Termination functions of the MuJoCo locomotion tasks, for learned (model-based) rollouts.

`termination_fn(env_id)` returns `done(observations, actions, next_observations) -> bool`: tensors of shape
(..., obs_dim), (..., act_dim), (..., obs_dim) -> (...,), True where the true environment would end the
episode on arriving at `next_observations`. They follow MOPO/MOBILE/LEQ as NEUBAY uses them (spec
shared/specs/neubay.md, "Setting and data requirements"; twni2016/neubay offline_world/static_fns.py):

    Hopper       done unless every next state is finite, |next[1:]| < 100, height next[0] > 0.7, |angle next[1]| < 0.2
    Walker2d     done unless 0.8 < height next[0] < 2.0 and -1 < angle next[1] < 1
    HalfCheetah  never done

Gymnasium's v5 envs test the unclipped velocities (qvel) where the observation holds them clipped to
+-10 (Hopper, Walker2d); the functions see observations only, as the reference does.
Environments are matched by the Gymnasium id's name (`Hopper-v5`, `Hopper-v4` -> hopper).
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


def never(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_observations.shape[:-1], dtype=torch.bool, device=next_observations.device)


TERMINATIONS: dict[str, Termination] = {"Hopper": hopper, "Walker2d": walker2d, "HalfCheetah": never}


def task_name(env_id: str) -> str:
    """The task of a Gymnasium id, namespace and version dropped: `Hopper-v5`, `mujoco/Hopper-v4` -> `Hopper`."""
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


def termination_fn(env_id: str) -> Termination:
    """The termination function of `env_id` (any version); one-line `OffbenchError` for an env without one."""
    name = task_name(env_id)
    if name not in TERMINATIONS:
        raise OffbenchError(f"no termination function for env {env_id}", f"model-based rollouts know: {', '.join(TERMINATIONS)} (offbench/termination.py)")
    return TERMINATIONS[name]
