"""Data files are untrusted input. Each reader checks every array's shape and dtype before it is used and refuses,
in one line naming the field with its shape and dtype, anything but the documented layout; a named pipe given where a
file is expected is refused, never read forever; Minari metadata is checked before `minari` reads it; and a local
dataset whose files changed since it was made is detected, for every local family.

Files are written here in each source's real layout (D4RL's HDF5, the same arrays in an .npz, OGBench's npz, Minari
through `minari` itself, Dopamine's gzipped .npy), then one field is corrupted at a time.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TINY_RECIPE, run_cli

from offbench.data import atari_recipes, d4rl, dqn_replay, minari_io, ogbench_io, registry
from offbench.data.spaces import Box, Discrete, ObservationSpace
from offbench.data.user_files import UserFile
from offbench.errors import OffbenchError

N, OBS, ACT = 20, 11, 3  # rows; Hopper's observation and action widths


@pytest.fixture(autouse=True)
def never_hangs() -> Iterator[None]:
    """A read that blocks (a named pipe opened for reading) fails the test instead of hanging the suite."""
    def expired(signum, frame):
        raise TimeoutError("a read blocked for 60 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def one_line(caught: pytest.ExceptionInfo[OffbenchError], *phrases: str) -> str:
    """The error's line, checked to be one line holding every phrase."""
    line = caught.value.line()
    assert "\n" not in line, line
    for phrase in phrases:
        assert phrase in line, (phrase, line)
    return line


# ---- D4RL's layout: d4rl/ files and a user's own .hdf5 / .npz ---------------------------------------------------


def d4rl_rows(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows in D4RL's layout (its HDF5 files' dtypes): two episodes, each ended by a time-out row; actions inside [-1, 1]."""
    rng = np.random.default_rng(seed)
    timeouts = np.zeros(n, bool)
    if n:
        timeouts[[n // 2 - 1, n - 1]] = True
    return {"observations": rng.normal(size=(n, OBS)).astype(np.float32), "actions": rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32), "terminals": np.zeros(n, bool), "timeouts": timeouts}


def with_next(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows with a stored `next_observations` (each row a transition): the next row's observation inside an episode."""
    return {**rows, "next_observations": np.roll(rows["observations"], -1, axis=0)}


def write(path: Path, rows: dict[str, np.ndarray]) -> Path:
    """`rows` as top-level HDF5 datasets (D4RL's layout) or .npz arrays, by the path's suffix."""
    if path.suffix == ".npz":
        np.savez(path, **rows)  # pickles an object array, as a careless writer would: the reader must never unpickle it
    else:
        with h5py.File(path, "w") as f:
            for key, value in rows.items():
                f.create_dataset(key, data=value)
    return path


def load(reader: str, path: Path, env: str = "Hopper-v5"):
    """Load `path` as d4rl/hopper-medium-v2 (`reader` "d4rl") or as a user's file."""
    if reader == "d4rl":
        return d4rl.load_d4rl_file(path, "hopper-medium-v2")
    return UserFile.check(str(path), env, "d4rl:hopper").load()


def bad_values(field: str, value: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, corrupted value) of a field: the wrong shapes and dtypes a file may hold."""
    per_row = value.ndim == 1
    cases = [
        ("two columns" if per_row else "a third axis", np.stack([value, value], axis=-1)),
        ("a row more", np.concatenate([value, value[:1]])),
        ("a row less", value[:-1]),
        ("a scalar", np.asarray(value.flat[0])),
        ("object dtype", value.astype(object)),
        ("complex dtype", value.astype(np.complex64)),
        ("strings", value.astype("S8")),
    ]
    if not per_row:
        cases.append(("one column", value[:, 0]))
    return cases


LAYOUT_CASES = [(field, label) for field in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
                for label, _ in bad_values(field, with_next(d4rl_rows())[field])]


@pytest.mark.parametrize("reader", ["d4rl", "hdf5", "npz"])
@pytest.mark.parametrize("field, label", LAYOUT_CASES)
def test_a_field_not_in_d4rls_layout_is_one_line_naming_it(tmp_path: Path, reader: str, field: str, label: str) -> None:
    if reader == "d4rl" and field == "next_observations":
        pytest.skip("D4RL's files have no next_observations")
    if reader != "npz" and label == "object dtype":
        pytest.skip("HDF5 has no Python objects (h5py refuses to write them)")
    rows = with_next(d4rl_rows()) if field == "next_observations" else d4rl_rows()
    value = dict(bad_values(field, rows[field]))[label]
    path = write(tmp_path / ("hopper_medium-v2.npz" if reader == "npz" else "hopper_medium-v2.hdf5"), {**rows, field: value})
    with pytest.raises(OffbenchError) as caught:
        load(reader, path)
    one_line(caught, f"field '{field}' has shape {value.shape} and dtype {value.dtype}")


@pytest.mark.parametrize("reader", ["d4rl", "npz"])
def test_rows_and_flags_in_a_single_column_are_d4rls_own_alternative(tmp_path: Path, reader: str) -> None:
    """D4RL's get_dataset takes rewards and terminals of shape (N, 1); so does offbench (timeouts too), and 0/1 numbers as flags."""
    rows = d4rl_rows()
    suffix = ".npz" if reader == "npz" else ".hdf5"
    columns = {**rows, **{key: rows[key][:, None] for key in ("rewards", "terminals", "timeouts")}}
    numbers = {**rows, "terminals": rows["terminals"].astype(np.float32), "timeouts": rows["timeouts"].astype(np.uint8)}
    plain = load(reader, write(tmp_path / f"plain{suffix}", rows))
    for name, variant in (("columns", columns), ("numbers", numbers)):
        assert load(reader, write(tmp_path / f"{name}{suffix}", variant)).metadata.sha256 == plain.metadata.sha256


@pytest.mark.parametrize("field, dtype, value, shown", [("terminals", np.float32, 0.5, "0.5"), ("timeouts", np.uint8, 2, "2"),
                                                       ("terminals", np.float64, np.nan, "nan")])
def test_a_flag_that_is_not_0_or_1_is_refused_at_its_row(tmp_path: Path, field: str, dtype: type, value: float, shown: str) -> None:
    rows = d4rl_rows()
    flags = rows[field].astype(dtype)
    flags[3] = value
    with pytest.raises(OffbenchError) as caught:
        load("npz", write(tmp_path / "flags.npz", {**rows, field: flags}))
    one_line(caught, f"field '{field}' at index 3 holds {shown}, expected bool or 0/1")


@pytest.mark.parametrize("reader", ["d4rl", "hdf5", "npz"])
@pytest.mark.parametrize("rows, stored_next, message", [
    (0, False, "has shape (0, 11): no rows"),
    (1, False, "has shape (1, 11): one row, and s' of a row is the next row"),
    (0, True, "has shape (0, 11): no rows"),
])
def test_a_file_of_zero_or_one_row_is_one_line(tmp_path: Path, reader: str, rows: int, stored_next: bool, message: str) -> None:
    if reader == "d4rl" and stored_next:
        pytest.skip("D4RL's files have no next_observations")
    data = with_next(d4rl_rows(rows)) if stored_next else d4rl_rows(rows)
    path = write(tmp_path / ("few.npz" if reader == "npz" else "few.hdf5"), data)
    with pytest.raises(OffbenchError) as caught:
        load(reader, path)
    one_line(caught, f"field 'observations' {message}")


@pytest.mark.parametrize("suffix", [".npz", ".hdf5"])
def test_one_row_with_its_next_observation_is_one_transition(tmp_path: Path, suffix: str) -> None:
    dataset = load(suffix.strip("."), write(tmp_path / f"one{suffix}", with_next(d4rl_rows(1))))
    assert len(dataset) == 1 and dataset.num_episodes == 1 and dataset.timeouts.tolist() == [True]


def test_an_hdf5_group_or_an_npz_member_that_is_no_array_is_one_line(tmp_path: Path) -> None:
    rows = d4rl_rows()
    path = write(tmp_path / "hopper_medium-v2.hdf5", {k: v for k, v in rows.items() if k != "rewards"})
    with h5py.File(path, "r+") as f:
        f.create_group("rewards").create_dataset("values", data=rows["rewards"])
    with pytest.raises(OffbenchError) as caught:
        load("d4rl", path)
    one_line(caught, "field 'rewards'", "is an HDF5 group, not an array")
    npz = write(tmp_path / "raw.npz", {k: v for k, v in rows.items() if k != "rewards"})
    with zipfile.ZipFile(npz, "a") as archive:
        archive.writestr("rewards.npy", b"these bytes are not an .npy array")
    with pytest.raises(OffbenchError) as caught:
        load("npz", npz)
    one_line(caught, "field 'rewards' is not an .npy array")


def test_a_user_file_for_a_discrete_env_holds_one_integer_action_per_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = {**d4rl_rows(), "observations": rng.normal(size=(N, 4)).astype(np.float32), "actions": rng.integers(2, size=N)}
    dataset = load("npz", write(tmp_path / "cartpole.npz", rows), env="CartPole-v1")
    assert dataset.metadata.action_space == Discrete(2) and dataset.actions.dtype == np.int64
    with pytest.raises(OffbenchError) as caught:
        load("npz", write(tmp_path / "columns.npz", {**rows, "actions": rows["actions"][:, None]}), env="CartPole-v1")
    one_line(caught, f"field 'actions' has shape ({N}, 1) and dtype int64, expected ({N},) of real numbers")


def test_cli_refuses_two_reward_columns_in_one_line(tmp_path: Path) -> None:
    rows = d4rl_rows(200)
    write(tmp_path / "columns.npz", {**rows, "rewards": np.stack([rows["rewards"]] * 2, axis=1)})
    done = run_cli("run", "--algo", "bc", "--dataset", "./columns.npz", "--env", "Hopper-v5", "--ref", "d4rl:hopper", "--steps", "10",
                   "--results-dir", str(tmp_path / "results"), cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "field 'rewards' has shape (200, 2) and dtype float32" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ---- OGBench's npz files ---------------------------------------------------------------------------------------


def ogbench_rows(n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """A pointmaze file's rows in OGBench's layout: three recorded episodes, the last row of each terminal."""
    rng = np.random.default_rng(seed)
    qpos = rng.uniform(-2, 2, (n, 2)).astype(np.float32)
    terminals = np.zeros(n, bool)
    terminals[[3, 6, n - 1]] = True
    return {"observations": qpos.copy(), "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32), "terminals": terminals, "qpos": qpos,
            "qvel": rng.normal(size=(n, 2)).astype(np.float32)}


OGBENCH_CASES = [(field, label) for field in ("observations", "actions", "terminals", "qpos", "qvel")
                 for label, _ in bad_values(field, ogbench_rows()[field]) if (field, label) != ("actions", "one column")]


@pytest.mark.parametrize("field, label", OGBENCH_CASES)
def test_a_field_not_in_ogbenchs_layout_is_one_line_naming_it(tmp_path: Path, field: str, label: str) -> None:
    rows = ogbench_rows()
    value = dict(bad_values(field, rows[field]))[label]
    np.savez(tmp_path / "pointmaze-medium-navigate-v0.npz", **{**rows, field: value})
    with pytest.raises(OffbenchError) as caught:
        ogbench_io.read_npz(tmp_path / "pointmaze-medium-navigate-v0.npz", "ogbench/pointmaze-medium-navigate-singletask-v0")
    one_line(caught, f"field '{field}' has shape {value.shape} and dtype {value.dtype}")


@pytest.mark.parametrize("change, message", [
    (lambda rows: {**rows, "button_states": np.zeros((12, 2), np.float32)},
     "field 'button_states' has shape (12, 2) and dtype float32, expected (12, buttons) of integers"),
    (lambda rows: {**rows, "terminals": np.where(rows["terminals"], 1.0, 0.3)}, "field 'terminals' at index 0 holds 0.3"),
    (lambda rows: {key: value[:0] for key, value in rows.items()}, "field 'observations' has shape (0, 2): the file holds no rows"),
])
def test_ogbench_extras_flags_and_an_empty_file_are_one_line(tmp_path: Path, change: Callable, message: str) -> None:
    np.savez(tmp_path / "f.npz", **change(ogbench_rows()))
    with pytest.raises(OffbenchError) as caught:
        ogbench_io.read_npz(tmp_path / "f.npz", "ogbench/x-v0")
    one_line(caught, message)


def test_an_ogbench_state_of_another_width_than_the_envs_is_refused_before_relabelling(tmp_path: Path) -> None:
    pytest.importorskip("ogbench")
    rows = ogbench_rows()
    path = tmp_path / "pointmaze-medium-navigate-v0.npz"
    np.savez(path, **{**rows, "qpos": np.concatenate([rows["qpos"], rows["qpos"][:, :1]], axis=1)})  # rewards read columns 0:2
    with pytest.raises(OffbenchError) as caught:
        ogbench_io.load_ogbench(path, "ogbench/pointmaze-medium-navigate-singletask-v0", "pointmaze-medium-navigate-singletask-v0")
    one_line(caught, "field 'qpos' has shape (12, 3) and dtype float32, expected (12, 2)")


# ---- Minari: episodes and metadata -------------------------------------------------------------------------------


def minari_episode(length: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"observations": rng.normal(size=(length + 1, OBS)).astype(np.float32), "actions": rng.uniform(-1, 1, (length, ACT)).astype(np.float32),
            "rewards": rng.normal(size=length), "terminations": np.zeros(length, bool), "truncations": np.r_[np.zeros(length - 1, bool), True]}


MINARI_SPACES = (ObservationSpace((OBS,)), Box((-1.0,) * ACT, (1.0,) * ACT))
MINARI_CASES = [(field, label) for field in ("observations", "actions", "rewards", "terminations", "truncations")
                for label, _ in bad_values(field, minari_episode()[field])]


@pytest.mark.parametrize("field, label", MINARI_CASES)
def test_a_minari_episode_field_not_in_the_layout_is_one_line_naming_it(field: str, label: str) -> None:
    episode = minari_episode()
    value = dict(bad_values(field, episode[field]))[label]
    with pytest.raises(OffbenchError) as caught:
        minari_io.episodes_to_transitions([minari_episode(seed=1), {**episode, field: value}], "minari/test/hopper/bad-v0", MINARI_SPACES)
    one_line(caught, "episode 1: ", f"field '{field}' has shape {value.shape} and dtype {value.dtype}")


@pytest.fixture()
def minari_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Minari dataset in Minari's own layout (written by `minari`), where `minari/test/hopper/tiny-v0` is looked for."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    return minari_io.write_minari(tmp_path / "minari", "test/hopper/tiny-v0", [minari_episode(), minari_episode(4, 1)], "Hopper-v5",
                                  0.0, 100.0, "a test", {})


def rewrite_metadata(path: Path, change: Callable[[dict], object]) -> None:
    file = path / "data" / "metadata.json"
    file.write_text(json.dumps(change(json.loads(file.read_text()))))


@pytest.mark.parametrize("change, message", [
    (lambda meta: {}, "lacks the key 'data_format'"),
    (lambda meta: [], "holds a JSON list, expected an object"),
    (lambda meta: "metadata", "holds a JSON str, expected an object"),
    (lambda meta: {k: v for k, v in meta.items() if k != "total_steps"}, "lacks the key 'total_steps'"),
    (lambda meta: {k: v for k, v in meta.items() if k != "observation_space"}, "lacks the key 'observation_space'"),
    (lambda meta: {**meta, "total_steps": "10"}, "key 'total_steps' of"),
    (lambda meta: {**meta, "total_episodes": True}, "key 'total_episodes' of"),
    (lambda meta: {**meta, "total_episodes": -1}, "counts are never negative"),
    (lambda meta: {**meta, "action_space": 3}, "key 'action_space' of"),
    (lambda meta: {**meta, "env_spec": {"id": "Hopper-v5"}}, "key 'env_spec' of"),
    (lambda meta: {**meta, "ref_max_score": "high"}, "key 'ref_max_score' of"),
    (lambda meta: {**meta, "observation_space": "not a space"}, "cannot read the Minari files"),
    (lambda meta: {**meta, "observation_space": json.dumps({"type": "Tuple"})}, "cannot read the Minari files"),
    (lambda meta: {**meta, "env_spec": "{}"}, "cannot read the Minari files"),
    (lambda meta: {**meta, "data_format": "parquet"}, "names the data format 'parquet'"),
    (lambda meta: {**meta, "total_episodes": 5}, "cannot read the Minari episodes"),
])
def test_minari_metadata_that_is_not_the_expected_object_is_one_line(minari_dataset: Path, change: Callable, message: str) -> None:
    rewrite_metadata(minari_dataset, change)
    with pytest.raises(OffbenchError) as caught:
        minari_io.load_minari(minari_dataset, "minari/test/hopper/tiny-v0")
    one_line(caught, "dataset minari/test/hopper/tiny-v0: ", message)


def test_unreadable_minari_metadata_is_one_line_from_the_cli_and_as_a_users_folder(minari_dataset: Path) -> None:
    rewrite_metadata(minari_dataset, lambda meta: [])
    done = run_cli("data", "info", "minari/test/hopper/tiny-v0", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "holds a JSON list, expected an object" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    (minari_dataset / "data" / "metadata.json").write_text("{")
    with pytest.raises(OffbenchError) as caught:
        UserFile.check(str(minari_dataset), "Hopper-v5", "d4rl:hopper")
    one_line(caught, "metadata.json is not readable JSON")


def test_a_flat_cache_of_another_layout_is_rebuilt(minari_dataset: Path, tmp_path: Path) -> None:
    first = minari_io.load_minari(minari_dataset, "minari/test/hopper/tiny-v0")
    (cache,) = (tmp_path / "data" / "cache").glob("*.npz")
    with np.load(cache) as stored:
        arrays = dict(stored)
    np.savez(cache, **{**arrays, "rewards": np.stack([arrays["rewards"]] * 2, axis=1)})  # current key, wrong layout
    assert minari_io.load_minari(minari_dataset, "minari/test/hopper/tiny-v0").metadata.sha256 == first.metadata.sha256


# ---- named pipes where a file is expected --------------------------------------------------------------------------


def test_a_named_pipe_given_as_a_dataset_is_refused_by_the_cli(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.npz")
    done = run_cli("run", "--algo", "bc", "--dataset", "./fifo.npz", "--env", "Hopper-v5", "--ref", "d4rl:hopper", "--steps", "10",
                   "--results-dir", str(tmp_path / "results"), cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "is a named pipe, not a regular file" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["data/metadata.json", "data/main_data.hdf5", minari_io.OFFBENCH_METADATA])
def test_a_named_pipe_inside_a_minari_folder_is_refused(minari_dataset: Path, name: str) -> None:
    (minari_dataset / name).unlink(missing_ok=True)
    os.mkfifo(minari_dataset / name)
    with pytest.raises(OffbenchError) as caught:
        minari_io.load_minari(minari_dataset, "minari/test/hopper/tiny-v0")
    one_line(caught, f"{name.split('/')[-1]} is a named pipe, not a regular file")


@pytest.mark.parametrize("reader", ["d4rl", "ogbench", "dqn-replay", "user hdf5"])
def test_a_named_pipe_where_a_data_file_is_expected_is_refused(tmp_path: Path, reader: str) -> None:
    fifo = tmp_path / "data.hdf5"
    os.mkfifo(fifo)
    read = {"d4rl": lambda: d4rl.load_d4rl_file(fifo, "hopper-medium-v2"),
            "ogbench": lambda: ogbench_io.read_npz(fifo, "ogbench/x-v0"),
            "dqn-replay": lambda: dqn_replay.read_header(fifo),
            "user hdf5": lambda: load("hdf5", fifo)}[reader]
    with pytest.raises(OffbenchError) as caught:
        read()
    one_line(caught, "data.hdf5 is a named pipe, not a regular file")


# ---- local datasets changed since they were made --------------------------------------------------------------------


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def changed(dataset_id: str, caught: pytest.ExceptionInfo[OffbenchError]) -> None:
    one_line(caught, f"dataset {dataset_id}: content hash", "differs from the recorded", "changed since they were made", "--force")


@pytest.mark.parametrize("dataset_id, recipe, field", [
    ("local/hopper-changed-v5", {**TINY_RECIPE, "steps": 300}, "rewards"),
    ("local/cartpole-changed-v1", {"env_id": "CartPole-v1", "recipe": "random", "steps": 300, "seed": 0, "num_envs": 2, "max_episode_steps": 100,
                                   "reference": "classic:cartpole"}, "actions"),
])
def test_a_changed_minari_format_recording_is_detected(data_dir: Path, dataset_id: str, recipe: dict, field: str) -> None:
    made = registry.make_dataset(dataset_id, recipe=recipe)
    assert registry.load_dataset(dataset_id, make_missing=False).metadata.sha256 == made.metadata.sha256
    with h5py.File(registry.location(dataset_id) / "data" / "main_data.hdf5", "r+") as f:
        values = f[f"episode_0/{field}"]
        values[0] = 1 - values[0] if field == "actions" else values[0] + 1.0
    with pytest.raises(OffbenchError) as caught:
        registry.load_dataset(dataset_id, make_missing=False)
    changed(dataset_id, caught)


def test_a_changed_ogbench_recording_is_detected_in_either_file(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ogbench")
    recording = "local/ogbench-pointmaze-medium-navigate-v0"
    monkeypatch.setattr(registry, "catalogue", lambda: {recording: {
        "recipe": "ogbench-pointmaze-navigate", "ogbench_env": "pointmaze-medium-v0", "episodes": 10, "episode_steps": 20, "noise": 0.5, "seed": 3}})
    task = "local/ogbench-pointmaze-medium-navigate-singletask-task2-v0"
    registry.load_dataset(task)  # made on first use
    assert len(registry.load_validation(task)) > 0
    val = data_dir / "local" / "ogbench-pointmaze-medium-navigate-v0" / "pointmaze-medium-navigate-v0-val.npz"
    with np.load(val) as stored:
        rows = dict(stored)
    rows["actions"][0, 0] = -rows["actions"][0, 0]
    np.savez_compressed(val, **rows)
    for load_it in (lambda: registry.load_dataset(task, make_missing=False), lambda: registry.load_validation(task)):
        with pytest.raises(OffbenchError) as caught:
            load_it()
        changed(task, caught)
    (val.parent / "offbench.json").write_text("{ not json")
    with pytest.raises(OffbenchError) as caught:
        registry.load_dataset(task, make_missing=False)
    one_line(caught, "offbench.json is damaged (not a JSON object)")


def save_gz(path: Path, array: np.ndarray) -> None:
    with gzip.open(path, "wb") as stream:
        np.save(stream, array, allow_pickle=False)


def test_a_changed_atari_recording_is_detected(data_dir: Path) -> None:
    """A local Atari recording in the Dopamine layout, written here (3 zero rows, a 9-step game, 3 zero rows, 6 steps cut)."""
    pytest.importorskip("ale_py")
    game = [(1 + t % 5, float(t % 2), t == 8) for t in range(9)]  # (action, reward, terminal)
    table = [None] * 3 + game + [None] * 3 + game[:6]  # None: Dopamine's zero padding row
    rows = {"observation": np.stack([np.full((84, 84), 0 if row is None else 1 + index, np.uint8) for index, row in enumerate(table)]),
            **{field: np.array([0 if row is None else row[column] for row in table], dtype)
               for column, (field, dtype) in enumerate((("action", np.int32), ("reward", np.float32), ("terminal", np.uint8)))}}
    folder = data_dir / "local" / "pong-changed-v5"
    sidecar = {"env_id": "ALE/Pong-v5", "recipe": "atari-random", "recipe_config": {"game": "pong"}}
    atari_recipes.write_recording(folder, rows, sidecar)
    made = atari_recipes.load_local("local/pong-changed-v5", folder / "replay_logs")
    (folder / atari_recipes.SIDECAR).write_text(json.dumps({**sidecar, "sha256": made.metadata.sha256}))
    assert registry.load_dataset("local/pong-changed-v5", make_missing=False).metadata.sha256 == made.metadata.sha256
    rewards = rows["reward"].copy()
    rewards[5] += 1.0
    save_gz(folder / "replay_logs" / "$store$_reward_ckpt.0.gz", rewards)
    with pytest.raises(OffbenchError) as caught:
        registry.load_dataset("local/pong-changed-v5", make_missing=False)
    changed("local/pong-changed-v5", caught)
    (folder / atari_recipes.SIDECAR).write_text(json.dumps({**sidecar, "recipe_config": []}))
    with pytest.raises(OffbenchError) as caught:
        registry.load_dataset("local/pong-changed-v5", make_missing=False)
    one_line(caught, "key 'recipe_config' of", "expected dict")
