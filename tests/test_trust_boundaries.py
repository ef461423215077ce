"""A results store is a trust boundary (issue 25): stored files never run code, a checkpoint is checked before it is used,
numbers are bounded where they enter, one bad record never takes the store down, and lifecycle edges are recognised."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from analysis_fixtures import write_run
from conftest import FAST_SETTINGS, TINY_ID, run_cli
from typer.testing import CliRunner

from offbench.cli import app
from offbench.errors import OffbenchError
from offbench.execution.sweep import Job, run_job
from offbench.store import ResultsStore
from offbench.train import RunPlan, load_checkpoint, resume, run

FAST = {"hidden_dims": [32, 32], "batch_size": 32}


def _plan(**fields: object) -> RunPlan:
    return RunPlan(**{"algo": "bc", "dataset": TINY_ID, "seeds": [0, 1], "steps": 20, "eval_every": 10, "eval_episodes": 1,
                      "overrides": FAST, "device": "cpu", **fields})


@pytest.fixture()
def trained(tmp_path: Path) -> tuple[ResultsStore, str]:
    """A finished two-seed BC group of 20 steps (evaluations at 10 and 20) and its group id."""
    store = ResultsStore(tmp_path / "results")
    run_ids = run(_plan(), store)
    return store, store.load(run_ids[0]).config.group_id


def _unfinished(store: ResultsStore, group_id: str) -> dict:
    """Make the group resumable from its step-10 state, as a kill after the first evaluation leaves it; returns that state."""
    state = load_checkpoint(store, group_id)
    for run_id in state["run_ids"]:
        (store.run_dir(run_id) / "summary.json").unlink()
    state = {**state, "step": 10, "curves": [curve[:1] for curve in state["curves"]]}
    torch.save(state, store.checkpoint_path(group_id))
    return state


def _records(store: ResultsStore) -> dict[str, bytes]:
    return {str(p.relative_to(store.root)): p.read_bytes() for p in sorted(store.runs_dir.rglob("*")) if p.is_file()}


# ---- nothing executes from a stored file --------------------------------------------------------------------------


class _Payload:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_checkpoint_runs_no_code_on_resume_nor_in_a_sweep(trained: tuple[ResultsStore, str], tmp_path: Path) -> None:
    store, group_id = trained
    payload = _Payload()
    payload.marker = tmp_path / "CODE-RAN"
    torch.save({"version": 2, "payload": payload, "step": 0}, store.checkpoint_path(group_id))
    with pytest.raises(OffbenchError, match="unreadable or holds more than tensors and plain values"):
        resume(group_id, store)
    job = Job("bc", TINY_ID, (0, 1), 20, 10, 1, overrides=tuple(sorted(FAST.items())), device="cpu")
    torch.save({"version": 2, "payload": payload, "step": 0}, store.checkpoint_path(job.group_id))
    result = run_job(job, str(store.root))  # the sweep reads the step of a job's checkpoint, then resumes it
    assert result.status == "failed" and "holds more than tensors" in result.reason
    assert not payload.marker.exists()


def test_every_kind_of_checkpoint_this_code_writes_reads_without_the_unpickler(trained: tuple[ResultsStore, str]) -> None:
    store, group_id = trained
    state = torch.load(store.checkpoint_path(group_id), weights_only=True)
    assert state["step"] == 20 and [e["step"] for e in state["curves"][0]] == [10, 20]


# ---- a checkpoint is checked before it is used ----------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (lambda s: {**s, "step": -5}, r"step -5 is outside \[0, 20\]"),
    (lambda s: {**s, "step": 30}, r"step 30 is outside \[0, 20\]"),
    (lambda s: {**s, "step": True}, "step is bool, not int"),
    (lambda s: {**s, "version": 1}, "is not an offbench v2 checkpoint"),
    (lambda s: {k: v for k, v in s.items() if k != "curves"}, "curves is NoneType, not list"),
    (lambda s: {**s, "group_id": "someone-else"}, "it is the checkpoint of group 'someone-else'"),
    (lambda s: {**s, "run_ids": s["run_ids"][:1]}, "its run ids are not its group's seeds"),
    (lambda s: {**s, "plan": {**s["plan"], "steps": 10**23}}, "its plan or protocol does not read"),
    (lambda s: {**s, "plan": {**s["plan"], "unknown": 1}}, "its plan or protocol does not read"),
    (lambda s: {**s, "curves": [s["curves"][0]]}, "its curves are not 2 lists of evaluations"),
    (lambda s: {**s, "curves": [c[:1] for c in s["curves"]]}, "a curve's evaluation steps are not those of its step"),
    (lambda s: {**s, "curves": [[{**e, "normalized_score": "x"} for e in c] for c in s["curves"]]}, "a curve.s entry is not an evaluation"),
    (lambda s: {**s, "train_time_s": float("nan")}, "times or stages"),
    (lambda s: {**s, "metrics": {"bc_loss": torch.zeros(3)}}, "a training metric is not one value per seed"),
])  # fmt: skip
def test_a_crafted_checkpoint_is_one_line_and_rewrites_nothing(trained: tuple[ResultsStore, str], change, message: str) -> None:
    store, group_id = trained
    before = _records(store)
    torch.save(change(torch.load(store.checkpoint_path(group_id), weights_only=True)), store.checkpoint_path(group_id))
    with pytest.raises(OffbenchError, match=message):
        resume(group_id, store)
    assert _records(store) == before  # a finished run's curve is never rewritten from a crafted step


def _resized_module(state: dict) -> dict:
    modules = dict(state["algorithm"]["modules"])
    name = next(iter(modules))
    modules[name] = torch.zeros(*modules[name].shape[:-1], modules[name].shape[-1] + 1)
    return {**state, "algorithm": {**state["algorithm"], "modules": modules}}


def _resized_moment(state: dict) -> dict:
    optimizers = state["algorithm"]["optimizers"]
    name = next(iter(optimizers))
    moments = {**optimizers[name]["state"][0], "exp_avg": torch.zeros(3)}
    optimizer = {**optimizers[name], "state": {**optimizers[name]["state"], 0: moments}}
    return {**state, "algorithm": {**state["algorithm"], "optimizers": {**optimizers, name: optimizer}}}


@pytest.mark.parametrize("change, message", [
    (_resized_module, "does not fit group"),
    (_resized_moment, r"state exp_avg of shape \(3,\)"),
    (lambda s: {**s, "streams": {**s["streams"], "sampling": s["streams"]["sampling"][:1]}}, "does not fit group"),
    (lambda s: {**s, "stages_done": ["world_model"]}, "bc has no stage 'world_model'"),
])  # fmt: skip
def test_a_checkpoint_that_does_not_fit_the_group_is_one_line(trained: tuple[ResultsStore, str], change, message: str) -> None:
    store, group_id = trained
    torch.save(change(_unfinished(store, group_id)), store.checkpoint_path(group_id))
    with pytest.raises(OffbenchError, match=message):
        resume(group_id, store)


def test_an_unfinished_group_resumes_from_a_checked_checkpoint(trained: tuple[ResultsStore, str]) -> None:
    store, group_id = trained
    _unfinished(store, group_id)
    run_ids = resume(group_id, store)
    assert [e["step"] for e in store.load(run_ids[0]).curve] == [10, 20] and store.load(run_ids[1]).finished


def test_a_sweep_refuses_a_checkpoint_of_another_plan_under_its_group_id(trained: tuple[ResultsStore, str]) -> None:
    store, group_id = trained
    job = Job("bc", TINY_ID, (0, 1), 20, 10, 1, overrides=tuple(sorted(FAST.items())), device="cpu")
    state = load_checkpoint(store, group_id)
    for run_id in state["run_ids"]:
        (store.run_dir(run_id) / "summary.json").unlink()
    run_ids = [f"{job.group_id}-s{seed}" for seed in (0, 1)]
    torch.save({**state, "group_id": job.group_id, "run_ids": run_ids, "plan": {**state["plan"], "eval_episodes": 2}},
               store.checkpoint_path(job.group_id))
    result = run_job(job, str(store.root))
    assert result.status == "failed" and "holds another plan than the job" in result.reason


# ---- lifecycle edges -------------------------------------------------------------------------------------------------


def test_resuming_a_finished_group_says_so_and_touches_nothing(trained: tuple[ResultsStore, str]) -> None:
    store, group_id = trained
    stamps = {p: p.stat().st_mtime_ns for p in store.runs_dir.rglob("*") if p.is_file()}
    done = run_cli("run", "--resume", group_id, "--results-dir", str(store.root))
    assert done.returncode == 0 and f"group {group_id} is finished: nothing to resume" in done.stderr
    assert f"resuming {group_id}" not in done.stderr + done.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.parametrize("seeds, expected", [(range(2), [0, 1]), ((3, 1), [3, 1]), (np.arange(2), [0, 1]), ([np.int64(4)], [4])])
def test_run_plan_seeds_are_any_sequence_of_integers(seeds: object, expected: list[int]) -> None:
    plan = _plan(seeds=seeds)
    assert plan.seeds == expected and all(type(s) is int for s in plan.seeds)


@pytest.mark.parametrize("seeds, message", [
    ([True], "seeds must be integers, got True"), ([2.5], "seeds must be integers, got 2.5"), ("01", "a sequence of integers"),
    (5, "a sequence of integers"), (range(10**23), "the number of seeds must be at most 1,000"), ([2**40], "a seed must be at most"),
])  # fmt: skip
def test_bad_seeds_are_refused_before_anything_is_written(tmp_path: Path, seeds: object, message: str) -> None:
    with pytest.raises(OffbenchError, match=message):
        run(_plan(seeds=seeds), ResultsStore(tmp_path / "results"))
    assert not (tmp_path / "results").exists()


# ---- numbers are bounded where they enter -------------------------------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--steps", "99999999999999999999999"], "--steps must be at most 2,147,483,647"),
    (["--seed-start", "99999999999999999999999"], "--seed-start must be at most"),
    (["--seeds", "1000000"], "--seeds must be at most 1,000"),
    (["--eval-episodes", "1001"], "--eval-episodes must be at most 1,000"),
    (["--eval-every", "0"], "--eval-every must be positive"),
    (["--log-every", "99999999999999999999999"], "--log-every must be at most"),
    (["--data-seed", "-1"], "--data-seed must be non-negative"),
    (["--subset", "99999999999999999999999"], "--subset must be at most"),
    (["--threads", "0"], "--threads must be positive"),
    (["--set", "hidden_dims=[true]"], "config key 'hidden_dims' for bc expects int, got True"),
    (["--set", "hidden_dims=[2.5]"], "config key 'hidden_dims' for bc expects int, got 2.5"),
    (["--set", "batch_size=99999999999999"], "config key 'batch_size' for bc must be at most 2,147,483,647"),
    (["--set", "actor_lr=1e300"], "config key 'actor_lr' for bc must fit a float32 tensor"),
])  # fmt: skip
def test_out_of_range_run_flags_are_refused_before_the_store_is_touched(tmp_path: Path, flags: list[str], message: str) -> None:
    args = ["run", "--algo", "bc", "--dataset", TINY_ID, "--steps", "20", "--eval-episodes", "1", "--results-dir", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, *flags])
    assert isinstance(result.exception, OffbenchError) and message in str(result.exception), result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers must be positive"), (["--retries", "-1"], "--retries must be non-negative"),
    (["--group-size", "10000000000"], "--group-size must be at most"), (["--seeds", "5000"], "--seeds must be at most"),
    (["--executor", "ray", "--cpus-per-job", "nan"], "--cpus-per-job must be positive"),
])  # fmt: skip
def test_out_of_range_sweep_flags_are_refused(tmp_path: Path, flags: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["sweep", "--algos", "bc", "--datasets", TINY_ID, "--results-dir", str(tmp_path / "r"), *flags])
    assert isinstance(result.exception, OffbenchError) and message in str(result.exception), result.output
    assert not (tmp_path / "r" / "runs").exists()


@pytest.mark.parametrize("line, message", [
    ("margin = inf", "margin must be a finite non-negative number"), ("margin = nan", "margin must be a finite non-negative number"),
    ("margin = -1.0", "margin must be a finite non-negative number"), ("steps = 99999999999999", "steps must be at most"),
    ("eval_episodes = 5000", "eval_episodes must be at most 1,000"), ("seeds = 0", "seeds must be positive"),
    ("datasets = [1]", "datasets must be a list of distinct names"), ("algos = [[\"bc\"]]", "algos must be a list of distinct names"),
])  # fmt: skip
def test_a_protocol_file_with_an_unusable_number_is_refused(tmp_path: Path, line: str, message: str) -> None:
    from offbench.analysis.leaderboard import load_protocol

    values = {"algos": '["bc"]', "datasets": f'["{TINY_ID}"]', "seeds": "3", "steps": "100", "eval_every": "50", "eval_episodes": "2"}
    key, _, value = line.partition(" = ")
    path = tmp_path / "p.toml"
    path.write_text("\n".join(f"{k} = {v}" for k, v in {**values, key: value}.items()))
    with pytest.raises(OffbenchError, match=message):
        load_protocol(path)


@pytest.mark.parametrize("margin", ["nan", "inf", "-1"])
def test_the_ci_gate_margin_must_be_finite_and_non_negative(tmp_path: Path, margin: str) -> None:
    from offbench.analysis.leaderboard import Leaderboard, check_runs

    result = CliRunner().invoke(app, ["check", "--margin", margin, "--results-dir", str(tmp_path), "--leaderboard", str(tmp_path / "b.json")])
    assert isinstance(result.exception, OffbenchError) and "--margin must be a finite non-negative number" in str(result.exception)
    with pytest.raises(OffbenchError, match="margin must be a finite"):
        check_runs(Leaderboard(), ResultsStore(tmp_path), margin=float(margin))


# ---- one bad record never takes the store down ------------------------------------------------------------------------


def _poison(store: ResultsStore, run_id: str, how: str) -> None:
    path = store.run_dir(run_id) / "config.json"
    if how == "huge seed":
        path.write_text(json.dumps({**json.loads(path.read_text()), "seed": 10**23}))
    elif how == "huge steps":
        config = json.loads(path.read_text())
        path.write_text(json.dumps({**config, "protocol": {**config["protocol"], "steps": 10**23}}))
    elif how == "NaN token":
        config = json.loads(path.read_text())
        path.write_text(json.dumps({**config, "dataset": {**config["dataset"], "ref_max_score": float("nan")}}))  # a bare NaN token
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), "algo": ["not", "a", "name"]}))


@pytest.mark.parametrize("how", ["huge seed", "huge steps", "NaN token", "mistyped"])
def test_one_poisoned_record_is_listed_damaged_and_named_and_removable(tmp_path: Path, how: str) -> None:
    store = ResultsStore(tmp_path / "results")
    good = [write_run(store, "td3bc", "local/hopper-medium-v5", seed, [50.0, 60.0]) for seed in range(2)]
    bad = write_run(store, "td3bc", "local/hopper-medium-v5", 2, [50.0, 60.0])
    _poison(store, bad, how)
    store.index_path.unlink()
    assert store.reindex() == 3
    listing = run_cli("runs", "--all", "--results-dir", str(store.root))
    assert listing.returncode == 0 and "damaged" in listing.stdout and good[0] in listing.stdout, listing.stderr
    report = run_cli("report", "--results-dir", str(store.root), "--out", str(tmp_path / "report"), "--reps", "100")
    assert report.returncode == 0, report.stderr
    assert f"run {bad} is left out" in report.stderr.replace("\n", "")  # also once the index says damaged
    removed = run_cli("runs", "rm", bad, "--results-dir", str(store.root))
    assert removed.returncode == 0 and not store.run_dir(bad).exists(), removed.stderr
    assert sorted(store.runs()["run_id"]) == sorted(good)


def test_non_finite_numbers_written_through_the_store_are_stored_as_diverged(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    run_id = write_run(store, "td3bc", "local/hopper-medium-v5", 0, [50.0, float("nan")])
    curve = json.loads((store.run_dir(run_id) / "curve.json").read_text(), parse_constant=pytest.fail)
    summary = json.loads((store.run_dir(run_id) / "summary.json").read_text(), parse_constant=pytest.fail)
    assert curve[-1]["diverged"] and curve[-1]["normalized_score"] is None and curve[-1]["returns"] == [None] * 5
    assert summary["status"] == "diverged" and summary["final_score"] is None and summary["diverged_at_step"] == 1000


# ---- a killed sweep driver leaves no process behind ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a container's init to reap it has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process parents from /proc")
def test_killing_the_sweep_driver_leaves_no_worker_or_resource_tracker(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["sweep", "--algos", "bc", "--datasets", TINY_ID, "--seeds", "2", "--group-size", "1", "--workers", "2", "--steps", "1000000",
            "--eval-every", "100000", "--eval-episodes", "1", "--results-dir", str(tmp_path / "r"), *FAST_SETTINGS]
    driver = subprocess.Popen([sys.executable, "-m", "offbench", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(_children(driver.pid)) < 3 and time.monotonic() < deadline:  # two workers and the resource tracker
            time.sleep(0.5)
        time.sleep(5)  # the workers are in their jobs
        children = _children(driver.pid)
        assert len(children) >= 3, children
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 60
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = [pid for pid in children if _alive(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)  # never leave them to the rest of the suite
    assert not alive, "orphaned sweep processes outlived their driver"
    shutil.rmtree(tmp_path / "r", ignore_errors=True)


def test_a_run_that_must_make_its_dataset_refuses_an_unusable_data_folder_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench.data import recipes

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "a-file" / "data"))
    monkeypatch.setitem(recipes.RECIPES, "random", lambda *_: pytest.fail("the dataset was generated"))
    with pytest.raises(OffbenchError, match="cannot make a dataset in the data folder"):
        run(_plan(dataset="local/hopper-random-v5"), ResultsStore(tmp_path / "results"))


def test_a_policy_file_from_another_run_or_with_code_is_refused(trained: tuple[ResultsStore, str], tmp_path: Path) -> None:
    from offbench.policy import POLICY_FILE, load_run_policy

    store, group_id = trained
    mine, other = store.run_dir(f"{group_id}-s0") / POLICY_FILE, store.run_dir(f"{group_id}-s1") / POLICY_FILE
    shutil.copyfile(other, mine)  # seed 1's policy under seed 0's name
    with pytest.raises(OffbenchError, match=f"is not run {group_id}-s0's: its run_id differs"):
        load_run_policy(store, f"{group_id}-s0")
    payload = _Payload()
    payload.marker = tmp_path / "CODE-RAN"
    torch.save({"format": "offbench-policy", "payload": payload}, mine)
    with pytest.raises(OffbenchError, match="is unreadable"):
        load_run_policy(store, f"{group_id}-s0")
    assert not payload.marker.exists()


@pytest.mark.parametrize("flags, message", [
    (["--set", "batch_size=1000000000"], "a batch of 1,000,000,000 transitions x 1 seeds need"),
    (["--set", "hidden_dims=[65536, 65536]"], "its networks (4,296,"),
])  # fmt: skip
def test_a_config_no_device_of_this_kind_can_hold_is_refused_before_it_is_allocated(tmp_path: Path, flags: list[str], message: str) -> None:
    args = ["run", "--algo", "bc", "--dataset", TINY_ID, "--steps", "20", "--eval-episodes", "1", "--results-dir", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, *flags])
    assert isinstance(result.exception, OffbenchError) and message in str(result.exception), result.output
    assert not (tmp_path / "r" / "runs").exists()


def test_running_out_of_memory_while_training_is_one_line_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench.algos.bc import BC

    def refused(*_: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 10")

    monkeypatch.setattr(BC, "update", refused)
    store = ResultsStore(tmp_path / "results")
    with pytest.raises(OffbenchError, match="bc ran out of memory on cpu at step 1"):
        run(_plan(), store)
    assert all(status.startswith("failed: at step 1: RuntimeError") for status in store.runs(status=None)["status"])


def test_an_optimiser_step_count_that_is_not_a_count_is_refused(trained: tuple[ResultsStore, str]) -> None:
    store, group_id = trained
    state = _unfinished(store, group_id)
    name = next(iter(state["algorithm"]["optimizers"]))
    state["algorithm"]["optimizers"][name]["state"][0]["step"] = torch.tensor(-5.0)
    torch.save(state, store.checkpoint_path(group_id))
    with pytest.raises(OffbenchError, match="step count -5.0 is not a finite non-negative number"):
        resume(group_id, store)


@pytest.mark.parametrize("change, damage", [
    (lambda curve: [{**curve[0], "normalized_scores": [10**400]}, *curve[1:]], "is not a list of evaluations"),
    (lambda curve: [{**curve[0], "step": -1}, *curve[1:]], "is not a list of evaluations"),
    (lambda curve: curve[::-1], "steps are not increasing"),
    (lambda curve: [], "curve.json of a finished run is empty"),
])  # fmt: skip
def test_a_curve_analysis_or_eval_cannot_read_as_floats_is_damage(trained: tuple[ResultsStore, str], change, damage: str) -> None:
    store, group_id = trained
    path = store.run_dir(f"{group_id}-s0") / "curve.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    evaluated = CliRunner().invoke(app, ["eval", f"{group_id}-s0", "--results-dir", str(store.root)])
    assert isinstance(evaluated.exception, OffbenchError) and damage in str(evaluated.exception)


@pytest.mark.parametrize("algo, setting, message", [
    ("neubay", "rollouts=2147483647", "'rollouts' for neubay must be in [1, 1,048,576]"),
    ("neubay", "tape_length=2147483647", "'tape_length' for neubay must be in [1, 1,048,576]"),
    ("neubay", "critic_heads=100000", "'critic_heads' for neubay must be in [1, 4096]"),
    ("neubay", "encoder_dim=2147483647", "'encoder_dim' for neubay must be in [1, 65,536]"),
    ("bcq", "act_samples=2147483647", "'act_samples' for bcq must be in [1, 65,536]"),
    ("discrete-bcq", "frame_stack=1000", "'frame_stack' for discrete-bcq must be in [1, 64]"),
])  # fmt: skip
def test_sizes_that_would_hang_or_exhaust_the_machine_are_refused(tmp_path: Path, algo: str, setting: str, message: str) -> None:
    result = CliRunner().invoke(app, ["run", "--algo", algo, "--dataset", TINY_ID, "--set", setting, "--results-dir", str(tmp_path / "r")])
    assert isinstance(result.exception, OffbenchError) and message in str(result.exception), result.output


@pytest.mark.parametrize("change, message", [
    (lambda c: {**c, "protocol": {**c["protocol"], "eval_env": "Nope-v9"}}, "evaluation env Nope-v9 cannot be built"),
    (lambda c: {**c, "protocol": {**c["protocol"], "eval_env_kwargs": {"render_mode": "human"}}}, "its kwargs set render_mode"),
    (lambda c: {**c, "group_id": "../../victim"}, "is damaged: config.json: '../../victim' is not a valid group id"),
])  # fmt: skip
def test_a_crafted_record_is_one_line_before_eval_runs_an_episode(trained: tuple[ResultsStore, str], change, message: str) -> None:
    store, group_id = trained
    path = store.run_dir(f"{group_id}-s0") / "config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    result = CliRunner().invoke(app, ["eval", f"{group_id}-s0", "--episodes", "1", "--results-dir", str(store.root)])
    assert isinstance(result.exception, OffbenchError) and message in str(result.exception), result.output


def test_eval_bounds_its_episodes_and_seed(trained: tuple[ResultsStore, str]) -> None:
    store, group_id = trained
    for flags, message in ((["--episodes", "100000000000"], "--episodes must be at most 1,000"), (["--seed", "-1"], "--seed must be non-negative")):
        result = CliRunner().invoke(app, ["eval", f"{group_id}-s0", *flags, "--results-dir", str(store.root)])
        assert isinstance(result.exception, OffbenchError) and message in str(result.exception)


def test_prune_and_listing_survive_an_emptied_store(trained: tuple[ResultsStore, str]) -> None:
    store, group_id = trained
    assert run_cli("runs", "rm", group_id, "--results-dir", str(store.root)).returncode == 0
    pruned = run_cli("runs", "prune", "--yes", "--results-dir", str(store.root))
    assert pruned.returncode == 0 and "nothing to prune" in pruned.stdout, pruned.stderr
    assert store.damaged_runs() == {}


def test_a_checkpoint_curve_with_unreadable_episode_lists_is_refused(trained: tuple[ResultsStore, str]) -> None:
    store, group_id = trained
    state = _unfinished(store, group_id)
    state["curves"][0][0]["normalized_scores"] = "x"
    torch.save(state, store.checkpoint_path(group_id))
    with pytest.raises(OffbenchError, match="a curve's entry is not an evaluation"):
        resume(group_id, store)


def test_references_whose_span_overflows_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    timeouts = np.zeros(200, bool)
    timeouts[99::100] = True
    np.savez(data, observations=rng.standard_normal((200, 11)).astype(np.float32), actions=rng.uniform(-1, 1, (200, 3)).astype(np.float32),
             rewards=np.zeros(200, np.float32), terminals=np.zeros(200, bool), timeouts=timeouts)
    with pytest.raises(OffbenchError, match="no usable reference returns"):
        run(_plan(dataset=str(data), env="Hopper-v5", ref="-1e308,1e308"), ResultsStore(tmp_path / "results"))


def test_a_bad_device_or_sweep_setting_is_refused_before_the_store_is_touched(tmp_path: Path) -> None:
    with pytest.raises(OffbenchError, match="unknown device"):
        run(_plan(device="bogus"), ResultsStore(tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    swept = CliRunner().invoke(app, ["sweep", "--algos", "bc", "--datasets", TINY_ID, "--set", "batch_size=0", "--dry-run",
                                     "--results-dir", str(tmp_path / "s")])
    assert isinstance(swept.exception, OffbenchError) and "'batch_size' for bc must be >= 1" in str(swept.exception)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("change, message", [
    (lambda seeds: [{**s, "score": 1e308} for s in seeds], "a numeric score within"),
    (lambda seeds: [{**s, "score": True} for s in seeds], "a numeric score within"),
])  # fmt: skip
def test_a_leaderboard_that_would_defeat_the_gate_is_refused(tmp_path: Path, change, message: str) -> None:
    from offbench.analysis.leaderboard import load_leaderboard

    store = ResultsStore(tmp_path / "results")
    for seed in range(3):
        write_run(store, "td3bc", "local/hopper-medium-v5", seed, [50.0, 60.0])
    board = tmp_path / "board.json"
    assert CliRunner().invoke(app, ["leaderboard", "update", "--results-dir", str(store.root), "--leaderboard", str(board)]).exit_code == 0
    data = json.loads(board.read_text())
    data["entries"][0]["seeds"] = change(data["entries"][0]["seeds"])
    board.write_text(json.dumps(data))
    with pytest.raises(OffbenchError, match=message):
        load_leaderboard(board)
    board.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(OffbenchError, match="is not a valid leaderboard"):
        load_leaderboard(board)
