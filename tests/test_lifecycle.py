"""Run lifecycle: killed and interrupted runs say so with the right advice; runs rm/prune/reindex; a dataset
being made is not present until it is complete."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from analysis_fixtures import write_run
from conftest import FAST_SETTINGS, TINY_ID, TINY_RECIPE, run_cli

from offbench.data import minari_io, registry
from offbench.store import STALE_AFTER_S, ResultsStore


def start_cli_run(results: Path, steps: int = 100_000, eval_every: int = 50, ignored: tuple[int, ...] = ()) -> subprocess.Popen:
    """`offbench run` in a child process whose signals are at their defaults, but for the `ignored` ones (as `nohup`
    leaves SIGHUP); a test suite started in the background would otherwise hand its children an ignored SIGINT."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["run", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", str(steps), "--eval-every", str(eval_every),
            "--eval-episodes", "1", *FAST_SETTINGS, "--results-dir", str(results)]

    def signals_as_asked() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "offbench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=signals_as_asked)


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def checkpoint_written(results: Path) -> bool:
    return any((results / "checkpoints").glob("*.pt"))


def only_status(results: Path) -> str:
    (row,) = ResultsStore(results).runs(status=None).itertuples()
    return row.status


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_a_run_with_its_group_and_how_to_resume(tmp_path: Path, signum: int) -> None:
    results = tmp_path / "results"
    process = start_cli_run(results)
    wait_for(lambda: checkpoint_written(results))
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    group = ResultsStore(results).runs(status=None)["group_id"].iloc[0]
    assert last.startswith("interrupted at step") and signal.Signals(signum).name in last
    assert f"group {group}" in last and f"resume with `offbench run --resume {group}`" in last
    assert only_status(results).startswith("interrupted: at step")


def test_under_nohup_a_hang_up_does_not_stop_a_run(tmp_path: Path) -> None:
    results = tmp_path / "results"
    process = start_cli_run(results, ignored=(signal.SIGHUP,))
    wait_for(lambda: checkpoint_written(results))
    process.send_signal(signal.SIGHUP)
    time.sleep(2.0)
    assert process.poll() is None and only_status(results) == "running"  # still training
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "SIGTERM" in stderr.strip().splitlines()[-1]


def test_a_killed_run_is_shown_interrupted_and_resumes(tmp_path: Path) -> None:
    results = tmp_path / "results"
    process = start_cli_run(results, steps=400, eval_every=50)
    wait_for(lambda: checkpoint_written(results))
    process.kill()
    process.wait()
    group = ResultsStore(results).runs(status=None)["group_id"].iloc[0]
    assert only_status(results) == f"interrupted: its process {process.pid} is gone; resume with `offbench run --resume {group}`"
    listing = run_cli("runs", "--all", "--results-dir", str(results))
    assert "interrupted" in listing.stdout
    resumed = run_cli("run", "--resume", group, "--results-dir", str(results))
    assert resumed.returncode == 0, resumed.stderr
    assert only_status(results) == "finished"


def test_a_run_killed_before_its_first_checkpoint_says_start_again(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    write_run(store, "td3bc", TINY_ID, 0, [1.0, 2.0])
    run_id = store.runs()["run_id"].iloc[0]
    config = store.load(run_id).config
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.remove([run_id])
    store.start_run(run_id, config, {"hostname": os.uname().nodename, "pid": dead.pid})
    assert only_status(store.root) == f"interrupted: its process {dead.pid} is gone; no checkpoint: start again"


def test_a_silent_run_on_another_host_is_stale_after_the_heartbeat_limit(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    write_run(store, "td3bc", TINY_ID, 0, [1.0, 2.0])
    run_id = store.runs()["run_id"].iloc[0]
    config = store.load(run_id).config
    store.remove([run_id])
    store.start_run(run_id, config, {"hostname": "elsewhere", "pid": 1, "heartbeat_at": time.time() - 60})
    assert only_status(store.root) == "running"
    store.start_run(run_id, config, {"hostname": "elsewhere", "pid": 1, "heartbeat_at": time.time() - STALE_AFTER_S - 120})
    assert only_status(store.root).startswith("interrupted: no heartbeat for 12 min (process 1 on elsewhere)")


def test_prune_lists_then_removes_only_runs_without_a_result(tmp_path: Path) -> None:
    results = tmp_path / "results"
    store = ResultsStore(results)
    write_run(store, "td3bc", TINY_ID, 0, [1.0, 2.0])
    write_run(store, "td3bc", TINY_ID, 1, [1.0, 2.0], tag="broken")
    broken = "td3bc__local_hopper-tiny-v5__s1__broken"
    store.mark_interrupted(broken, "at step 3 (SIGINT); no checkpoint: start again")
    store.checkpoint_path("td3bc__local_hopper-tiny-v5__broken").parent.mkdir(parents=True)
    store.checkpoint_path("td3bc__local_hopper-tiny-v5__broken").write_bytes(b"x")
    listed = run_cli("runs", "prune", "--results-dir", str(results))
    assert listed.returncode == 0 and broken in listed.stdout and "--yes" in listed.stdout
    assert store.run_dir(broken).exists()
    removed = run_cli("runs", "prune", "--yes", "--results-dir", str(results))
    assert removed.returncode == 0, removed.stderr
    assert not store.run_dir(broken).exists() and not store.checkpoint_path("td3bc__local_hopper-tiny-v5__broken").exists()
    assert list(store.runs(status=None)["run_id"]) == ["td3bc__local_hopper-tiny-v5__s0__a"]


def test_rm_removes_a_group_refuses_a_live_run_and_unknown_ids(tmp_path: Path) -> None:
    results = tmp_path / "results"
    store = ResultsStore(results)
    for seed in (0, 1):
        write_run(store, "td3bc", TINY_ID, seed, [1.0, 2.0])
    unknown = run_cli("runs", "rm", "nope", "--results-dir", str(results))
    assert unknown.returncode == 2 and "no run or group nope" in unknown.stderr
    config = dataclasses.replace(store.load("td3bc__local_hopper-tiny-v5__s1__a").config, run_id="live", group_id="live-group")
    store.start_run("live", config, {"hostname": os.uname().nodename, "pid": os.getpid()})
    refused = run_cli("runs", "rm", "live", "--results-dir", str(results))
    assert refused.returncode == 2 and "still running" in refused.stderr
    done = run_cli("runs", "rm", "td3bc__local_hopper-tiny-v5__a", "--results-dir", str(results))
    assert done.returncode == 0 and "removed 2 runs" in done.stdout
    assert list(store.runs(status=None)["run_id"]) == ["live"]


def test_reindex_command_rebuilds_a_deleted_index(tmp_path: Path) -> None:
    results = tmp_path / "results"
    store = ResultsStore(results)
    write_run(store, "td3bc", TINY_ID, 0, [1.0, 2.0])
    store.index_path.unlink()
    done = run_cli("runs", "reindex", "--results-dir", str(results))
    assert done.returncode == 0 and "indexed 1 runs" in done.stdout
    assert list(store.runs()["run_id"]) == ["td3bc__local_hopper-tiny-v5__s0__a"]


def test_a_dataset_killed_while_being_made_is_not_present_and_is_remade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    recipe = {**TINY_RECIPE, "steps": 400}
    real_writer = minari_io._write_minari_files

    def killed_after_writing(*args, **kwargs):
        real_writer(*args, **kwargs)
        raise KeyboardInterrupt  # the files are written, the rename has not happened

    monkeypatch.setattr(minari_io, "_write_minari_files", killed_after_writing)
    with pytest.raises(KeyboardInterrupt):
        registry.make_dataset("local/hopper-killed-v5", recipe=recipe)
    assert not registry.SOURCES["local"].is_present(registry.location("local/hopper-killed-v5"))
    monkeypatch.setattr(minari_io, "_write_minari_files", real_writer)
    made = registry.make_dataset("local/hopper-killed-v5", recipe=recipe)
    assert registry.SOURCES["local"].is_present(registry.location("local/hopper-killed-v5"))
    assert not any((tmp_path / "data" / minari_io.STAGING).glob("*"))
    again = registry.make_dataset("local/hopper-killed-v5", recipe=recipe, overwrite=True)
    assert again.metadata.sha256 == made.metadata.sha256
    assert json.loads((registry.location("local/hopper-killed-v5") / minari_io.OFFBENCH_METADATA).read_text())["sha256"] == made.metadata.sha256
    np.testing.assert_array_equal(again.rewards, made.rewards)
