"""Sweeps and executors (offbench.execution): real worker processes, real kills, a real local Ray instance."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_ID, run_cli

from offbench.errors import OffbenchError
from offbench.execution import LocalExecutor, grid, jobs_of, run_sweep
from offbench.execution.driver import prepare_datasets
from offbench.execution.sweep import PROGRESS_DIR, Job, JobResult, run_job
from offbench.store import ResultsStore

FAST = {"hidden_dims": [32, 32], "batch_size": 32}
FAST_FLAGS = ["--set", "hidden_dims=[32, 32]", "--set", "batch_size=32"]


def _finished(root: Path) -> dict[tuple[str, int], list[dict]]:
    """{(algo, seed): [summary, ...]} over every run folder with a summary: exactly-once means one each."""
    found: dict[tuple[str, int], list[dict]] = {}
    for summary in sorted((root / "runs").glob("*/summary.json")):
        config = json.loads((summary.parent / "config.json").read_text())
        found.setdefault((config["algo"], config["seed"]), []).append(json.loads(summary.read_text()) | {"run_id": summary.parent.name})
    return found


def _sweep_args(root: Path, *extra: str) -> list[str]:
    return ["sweep", "--datasets", TINY_ID, "--eval-episodes", "2", "--workers", "2", "--results-dir", str(root), *FAST_FLAGS, *extra]


def test_local_sweep_two_workers_bad_dataset_fails_alone_and_rerun_skips(tmp_path: Path) -> None:
    root = tmp_path / "results"
    args = _sweep_args(root, "--algos", "td3bc,bc", "--seeds", "2", "--steps", "60", "--eval-every", "30")
    args[2] = f"{TINY_ID},local/no-such-data-v5"
    first = run_cli(*args)
    assert first.returncode == 1, first.stderr
    assert "failed td3bc local/no-such-data-v5" in first.stdout and "failed bc local/no-such-data-v5" in first.stdout
    assert "Traceback" not in first.stdout + first.stderr
    found = _finished(root)
    assert sorted(found) == [("bc", 0), ("bc", 1), ("td3bc", 0), ("td3bc", 1)] and all(len(v) == 1 for v in found.values())
    index = ResultsStore(root).runs("finished")
    assert len(index) == 4
    again = run_cli(*args)
    assert again.returncode == 1 and "0 jobs trained, 2 already done, 2 failed" in again.stdout
    assert _finished(root) == found  # nothing re-trained, nothing written twice


def test_protocol_overrides_and_dry_run(tmp_path: Path) -> None:
    from offbench.analysis.leaderboard import load_protocol

    paper = load_protocol("d4rl-locomotion")
    assert paper.seeds == 10 and len(paper.datasets) == 9
    budget, _ = paper.cell("driftql", "d4rl/hopper-medium-v2")
    assert budget["steps"] == 500_000
    assert paper.cell("td3bc", "d4rl/hopper-medium-v2")[0]["steps"] == 1_000_000
    assert paper.cell("neubay", "d4rl/walker2d-medium-expert-v2")[0] == {"steps": 2_000_000, "eval_every": 20_000, "eval_episodes": 20}
    dry = run_cli("sweep", "d4rl-locomotion", "--dry-run", "--results-dir", str(tmp_path))
    assert dry.returncode == 0, dry.stderr
    assert f"{len(paper.algos) * 9} jobs" in dry.stdout and "device-hours" in dry.stdout
    protocol = tmp_path / "mini.toml"
    protocol.write_text(f'algos = ["td3bc", "bc"]\ndatasets = ["{TINY_ID}"]\nseeds = 2\nsteps = 100\neval_every = 50\neval_episodes = 2\n'
                        '[[overrides]]\nalgos = ["bc"]\nsteps = 40\nset = {batch_size = 16}\n')
    cells = grid(["td3bc", "bc"], [TINY_ID], {"steps": None, "eval_every": None, "eval_episodes": None}, {}, load_protocol(protocol))
    assert [(c.algo, c.budget["steps"], c.overrides) for c in cells] == [("td3bc", 100, {}), ("bc", 40, {"batch_size": 16})]
    jobs = jobs_of(cells, range(4), workers=4)
    assert [j.seeds for j in jobs] == [(0, 1), (2, 3), (0, 1), (2, 3)]  # 2 cells, 4 workers: each cell cut in two groups
    assert len({j.group_id for j in jobs}) == 4 and jobs_of(cells, range(4), workers=4)[0].group_id == jobs[0].group_id


def test_ray_sweep_matches_local_bit_for_bit(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from offbench.execution import RayExecutor

    cells = grid(["td3bc"], [TINY_ID], {"steps": 40, "eval_every": 20, "eval_episodes": 2}, FAST)
    jobs = jobs_of(cells, range(2), group_size=1)
    local, remote = ResultsStore(tmp_path / "local"), ResultsStore(tmp_path / "ray")
    assert run_sweep(jobs, local, LocalExecutor(2), print_line=lambda _: None).ok
    lines: list[str] = []
    outcome = run_sweep(jobs, remote, RayExecutor(num_cpus=2), print_line=lines.append)
    assert outcome.ok, [r.reason for r in outcome.results]
    assert "on the ray executor, 2 workers" in lines[0]  # the cluster's CPUs, not a default of 1
    assert sorted(remote.runs("finished")["run_id"]) == sorted(local.runs("finished")["run_id"])  # the driver indexed them
    for run_id in local.runs("finished")["run_id"]:
        a, b = local.load(run_id), remote.load(run_id)
        assert [e["returns"] for e in a.curve] == [e["returns"] for e in b.curve]
        assert [e["normalized_score"] for e in a.curve] == [e["normalized_score"] for e in b.curve]
        assert (a.summary.final_score, a.summary.last_k_score) == (b.summary.final_score, b.summary.last_k_score)
        assert a.config.algo_config == b.config.algo_config


def _wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _start_sweep(root: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "offbench", *_sweep_args(root, *extra)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_driver_killed_mid_sweep_then_rerun_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "results"
    extra = ("--algos", "bc", "--seeds", "3", "--group-size", "1", "--steps", "1500", "--eval-every", "100")
    driver = _start_sweep(root, *extra)
    _wait_for(lambda: _finished(root), 240, "a finished run")
    driver.kill()
    driver.wait()
    before = _finished(root)
    # the orphaned workers stop themselves (runs marked interrupted, checkpoints kept)
    _wait_for(lambda: not (ResultsStore(root).runs(status=None)["status"] == "running").any(), 60, "orphaned workers to stop")
    again = run_cli(*_sweep_args(root, *extra))
    assert again.returncode == 0, again.stdout + again.stderr
    after = _finished(root)
    assert sorted(after) == [("bc", 0), ("bc", 1), ("bc", 2)] and all(len(v) == 1 for v in after.values())
    for key, summaries in before.items():  # finished before the kill: kept as they were, not trained again
        assert after[key][0]["finished_at"] == summaries[0]["finished_at"]
    assert len(ResultsStore(root).runs("finished")) == 3


def test_worker_killed_mid_job_then_sweep_completes_with_each_run_once(tmp_path: Path) -> None:
    root = tmp_path / "results"
    driver = _start_sweep(root, "--algos", "bc", "--seeds", "2", "--group-size", "1", "--steps", "1500", "--eval-every", "100")
    store = ResultsStore(root)

    def running_worker_with_checkpoint():
        if not store.index_path.exists():
            return None
        frame = store.runs(status=None)
        rows = frame[(frame["status"] == "running") & frame["pid"].notna()]
        rows = [r for r in rows.itertuples() if store.checkpoint_path(r.group_id).exists() and int(r.pid) != driver.pid]
        return rows[0] if rows else None

    victim = _wait_for(running_worker_with_checkpoint, 240, "a worker with a checkpoint")
    os.kill(int(victim.pid), signal.SIGKILL)
    output, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, output
    found = _finished(root)
    assert sorted(found) == [("bc", 0), ("bc", 1)] and all(len(v) == 1 for v in found.values())
    assert sorted(r.name for r in (root / "runs").iterdir()) == sorted(store.runs("finished")["run_id"])  # no stray unfinished run


def _write_runs(root: str, worker: int, count: int) -> None:
    from test_store import write_run

    for n in range(count):
        write_run(Path(root), f"w{worker}-r{n}-s0", float(n))
        ResultsStore(root).heartbeat([f"w{worker}-r{n}-s0"])


def test_index_takes_concurrent_writers_from_many_processes(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.open_index()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_runs, args=(str(tmp_path), w, 15)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    frame = store.runs("finished")
    assert len(frame) == 60 and set(frame["run_id"]) == {f"w{w}-r{n}-s0" for w in range(4) for n in range(15)}
    import sqlite3

    assert sqlite3.connect(store.index_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ray_worker_killed_mid_job_is_retried_and_resumes_with_each_run_once(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    root = tmp_path / "results"
    driver = _start_sweep(root, "--executor", "ray", "--algos", "bc", "--seeds", "2", "--group-size", "1", "--steps", "1500",
                          "--eval-every", "100")
    store = ResultsStore(root)

    def training_worker_with_checkpoint():
        for progress in (root / PROGRESS_DIR).glob("*.json"):
            try:
                state = json.loads(progress.read_text())
            except ValueError:  # being replaced
                continue
            if store.checkpoint_path(progress.stem).exists() and state.get("step", 0) < 1400:
                return state["pid"]
        return None

    victim = _wait_for(training_worker_with_checkpoint, 300, "a Ray worker with a checkpoint")
    os.kill(int(victim), signal.SIGKILL)
    output, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, output
    found = _finished(root)
    assert sorted(found) == [("bc", 0), ("bc", 1)] and all(len(v) == 1 for v in found.values())
    assert len(store.runs("finished")) == 2  # indexed by the driver once each


def test_a_group_is_trained_by_one_process_at_a_time(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    (job,) = jobs_of(grid(["bc"], [TINY_ID], {"steps": 20, "eval_every": 10, "eval_episodes": 1}, FAST), [0])
    with store.training(job.group_id):
        with pytest.raises(OffbenchError, match=f"group {job.group_id} is being trained now by pid {os.getpid()}"):
            with store.training(job.group_id):
                pass
        busy = run_job(job, str(store.root))  # a second sweep reaching the same job
        assert busy.status == "failed" and "is being trained now by pid" in busy.reason
        assert not (store.run_dir(job.run_ids[0]) / "config.json").exists()  # it wrote nothing
    assert run_job(job, str(store.root)).status == "done"  # released at the end of the body


def test_the_driver_makes_each_missing_dataset_once_before_the_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import TINY_RECIPE

    from offbench.data import registry

    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    made = "local/hopper-sweeptiny-v5"
    monkeypatch.setattr(registry, "catalogue", lambda: {made: TINY_RECIPE})
    calls: list[str] = []
    real_make = registry.make_dataset
    monkeypatch.setattr(registry, "make_dataset", lambda dataset_id, **kw: calls.append(dataset_id) or real_make(dataset_id, **kw))
    jobs = [Job("bc", made, (0,)), Job("td3bc", made, (0,)), Job("bc", "no-such-alias", (0,))]
    lines: list[str] = []
    unusable = prepare_datasets(jobs, lines.append)
    assert calls == [made] and registry.is_present(made)
    assert list(unusable) == ["no-such-alias"] and "unknown dataset 'no-such-alias'" in unusable["no-such-alias"]
    assert lines[0] == f"making {made} (once, before its jobs start)" and lines[1].startswith(f"made {made} in ")
    assert prepare_datasets(jobs[:2], lines.append) == {} and calls == [made]  # present now: not made again


class _OneRunning(LocalExecutor):
    """An executor that reports one job as running and runs nothing (for the display alone)."""

    def __init__(self, running: str) -> None:
        super().__init__(2)
        self._running = running

    @property
    def running(self) -> set[str]:
        return {self._running}


def test_live_table_shows_each_running_job_and_an_eta(tmp_path: Path) -> None:
    from rich.console import Console

    from offbench.execution.driver import _Board
    from offbench.execution.sweep import FileReporter

    store = ResultsStore(tmp_path)
    cells = grid(["bc"], [TINY_ID], {"steps": 1000, "eval_every": 100, "eval_episodes": 1}, FAST)
    first, second, third = jobs_of(cells, range(3), group_size=1)
    board = _Board([first, second, third], store, _OneRunning(second.group_id), {j.group_id: j_steps for j, j_steps in
                                                                                  ((first, 1000), (second, 1000), (third, 1000))})
    board.finish(JobResult(first.group_id, first.label(), "done", first.run_ids))
    reporter = FileReporter(tmp_path / PROGRESS_DIR / f"{second.group_id}.json")
    reporter.start(1000, 0)
    reporter.advance(400, 50.0, 12.5)  # 600 steps left in it + 1000 queued, at 50 seed-steps/s: 32 s
    console = Console(record=True, width=200)
    console.print(board.table())
    text = console.export_text()
    assert "1 queued · 1 running · 1 done · 0 failed · ETA 0:00:32 at 50 seed-steps/s" in text
    assert second.group_id in text and "400/1000" in text and "12.5" in text
    assert board.status_line().startswith("jobs: 1 queued, 1 running, 1 done, 0 failed; ETA 0:00:32")


def test_ray_capacity_is_what_both_cpus_and_gpus_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    from offbench.execution import RayExecutor

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    assert RayExecutor(cpus=1, gpus=0.25).workers == 4  # four jobs share the one GPU; twelve CPUs stay idle
    assert RayExecutor(cpus=2).workers == 8
    assert RayExecutor(cpus=32).workers == 1
