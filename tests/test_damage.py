"""Every file offbench reads, damaged: one line and exit 2, or derived data rebuilt; a store never loses its intact runs."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from analysis_fixtures import write_run
from conftest import TINY_RECIPE, run_cli

from offbench.data import minari_io, registry
from offbench.errors import OffbenchError
from offbench.store import ResultsStore

DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda content: b"\x00\xff garbage, not what was written \x89PNG" * 3,
    "truncated": lambda content: content[: len(content) // 2],
    "empty": lambda content: b"",
}
HOPPER = "local/hopper-random-v5"


def damage(path: Path, how: str) -> None:
    path.write_bytes(DAMAGES[how](path.read_bytes()))


def one_line_error(done, *phrases: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in done.stderr, done.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.fixture()
def store_with_three_seeds(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "results")
    for seed in range(3):
        write_run(store, "td3bc", HOPPER, seed, [10.0 + seed, 20.0 + seed])
    return store


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", ["config.json", "summary.json", "curve.json", "provenance.json"])
def test_a_damaged_record_is_left_out_and_named_while_the_others_are_reported(store_with_three_seeds: ResultsStore, tmp_path: Path, name, how):
    store = store_with_three_seeds
    victim = "td3bc__local_hopper-random-v5__s0__a"
    damage(store.run_dir(victim) / name, how)
    out = tmp_path / "report"
    done = run_cli("report", "--results-dir", str(store.root), "--out", str(out), "--reps", "200")
    assert done.returncode == 0, done.stderr
    report = (out / "report.md").read_text()
    caveats = report.split("## Caveats", 1)[1]
    assert f"run {victim}" in caveats and name in caveats
    scored = (out / "scores.csv").read_text()
    assert victim not in scored and scored.count("td3bc__") == 2


@pytest.mark.parametrize("how", [*DAMAGES, "deleted"])
def test_a_damaged_or_deleted_index_is_rebuilt_from_the_run_folders(store_with_three_seeds: ResultsStore, how: str):
    store = store_with_three_seeds
    if how == "deleted":
        store.index_path.unlink()
    else:
        damage(store.index_path, how)
    listing = run_cli("runs", "--results-dir", str(store.root))
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("finished") == 3


def test_a_run_with_a_damaged_config_is_listed_as_damaged_after_a_rebuild(store_with_three_seeds: ResultsStore):
    store = store_with_three_seeds
    damage(store.run_dir("td3bc__local_hopper-random-v5__s1__a") / "config.json", "garbage")
    store.index_path.unlink()
    statuses = dict(zip(*store.runs(status=None)[["run_id", "status"]].to_numpy().T))
    assert statuses["td3bc__local_hopper-random-v5__s1__a"].startswith("damaged: config.json is unreadable")
    assert sorted(store.runs()["run_id"]) == ["td3bc__local_hopper-random-v5__s0__a", "td3bc__local_hopper-random-v5__s2__a"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_checkpoint_refuses_to_resume_in_one_line(store_with_three_seeds: ResultsStore, how: str):
    path = store_with_three_seeds.checkpoint_path("somegroup")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 a torch zip once")
    damage(path, how)
    one_line_error(run_cli("run", "--resume", "somegroup", "--results-dir", str(store_with_three_seeds.root)), "somegroup")


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_leaderboard_or_protocol_file_is_one_line(store_with_three_seeds: ResultsStore, tmp_path: Path, how: str):
    board = tmp_path / "leaderboard.json"
    board.write_text('{"format": "offbench-leaderboard", "version": 3, "revision": 1, "entries": []}')
    damage(board, how)
    one_line_error(run_cli("check", "--results-dir", str(store_with_three_seeds.root), "--leaderboard", str(board)), "leaderboard")
    protocol = tmp_path / "mine.toml"
    protocol.write_text('name = "mine"\nalgos = ["td3bc"]\ndatasets = ["local/hopper-random-v5"]\n')
    damage(protocol, how)
    one_line_error(run_cli("check", "--protocol", str(protocol), "--results-dir", str(store_with_three_seeds.root)))


@pytest.fixture()
def small_local_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 400-step local dataset in its own data folder, made by the tiny recipe; returns the data folder."""
    data = tmp_path / "data"
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(data))
    registry.make_dataset("local/hopper-small-v5", recipe={**TINY_RECIPE, "steps": 400})
    return data


def cache_file(data: Path) -> Path:
    (cache,) = (data / "cache").glob("*.npz")
    return cache


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_transition_cache_is_rebuilt(small_local_dataset: Path, how: str):
    cache = cache_file(small_local_dataset)
    first = registry.load_dataset("local/hopper-small-v5", make_missing=False)
    damage(cache, how)
    again = registry.load_dataset("local/hopper-small-v5", make_missing=False)
    assert again.metadata.sha256 == first.metadata.sha256
    with np.load(cache_file(small_local_dataset)) as rebuilt:
        assert "cache_key" in rebuilt.files


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", [minari_io.OFFBENCH_METADATA, "data/metadata.json", "data/main_data.hdf5"])
def test_damaged_dataset_files_are_one_line(small_local_dataset: Path, name: str, how: str):
    for cache in (small_local_dataset / "cache").glob("*.npz"):
        cache.unlink()  # the flat cache would otherwise answer without reading the Minari file
    damage(registry.location("local/hopper-small-v5") / name, how)
    one_line_error(run_cli("data", "info", "local/hopper-small-v5"), "local/hopper-small-v5")


def write_d4rl(path: Path, observations: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f["observations"] = observations
        f["actions"] = np.zeros((len(observations), 3), np.float32)
        f["rewards"] = np.zeros(len(observations), np.float32)
        f["terminals"] = np.zeros(len(observations), bool)
        f["timeouts"] = np.r_[np.zeros(len(observations) - 1, bool), True]


@pytest.mark.parametrize("how", [*DAMAGES, "1-D observations"])
def test_damaged_d4rl_files_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str):
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "data" / "d4rl" / "hopper_medium-v2.hdf5"
    path.parent.mkdir(parents=True)
    write_d4rl(path, np.zeros(20, np.float32) if how == "1-D observations" else np.zeros((20, 11), np.float32))
    if how in DAMAGES:
        damage(path, how)
    env = {"OFFBENCH_DATA_DIR": str(tmp_path / "data")}
    done = run_cli_env(env, "data", "info", "d4rl/hopper-medium-v2")
    one_line_error(done, "d4rl/hopper-medium-v2")


def run_cli_env(env: dict[str, str], *args: str):
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return run_cli(*args)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_making_an_unknown_local_dataset_is_one_line():
    one_line_error(run_cli("data", "make", "local/foo-v5"), "no recipe for local/foo-v5")


def test_records_and_caches_follow_the_users_umask(store_with_three_seeds: ResultsStore):
    run_dir = store_with_three_seeds.run_dir("td3bc__local_hopper-random-v5__s0__a")
    mask = os.umask(0)
    os.umask(mask)
    for path in run_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_a_full_disk_stops_a_run_in_one_line_with_the_store_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from conftest import TINY_ID

    from offbench import io, train

    store = ResultsStore(tmp_path / "results")
    real_atomic_write = io.atomic_write
    writes = {"n": 0}

    def fills_up(path, write, *args, **kwargs):
        writes["n"] += 1
        if path.name == "curve.json" and writes["n"] > 8:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_atomic_write(path, write, *args, **kwargs)

    monkeypatch.setattr(io, "atomic_write", fills_up)
    plan = train.RunPlan("td3bc", TINY_ID, seeds=[0], steps=60, eval_every=10, eval_episodes=1, overrides={"hidden_dims": [8, 8]})
    with pytest.raises(OffbenchError) as stopped:
        train.run(plan, store)
    assert "No space left on device" in stopped.value.message and "stopped at step" in stopped.value.message
    assert "resume with `offbench run --resume" in stopped.value.hint
    (row,) = store.runs(status=None).itertuples()
    assert row.status.startswith("failed: at step") and "No space left on device" in row.status
    record = store.load(row.run_id)  # every file still parses: old content or new, never half
    assert record.summary is None and all(entry["step"] % 10 == 0 for entry in record.curve)


def test_a_staging_folder_left_by_a_killed_make_on_this_host_is_removed_by_the_next_one(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from offbench import io

    host, folder = socket.gethostname(), tmp_path / "pong-dqn-v5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout.strip()
    leftovers = [tmp_path / f".pong-dqn-v5.making-{host}-{dead}", tmp_path / f".pong-dqn-v5.making-{host}-1",  # killed; pid 1 runs
                 tmp_path / f".pong-dqn-v5.making-otherhost-{dead}", tmp_path / f".pong-dqn-v5-tiny.making-{host}-{dead}",
                 tmp_path / f".pong-dqn-v5.making-{dead}"]  # the name before the host was added
    for leftover in leftovers:
        (leftover / "replay_logs").mkdir(parents=True)
    staging = io.staging_folder(folder)
    assert staging.name == f".pong-dqn-v5.making-{host}-{os.getpid()}" and staging.is_dir() and not any(staging.iterdir())
    assert [p.exists() for p in leftovers] == [False, True, True, True, False]  # only this host's dead pids of this folder
    minari_staging = tmp_path / "minari" / ".making"  # minari_io's: <root>/.making/<host>-<pid>
    for name in (f"{host}-{dead}", f"{host}-1", f"otherhost-{dead}", f"{host}-other-{dead}"):  # the last: host "<host>-other"
        (minari_staging / name).mkdir(parents=True)
    io.remove_dead_staging(minari_staging, "")
    assert sorted(p.name for p in minari_staging.iterdir()) == sorted([f"{host}-1", f"otherhost-{dead}", f"{host}-other-{dead}"])


def test_a_dataset_made_again_replaces_the_old_folder_whole_even_when_killed_while_removing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil

    from offbench import io

    folder, staged = tmp_path / "pong-dqn-v5", tmp_path / ".pong-dqn-v5.making-1"
    for path, content in ((folder, "old"), (staged, "new")):
        path.mkdir()
        for name in ("sidecar.json", "replay_logs"):
            (path / name).write_text(content)
    real_rmtree = shutil.rmtree

    def killed_after_one_file(path, *args, **kwargs):
        if Path(path).exists():
            next(Path(path).iterdir()).unlink()
            raise SystemExit("killed")
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_after_one_file)
    with pytest.raises(SystemExit):
        io.replace_folder(staged, folder)
    assert sorted(p.read_text() for p in folder.iterdir()) == ["new", "new"]
    monkeypatch.undo()
    newer = tmp_path / ".pong-dqn-v5.making-2"
    newer.mkdir()
    (newer / "sidecar.json").write_text("newer")
    io.replace_folder(newer, folder)  # also removes the half-removed old folder the killed replace left aside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pong-dqn-v5"] and (folder / "sidecar.json").read_text() == "newer"
