"""OfflineDataset: canonical dtypes, validation errors that name the field and index, the content hash."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from offbench.data.dataset import DatasetMetadata, OfflineDataset, episode_starts_from_ends
from offbench.data.spaces import Box, ObservationSpace
from offbench.errors import OffbenchError

META = DatasetMetadata(id="test/toy-v0", source="test", env_id="Toy-v0", observation_space=ObservationSpace((2,)),
                       action_space=Box((-1.0,), (1.0,)), ref_min_score=0.0, ref_max_score=10.0)


def toy_arrays() -> dict[str, np.ndarray]:
    """Two episodes: 3 steps ending in a fall, then 2 steps cut by the time limit."""
    states = np.arange(14, dtype=np.float64).reshape(7, 2)  # episode 1: rows 0..3, episode 2: rows 4..6
    return {
        "observations": np.concatenate([states[0:3], states[4:6]]),
        "next_observations": np.concatenate([states[1:4], states[5:7]]),
        "actions": np.array([[0.5], [-0.5], [1.0], [0.0], [-1.0]]),
        "rewards": np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        "terminals": np.array([0, 0, 1, 0, 0]),
        "timeouts": np.array([0, 0, 0, 0, 1]),
        "episode_starts": np.array([0, 3]),
    }


def test_build_casts_and_computes_statistics() -> None:
    dataset = OfflineDataset.build(META, **toy_arrays())
    assert dataset.observations.dtype == np.float32 and dataset.terminals.dtype == bool
    np.testing.assert_array_equal(dataset.episode_returns(), [6.0, 9.0])
    np.testing.assert_array_equal(dataset.episode_lengths(), [3, 2])
    np.testing.assert_allclose(dataset.normalized_score(dataset.episode_returns()), [60.0, 90.0])
    assert len(dataset.metadata.sha256) == 64


def test_hash_is_stable_and_sensitive() -> None:
    first = OfflineDataset.build(META, **toy_arrays())
    again = OfflineDataset.build(META, **toy_arrays())
    assert first.metadata.sha256 == again.metadata.sha256
    arrays = toy_arrays()
    arrays["rewards"][4] += 1e-3
    assert OfflineDataset.build(META, **arrays).metadata.sha256 != first.metadata.sha256
    arrays = toy_arrays()
    arrays["terminals"], arrays["timeouts"] = np.array([0, 0, 1, 0, 1]), np.array([0, 0, 0, 0, 0])
    assert OfflineDataset.build(META, **arrays).metadata.sha256 != first.metadata.sha256


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.__setitem__("observations", a["observations"][:4]), "field 'observations': has 4 rows but 'rewards' has 5"),
        (lambda a: a["actions"].__setitem__((3, 0), np.inf), "field 'actions' at index 3: value is not finite"),
        (lambda a: a["next_observations"].__setitem__((0, 1), 99.0), "field 'next_observations' at index 0: differs from the next"),
        (lambda a: a["terminals"].__setitem__(4, 1), "field 'timeouts' at index 4: a transition is marked both terminal and time-out"),
        (lambda a: a["timeouts"].__setitem__(4, 0), "field 'timeouts' at index 4: an episode ends without a terminal or a time-out"),
        (lambda a: a["terminals"].__setitem__(1, 1), "field 'terminals' at index 1: a terminal or time-out falls inside an episode"),
        (lambda a: a["actions"].__setitem__((1, 0), -1.01), "field 'actions' at index 1: action"),
        (lambda a: a.__setitem__("episode_starts", np.array([1, 3])), "field 'episode_starts'"),
    ],
)
def test_validation_names_dataset_field_and_index(mutate, message: str) -> None:
    arrays = toy_arrays()
    mutate(arrays)
    with pytest.raises(OffbenchError, match="^dataset test/toy-v0: " + message.replace("(", r"\(")):
        OfflineDataset.build(META, **arrays)


def test_next_observation_across_episodes_is_not_checked() -> None:
    arrays = toy_arrays()
    arrays["next_observations"][2] = [-7.0, -7.0]  # last transition of episode 1: its s' is its own
    OfflineDataset.build(META, **arrays)


def test_episode_starts_from_ends() -> None:
    np.testing.assert_array_equal(episode_starts_from_ends(np.array([0, 0, 1, 0, 1, 1])), [0, 3, 5])


def test_normalised_score_needs_reference_scores() -> None:
    dataset = OfflineDataset.build(dataclasses.replace(META, ref_min_score=None), **toy_arrays())
    with pytest.raises(OffbenchError, match="no reference scores"):
        dataset.normalized_score(1.0)
