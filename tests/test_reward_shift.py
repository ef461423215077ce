"""AntMaze's reward r - 1 (IQL, DriftQL, NEUBAY) as a recorded dataset transform, applied where a baseline asks for it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_ID

from offbench.config import TRANSFORM_KEYS, baseline_values, dataset_transforms
from offbench.data.transforms import shift_rewards
from offbench.errors import OffbenchError
from offbench.store import ResultsStore


def test_shift_rewards_is_exact_and_recorded(data_root) -> None:
    from offbench.data import load_dataset

    base = load_dataset(TINY_ID)
    shifted = shift_rewards(base, -1.0)
    assert shifted.metadata.id == TINY_ID + "+reward-1"
    np.testing.assert_array_equal(shifted.rewards, (base.rewards.astype(np.float64) - 1.0).astype(np.float32))
    assert shifted.rewards.dtype == np.float32
    for name in ("observations", "actions", "terminals", "timeouts", "episode_starts"):
        np.testing.assert_array_equal(getattr(shifted, name), getattr(base, name))
    assert shifted.metadata.extra["transforms"][-1] == {"reward_shift": -1.0}
    assert shifted.metadata.extra["parent_sha256"] == base.metadata.sha256 != shifted.metadata.sha256
    assert shift_rewards(base, 0.5).metadata.id == TINY_ID + "+reward0.5"
    for bad in (0.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(OffbenchError, match="reward_shift must be a finite non-zero number"):
            shift_rewards(base, bad)


def test_baselines_ask_for_it_on_antmaze_only_and_never_as_a_config_key() -> None:
    assert TRANSFORM_KEYS == ("reward_shift",)
    for algo in ("driftql", "neubay"):
        assert dataset_transforms(algo, "d4rl/antmaze-umaze-v2") == {"reward_shift": -1.0}
        assert dataset_transforms(algo, "d4rl/antmaze-umaze-v2+first1000") == {"reward_shift": -1.0}
        assert "reward_shift" not in baseline_values(algo, "d4rl/antmaze-umaze-v2")
        assert dataset_transforms(algo, "d4rl/pen-human-v1") == dataset_transforms(algo, "d4rl/hopper-medium-v2") == {}
        assert dataset_transforms(algo, None) == {}
    assert dataset_transforms("driftql", "d4rl/antmaze-large-diverse-v2") == {"reward_shift": -1.0}
    assert dataset_transforms("td3bc", "d4rl/antmaze-umaze-v2") == {}


def test_a_run_whose_baseline_asks_trains_on_shifted_rewards_and_records_it(data_root, tmp_path, monkeypatch) -> None:
    """`offbench run` applies the baseline's shift after --subset, and the run record names it (id and transforms)."""
    from offbench import train

    monkeypatch.setattr(train, "dataset_transforms", lambda algo, dataset_id: {"reward_shift": -1.0})
    store = ResultsStore(tmp_path / "results")
    plan = train.RunPlan("bc", TINY_ID, seeds=[0], steps=20, eval_every=20, eval_episodes=1, subset=2000,
                         overrides={"hidden_dims": [16, 16], "batch_size": 8})
    (run_id,) = train.run(plan, store)
    record = store.load(run_id)
    assert record.config.dataset.id == TINY_ID + "+first2000+reward-1"
    assert [t for t in record.config.dataset.transforms if "reward_shift" in t] == [{"reward_shift": -1.0}]
    assert "reward_shift" not in record.config.algo_config
