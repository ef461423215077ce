"""Sweeps: a grid of algorithms x datasets x seeds (x overrides) cut into jobs, each job one seed group.

**Grid -> jobs.** A cell is one algorithm x dataset with its budget and config overrides. Its seeds are cut
into seed groups of `group_size` consecutive seeds (default: all seeds of a cell in one group, or smaller
groups when there are fewer cells than workers, so every worker has a job). The cut changes no number:
every random stream of seed s derives from s alone (offbench.seeding), so seed s trains bit-identically
in any group, and alone.

**Job identity.** A job's group id is derived from the job alone (algorithm, dataset as given, budget,
resolved overrides, other plan options, seeds): `<algo>__<dataset>__sw<cell hash>-<seeds>`, and its runs are
`<group id>-s<seed>`. Re-running the same sweep therefore finds the same runs and the same checkpoint.

**Nothing lost, nothing counted twice.** `run_job` (what a worker runs) looks at the store first:
- every seed of the group has a summary: the job is `skipped`;
- the group has a checkpoint: it resumes from it (seeds whose summary was written before the kill are
  kept, never rewritten: offbench.train);
- otherwise it trains the group from step 0 under the same group id, so a failed or killed attempt's
  unfinished records are overwritten by the new attempt, never added to.
A finished run is written (summary last, atomically) by its worker before the job returns, so killing the
driver at any moment loses no finished run. A failing job (unknown dataset, NaN training, out of memory, a
killed worker after its retries) returns `failed` with one line, and the others go on.

A diverged run (an evaluation returned NaN or inf) is a result, recorded as `diverged` like any single run:
it is not trained again on a re-run (it would diverge again, bit for bit), but the sweep lists it at the end
and exits non-zero.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offbench.errors import OffbenchError
from offbench.io import read_json, write_json
from offbench.protocol import BUDGET_KEYS, MAX_SEED, MAX_SEEDS, check_integer, seed_list

PROGRESS_DIR = "sweep-progress"  # under the store root: one small JSON per running job (step, steps/s, score)
PROGRESS_EVERY_S = 2.0


# ---- jobs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One seed group of a sweep: what `offbench run` would train, with a stable group id."""

    algo: str
    dataset: str
    seeds: tuple[int, ...]
    steps: int | None = None
    eval_every: int | None = None
    eval_episodes: int | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # sorted (key, value) pairs: hashable and order-free
    device: str = "auto"
    options: tuple[tuple[str, Any], ...] = ()  # other RunPlan fields (subset, corrupt, data_seed, ...)

    @property
    def cell_key(self) -> str:
        """Everything but the seeds and the device, as canonical JSON (the device changes no result on CPU)."""
        cell = {"algo": self.algo, "dataset": self.dataset, **{k: getattr(self, k) for k in BUDGET_KEYS},
                "overrides": dict(self.overrides), "options": dict(self.options)}
        return json.dumps(cell, sort_keys=True, default=str)

    @property
    def group_id(self) -> str:
        digest = hashlib.sha256(self.cell_key.encode()).hexdigest()[:10]
        dataset = "".join(c if c.isalnum() or c in "-_.+=" else "-" for c in self.dataset.replace("/", "-")).lstrip(".")[:60]
        return f"{self.algo}__{dataset}__sw{digest}-{_seed_tag(self.seeds)}"

    @property
    def run_ids(self) -> list[str]:
        return [f"{self.group_id}-s{seed}" for seed in self.seeds]

    def plan(self) -> Any:
        from offbench.train import RunPlan

        return RunPlan(algo=self.algo, dataset=self.dataset, seeds=list(self.seeds), steps=self.steps, eval_every=self.eval_every,
                       eval_episodes=self.eval_episodes, overrides=dict(self.overrides), device=self.device, **dict(self.options))

    def label(self) -> str:
        return f"{self.algo} {self.dataset} seeds {_seed_tag(self.seeds)}"


def _seed_tag(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"{seeds[0]}"
    return "x" + hashlib.sha256(",".join(map(str, seeds)).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Cell:
    algo: str
    dataset: str
    budget: dict[str, int | None]
    overrides: dict[str, Any] = field(default_factory=dict)


def grid(algos: Sequence[str], datasets: Sequence[str], budget: dict[str, int | None], overrides: dict[str, Any] | None = None,
         protocol: Any = None) -> list[Cell]:
    """Cells of algorithms x datasets (dataset globs expanded against the catalogue); a protocol adds its per-cell
    budgets and overrides, and `overrides` (the command line's --set) wins over both."""
    from offbench.algos import get_algorithm

    for algo in algos:
        get_algorithm(algo)  # an unknown algorithm is a usage error of the whole sweep
    cells = []
    for algo in algos:
        for dataset in expand_datasets(datasets):
            cell_budget, cell_set = protocol.cell(algo, dataset) if protocol is not None else ({}, {})
            merged = {key: budget.get(key) if budget.get(key) is not None else cell_budget.get(key) for key in BUDGET_KEYS}
            cells.append(Cell(algo, dataset, merged, {**cell_set, **(overrides or {})}))
    return cells


def expand_datasets(selectors: Sequence[str]) -> list[str]:
    """Dataset ids and aliases as given; a glob (`local/hopper-*`) is expanded against the known datasets."""
    chosen: list[str] = []
    for selector in selectors:
        if any(c in selector for c in "*?["):
            from offbench.data.ids import selects
            from offbench.data.registry import list_datasets

            known = [status.id for status in list_datasets()]
            matches = [d for d in known if selects(selector, d) or fnmatch.fnmatchcase(d, selector)]
            if not matches:
                raise OffbenchError(f"no known dataset matches {selector!r}", "list them with `offbench data list`")
            chosen += [m for m in matches if m not in chosen]
        elif selector not in chosen:
            chosen.append(selector)
    return chosen


def jobs_of(cells: Sequence[Cell], seeds: Sequence[int], group_size: int | None = None, workers: int = 1, device: str = "auto",
            options: dict[str, Any] | None = None) -> list[Job]:
    """Each cell's seeds cut into groups (see the module docstring for the default size)."""
    seeds = seed_list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise OffbenchError(f"seeds must be distinct non-negative integers, got {seeds}"[:200])
    check_integer("a seed", max(seeds), 0, MAX_SEED)
    if group_size is None:
        groups_per_cell = max(1, -(-workers // max(len(cells), 1)))
        group_size = -(-len(seeds) // min(groups_per_cell, len(seeds)))
    check_integer("--group-size", group_size, 1, MAX_SEEDS)
    option_items = tuple(sorted((options or {}).items()))
    return [
        Job(cell.algo, cell.dataset, tuple(seeds[i:i + group_size]), **cell.budget, overrides=tuple(sorted(cell.overrides.items())),
            device=device, options=option_items)
        for cell in cells for i in range(0, len(seeds), group_size)
    ]


# ---- the job function (runs in a worker) ------------------------------------------------------------


@dataclass
class JobResult:
    group_id: str
    label: str
    status: str  # "done", "skipped", "failed"
    run_ids: list[str]
    reason: str = ""  # failed: one line
    seconds: float = 0.0
    seed_steps: int = 0  # seed-steps trained by this attempt
    diverged: list[str] = field(default_factory=list)  # run ids whose summary says diverged


def job_state(store: Any, job: Job) -> str:
    """`done` (every run has a summary), `resume` (a checkpoint exists) or `new`."""
    if all(store.is_finished(run_id) for run_id in job.run_ids):
        return "done"
    return "resume" if store.checkpoint_path(job.group_id).exists() else "new"


def run_job(job: Job, root: str, indexed: bool = True) -> JobResult:
    """Train one job into the store at `root` (skip, resume or start: see the module docstring); never raises
    for the job's own failure, which comes back as a `failed` result with one line."""
    from offbench import train
    from offbench.store import ResultsStore

    store = ResultsStore(root, indexed=indexed)
    start = time.time()
    result = JobResult(job.group_id, job.label(), "done", job.run_ids)
    reporter = FileReporter(Path(root) / PROGRESS_DIR / f"{job.group_id}.json")
    try:
        state = job_state(store, job)
        if state == "done":
            result.status = "skipped"
        else:
            store.ensure_writable()
            before = _checkpoint_step(store, job) if state == "resume" else 0
            if state == "resume":
                train.resume(job.group_id, store, reporter, plan=job.plan())
            else:
                train.run(job.plan(), store, reporter, group_id=job.group_id)
            result.seed_steps = (reporter.last_step - before) * len(job.seeds)
    except KeyboardInterrupt as stop:  # SIGINT/SIGTERM of the worker: recorded as interrupted, resumable
        result.status, result.reason = "failed", _one_line(str(stop) or "interrupted")
    except OffbenchError as error:
        result.status, result.reason = "failed", _one_line(error.line())
    except Exception as error:  # noqa: BLE001  (NaN, out of memory, a bug: this job fails, the sweep goes on)
        where = traceback.extract_tb(error.__traceback__)[-1]
        result.status = "failed"
        result.reason = _one_line(f"{type(error).__name__}: {error} ({Path(where.filename).name}:{where.lineno})")
    finally:
        reporter.clear()
    result.seconds = time.time() - start
    result.diverged = [r for r in job.run_ids if _summary_status(store, r) == "diverged"]
    return result


def _checkpoint_step(store: Any, job: Job) -> int:
    from offbench.train import load_checkpoint

    try:
        return load_checkpoint(store, job.group_id)["step"]
    except OffbenchError:  # resume reports an unusable checkpoint in its own words
        return 0


def _summary_status(store: Any, run_id: str) -> str | None:
    if not store.is_finished(run_id):
        return None
    records, _ = store.load_intact([run_id])  # a damaged record has no status
    return records[run_id].summary.status if records else None


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."


class FileReporter:
    """A worker's progress as a small JSON file the driver reads (works for local workers and Ray workers on a
    shared filesystem alike); written at most every PROGRESS_EVERY_S seconds and at each evaluation."""

    def __init__(self, path: Path) -> None:
        self.path, self.total, self.last_step, self.score, self.written = path, 0, 0, None, 0.0
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def start(self, total: int, completed: int) -> None:
        self.total, self.last_step = total, completed
        self._write(completed, 0.0)

    def advance(self, step: int, steps_per_s: float, score: float | None) -> None:
        self.last_step = step
        if score is not None:
            self.score = score
        if score is not None or time.monotonic() - self.written >= PROGRESS_EVERY_S:
            self._write(step, steps_per_s)

    def making(self, dataset_id: str) -> None:
        return None

    def stop(self) -> None: ...

    def clear(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:  # something else planted there (a folder): progress is a courtesy
            pass

    def _write(self, step: int, steps_per_s: float) -> None:
        self.written = time.monotonic()
        try:
            write_json(self.path, {"step": step, "total": self.total, "steps_per_s": steps_per_s, "score": self.score, "pid": os.getpid(),
                                   "at": time.time()})
        except OSError:  # progress is a courtesy; the records are what count
            pass


def read_progress(root: Path, group_id: str) -> dict[str, Any] | None:
    """A job's progress file, or None when it is absent or not what `FileReporter` writes (a store is untrusted: a fifo
    would block the driver, a string rate would break its table)."""
    path = root / PROGRESS_DIR / f"{group_id}.json"
    try:
        progress = read_json(path) if path.is_file() else None
    except (OSError, ValueError, RecursionError):
        return None
    numbers = ("step", "total", "steps_per_s")
    if not isinstance(progress, dict) or not all(isinstance(progress.get(k), (int, float)) and not isinstance(progress.get(k), bool) for k in numbers):
        return None
    return progress if all(0 <= progress[k] <= 1e15 for k in numbers) else None


# ---- cost estimate ----------------------------------------------------------------------------------

# Seed-steps/s on one core of the development CPU at the default configs (benchmarks/README.md, update
# speed, S = 5); used when the store holds no finished run of the algorithm on this kind of device.
BENCHMARK_SEED_STEPS_PER_S = {"td3bc": 135.0, "bc": 468.0, "sparse-reg": 125.0, "bcq": 16.0, "driftql": 1.2}


def measured_rates(store: Any, device_type: str) -> dict[str, tuple[float, str]]:
    """{algo: (seed-steps/s, where from)}: the median over this store's finished runs on `device_type`
    (their provenance records), else the benchmarks' CPU numbers."""
    import numpy as np

    rates: dict[str, tuple[float, str]] = {a: (r, "benchmarks/README.md (1 CPU core)") for a, r in BENCHMARK_SEED_STEPS_PER_S.items()}
    try:
        frame = store.runs("finished")
    except Exception:  # noqa: BLE001  (no or unreadable store: the benchmark numbers stand)
        return rates
    for algo, rows in frame.groupby("algo"):
        values = []
        for row in rows.tail(50).itertuples():
            if str(row.device or "").split(":")[0] != device_type:
                continue
            records, _ = store.load_intact([row.run_id])  # a damaged summary (a fifo, a string rate) is left out
            rate = records[row.run_id].summary.seed_steps_per_s if records else None
            if rate:
                values.append(rate)
        if values:
            rates[algo] = (float(np.median(values)), f"median of {len(values)} runs in {store.root} on {device_type}")
    return rates


def job_seed_steps(job: Job) -> int:
    from offbench.train import plan_budget

    return plan_budget(job.plan())["steps"] * len(job.seeds)


def asdict(job: Job) -> dict[str, Any]:
    return dataclasses.asdict(job)
