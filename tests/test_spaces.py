"""Spaces: datasets keep their natural dtypes, validation covers boxes and discrete actions, algorithms refuse
spaces they do not support with one line."""

from __future__ import annotations

import numpy as np
import pytest

from offbench.algos import get_algorithm
from offbench.algos.base import Problem
from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.spaces import Box, Discrete, ObservationSpace, action_space_from_dict, from_gymnasium
from offbench.errors import OffbenchError


def dataset(observation_space: ObservationSpace, action_space, actions: np.ndarray, n: int = 6, **arrays) -> OfflineDataset:
    rng = np.random.default_rng(0)
    observations = arrays.pop("observations", rng.integers(0, 255, size=(n + 1, *observation_space.shape)).astype(observation_space.dtype))
    timeouts = np.zeros(n, dtype=bool)
    timeouts[-1] = True
    metadata = DatasetMetadata("test/spaces-v0", "test", "Toy-v0", observation_space, action_space)
    return OfflineDataset.build(metadata, observations=observations[:-1], actions=actions, rewards=np.ones(n),
                                next_observations=observations[1:], terminals=np.zeros(n, dtype=bool), timeouts=timeouts,
                                episode_starts=np.zeros(1, dtype=np.int64))


def test_frames_stay_uint8_and_discrete_actions_stay_integers() -> None:
    data = dataset(ObservationSpace((4, 4), "uint8"), Discrete(6), np.array([0, 5, 2, 3, 1, 4]))
    assert data.observations.dtype == np.uint8 and data.next_observations.dtype == np.uint8
    assert data.actions.dtype == np.int64 and data.actions.shape == (6,)


@pytest.mark.parametrize("actions, message", [
    (np.array([0, 1, 6, 2, 0, 0]), r"field 'actions' at index 2: action 6 is outside 6 discrete actions"),
    (np.array([0, -1, 0, 2, 0, 0]), r"field 'actions' at index 1: action -1 is outside"),
    (np.array([0.0, 1.5, 0, 2, 0, 0]), r"discrete actions must be integers"),
])
def test_discrete_actions_outside_the_space_are_reported(actions: np.ndarray, message: str) -> None:
    with pytest.raises(OffbenchError, match=message):
        dataset(ObservationSpace((4, 4), "uint8"), Discrete(6), actions)


def test_an_asymmetric_box_is_validated_per_dimension() -> None:
    box = Box((0.0, -2.0), (1.0, 2.0))
    actions = np.array([[0.5, 1.9]] * 6)
    dataset(ObservationSpace((3,)), box, actions)
    actions[3] = [-0.1, 0.0]
    with pytest.raises(OffbenchError, match="field 'actions' at index 3"):
        dataset(ObservationSpace((3,)), box, actions)
    assert box.symmetric_bound is None and Box((-2.0, -2.0), (2.0, 2.0)).symmetric_bound == 2.0


@pytest.mark.parametrize("field", ["observations", "next_observations", "actions", "rewards"])
def test_one_non_finite_component_in_any_float_field_is_reported(field: str) -> None:
    rng = np.random.default_rng(1)
    n = 6
    observations = rng.standard_normal((n + 1, 3)).astype(np.float32)
    arrays = {"observations": observations[:-1], "next_observations": observations[1:], "actions": rng.uniform(-1, 1, (n, 2)),
              "rewards": np.ones(n)}
    bad_row = 4 if field != "next_observations" else 5  # s'[4] is s[5]: the continuity check would report it first
    arrays[field] = arrays[field].copy()
    if arrays[field].ndim == 1:
        arrays[field][bad_row] = np.nan
    else:
        arrays[field][bad_row, 1] = np.inf
    timeouts = np.zeros(n, dtype=bool)
    timeouts[-1] = True
    metadata = DatasetMetadata("test/spaces-v0", "test", "Toy-v0", ObservationSpace((3,)), Box((-1.0,) * 2, (1.0,) * 2))
    with pytest.raises(OffbenchError, match=f"field '{field}' at index {bad_row}: value is not finite"):
        OfflineDataset.build(metadata, terminals=np.zeros(n, dtype=bool), timeouts=timeouts, episode_starts=np.zeros(1, dtype=np.int64), **arrays)


def test_spaces_round_trip_through_dicts_and_from_gymnasium() -> None:
    import gymnasium as gym

    for space in (Box((-1.0, 0.0), (1.0, 3.0)), Discrete(18)):
        assert action_space_from_dict(space.to_dict()) == space
    assert from_gymnasium(gym.spaces.Discrete(6), "x") == Discrete(6)
    with pytest.raises(OffbenchError, match="discrete actions must start at 0"):
        from_gymnasium(gym.spaces.Discrete(6, start=1), "x")


@pytest.mark.parametrize("algo", ["td3bc", "bc", "bcq", "sparse-reg", "driftql"])
def test_continuous_algorithms_refuse_discrete_actions_and_frames_in_one_line(algo: str) -> None:
    algorithm = get_algorithm(algo)
    pong = Problem(ObservationSpace((4, 84, 84), "uint8"), Discrete(6))
    with pytest.raises(OffbenchError, match=rf"^{algo} needs a box action space; local/pong-v5 has 6 discrete actions$"):
        algorithm.check_problem(algo, pong, "local/pong-v5")
    with pytest.raises(OffbenchError, match=rf"^{algo} needs vector observations; local/pixels-v0 has uint8 observations"):
        algorithm.check_problem(algo, Problem(ObservationSpace((84, 84), "uint8"), Box((-1.0,), (1.0,))), "local/pixels-v0")
    with pytest.raises(OffbenchError, match=rf"^{algo} needs a symmetric action box"):
        algorithm.check_problem(algo, Problem(ObservationSpace((3,)), Box((0.0,), (1.0,))), "local/half-v0")
