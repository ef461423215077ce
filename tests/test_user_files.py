"""A researcher's own file by path: D4RL-layout HDF5, npz and Minari folders; honest ids; clipped actions; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from conftest import FAST_SETTINGS, run_cli

from offbench.data import d4rl, minari_io
from offbench.data.user_files import UserFile, is_user_path, parse_references
from offbench.errors import OffbenchError

HOPPER_REF = d4rl.REFERENCE_SCORES["hopper"]


def hopper_rows(steps: int = 240, seed: int = 0, action_scale: float = 1.0, max_episode_steps: int = 50) -> dict[str, np.ndarray]:
    """Rows in D4RL's layout from Hopper-v5 with uniform actions in [-scale, scale]: the time-out row of a
    cut episode is kept (D4RL's files have it), and the last row ends an episode by time-out."""
    env = gym.make("Hopper-v5", max_episode_steps=max_episode_steps)
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    obs, _ = env.reset(seed=seed)
    for step in range(steps):
        action = rng.uniform(-action_scale, action_scale, 3).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, reward, terminated, truncated or step == steps - 1)):
            rows[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return {k: np.asarray(v, dtype=np.float32 if k in ("observations", "actions", "rewards") else bool) for k, v in rows.items()}


def write_hdf5(path: Path, rows: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in rows.items():
            f.create_dataset(key, data=value)
    return path


def load(path: Path, env: str | None = "Hopper-v5", ref: str | None = "d4rl:hopper", clip: bool = False):
    return UserFile.check(str(path), env, ref, clip).load()


def test_d4rl_layout_file_gets_a_file_id_with_its_hash_and_the_given_evaluation(tmp_path):
    dataset = load(write_hdf5(tmp_path / "my data.v2.hdf5", hopper_rows()))
    meta = dataset.metadata
    assert meta.id == f"file/my_data_v2-{meta.sha256[:12]}-v0"
    assert meta.source == "file" and meta.env_id == "Hopper-v5"
    assert (meta.ref_min_score, meta.ref_max_score) == HOPPER_REF and "--ref d4rl:hopper" in meta.ref_source
    assert meta.action_space.describe() == "a 3-dimensional box action space in [-1, 1]"
    assert meta.extra["path"] == str((tmp_path / "my data.v2.hdf5").resolve())


def test_npz_and_hdf5_of_the_same_rows_are_the_same_data(tmp_path):
    rows = hopper_rows()
    from_hdf5 = load(write_hdf5(tmp_path / "rows.hdf5", rows))
    np.savez(tmp_path / "rows.npz", **rows)
    from_npz = load(tmp_path / "rows.npz")
    assert from_npz.metadata.sha256 == from_hdf5.metadata.sha256 and from_npz.metadata.id == from_hdf5.metadata.id
    # D4RL's conversion: each time-out row is dropped, so there are fewer transitions than rows.
    assert len(from_npz) == len(rows["rewards"]) - int(rows["timeouts"].sum())


def test_stored_next_observations_make_every_row_a_transition(tmp_path):
    rows = hopper_rows()
    next_obs = np.roll(rows["observations"], -1, axis=0)
    np.savez(tmp_path / "with_next.npz", **rows, next_observations=next_obs)
    dataset = load(tmp_path / "with_next.npz")
    assert len(dataset) == len(rows["rewards"])
    np.testing.assert_array_equal(dataset.next_observations, next_obs)
    ends = rows["terminals"] | rows["timeouts"]
    assert dataset.num_episodes == int(ends.sum())
    np.testing.assert_array_equal(dataset.timeouts, rows["timeouts"] & ~rows["terminals"])


def test_a_d4rl_named_file_is_never_recorded_as_d4rl_data(tmp_path):
    dataset = load(write_hdf5(tmp_path / "hopper_medium-v2.hdf5", hopper_rows()))
    assert dataset.metadata.id.startswith("file/hopper_medium_v2-") and dataset.metadata.source == "file"


def test_minari_folder_by_path_with_its_own_env_and_given_references(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    rows = hopper_rows(max_episode_steps=40)
    ends = np.flatnonzero(rows["terminals"] | rows["timeouts"]) + 1
    episodes = []
    for start, end in zip(np.concatenate([[0], ends[:-1]]), ends):
        obs = rows["observations"][start:end]
        episodes.append({"observations": np.concatenate([obs, obs[-1:]]), "actions": rows["actions"][start:end],
                         "rewards": rows["rewards"][start:end], "terminations": rows["terminals"][start:end],
                         "truncations": rows["timeouts"][start:end]})
    folder = minari_io.write_minari(tmp_path / "minari", "mine/hopper/test-v0", episodes, "Hopper-v5", None, None, "a test", {})
    with pytest.raises(OffbenchError, match="give --ref"):
        UserFile.check(str(folder), None, None)
    dataset = load(folder, env=None)
    assert dataset.metadata.env_id == "Hopper-v5" and dataset.metadata.id.startswith("file/test_v0-")
    assert dataset.metadata.extra["format"] == "minari" and (dataset.metadata.ref_min_score, dataset.metadata.ref_max_score) == HOPPER_REF
    assert load(folder / "data", env=None).metadata.id == dataset.metadata.id  # the data/ folder names the same dataset


def test_actions_outside_the_box_are_counted_and_refused_unless_clipped(tmp_path):
    rows = hopper_rows(action_scale=1.5)
    path = write_hdf5(tmp_path / "unclipped.hdf5", rows)
    with pytest.raises(OffbenchError) as refused:
        load(path)
    outside_rows = int((np.abs(rows["actions"][~rows["timeouts"]]) > 1 + 1e-5).any(axis=1).sum())
    assert f"{outside_rows} of {len(rows['rewards']) - int(rows['timeouts'].sum())} rows" in refused.value.message
    assert "--clip-actions" in refused.value.hint
    clipped = load(path, clip=True)
    parent = clipped.metadata.extra["parent_sha256"]
    assert clipped.metadata.id == f"file/unclipped-{parent[:12]}-v0+clip-actions"
    assert clipped.metadata.sha256 != parent and np.abs(clipped.actions).max() <= 1.0
    assert clipped.metadata.extra["transforms"] == [{"clip_actions": {"low": [-1.0] * 3, "high": [1.0] * 3, "rows_clipped": outside_rows}}]


@pytest.mark.parametrize("text, expected", [
    ("d4rl:walker2d", d4rl.REFERENCE_SCORES["walker2d"]),
    ("-20.5,3000", (-20.5, 3000.0)),
])
def test_references_parse(text, expected):
    refs = parse_references(text)
    assert (refs.low, refs.high) == expected and text in refs.source


@pytest.mark.parametrize("text, message", [
    ("d4rl:unicorn", "D4RL has no references for 'unicorn'"),
    ("atari:pong", "unknown reference table 'atari'"),
    ("3000,-20", "MIN < MAX"),
    ("nan,1", "finite"),
    ("1,2,3", "neither d4rl:<robot> nor MIN,MAX"),
])
def test_bad_references_are_one_line(text, message):
    with pytest.raises(OffbenchError, match=message):
        parse_references(text)


def test_bad_files_and_missing_evaluation_are_refused_before_reading(tmp_path):
    write_hdf5(tmp_path / "ok.hdf5", hopper_rows(steps=60))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder").mkdir()
    cases = [
        ((str(tmp_path / "absent.hdf5"), "Hopper-v5", "d4rl:hopper"), "does not exist"),
        ((str(tmp_path / "notes.txt"), "Hopper-v5", "d4rl:hopper"), "unknown format"),
        ((str(tmp_path / "folder"), "Hopper-v5", "d4rl:hopper"), "not a Minari dataset"),
        ((str(tmp_path / "ok.hdf5"), None, "d4rl:hopper"), "give --env"),
        ((str(tmp_path / "ok.hdf5"), "Hopper-v5", None), "give --ref"),
        ((str(tmp_path / "ok.hdf5"), "Unicorn-v0", "d4rl:hopper"), "no such Gymnasium environment"),
    ]
    for args, message in cases:
        with pytest.raises(OffbenchError, match=message):
            UserFile.check(*args)


def test_damaged_files_are_one_line(tmp_path):
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    (tmp_path / "garbage.hdf5").write_bytes(b"not hdf5")
    np.savez(tmp_path / "partial.npz", observations=np.zeros((5, 11), np.float32))
    rows = hopper_rows(steps=60)
    rows["rewards"] = rows["rewards"][:-3]
    np.savez(tmp_path / "short.npz", **rows)
    np.savez(tmp_path / "whole.npz", **hopper_rows(steps=60))
    whole = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(whole[: len(whole) // 2])  # a zip's magic, then cut: zipfile.BadZipFile
    flipped = bytearray(whole)
    flipped[200] ^= 0xFF  # inside the first member's data: its CRC no longer matches
    (tmp_path / "bad-crc.npz").write_bytes(bytes(flipped))
    for name, message in [("garbage.npz", "cannot read"), ("garbage.hdf5", "cannot read"), ("partial.npz", "lacks the array 'actions'"),
                          ("short.npz", r"field 'rewards' has shape \(57,\)"), ("truncated.npz", "cannot read"), ("bad-crc.npz", "cannot read .*CRC")]:
        with pytest.raises(OffbenchError, match=message):
            load(tmp_path / name)


def test_paths_are_told_from_ids_and_aliases(tmp_path):
    assert is_user_path("./x.hdf5") and is_user_path("data/x.npz") and is_user_path(str(tmp_path))
    assert not is_user_path("hopper-medium") and not is_user_path("local/hopper-medium-v5")


def test_cli_trains_on_a_file_and_records_it_honestly(tmp_path):
    path = write_hdf5(tmp_path / "mine.hdf5", hopper_rows(steps=300))
    results = tmp_path / "results"
    done = run_cli("run", "--algo", "td3bc", "--dataset", "mine.hdf5", "--env", "Hopper-v5", "--ref", "d4rl:hopper",
                   "--steps", "20", "--eval-every", "10", "--eval-episodes", "1", *FAST_SETTINGS, "--results-dir", str(results), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (results / "runs").iterdir()
    record = json.loads((run_dir / "config.json").read_text())["dataset"]
    assert record["id"].startswith("file/mine-") and record["source"] == "file" and record["requested"] == str(path.resolve())
    assert record["env_id"] == "Hopper-v5" and "--ref d4rl:hopper" in record["ref_source"]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "hopper-tiny", "--env", "Hopper-v5"], "--env apply to a dataset file given by path"),
    (["--dataset", "./absent.hdf5", "--env", "Hopper-v5", "--ref", "d4rl:hopper"], "does not exist"),
    (["--dataset", "./mine.hdf5", "--env", "Hopper-v5"], "give --ref"),
])
def test_cli_bad_file_options_are_one_line_and_write_nothing(tmp_path, args, message):
    write_hdf5(tmp_path / "mine.hdf5", hopper_rows(steps=60))
    results = tmp_path / "results"
    done = run_cli("run", "--algo", "td3bc", *args, "--steps", "10", "--results-dir", str(results), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())
