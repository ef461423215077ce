"""Minari format: write and read through the minari package, offline; deterministic local recipes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import TINY_ID, TINY_RECIPE

from offbench.data import minari_io
from offbench.data.registry import load_dataset, make_dataset
from offbench.data.spaces import Box, ObservationSpace
from offbench.errors import OffbenchError


def test_local_dataset_round_trip(data_root: Path) -> None:
    dataset = load_dataset(TINY_ID)
    assert len(dataset) == 3000
    assert dataset.metadata.env_id == "Hopper-v5" and dataset.metadata.source == "local"
    assert (dataset.metadata.ref_min_score, dataset.metadata.ref_max_score) == (-20.272305, 3234.3)
    # every transition of an episode chains into the next; episodes end in a fall or a cut
    assert (dataset.terminals | dataset.timeouts)[dataset.episode_ends - 1].all()
    assert not (dataset.terminals & dataset.timeouts).any()
    # the budget cuts each of the 4 environments' last episode: marked time-out, never terminal
    assert dataset.timeouts.sum() >= 4


def test_recipe_is_deterministic_bytes_and_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = {**TINY_RECIPE, "steps": 5000}
    hashes = []
    for attempt in ("a", "b"):
        monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / attempt))
        made = make_dataset("local/hopper-5k-v5", recipe=recipe)
        main = tmp_path / attempt / "local" / "hopper-5k-v5" / "data" / "main_data.hdf5"
        hashes.append((made.metadata.sha256, hashlib.sha256(main.read_bytes()).hexdigest()))
        assert load_dataset("local/hopper-5k-v5").metadata.sha256 == made.metadata.sha256
    assert hashes[0] == hashes[1]
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "c"))
    other_seed = make_dataset("local/hopper-5k-v5", recipe={**recipe, "seed": 1})
    assert other_seed.metadata.sha256 != hashes[0][0]


def test_write_then_read_preserves_episodes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    episodes = []
    for length, fell in ((4, True), (3, False)):
        episodes.append({
            "observations": rng.normal(size=(length + 1, 11)),
            "actions": rng.uniform(-1, 1, size=(length, 3)).astype(np.float32),
            "rewards": rng.normal(size=length),
            "terminations": np.array([False] * (length - 1) + [fell]),
            "truncations": np.array([False] * (length - 1) + [not fell]),
        })
    path = minari_io.write_minari(tmp_path, "local/toy-v0", episodes, "Hopper-v5", 0.0, 1.0, "toy", {"env_id": "Hopper-v5"})
    dataset = minari_io.load_minari(path, "local/toy-v0")
    np.testing.assert_allclose(dataset.observations[:4], episodes[0]["observations"][:-1].astype(np.float32))
    np.testing.assert_allclose(dataset.next_observations[4:], episodes[1]["observations"][1:].astype(np.float32))
    np.testing.assert_array_equal(dataset.terminals, [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(dataset.timeouts, [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(dataset.episode_starts, [0, 4])
    with pytest.raises(OffbenchError, match="already exists"):
        minari_io.write_minari(tmp_path, "local/toy-v0", episodes, "Hopper-v5", 0.0, 1.0, "toy", {})


def test_tampered_files_are_reported(tmp_path: Path) -> None:
    episodes = [{"observations": np.zeros((3, 11)), "actions": np.zeros((2, 3), np.float32), "rewards": np.ones(2),
                 "terminations": np.array([False, True]), "truncations": np.array([False, False])}]
    path = minari_io.write_minari(tmp_path, "local/toy-v0", episodes, "Hopper-v5", 0.0, 1.0, "toy", {"sha256": "0" * 64})
    with pytest.raises(OffbenchError, match="content hash .* differs from the recorded 000000000000"):
        minari_io.load_minari(path, "local/toy-v0")
    (path / "data" / "main_data.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(OffbenchError, match="cannot read the Minari"):
        minari_io.load_minari(path, "local/toy-v0")


def test_episode_field_lengths_are_checked() -> None:
    bad = [{"observations": np.zeros((3, 2)), "actions": np.zeros((2, 1)), "rewards": np.zeros(1),
            "terminations": np.zeros(2, bool), "truncations": np.zeros(2, bool)}]
    spaces = (ObservationSpace((2,)), Box((-1.0,), (1.0,)))
    with pytest.raises(OffbenchError, match=r"episode 0: field 'rewards' has shape \(1,\) and dtype float64, where the other fields have 2 rows"):
        minari_io.episodes_to_transitions(bad, "local/bad-v0", spaces)


def test_flat_cache_is_used_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    made = make_dataset("local/hopper-1k-v5", recipe={**TINY_RECIPE, "steps": 1000})
    cache = tmp_path / "cache" / "local__hopper-1k-v5.npz"
    assert cache.exists()  # primed by make
    with np.load(cache) as stored:
        np.testing.assert_array_equal(stored["rewards"], made.rewards)
    assert load_dataset("local/hopper-1k-v5").metadata.sha256 == made.metadata.sha256
    cache.unlink()
    assert load_dataset("local/hopper-1k-v5").metadata.sha256 == made.metadata.sha256  # rebuilt from Minari
    assert cache.exists()
    main = tmp_path / "local" / "hopper-1k-v5" / "data" / "main_data.hdf5"
    main.write_bytes(b"changed")  # the Minari file changed: the cache must not hide it
    with pytest.raises(OffbenchError, match="cannot read the Minari"):
        load_dataset("local/hopper-1k-v5")


@pytest.mark.parametrize("observation_space, message", [
    (gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (4,)), "desired_goal": gym.spaces.Box(-1, 1, (2,))}),
     r"a Dict observation \(desired_goal: Box\(2,\), observation: Box\(4,\)\), and offbench has no flattening rule for the family 'tiny'"),
    (gym.spaces.Discrete(5), r"only array \(Box\) observations are supported, it has a Discrete observation space"),
])
def test_an_unsupported_observation_space_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, observation_space, message: str) -> None:
    """A Dict layout of a family without a flattening rule (offbench.data.goals), or another space: refused before any episode is read."""
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    samples = [observation_space.sample() for _ in range(4)]
    stacked = {k: np.stack([s[k] for s in samples]) for k in samples[0]} if isinstance(samples[0], dict) else np.array(samples)
    buffer = EpisodeBuffer(id=0, observations=stacked, actions=np.zeros((3, 2), np.float32), rewards=[0.0] * 3,
                           terminations=[False] * 3, truncations=[False, False, True], infos={})
    minari.create_dataset_from_buffers("test/maze/tiny-v0", [buffer], observation_space=observation_space,
                                       action_space=gym.spaces.Box(-1, 1, (2,), np.float32), algorithm_name="test", author="test",
                                       author_email="test@example.com", code_permalink="https://example.com", description="test")
    with pytest.raises(OffbenchError, match=message):
        minari_io.load_minari(tmp_path / "test" / "maze" / "tiny-v0", "minari/test/maze/tiny-v0")


def test_minari_mujoco_data_without_references_is_normalised_with_d4rls_for_the_robot(tmp_path: Path) -> None:
    from offbench.data.d4rl import REFERENCE_SCORES

    rng = np.random.default_rng(0)
    episode = {"observations": rng.normal(size=(11, 11)).astype(np.float32), "actions": rng.uniform(-1, 1, (10, 3)).astype(np.float32),
               "rewards": np.ones(10), "terminations": np.zeros(10, bool), "truncations": np.r_[np.zeros(9, bool), True]}
    path = minari_io.write_minari(tmp_path, "mujoco/hopper/medium-v0", [episode], "Hopper-v5", None, None, "made up", {})
    metadata = minari_io.load_minari(path, "minari/mujoco/hopper/medium-v0").metadata
    assert (metadata.ref_min_score, metadata.ref_max_score) == REFERENCE_SCORES["hopper"]
    assert "has no reference scores" in metadata.ref_source and "D4RL" in metadata.ref_source
