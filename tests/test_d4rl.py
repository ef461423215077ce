"""D4RL HDF5 reading: the qlearning conversion, reference scores, and bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from offbench.data import d4rl
from offbench.errors import OffbenchError


def write_d4rl_file(path: Path, episode_lengths: list[int], falls: list[bool], obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A file in D4RL's layout: episodes cut at a time limit (timeouts) or by a fall (terminals)."""
    rng = np.random.default_rng(seed)
    n = sum(episode_lengths)
    arrays = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, dtype=bool),
        "timeouts": np.zeros(n, dtype=bool),
    }
    end = 0
    for length, fell in zip(episode_lengths, falls):
        end += length
        arrays["terminals" if fell else "timeouts"][end - 1] = True
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.create_dataset("infos/qpos", data=np.zeros((n, 2)))
    return arrays


def reference_qlearning_dataset(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`d4rl.qlearning_dataset(env, dataset, terminate_on_end=False)`, transcribed loop for loop."""
    obs, next_obs, actions, rewards, dones = [], [], [], [], []
    n = arrays["rewards"].shape[0]
    for i in range(n - 1):
        if arrays["timeouts"][i]:
            continue
        obs.append(arrays["observations"][i])
        next_obs.append(arrays["observations"][i + 1])
        actions.append(arrays["actions"][i])
        rewards.append(arrays["rewards"][i])
        dones.append(bool(arrays["terminals"][i]))
    return {"observations": np.array(obs), "next_observations": np.array(next_obs), "actions": np.array(actions),
            "rewards": np.array(rewards), "terminals": np.array(dones)}


def test_conversion_matches_d4rl_qlearning_dataset(tmp_path: Path) -> None:
    path = tmp_path / "hopper_medium-v2.hdf5"
    arrays = write_d4rl_file(path, [5, 7, 3, 6], falls=[True, False, True, False])
    dataset = d4rl.load_d4rl_file(path, "hopper-medium-v2")
    expected = reference_qlearning_dataset(arrays)
    for key, value in expected.items():
        np.testing.assert_array_equal(getattr(dataset, key), value, err_msg=key)
    # episodes: the fall ends one; the dropped time-out row (and the file end) cut the others
    np.testing.assert_array_equal(dataset.episode_starts, [0, 5, 11, 14])
    np.testing.assert_array_equal(np.flatnonzero(dataset.timeouts), [10, 18])
    assert not (dataset.timeouts & dataset.terminals).any()
    assert dataset.metadata.id == "d4rl/hopper-medium-v2"
    assert dataset.metadata.env_id == "Hopper-v4"


def test_reference_scores_and_normalisation(tmp_path: Path) -> None:
    assert d4rl.reference_scores("hopper-medium-replay-v2") == (-20.272305, 3234.3)
    assert d4rl.reference_scores("maze2d-umaze-dense-v1") == (68.537689, 193.66285642381482)
    path = tmp_path / "walker2d_expert-v2.hdf5"
    write_d4rl_file(path, [4, 4], [False, False])
    dataset = d4rl.load_d4rl_file(path, "walker2d-expert-v2")
    np.testing.assert_allclose(dataset.normalized_score([1.629008, 4592.3]), [0.0, 100.0])
    with pytest.raises(OffbenchError, match="no D4RL reference score"):
        d4rl.reference_scores("unicorn-medium-v2")


def test_file_names_follow_d4rl() -> None:
    assert d4rl.file_name("hopper-medium-v2") == "hopper_medium-v2.hdf5"
    assert d4rl.file_name("walker2d-medium-replay-v2") == "walker2d_medium_replay-v2.hdf5"
    assert d4rl.file_name("halfcheetah-medium-expert-v2") == "halfcheetah_medium_expert-v2.hdf5"


def test_missing_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "f.hdf5"
    with h5py.File(path, "w") as f:
        for key in ("observations", "actions", "rewards", "terminals"):
            f.create_dataset(key, data=np.zeros((4, 2)))
    with pytest.raises(OffbenchError, match="lacks the key 'timeouts'"):
        d4rl.load_d4rl_file(path, "hopper-medium-v2")


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "hopper_medium-v2.hdf5"
    write_d4rl_file(path, [50, 50], [False, True])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(OffbenchError, match="cannot read .* as HDF5"):
        d4rl.load_d4rl_file(path, "hopper-medium-v2")


def test_nan_is_reported_with_field_and_index(tmp_path: Path) -> None:
    path = tmp_path / "hopper_medium-v2.hdf5"
    write_d4rl_file(path, [5, 5], [True, False])
    with h5py.File(path, "r+") as f:
        f["rewards"][3] = np.nan
    with pytest.raises(OffbenchError, match=r"dataset d4rl/hopper-medium-v2: field 'rewards' at index 3: value is not finite"):
        d4rl.load_d4rl_file(path, "hopper-medium-v2")


def test_mismatched_lengths_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "hopper_medium-v2.hdf5"
    arrays = write_d4rl_file(path, [5, 5], [True, False])
    with h5py.File(path, "r+") as f:
        del f["actions"]
        f.create_dataset("actions", data=arrays["actions"][:7])
    message = r"dataset d4rl/hopper-medium-v2: field 'actions' has shape \(7, 2\) and dtype float32, where the other fields have 10 rows"
    with pytest.raises(OffbenchError, match=message):
        d4rl.load_d4rl_file(path, "hopper-medium-v2")


def test_actions_outside_the_box_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "hopper_medium-v2.hdf5"
    write_d4rl_file(path, [5, 5], [True, False])
    with h5py.File(path, "r+") as f:
        f["actions"][2, 1] = 1.5
    with pytest.raises(OffbenchError, match="field 'actions' at index 2: action .* is outside a 2-dimensional box"):
        d4rl.load_d4rl_file(path, "hopper-medium-v2")


def test_ant_is_evaluated_with_the_zero_contact_forces_and_no_contact_cost_of_d4rls_files() -> None:
    """D4RL's ant files hold zeros in dims 27:111 and rewards without a contact cost: the eval env must too."""
    import gymnasium as gym

    from offbench.data.d4rl import EVAL_ENVS

    env_id, kwargs = EVAL_ENVS["ant"]
    env = gym.make(env_id, **kwargs)
    observation, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(60):
        action = rng.uniform(-1, 1, 8).astype(np.float32)
        observation, reward, terminated, truncated, info = env.step(action)
        assert observation.shape == (111,) and not observation[27:].any()
        assert reward == pytest.approx(info["reward_forward"] + info["reward_survive"] - 0.5 * float(np.sum(np.square(action))), abs=1e-5)
        if terminated or truncated:
            observation, _ = env.reset()
    env.close()
