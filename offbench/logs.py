"""Logs researchers already read, written the same way for every algorithm by the training loop.

In each run folder (`runs/<run_id>/`, offbench.store), one writer per logger and seed:

    metrics.csv       every `log_every` steps and at the last step: step, that seed's latest value of each
                      training metric (what `algorithm.update` returned), steps_per_s (the group's gradient
                      steps per second of training time since the previous row, or since the (re)start)
    evaluations.csv   one row per evaluation: step, normalized_score, return_mean, return_std, episodes,
                      time_s, diverged; the values of curve.json's entry (an empty cell where it holds null)
    tb/               `--tensorboard` (extra `tensorboard`): event files with the scalars train/<metric>,
                      train/steps_per_s, eval/normalized_score, eval/return_mean and eval/return_std
    wandb/            `--wandb` (extra `wandb`): one wandb run per seed, with the same scalars; id and name the
                      run id, group the group id, config config.json; offline unless WANDB_MODE is set

Numbers are written exactly: Python's shortest round-trip text of the value (a float32 metric reads back
as the same number). A non-finite training metric is written as `nan`, `inf` or `-inf`, never dropped or
replaced. A metric that first appears after the first row (TD3+BC's delayed actor loss with
`--log-every 1`) extends the header, and earlier rows hold an empty cell for it.

Crash-safe and resume-correct: a row is one appended line, flushed at once (`tail -f` works), and every
file is made durable before each checkpoint. A resumed group first cuts each CSV back to the rows of its
checkpoint's step and earlier (a half-written last line goes too) and gives TensorBoard the same purge
step, so every step is there once, as in an uninterrupted run. wandb cannot rewind a run: each (re)start
adds an offline run folder under `wandb/`, and the steps between the checkpoint and the kill may be in its
history twice; the CSV files are exact.

These files are a view for people and their tools: curve.json and summary.json stay the record that
analysis reads, and nothing here changes them.
"""

from __future__ import annotations

import csv
import importlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from offbench.errors import OffbenchError
from offbench.io import atomic_write
from offbench.records import RunConfig

DEFAULT_LOG_EVERY = 1000
MODULES = {"tensorboard": ("tensorboard", "torch.utils.tensorboard"), "wandb": ("wandb",)}  # optional logger -> what it imports
EVALUATION_SCALARS = ("normalized_score", "return_mean", "return_std")


def check_loggers(loggers: Sequence[str], log_every: int) -> None:
    """Raise one line (`OffbenchError`) for a log period below 1, an unknown logger, or a logger whose
    package cannot be imported (with the extra that installs it); called before any data is loaded."""
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise OffbenchError(f"--log-every must be positive, got {log_every!r}")
    for name in loggers:
        if name not in MODULES:
            raise OffbenchError(f"unknown logger '{name}'", f"choose from: {', '.join(MODULES)}")
        for module in MODULES[name]:
            _import(name, module)


def described(loggers: Sequence[str], log_every: int) -> dict[str, Any]:
    """What a run's provenance says about its logs: the period and where each log is in its run folder."""
    logs: dict[str, Any] = {"log_every": log_every, "csv": ["metrics.csv", "evaluations.csv"]}
    if "tensorboard" in loggers:
        logs["tensorboard"] = "tb/"
    if "wandb" in loggers:
        logs["wandb"] = {"dir": "wandb/", "project": _wandb_project(), "mode": os.environ.get("WANDB_MODE", "offline")}
    return logs


class LogWriter(Protocol):
    """One seed's logger: the CSV files, TensorBoard and wandb are adapters of this one interface."""

    def training(self, step: int, row: dict[str, float]) -> None: ...
    def evaluation(self, step: int, row: dict[str, Any]) -> None: ...
    def flush(self) -> None: ...  # make what was written durable: called before every checkpoint
    def close(self, exit_code: int) -> None: ...


class GroupLogs:
    """The logs of one seed group: each seed's writers, when a training row is due, and the group's speed."""

    def __init__(self, writers: list[list[LogWriter]], log_every: int, steps: int, step: int, train_time_s: float) -> None:
        self.writers, self.log_every, self.steps = writers, log_every, steps
        self.last_row = (step, train_time_s)

    def due(self, step: int) -> bool:
        """Whether `step` gets a training row: every `log_every` steps and the last step."""
        return step % self.log_every == 0 or step == self.steps

    def training(self, step: int, metrics: dict[str, np.ndarray], train_time_s: float) -> None:
        """One row per seed: `metrics` maps each name to its (S,) latest values; `train_time_s` is the group's so far."""
        last_step, last_time = self.last_row
        steps_per_s = (step - last_step) / max(train_time_s - last_time, 1e-9)
        self.last_row = (step, train_time_s)
        for s, writers in enumerate(self.writers):
            row = {**{name: float(values[s]) for name, values in metrics.items()}, "steps_per_s": steps_per_s}
            for writer in writers:
                writer.training(step, row)

    def evaluation(self, step: int, entries: Sequence[dict[str, Any]]) -> None:
        """One row per seed from its new curve entry (`offbench.train.evaluation_entry`)."""
        for entry, writers in zip(entries, self.writers):
            row = {**{name: entry[name] for name in EVALUATION_SCALARS}, "episodes": len(entry["returns"]),
                   "time_s": entry["time_s"], "diverged": bool(entry.get("diverged", False))}
            for writer in writers:
                writer.evaluation(step, row)

    def flush(self) -> None:
        for writers in self.writers:
            for writer in writers:
                writer.flush()

    def close(self, exit_code: int) -> None:
        """Close every writer. `exit_code` 1 (the run stopped on an error or a signal) tells wandb so, and a
        writer that cannot close then (a full disk keeps its line unwritten) does not hide that error."""
        for writers in self.writers:
            for writer in writers:
                try:
                    writer.close(exit_code)
                except OSError:
                    if exit_code == 0:
                        raise


def open_group_logs(configs: Sequence[RunConfig], run_dirs: Sequence[Path], loggers: Sequence[str], log_every: int,
                    steps: int, step: int, train_time_s: float) -> GroupLogs:
    """Open every seed's writers at `step` (0, or the step of the checkpoint a group resumes from), cutting
    back what a killed process wrote after it; `train_time_s` is the group's training time at that step."""
    writers: list[list[LogWriter]] = []
    for config, run_dir in zip(configs, run_dirs):
        seed_writers: list[LogWriter] = [CsvLog(run_dir, step)]
        if "tensorboard" in loggers:
            seed_writers.append(TensorBoardLog(run_dir / "tb", step))
        if "wandb" in loggers:
            seed_writers.append(WandbLog(run_dir, config))
        writers.append(seed_writers)
    return GroupLogs(writers, log_every, steps, step, train_time_s)


# ---- adapters ------------------------------------------------------------------------------------


class CsvLog:
    """metrics.csv and evaluations.csv of one run folder (always on)."""

    def __init__(self, run_dir: Path, step: int) -> None:
        self.metrics = CsvTable(run_dir / "metrics.csv", step)
        self.evaluations = CsvTable(run_dir / "evaluations.csv", step)

    def training(self, step: int, row: dict[str, float]) -> None:
        self.metrics.append({"step": step, **row})

    def evaluation(self, step: int, row: dict[str, Any]) -> None:
        self.evaluations.append({"step": step, **row})

    def flush(self) -> None:
        self.metrics.flush()
        self.evaluations.flush()

    def close(self, exit_code: int) -> None:
        self.metrics.close()
        self.evaluations.close()


class CsvTable:
    """A CSV file with a `step` first column, appended one flushed line per row.

    Opening it keeps only the rows up to `keep_through` (the step a group starts or resumes at) and
    drops an unfinished last line, rewriting the file atomically when anything goes.
    """

    def __init__(self, path: Path, keep_through: int) -> None:
        self.path = path
        self.columns, rows, cut = _read_through(path, keep_through)
        if cut:
            self._rewrite(self.columns, rows)
        self.file = open(path, "a", newline="") if self.columns else None

    def append(self, row: dict[str, Any]) -> None:
        """Write `row` (None as an empty cell), first widening the header when it has a new column."""
        new = [key for key in row if key not in self.columns]
        if new:
            rows = _read_through(self.path, math.inf)[1] if self.columns else []
            self.close()
            self._rewrite(self.columns + new, rows)
            self.file = open(self.path, "a", newline="")
        csv.writer(self.file, lineterminator="\n").writerow([row.get(column) for column in self.columns])
        self.file.flush()

    def flush(self) -> None:
        if self.file is not None:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _rewrite(self, columns: list[str], rows: list[list[str]]) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows([columns, *(r + [""] * (len(columns) - len(r)) for r in rows)])

        atomic_write(self.path, write)
        self.columns = list(columns)


def _read_through(path: Path, last_step: float) -> tuple[list[str], list[list[str]], bool]:
    """(header, rows whose step <= last_step, whether anything else was in the file); ([], [], False) without a file."""
    if not path.exists():
        return [], [], False
    lines = path.read_text().splitlines(keepends=True)
    complete = [line for line in lines if line.endswith("\n")]  # only a last line cut by a crash has no newline
    table = list(csv.reader(complete))
    if not table:  # nothing, or a header cut by a crash: the first row rewrites the file
        return [], [], False
    header, rows = table[0], table[1:]
    kept = [row for row in rows if int(row[0]) <= last_step]
    return header, kept, len(kept) + 1 != len(lines)


class TensorBoardLog:
    """Event files in `tb/` with TensorBoard's own SummaryWriter (torch.utils.tensorboard, package `tensorboard`).

    Its purge step hides events after `step` that a killed process wrote, as TensorBoard does after a restart.
    """

    def __init__(self, folder: Path, step: int) -> None:
        summary_writer = _import("tensorboard", "torch.utils.tensorboard").SummaryWriter
        self.writer = summary_writer(str(folder), purge_step=step + 1)

    def training(self, step: int, row: dict[str, float]) -> None:
        for name, value in row.items():
            self.writer.add_scalar(f"train/{name}", value, step)

    def evaluation(self, step: int, row: dict[str, Any]) -> None:
        for name in EVALUATION_SCALARS:
            self.writer.add_scalar(f"eval/{name}", _number(row[name]), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, exit_code: int) -> None:
        self.writer.close()


class WandbLog:
    """One wandb run per seed in `<run folder>/wandb/` (package `wandb`); offline unless WANDB_MODE is set.

    Its id is the run id and it resumes that id, so a resumed group continues the same wandb run.
    """

    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        wandb = _import("wandb", "wandb")
        self.run = wandb.init(
            project=_wandb_project(), dir=str(run_dir), id=config.run_id, name=config.run_id, group=config.group_id,
            config=config.to_dict(), mode=None if "WANDB_MODE" in os.environ else "offline", resume="allow",
            reinit="create_new", settings=wandb.Settings(console="off", silent=True),
        )

    def training(self, step: int, row: dict[str, float]) -> None:
        self.run.log({f"train/{name}": value for name, value in row.items()}, step=step)

    def evaluation(self, step: int, row: dict[str, Any]) -> None:
        self.run.log({f"eval/{name}": _number(row[name]) for name in EVALUATION_SCALARS}, step=step)

    def flush(self) -> None:
        """Nothing to do: wandb's own process writes each logged row as it comes."""

    def close(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)


def _import(logger: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise OffbenchError(f"--{logger} needs the {logger} package, which cannot be imported ({error})",
                            f"pip install 'offbench[{logger}]'") from None


def _wandb_project() -> str:
    return os.environ.get("WANDB_PROJECT", "offbench")


def _number(value: float | None) -> float:
    """A null score (a diverged evaluation) as NaN: TensorBoard and wandb take numbers only."""
    return math.nan if value is None else value
