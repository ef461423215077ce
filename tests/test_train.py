"""The unified protocol: records per seed, and resume after a kill ending exactly as an uninterrupted run (logs too)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST_SETTINGS, TINY_ID

from offbench.store import ResultsStore
from offbench.train import RunPlan, run

RESUME_ARGS = ["--algo", "td3bc", "--dataset", TINY_ID, "--steps", "1500", "--eval-every", "100", "--eval-episodes", "2", "--seeds", "2",
               "--log-every", "10", "--tensorboard", *FAST_SETTINGS]


def start_cli(results: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "offbench", "run", *RESUME_ARGS, "--results-dir", str(results)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def curves(results: Path) -> list[list[float]]:
    runs = sorted((results / "runs").iterdir(), key=lambda p: p.name[-2:])
    return [[entry["normalized_score"] for entry in json.loads((r / "curve.json").read_text())] for r in runs]


def run_folders(results: Path) -> list[Path]:
    return sorted((results / "runs").iterdir(), key=lambda p: p.name[-2:])


def logged_rows(results: Path) -> list[dict[str, list[list[str]]]]:
    """Each seed's metrics.csv and evaluations.csv rows, without the columns that time the run."""
    def untimed(path: Path) -> list[list[str]]:
        header, *rows = list(csv.reader(path.open()))
        keep = [i for i, column in enumerate(header) if column not in ("steps_per_s", "time_s")]
        return [[row[i] for i in keep] for row in [header, *rows]]

    return [{name: untimed(r / name) for name in ("metrics.csv", "evaluations.csv")} for r in run_folders(results)]


def tensorboard_steps(results: Path) -> list[dict[str, list[int]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulators = [EventAccumulator(str(r / "tb")).Reload() for r in run_folders(results)]
    return [{tag: [event.step for event in a.Scalars(tag)] for tag in a.Tags()["scalars"]} for a in accumulators]


def final_parameters(results: Path) -> dict[str, torch.Tensor]:
    checkpoint = next((results / "checkpoints").glob("*.pt"))
    return torch.load(checkpoint, weights_only=False)["algorithm"]["modules"]


def test_library_run_records_each_seed(data_root: Path, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    plan = RunPlan("td3bc", TINY_ID, seeds=[3, 5], steps=40, eval_every=20, eval_episodes=2, overrides={"hidden_dims": [16, 16], "batch_size": 16})
    run_ids = run(plan, store)
    frame = store.runs()
    assert sorted(frame["seed"]) == [3, 5] and set(frame["run_id"]) == set(run_ids)
    assert (frame["steps"] == 40).all() and frame["final_score"].notna().all()


def test_resume_after_kill_matches_uninterrupted_run(data_root: Path, tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = start_cli(straight)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()

    victim = start_cli(killed)
    deadline = time.time() + 300
    while not list((killed / "checkpoints").glob("*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    group_id = next((killed / "checkpoints").glob("*.pt")).stem
    assert ResultsStore(killed).runs().empty  # a killed run is never listed as finished
    step_at_kill = torch.load(killed / "checkpoints" / f"{group_id}.pt", weights_only=False)["step"]
    assert 0 < step_at_kill < 1500
    killed_rows = [int(row[0]) for row in logged_rows(killed)[0]["metrics.csv"][1:]]
    assert killed_rows == list(range(10, killed_rows[-1] + 1, 10)) and killed_rows[-1] >= step_at_kill

    resumed = subprocess.run([sys.executable, "-m", "offbench", "run", "--resume", group_id, "--results-dir", str(killed)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert len(ResultsStore(killed).runs()) == 2
    assert curves(killed) == curves(straight)
    assert logged_rows(killed) == logged_rows(straight)  # every step once: rows after the checkpoint were cut, then rewritten
    assert logged_rows(straight)[0]["metrics.csv"][-1][0] == "1500" and len(logged_rows(straight)[0]["evaluations.csv"]) == 16
    assert tensorboard_steps(killed) == tensorboard_steps(straight)  # TensorBoard purges the killed process's later events
    expected, actual = final_parameters(straight), final_parameters(killed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_timeouts_stop_bootstrapping_only_when_the_config_says_so(data_root: Path) -> None:
    from offbench.data import load_dataset
    from offbench.data.sampling import UniformTransitions

    dataset = load_dataset(TINY_ID)
    assert dataset.timeouts.any()
    common = UniformTransitions(dataset, torch.device("cpu"), normalize_states=False, timeouts_as_terminals=False)
    sparse_reg_style = UniformTransitions(dataset, torch.device("cpu"), normalize_states=False, timeouts_as_terminals=True)
    assert torch.equal(common.not_dones, torch.as_tensor(~dataset.terminals, dtype=torch.float32))
    assert torch.equal(sparse_reg_style.not_dones, torch.as_tensor(~(dataset.terminals | dataset.timeouts), dtype=torch.float32))


def test_a_seed_whose_evaluation_returns_nan_is_recorded_as_diverged_never_as_a_score(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offbench.algos.td3bc import TD3BC

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        actions = self.policy(observations)
        actions[1] = float("nan")  # the second seed's policy has diverged
        return actions

    monkeypatch.setattr(TD3BC, "act", act)
    store = ResultsStore(tmp_path)
    plan = RunPlan("td3bc", TINY_ID, seeds=[0, 1], steps=20, eval_every=10, eval_episodes=2, overrides={"hidden_dims": [16, 16], "batch_size": 16})
    healthy, diverged = (store.load(run_id) for run_id in run(plan, store))
    assert healthy.summary.status == "finished" and healthy.summary.final_score is not None
    assert diverged.summary.status == "diverged" and diverged.summary.diverged_at_step == 10
    assert (diverged.summary.final_score, diverged.summary.last_k_score, diverged.summary.best_score) == (None, None, None)
    assert all(entry["diverged"] and entry["normalized_score"] is None for entry in diverged.curve)
    assert "NaN" not in (store.run_dir(diverged.run_id) / "curve.json").read_text()  # null, never a NaN token
    assert dict(zip(store.runs(status=None)["seed"], store.runs(status=None)["status"])) == {0: "finished", 1: "diverged"}
    assert list(store.runs()["seed"]) == [0]  # "finished" never lists a diverged run


def test_a_run_interrupted_before_its_first_checkpoint_does_not_advise_resume(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offbench.algos.td3bc import TD3BC

    def update(self, batch, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(TD3BC, "update", update)
    store = ResultsStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run(RunPlan("td3bc", TINY_ID, seeds=[0], steps=20, eval_every=10, eval_episodes=1), store)
    status = store.runs(status=None)["status"].item()
    assert status == "interrupted: at step 1 (SIGINT); no checkpoint: start again"


def test_a_dataset_without_reference_returns_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from offbench.data.minari_io import write_minari
    from offbench.errors import OffbenchError

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    episode = {"observations": rng.normal(size=(21, 11)).astype(np.float32), "actions": rng.uniform(-1, 1, (20, 3)).astype(np.float32),
               "rewards": np.ones(20), "terminations": np.zeros(20, bool), "truncations": np.r_[np.zeros(19, bool), True]}
    write_minari(tmp_path / "minari", "made-up/hopper/noref-v0", [episode], "Hopper-v5", None, None, "made up", {})
    store = ResultsStore(tmp_path / "results")
    with pytest.raises(OffbenchError, match=r"has no usable reference returns to normalise scores with \(min None, max None\)"):
        run(RunPlan("bc", "minari/made-up/hopper/noref-v0", seeds=[0], steps=10, eval_every=10, eval_episodes=1), store)
    assert store.runs(status=None).empty and not (tmp_path / "results" / "runs").exists()
    write_minari(tmp_path / "minari", "made-up/hopper/flat-v0", [episode], "Hopper-v5", 5.0, 5.0, "made up", {})
    with pytest.raises(OffbenchError, match=r"no usable reference returns .* \(min 5.0, max 5.0\)"):  # max == min: scores would be inf
        run(RunPlan("bc", "minari/made-up/hopper/flat-v0", seeds=[0], steps=10, eval_every=10, eval_episodes=1), store)


@pytest.mark.parametrize("plan_fields, message", [
    ({"steps": 0}, "--steps must be positive, got 0"),
    ({"eval_episodes": -1}, "--eval-episodes must be positive"),
    ({"subset": 0}, "--subset must be positive"),
    ({"subset": 100, "subset_mode": "last"}, "unknown subset mode 'last'"),
    ({"corrupt": "gaussian:0.1"}, "gaussian"),
    ({"seeds": [1, 1]}, "seeds must be distinct"),
    ({"log_every": 0}, "--log-every must be positive, got 0"),
    ({"overrides": {"alpha": float("nan")}}, "config key 'alpha' for td3bc must be a finite number"),
])
def test_flags_are_checked_before_the_dataset_is_loaded_or_made(empty_roots: Path, plan_fields: dict, message: str) -> None:
    from offbench.errors import OffbenchError

    plan = RunPlan(**{"algo": "td3bc", "dataset": "local/hopper-random-v5", "seeds": [0], **plan_fields})
    with pytest.raises(OffbenchError, match=message):
        run(plan, ResultsStore(empty_roots / "results"))
    assert not (empty_roots / "data").exists()  # nothing was made


def test_an_unwritable_results_store_is_one_line_before_any_work(empty_roots: Path) -> None:
    from offbench.errors import OffbenchError

    blocker = empty_roots / "a-file"
    blocker.write_text("")
    with pytest.raises(OffbenchError, match="is not writable"):
        run(RunPlan("td3bc", "local/hopper-random-v5", seeds=[0]), ResultsStore(blocker / "results"))
    assert not (empty_roots / "data").exists()
