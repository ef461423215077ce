"""The degraded-data transform: uniform random actions on exactly a fraction of transitions, seeded, recorded."""

from __future__ import annotations

import numpy as np
import pytest

from offbench.config import dataset_key
from offbench.data.corruption import corrupt
from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.spaces import Box, ObservationSpace
from offbench.data.transforms import subset
from offbench.errors import OffbenchError

LOW, HIGH = (-1.0, -0.5, 0.0), (1.0, 0.5, 2.0)
META = DatasetMetadata(id="local/toy-v5", source="local", env_id="Toy-v0", observation_space=ObservationSpace((2,)),
                       action_space=Box(LOW, HIGH), ref_min_score=0.0, ref_max_score=1.0)
UNTOUCHED = ("observations", "next_observations", "rewards", "terminals", "timeouts", "episode_starts")


def toy_dataset(episodes: int = 20, length: int = 100) -> OfflineDataset:
    """Episodes of chained observations; every action is the same marker, so a replaced one shows."""
    n = episodes * length
    obs = np.stack([np.arange(n + episodes, dtype=float), np.zeros(n + episodes)], axis=1)
    keep = np.ones(n + episodes, dtype=bool)
    keep[np.arange(1, episodes + 1) * (length + 1) - 1] = False  # the last s' of each episode is not an s
    observations = obs[keep]
    next_observations = observations + np.array([1.0, 0.0])
    ends = np.zeros(n, dtype=bool)
    ends[np.arange(1, episodes + 1) * length - 1] = True
    return OfflineDataset.build(META, observations=observations, next_observations=next_observations,
                                actions=np.full((n, 3), 0.123), rewards=np.arange(n, dtype=float),
                                terminals=ends & (np.arange(n) % 200 == 99), timeouts=ends & (np.arange(n) % 200 != 99),
                                episode_starts=np.arange(episodes) * length)


def replaced(data: OfflineDataset, corrupted: OfflineDataset) -> np.ndarray:
    return (corrupted.actions != data.actions).any(axis=1)


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.4, 1.0])
def test_exactly_the_fraction_of_actions_is_replaced_and_nothing_else(fraction: float) -> None:
    data = toy_dataset()
    corrupted = corrupt(data, f"relabel-random-actions:{fraction}", seed=0)
    assert replaced(data, corrupted).sum() == round(fraction * len(data))
    for name in UNTOUCHED:
        np.testing.assert_array_equal(getattr(corrupted, name), getattr(data, name))


def test_replacements_are_uniform_in_the_action_box() -> None:
    data = toy_dataset(episodes=100)  # 10 000 transitions, 5 000 replaced
    corrupted = corrupt(data, "relabel-random-actions:0.5", seed=3)
    new = corrupted.actions[replaced(data, corrupted)].astype(np.float64)
    low, high = np.array(LOW), np.array(HIGH)
    unit = (new - low) / (high - low)  # U(0, 1) in every dimension
    assert (unit >= 0).all() and (unit <= 1).all()
    np.testing.assert_allclose(unit.mean(axis=0), 0.5, atol=0.015)
    np.testing.assert_allclose(unit.std(axis=0), 1 / np.sqrt(12), rtol=0.03)
    for dim in range(3):  # each tenth of the range holds about a tenth of the samples
        counts, _ = np.histogram(unit[:, dim], bins=10, range=(0, 1))
        assert counts.min() > 400 and counts.max() < 600


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    data = toy_dataset()
    first, again, other = (corrupt(data, "relabel-random-actions:0.3", seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(first.actions, again.actions)
    assert first.metadata.sha256 == again.metadata.sha256 != other.metadata.sha256
    assert not np.array_equal(replaced(data, first), replaced(data, other))


def test_recorded_in_the_id_and_the_transforms() -> None:
    data = toy_dataset()
    corrupted = corrupt(data, "relabel-random-actions:0.30", seed=7)
    assert corrupted.metadata.id == "local/toy-v5+corrupt-relabel-random-actions-p0.3-seed7"
    assert corrupt(data, "relabel-random-actions:0.3", seed=7).metadata.sha256 == corrupted.metadata.sha256  # 0.30 = 0.3
    record = corrupted.metadata.extra["transforms"][-1]["corrupt"]
    assert (record["kind"], record["fraction"], record["seed"], record["transitions"]) == ("relabel-random-actions", 0.3, 7, 600)
    assert corrupted.metadata.extra["parent_sha256"] == data.metadata.sha256 != corrupted.metadata.sha256
    assert dataset_key(corrupted.metadata.id) == "toy"  # per-dataset overrides still apply


def test_composes_after_subset_in_order() -> None:
    data = subset(toy_dataset(), 1000)
    corrupted = corrupt(data, "relabel-random-actions:0.2", seed=0)
    assert corrupted.metadata.id == "local/toy-v5+first1000+corrupt-relabel-random-actions-p0.2-seed0"
    assert [next(iter(t)) for t in corrupted.metadata.extra["transforms"]] == ["subset", "corrupt"]
    assert replaced(data, corrupted).sum() == 200


@pytest.mark.parametrize("spec, message", [
    ("relabel-random-actions", "bad corruption spec"),
    ("gaussian-actions:0.3", "unknown corruption 'gaussian-actions'"),
    ("relabel-random-actions:abc", "bad corruption fraction"),
    ("relabel-random-actions:0", "must be in \\(0, 1\\]"),
    ("relabel-random-actions:1.5", "must be in \\(0, 1\\]"),
    ("random-actions:0.3", "'random-actions' is now 'relabel-random-actions' \\(it relabels recorded actions and keeps their s' and r\\)"),
])
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(OffbenchError, match=message):
        corrupt(toy_dataset(), spec, seed=0)
