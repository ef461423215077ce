"""Dict observations of goal-reaching datasets, flattened by one rule per layout.

Minari's ports of D4RL's goal-reaching tasks store Gymnasium-Robotics' Dict observations; offbench's algorithms
learn from one vector. Each known layout has one rule, named like the evaluation wrapper that applies the same rule
to the env's observations (`offbench.robotics.WRAPPERS`), so training, evaluation, `offbench eval` and export see
the same vector:

    goal-observation     Minari's D4RL/pointmaze/* and offbench's local/pointmaze-* recordings: observation, then
                         desired_goal (4 + 2); the achieved goal is the point's x, y, already in the observation
    antmaze-observation  Minari's D4RL/antmaze/*: achieved_goal, observation, then desired_goal (2 + 27 + 2). The ant's
                         observation leaves out its x, y (Gymnasium-Robotics' AntMaze: the ant's qpos[2:] and qvel), so
                         the layout needs the achieved goal; put first, the 29 dims are D4RL's antmaze observation
                         (qpos, qvel) and the vector ends with the goal
    kitchen-observation  Minari's D4RL/kitchen/*: observation only (59: robot and object positions and velocities);
                         the desired goal is the same for every episode of a dataset and the achieved goal is a subset
                         of the object positions

A Dict layout outside this table (other keys, nested entries where the rule reads a vector, a family not listed)
is refused in one line: no Dict observation is flattened by a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from offbench.data.checks import REAL, check_array
from offbench.data.spaces import ObservationSpace, observation_space_from_gymnasium
from offbench.errors import OffbenchError


@dataclass(frozen=True)
class GoalLayout:
    keys: tuple[str, ...]  # the Dict entries concatenated, in order
    entries: frozenset[str]  # the Dict's entries, exactly
    families: tuple[str, ...]  # the Minari D4RL/<family> datasets (and local recordings) stored this way


LAYOUTS: dict[str, GoalLayout] = {
    "goal-observation": GoalLayout(("observation", "desired_goal"), frozenset({"observation", "achieved_goal", "desired_goal"}), ("pointmaze",)),
    "antmaze-observation": GoalLayout(("achieved_goal", "observation", "desired_goal"), frozenset({"observation", "achieved_goal", "desired_goal"}),
                                      ("antmaze",)),
    "kitchen-observation": GoalLayout(("observation",), frozenset({"observation", "achieved_goal", "desired_goal"}), ("kitchen",)),
}


def observation_layout(space: gym.Space, dataset_id: str, what: str) -> tuple[ObservationSpace, tuple[str, gym.spaces.Dict] | None]:
    """offbench's observation space for a dataset's Gymnasium observation `space`, and (layout, Dict space) for flattening its
    Dict observations (`flatten`), None for a Box. The layout is looked up by the dataset's family (`family_of_id`); raises
    one-line `OffbenchError` for a Dict no layout fits (`layout_of`) or a space offbench cannot hold."""
    if not isinstance(space, gym.spaces.Dict):
        return observation_space_from_gymnasium(space, what), None
    layout = layout_of(space, family_of_id(dataset_id), what)
    return flat_space(space, layout), (layout, space)


def family_of_id(dataset_id: str) -> str:
    """`minari/D4RL/antmaze/umaze-v1` -> antmaze; `local/pointmaze-umaze-v3` -> pointmaze: the family a Dict layout is looked up by."""
    parts = dataset_id.split("/")
    if len(parts) >= 4 and parts[1] == "D4RL":
        return parts[2]
    return parts[-1].split("-")[0]


def family_layout(family: str) -> str | None:
    """The layout name for a Minari `D4RL/<family>` dataset or a local recording of that family; None when none is known."""
    return next((name for name, layout in LAYOUTS.items() if family in layout.families), None)


def layout_of(space: gym.spaces.Dict, family: str, what: str) -> str:
    """The layout that flattens `space`, a Dict observation space of a dataset of `family` (`pointmaze`, `antmaze`, `kitchen`).

    Raises `OffbenchError` naming the space when the family has no layout, or its entries are not the layout's, or an entry
    the rule reads is not a 1-D Box.
    """
    described = ", ".join(f"{key}: {_describe(sub)}" for key, sub in space.spaces.items())
    name = family_layout(family)
    if name is None:
        known = "; ".join(f"{n} ({', '.join(v.families)})" for n, v in LAYOUTS.items())
        raise OffbenchError(f"{what}: a Dict observation ({described}), and offbench has no flattening rule for the family '{family}'",
                            f"known Dict layouts: {known}")
    layout = LAYOUTS[name]
    if set(space.spaces) != layout.entries or not all(_is_vector(space.spaces[key]) for key in layout.keys):
        raise OffbenchError(f"{what}: a Dict observation ({described}) is not the {family} layout offbench flattens",
                            f"{name} expects entries {', '.join(sorted(layout.entries))} with 1-D Box {', '.join(layout.keys)}")
    return name


def flat_space(space: gym.spaces.Dict, layout: str) -> ObservationSpace:
    """The float32 vector space of `space` flattened by `layout` (its `keys` concatenated)."""
    return ObservationSpace((sum(int(space.spaces[key].shape[0]) for key in LAYOUTS[layout].keys),), "float32")


def flatten(observations: Mapping[str, Any], layout: str, rows: int, space: gym.spaces.Dict, what: str) -> np.ndarray:
    """(rows, dims) observations from one episode's Dict of arrays, by `layout`; each entry read is checked to be (rows, size)
    real numbers of its space's size before it is used (raises `OffbenchError` naming the entry otherwise)."""
    if not isinstance(observations, Mapping):
        raise OffbenchError(f"{what}: field 'observations' is a {type(observations).__name__}, expected the Dict layout {layout}")
    parts = []
    for key in LAYOUTS[layout].keys:
        if key not in observations:
            raise OffbenchError(f"{what}: field 'observations' lacks the entry '{key}' of the layout {layout}")
        array = np.asarray(observations[key])
        check_array(what, f"observations/{key}", array, (rows, int(space.spaces[key].shape[0])), REAL)
        parts.append(array.astype(np.float64))
    return np.concatenate(parts, axis=1)


def _is_vector(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 1


def _describe(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        return f"Box{tuple(space.shape)}"
    if isinstance(space, gym.spaces.Dict):
        return "Dict(" + ", ".join(space.spaces) + ")"
    return type(space).__name__
