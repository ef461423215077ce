"""The sweep's driver: hands jobs to an executor, shows progress, indexes what needs it, says what failed.

Datasets: each missing local dataset is made once by the driver before the jobs start (`prepare_datasets`); a
dataset no job can use (an unknown id) fails its jobs alone, without starting them.

Progress: a live table of queued / running / done / failed jobs, each running job's step, steps/s and latest
score, and an ETA for the whole sweep (remaining seed-steps over the seed-steps/s measured now); plain lines
(one per job that ends, and a status line at least every `PLAIN_EVERY_S`) when stderr is not a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from offbench.errors import OffbenchError
from offbench.execution.executors import Executor
from offbench.execution.sweep import Job, JobResult, job_seed_steps, job_state, read_progress

PLAIN_EVERY_S = 60.0


@dataclass
class SweepOutcome:
    results: list[JobResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def diverged(self) -> list[str]:
        return [run_id for r in self.results for run_id in r.diverged]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.diverged and not self.interrupted


def run_sweep(jobs: Sequence[Job], store, executor: Executor, print_line: Callable[[str], None] = print, live: object | None = None) -> SweepOutcome:
    """Run every job (skipping, resuming or re-running as `run_job` decides) and return their results.

    `live`: a rich Console for the live table; None prints plain lines through `print_line`.
    """
    store.ensure_writable()
    store.open_index()
    totals = {job.group_id: job_seed_steps(job) for job in jobs}
    outcome = SweepOutcome()
    board = _Board(jobs, store, executor, totals)
    board.mark_done_before({job.group_id for job in jobs if job_state(store, job) == "done"})
    print_line(f"sweep: {len(jobs)} jobs ({len(board.done_before)} already done) on the {executor.name} executor, "
               f"{executor.workers} worker{'s' if executor.workers != 1 else ''}; records in {store.root}")
    try:
        unusable = prepare_datasets([job for job in jobs if job.group_id not in board.done_before], print_line)
    except KeyboardInterrupt:
        outcome.interrupted = True
        return outcome
    for job in jobs:
        if job.dataset in unusable:
            result = JobResult(job.group_id, job.label(), "failed", job.run_ids, unusable[job.dataset])
            board.finish(result)
            outcome.results.append(result)
            print_line(_result_line(result))
    jobs = [job for job in jobs if job.dataset not in unusable]
    display = None
    if live is not None:
        from rich.live import Live

        display = Live(board.table(), console=live, refresh_per_second=1, transient=False)
        display.start()
    last_plain = time.monotonic()
    try:
        for result in executor.run(jobs, str(store.root)):
            if result is not None:
                if executor.indexes_in_driver:
                    _index(store, result)
                board.finish(result)
                outcome.results.append(result)
                if display is None:
                    print_line(_result_line(result))
            if display is not None:
                display.update(board.table())
            elif time.monotonic() - last_plain >= PLAIN_EVERY_S:
                last_plain = time.monotonic()
                print_line(board.status_line())
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        if display is not None:
            display.update(board.table())
            display.stop()
    print_line(board.status_line())
    return outcome


def prepare_datasets(jobs: Sequence[Job], print_line: Callable[[str], None] = print) -> dict[str, str]:
    """Make each missing local dataset of `jobs` once, here, before any job starts (workers would otherwise all make
    it at once); returns {dataset as given: one-line reason} for datasets no job can use (unknown id, a recipe that
    fails), whose jobs then fail alone. Datasets given by path are checked by their jobs."""
    from offbench.data import registry
    from offbench.data.user_files import is_user_path

    unusable: dict[str, str] = {}
    for dataset in dict.fromkeys(job.dataset for job in jobs):
        if is_user_path(dataset):
            continue
        try:
            dataset_id = registry.resolve(dataset)
            if not registry.is_present(dataset_id) and registry.is_makeable(dataset_id):
                print_line(f"making {dataset_id} (once, before its jobs start)")
                started = time.monotonic()
                registry.make_dataset(dataset_id)
                print_line(f"made {dataset_id} in {timedelta(seconds=round(time.monotonic() - started))}")
        except OffbenchError as error:
            unusable[dataset] = error.line()
    return unusable


def _index(store, result: JobResult) -> None:
    present = [r for r in result.run_ids if (store.run_dir(r) / "config.json").exists()]
    store.index_runs(present, failed=result.reason if result.status == "failed" else None)


def _result_line(result: JobResult) -> str:
    if result.status == "failed":
        return f"failed   {result.label} ({result.group_id}): {result.reason}"
    what = "skipped (already done)" if result.status == "skipped" else f"done in {timedelta(seconds=round(result.seconds))}"
    extra = f"; diverged: {', '.join(result.diverged)}" if result.diverged else ""
    return f"{result.status:<8} {result.label} ({result.group_id}): {what}{extra}"


class _Board:
    """What the progress display shows."""

    def __init__(self, jobs: Sequence[Job], store, executor: Executor, totals: dict[str, int]) -> None:
        self.jobs, self.store, self.executor, self.totals = list(jobs), store, executor, totals
        self.ended: dict[str, JobResult] = {}
        self.done_before: set[str] = set()
        self.start = time.monotonic()

    def mark_done_before(self, group_ids: set[str]) -> None:
        self.done_before = group_ids

    def finish(self, result: JobResult) -> None:
        self.ended[result.group_id] = result

    def counts(self) -> dict[str, int]:
        running = self.executor.running - set(self.ended)
        failed = sum(r.status == "failed" for r in self.ended.values())
        done = len(self.ended) - failed
        return {"queued": len(self.jobs) - len(self.ended) - len(running), "running": len(running), "done": done, "failed": failed}

    def progress(self) -> dict[str, dict]:
        running = self.executor.running - set(self.ended)
        return {gid: p for gid in running if (p := read_progress(Path(self.store.root), gid))}

    def eta(self, progress: dict[str, dict]) -> str:
        jobs = {job.group_id: job for job in self.jobs}
        rate = sum(p.get("steps_per_s", 0.0) * len(jobs[g].seeds) for g, p in progress.items())
        remaining = sum(total for gid, total in self.totals.items() if gid not in self.ended and gid not in progress)
        remaining += sum(max(self.totals[g] - p.get("step", 0) * len(jobs[g].seeds), 0) for g, p in progress.items())
        if rate <= 0:
            return "ETA -"
        return f"ETA {timedelta(seconds=round(remaining / rate))} at {rate:.0f} seed-steps/s"

    def status_line(self) -> str:
        counts = self.counts()
        progress = self.progress()
        running = "; ".join(f"{gid} step {p.get('step', 0)}/{p.get('total', 0)} {p.get('steps_per_s', 0):.0f} steps/s score {_score(p)}"
                            for gid, p in progress.items())
        return (f"jobs: {counts['queued']} queued, {counts['running']} running, {counts['done']} done, {counts['failed']} failed; "
                f"{self.eta(progress)}" + (f"; {running}" if running else ""))

    def table(self):
        from rich.table import Table

        counts, progress = self.counts(), self.progress()
        title = (f"{counts['queued']} queued · {counts['running']} running · {counts['done']} done · {counts['failed']} failed · "
                 f"{self.eta(progress)}")
        table = Table("job", "group", "step", "steps/s", "score", title=title, title_justify="left")
        jobs = {job.group_id: job for job in self.jobs}
        for gid in sorted(self.executor.running - set(self.ended)):
            p = progress.get(gid, {})
            table.add_row(jobs[gid].label(), gid, f"{p.get('step', 0)}/{p.get('total', '?')}", f"{p.get('steps_per_s', 0):.0f}", _score(p))
        return table


def _score(progress: dict) -> str:
    score = progress.get("score")
    return "-" if score is None else f"{score:.1f}"
