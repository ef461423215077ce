"""Dataset transforms: deterministic, recorded in the id, episodes kept well-formed."""

from __future__ import annotations

import numpy as np
import pytest

from offbench.config import dataset_key
from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.spaces import Box, ObservationSpace
from offbench.data.transforms import subset
from offbench.errors import OffbenchError

META = DatasetMetadata(id="local/toy-v5", source="local", env_id="Toy-v0", observation_space=ObservationSpace((1,)),
                       action_space=Box((-1.0,), (1.0,)), ref_min_score=0.0, ref_max_score=1.0)


def chain_dataset(lengths: list[int], falls: list[bool]) -> OfflineDataset:
    """Episodes whose observations count up, so every row says where it came from."""
    obs, nxt, terminals, timeouts, starts = [], [], [], [], []
    value = 0.0
    for length, fell in zip(lengths, falls):
        starts.append(len(obs))
        for t in range(length):
            obs.append([value])
            nxt.append([value + 1])
            value += 1
            terminals.append(fell and t == length - 1)
            timeouts.append(not fell and t == length - 1)
        value += 100  # a gap between episodes
    n = len(obs)
    return OfflineDataset.build(META, observations=np.array(obs), next_observations=np.array(nxt), actions=np.zeros((n, 1)),
                                rewards=np.arange(n, dtype=float), terminals=np.array(terminals), timeouts=np.array(timeouts), episode_starts=np.array(starts))


def test_first_n_transitions_cut_as_time_out_and_short_episodes_dropped() -> None:
    data = chain_dataset([12, 5, 20, 15], [True, True, False, True])
    small = subset(data, 30)  # episode 1 (12, fell), episode 2 (5: dropped), episode 3 cut at 13
    assert small.metadata.id == "local/toy-v5+first30"
    np.testing.assert_array_equal(small.rewards, np.r_[0:12, 17:30])
    np.testing.assert_array_equal(small.episode_starts, [0, 12])
    assert small.terminals[11] and small.timeouts[-1] and not small.terminals[-1]
    assert small.metadata.extra["parent_sha256"] == data.metadata.sha256


def test_random_episodes_are_deterministic_for_a_data_seed() -> None:
    data = chain_dataset([12, 15, 20, 14, 13], [True, False, True, True, False])
    first, again, other = subset(data, 40, "episodes", 3), subset(data, 40, "episodes", 3), subset(data, 40, "episodes", 4)
    assert len(first) == 40 and first.metadata.id == "local/toy-v5+episodes40-seed3"
    assert first.metadata.sha256 == again.metadata.sha256 != other.metadata.sha256
    assert (first.terminals | first.timeouts)[first.episode_ends - 1].all()


def test_bad_subsets_are_refused() -> None:
    data = chain_dataset([12], [True])
    with pytest.raises(OffbenchError, match="--subset must be between 1 and"):
        subset(data, 13)
    with pytest.raises(OffbenchError, match="unknown subset mode"):
        subset(data, 5, "middle")
    with pytest.raises(OffbenchError, match="keeps no episode"):
        subset(data, 5)


def test_transformed_ids_keep_their_override_key() -> None:
    assert dataset_key("local/hopper-medium-v5+first10000") == "hopper-medium"


def test_run_plan_applies_subset_then_corruption_and_records_both(data_root) -> None:
    from conftest import TINY_ID

    from offbench.data import load_dataset
    from offbench.train import RunPlan, transformed

    base = load_dataset(TINY_ID)
    plan = RunPlan("td3bc", TINY_ID, seeds=[0], subset=2000, corrupt="relabel-random-actions:0.5", data_seed=1)
    data = transformed(base, plan)
    assert data.metadata.id.startswith(TINY_ID + "+first2000+corrupt-relabel-random-actions")
    subset_record, corrupt_record = data.metadata.extra["transforms"]
    assert subset_record["subset"] == {"mode": "first", "size": 2000, "seed": None}
    assert "corrupt" in corrupt_record
    assert len(data) <= 2000
