"""Logs researchers already read (offbench.logs): metrics.csv and evaluations.csv exact against the record,
TensorBoard event files read back, wandb runs (real, offline, and a fake module for the exact calls), and a
missing extra refused in one line before any work. Resume after a kill: tests/test_train.py."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import FAST_SETTINGS, TINY_ID, run_cli

from offbench.errors import OffbenchError
from offbench.logs import CsvTable, WandbLog
from offbench.store import ResultsStore
from offbench.train import RunPlan, run

FAST = {"hidden_dims": [32, 32], "batch_size": 32}
METRICS = ["critic_loss", "q_mean", "actor_loss"]
EVALUATION_HEADER = ["step", "normalized_score", "return_mean", "return_std", "episodes", "time_s", "diverged"]


@pytest.fixture(scope="module")
def logged_store(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 steps of two seeds from the CLI, a training row every 10 steps, an evaluation every 30, every logger on."""
    results = tmp_path_factory.mktemp("logs") / "results"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("WANDB_MODE", raising=False)
        done = run_cli("run", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "60", "--eval-every", "30", "--eval-episodes", "2",
                       "--seeds", "2", *FAST_SETTINGS, "--log-every", "10", "--tensorboard", "--wandb", "--results-dir", str(results))
    assert done.returncode == 0, done.stderr
    return results


@pytest.fixture(scope="module")
def evaluated_every_10(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ResultsStore:
    """The same two seeds trained by the library with an evaluation every 10 steps (training never depends on it)."""
    store = ResultsStore(tmp_path_factory.mktemp("every-10"))
    run(RunPlan("td3bc", TINY_ID, seeds=[0, 1], steps=60, eval_every=10, eval_episodes=1, overrides=FAST), store)
    return store


def run_folders(results: Path) -> list[Path]:
    return sorted((results / "runs").iterdir(), key=lambda p: p.name[-2:])


def table(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_metrics_csv_holds_each_seeds_training_metrics_exactly(logged_store: Path, evaluated_every_10: ResultsStore) -> None:
    reference = sorted(evaluated_every_10.finished_records(), key=lambda r: r.config.seed)
    for run_dir, every_10 in zip(run_folders(logged_store), reference):
        rows = table(run_dir / "metrics.csv")
        assert list(rows[0]) == ["step", *METRICS, "steps_per_s"]
        assert [int(row["step"]) for row in rows] == [10, 20, 30, 40, 50, 60]
        by_step = {int(row["step"]): row for row in rows}
        for entry in every_10.curve:  # every row, to the last bit, against the curve of a run evaluated at each of its steps
            assert {name: float(by_step[entry["step"]][name]) for name in METRICS} == {name: entry[name] for name in METRICS}
        for entry in json.loads((run_dir / "curve.json").read_text()):  # ... and its own curve at its evaluations
            assert {name: float(by_step[entry["step"]][name]) for name in METRICS} == {name: entry[name] for name in METRICS}
        assert all(float(row["steps_per_s"]) > 0 for row in rows)


def test_evaluations_csv_is_the_curve_one_row_per_evaluation(logged_store: Path) -> None:
    for run_dir in run_folders(logged_store):
        rows = table(run_dir / "evaluations.csv")
        curve = json.loads((run_dir / "curve.json").read_text())
        assert list(rows[0]) == EVALUATION_HEADER
        assert [{key: row[key] for key in EVALUATION_HEADER} for row in rows] == [
            {"step": str(e["step"]), "normalized_score": repr(e["normalized_score"]), "return_mean": repr(e["return_mean"]),
             "return_std": repr(e["return_std"]), "episodes": "2", "time_s": repr(e["time_s"]), "diverged": "False"} for e in curve]


def test_tensorboard_event_files_read_back_with_the_logged_values(logged_store: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for run_dir in run_folders(logged_store):
        events = EventAccumulator(str(run_dir / "tb")).Reload()
        assert set(events.Tags()["scalars"]) == {*(f"train/{m}" for m in [*METRICS, "steps_per_s"]),
                                                  "eval/normalized_score", "eval/return_mean", "eval/return_std"}
        rows = table(run_dir / "metrics.csv")
        for name in METRICS:  # float32 metrics survive TensorBoard's float32 exactly
            assert [(e.step, e.value) for e in events.Scalars(f"train/{name}")] == [(int(r["step"]), float(r[name])) for r in rows]
        curve = json.loads((run_dir / "curve.json").read_text())
        scores = events.Scalars("eval/normalized_score")
        assert [e.step for e in scores] == [30, 60]
        assert [e.value for e in scores] == pytest.approx([entry["normalized_score"] for entry in curve], rel=1e-6)


def test_wandb_keeps_an_offline_run_per_seed_in_its_run_folder(logged_store: Path) -> None:
    for run_dir in run_folders(logged_store):
        (offline,) = (run_dir / "wandb").glob(f"offline-run-*-{run_dir.name}")
        history = (offline / f"run-{run_dir.name}.wandb").read_bytes()
        assert all(key.encode() in history for key in ("train/critic_loss", "train/steps_per_s", "eval/normalized_score"))


def test_provenance_says_which_logs_a_run_has_and_where(logged_store: Path, evaluated_every_10: ResultsStore) -> None:
    provenance = json.loads((run_folders(logged_store)[0] / "provenance.json").read_text())
    assert provenance["logs"] == {"log_every": 10, "csv": ["metrics.csv", "evaluations.csv"], "tensorboard": "tb/",
                                  "wandb": {"dir": "wandb/", "project": "offbench", "mode": "offline"}}
    plain = next(evaluated_every_10.finished_records())  # no options: the CSV files alone, a row every 1000 steps and at the last
    assert plain.provenance["logs"] == {"log_every": 1000, "csv": ["metrics.csv", "evaluations.csv"]}
    run_dir = evaluated_every_10.run_dir(plain.run_id)
    assert [row["step"] for row in table(run_dir / "metrics.csv")] == ["60"] and len(table(run_dir / "evaluations.csv")) == 6
    assert not (run_dir / "tb").exists() and not (run_dir / "wandb").exists()


def test_non_finite_values_are_written_as_such_never_as_numbers(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench.algos.td3bc import TD3BC

    update, act = TD3BC.update, TD3BC.act

    def diverging_update(self, batch, step):
        metrics = update(self, batch, step)
        return {**metrics, "critic_loss": metrics["critic_loss"] * torch.tensor([1.0, float("nan")]),
                "q_mean": metrics["q_mean"] + torch.tensor([0.0, float("inf")])}

    def diverged_act(self, observations, episode_start):
        actions = act(self, observations, episode_start)
        actions[1] = float("nan")
        return actions

    monkeypatch.setattr(TD3BC, "update", diverging_update)
    monkeypatch.setattr(TD3BC, "act", diverged_act)
    store = ResultsStore(tmp_path)
    healthy, diverged = run(RunPlan("td3bc", TINY_ID, seeds=[0, 1], steps=10, eval_every=10, eval_episodes=1, log_every=5, overrides=FAST), store)
    rows = table(store.run_dir(diverged) / "metrics.csv")
    assert [(row["critic_loss"], row["q_mean"]) for row in rows] == [("nan", "inf"), ("nan", "inf")]
    assert all(row["critic_loss"] not in ("nan", "inf") for row in table(store.run_dir(healthy) / "metrics.csv"))
    (evaluation,) = table(store.run_dir(diverged) / "evaluations.csv")
    assert (evaluation["normalized_score"], evaluation["return_mean"], evaluation["diverged"]) == ("", "", "True")  # null, as in curve.json


def test_a_csv_table_reopened_at_a_step_cuts_later_and_half_written_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    logged = CsvTable(path, 0)
    for step in range(1, 6):
        logged.append({"step": step, "loss": step / 3})
    logged.close()
    with path.open("a") as f:
        f.write("6,0.3")  # a line cut by a crash
    reopened = CsvTable(path, 3)
    assert path.read_text() == f"step,loss\n1,{1 / 3!r}\n2,{2 / 3!r}\n3,1.0\n"
    reopened.append({"step": 4, "loss": 0.5, "actor_loss": -1.0})  # a metric that first appears now widens the header
    reopened.close()
    assert path.read_text() == f"step,loss,actor_loss\n1,{1 / 3!r},\n2,{2 / 3!r},\n3,1.0,\n4,0.5,-1.0\n"


def test_the_wandb_adapter_makes_one_run_per_seed_with_its_record(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a fake wandb module: the exact calls (the real package is exercised by the CLI run above)."""
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    store = ResultsStore(tmp_path)
    run_ids = run(RunPlan("td3bc", TINY_ID, seeds=[0, 1], steps=20, eval_every=10, eval_episodes=1, log_every=5, overrides=FAST, loggers=["wandb"]), store)
    for run_id, wandb_run in zip(run_ids, fake.runs):
        record = store.load(run_id)
        assert wandb_run.init == {"project": "offbench", "dir": str(store.run_dir(run_id)), "id": run_id, "name": run_id,
                                  "group": record.config.group_id, "config": record.config.to_dict(), "mode": "offline",
                                  "resume": "allow", "reinit": "create_new", "settings": {"console": "off", "silent": True}}
        train, evaluation = sorted(f"train/{m}" for m in [*METRICS, "steps_per_s"]), [f"eval/{m}" for m in ("normalized_score", "return_mean", "return_std")]
        assert [(step, sorted(data)) for step, data in wandb_run.logged] == [
            (5, train), (10, train), (10, evaluation), (15, train), (20, train), (20, evaluation)]
        rows = table(store.run_dir(run_id) / "metrics.csv")
        assert [data["train/critic_loss"] for _, data in wandb_run.logged if "train/critic_loss" in data] == [float(r["critic_loss"]) for r in rows]
        assert [data["eval/normalized_score"] for _, data in wandb_run.logged if "eval/normalized_score" in data] == [
            entry["normalized_score"] for entry in record.curve]
        assert wandb_run.exit_code == 0
    monkeypatch.setenv("WANDB_MODE", "disabled")  # a mode the user set is wandb's to read
    WandbLog(tmp_path, store.load(run_ids[0]).config)
    assert fake.runs[-1].init["mode"] is None


def test_an_interrupted_group_closes_its_wandb_runs_as_failed(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench.algos.td3bc import TD3BC

    def update(self, batch, step):
        raise KeyboardInterrupt

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(TD3BC, "update", update)
    with pytest.raises(KeyboardInterrupt):
        run(RunPlan("td3bc", TINY_ID, seeds=[0, 1], steps=20, eval_every=10, eval_episodes=1, loggers=["wandb"]), ResultsStore(tmp_path))
    assert [wandb_run.exit_code for wandb_run in fake.runs] == [1, 1]


def test_a_full_disk_while_logging_stops_the_run_in_one_line(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line that cannot be flushed stays buffered, so closing the file fails too: that must not hide the first error."""
    from offbench import logs

    monkeypatch.setattr(logs, "open", lambda path, mode, **kwargs: FullDiskFile(path) if mode == "a" else open(path, mode, **kwargs), raising=False)
    store = ResultsStore(tmp_path)
    with pytest.raises(OffbenchError, match="No space left on device") as stopped:
        run(RunPlan("td3bc", TINY_ID, seeds=[0], steps=60, eval_every=10, eval_episodes=1, log_every=5, overrides=FAST), store)
    assert "stopped at step" in stopped.value.message
    assert store.runs(status=None)["status"].item().startswith("failed: at step")


class FullDiskFile:
    """A log file on a disk that fills up after two appended lines: flush, and so close, raise ENOSPC."""

    def __init__(self, path: Path) -> None:
        self.real, self.pending, self.room = open(path, "a", newline=""), "", 2

    def write(self, text: str) -> int:
        self.pending += text
        return len(text)

    def flush(self) -> None:
        if self.room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.real.name)
        self.real.write(self.pending)
        self.real.flush()
        self.pending, self.room = "", self.room - 1

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.flush()
        self.real.close()


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_a_missing_extra_is_one_line_before_any_data_is_loaded(empty_roots: Path, monkeypatch: pytest.MonkeyPatch, logger: str) -> None:
    monkeypatch.setitem(sys.modules, logger, None)  # as if the package were not installed
    store = ResultsStore(empty_roots / "results")
    with pytest.raises(OffbenchError, match=f"--{logger} needs the {logger} package") as raised:
        run(RunPlan("td3bc", "local/hopper-random-v5", seeds=[0], loggers=[logger]), store)
    assert raised.value.hint == f"pip install 'offbench[{logger}]'"
    assert not (empty_roots / "data").exists() and not store.runs_dir.exists()  # nothing made, no record


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_the_cli_says_a_missing_extra_in_one_line_with_exit_2(empty_roots: Path, logger: str) -> None:
    shadow = empty_roots / "uninstalled" / logger
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ImportError(\"No module named '{logger}'\")\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(shadow.parent)}
    results = empty_roots / "results"
    done = subprocess.run([sys.executable, "-m", "offbench", "run", "--algo", "td3bc", "--dataset", "hopper-random", f"--{logger}",
                           "--results-dir", str(results)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: --{logger} needs the {logger} package, which cannot be imported (No module named '{logger}') — pip install 'offbench[{logger}]'"]
    assert not (empty_roots / "data").exists() and not (results / "runs").exists()


class FakeWandb(types.ModuleType):
    """What offbench.logs uses of the wandb package, recording every call."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.runs: list[FakeRun] = []

    def init(self, **kwargs) -> FakeRun:
        self.runs.append(FakeRun(kwargs))
        return self.runs[-1]

    @staticmethod
    def Settings(**kwargs) -> dict:  # noqa: N802 (wandb's name)
        return kwargs


class FakeRun:
    def __init__(self, init: dict) -> None:
        self.init, self.logged, self.exit_code = init, [], None

    def log(self, data: dict, step: int) -> None:
        self.logged.append((step, data))

    def finish(self, exit_code: int) -> None:
        self.exit_code = exit_code
