"""The `offbench` command line: a thin skin over the library (parse, call, print)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from offbench.algos import ALGORITHMS
from offbench.analysis.commands import check, leaderboard_app, report
from offbench.errors import OffbenchError
from offbench.logs import DEFAULT_LOG_EVERY
from offbench.paths import results_dir
from offbench.protocol import MAX_SEED, MAX_SEEDS, check_integer
from offbench.records import evaluation_count

app = typer.Typer(
    help="Offline-RL baselines under one protocol, with honest statistics.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: list, inspect, make.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from offbench import __version__

        print(f"offbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit.")) -> None:
    """Offline-RL baselines under one protocol, with honest statistics."""

app.add_typer(data_app, name="data")
app.command("report")(report)
app.command("check")(check)
app.add_typer(leaderboard_app, name="leaderboard")

# Piped output (logs, CI) gets wide lines instead of rich's 80-column default, so ids are never cut.
out = Console(width=None if sys.stdout.isatty() else 220)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 220)

ResultsDirOption = typer.Option(None, "--results-dir", help="Results store directory (default: $OFFBENCH_RESULTS_DIR or ./results).")


PLAIN_PROGRESS_EVERY_S = 60.0  # piped output: a line at each evaluation, and at least this often between them
PLAIN_MAKING_EVERY_S = 15.0  # piped output while a dataset is made: a line this often, and one at the end


class ProgressReporter:
    """A rich progress bar with steps/s and the latest normalised score; plain lines when stderr is not a terminal."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.progress: Progress | None = None
        self.task = None
        self.score = "-"
        self.plain = not err.is_terminal
        self.total = 0
        self.last_line = 0.0

    def message(self, text: str) -> None:
        err.print(text)

    def start(self, total: int, completed: int) -> None:
        self.total, self.last_line = total, time.monotonic()
        if self.plain:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]} steps/s"), TextColumn("score {task.fields[score]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=total, completed=completed, rate="-", score="-")

    def advance(self, step: int, steps_per_s: float, score: float | None) -> None:
        if score is not None:
            self.score = f"{score:.1f}"
        if not self.plain:
            self.progress.update(self.task, completed=step, rate=f"{steps_per_s:.0f}", score=self.score)
        elif score is not None or time.monotonic() - self.last_line >= PLAIN_PROGRESS_EVERY_S:
            self.last_line = time.monotonic()
            eta = timedelta(seconds=round((self.total - step) / max(steps_per_s, 1e-9)))
            err.print(f"step {step}/{self.total} ({100 * step / self.total:.0f}%)  {steps_per_s:.0f} steps/s  "
                      f"score {self.score}  ETA {eta}", highlight=False)

    def making(self, dataset_id: str) -> Callable[[int], None]:
        return _making_progress(dataset_id)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _making_progress(dataset_id: str) -> Callable[[int], None]:
    """A progress callback for making `dataset_id` (rows made so far): a bar on a terminal, plain lines otherwise."""
    from offbench.data.registry import recipe_steps

    total = recipe_steps(dataset_id)
    if not err.is_terminal:
        return _plain_making_progress(dataset_id, total)
    progress = Progress(TextColumn(f"making {dataset_id}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=err)
    task = progress.add_task("make", total=total)
    progress.start()

    def advance(steps: int) -> None:
        progress.advance(task, steps)
        if progress.tasks[0].finished:
            progress.stop()

    return advance


def _plain_making_progress(dataset_id: str, total: int | None) -> Callable[[int], None]:
    """`making ID: n/total rows (p%)  r rows/s  ETA h:mm:ss`, every PLAIN_MAKING_EVERY_S and when done (CI logs,
    nohup, tee); `making ID: n rows  r rows/s` when the recipe does not say its total (snapshot-sequence, union)."""
    start = last = time.monotonic()
    made = 0

    def advance(steps: int) -> None:
        nonlocal made, last
        if total is not None and made >= total:  # a recipe that reports again once done
            return
        made += steps
        now = time.monotonic()
        if now - last < PLAIN_MAKING_EVERY_S and (total is None or made < total):
            return
        last = now
        rate = made / max(now - start, 1e-9)
        if total is None:
            err.print(f"making {dataset_id}: {made:,} rows  {rate:,.0f} rows/s", highlight=False)
            return
        eta = timedelta(seconds=round((total - made) / max(rate, 1e-9)))
        err.print(f"making {dataset_id}: {made:,}/{total:,} rows ({100 * made / max(total, 1):.0f}%)  {rate:,.0f} rows/s  ETA {eta}", highlight=False)

    return advance


# ---- run / runs ----------------------------------------------------------------------------------


@app.command()
def run(
    algo: Optional[str] = typer.Option(None, "--algo", help=f"Algorithm, required (unless --resume): {', '.join(ALGORITHMS)}."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Required (unless --resume). Dataset id or alias (hopper-medium, local/hopper-random-v5), "
                                                               "or the path of your own file: a D4RL-layout .hdf5, an .npz or a Minari dataset folder."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Gradient steps (default: the algorithm's protocol, baselines/<algo>.toml; 1M for most)."),
    seeds: int = typer.Option(1, "--seeds", help="Number of seeds, trained together on the seed axis; one record each."),
    seed_start: int = typer.Option(0, "--seed-start", help="First seed; seeds are seed-start .. seed-start+seeds-1."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every K steps (default: the algorithm's protocol)."),
    eval_episodes: Optional[int] = typer.Option(None, "--eval-episodes", help="Evaluation episodes per seed (default: the algorithm's protocol)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads of this process (1 cannot oversubscribe a busy machine)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key of baselines/<algo>.toml: --set alpha=2.5 (repeatable)."),
    subset: Optional[int] = typer.Option(None, "--subset", help="Small-data protocol: train on N transitions of the dataset (recorded in the dataset id)."),
    subset_mode: str = typer.Option("first", "--subset-mode", help="first: the first N transitions (Sparse-Reg's code); episodes: random whole episodes."),
    corrupt: Optional[str] = typer.Option(None, "--corrupt", help="relabel-random-actions:P relabels a fraction P of the actions (recorded in the id)."),
    data_seed: int = typer.Option(0, "--data-seed", help="Seed of data transforms (random-episode subsets, corruption), shared by all training seeds."),
    env: Optional[str] = typer.Option(None, "--env", help="Your own file: the Gymnasium env to evaluate in (e.g. Hopper-v5)."),
    ref: Optional[str] = typer.Option(None, "--ref", help="Your own file: reference returns for normalised scores, d4rl:<robot> or MIN,MAX."),
    clip_actions: bool = typer.Option(False, "--clip-actions", help="Your own file: clip actions outside the env's box (recorded as +clip-actions)."),
    log_every: int = typer.Option(DEFAULT_LOG_EVERY, "--log-every", help="A row of training metrics in each run's metrics.csv every K steps and at the last."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files in each run's tb/ (needs the tensorboard extra)."),
    wandb: bool = typer.Option(False, "--wandb",
                               help="Also log each seed to a wandb run in its run folder, offline unless WANDB_MODE is set (needs the wandb extra)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Resume a killed seed group by its group id (other options are taken from it)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Run a whole protocol (ci, or a protocols/*.toml path) as a sweep."),
    results: Optional[Path] = ResultsDirOption,
) -> None:
    """Train ALGO on DATASET for one or more seeds under the unified protocol and record each run.

    Each run folder also gets metrics.csv and evaluations.csv (see offbench.logs)."""
    from offbench import train
    from offbench.config import parse_overrides
    from offbench.store import ResultsStore

    if protocol is not None:
        if algo or dataset or resume:
            raise OffbenchError("--protocol runs the protocol's own grid", "drop --algo/--dataset/--resume, or use `offbench sweep` to select a part")
        sweep(protocol=protocol, algos=None, datasets=None, seeds=None, seed_start=0, steps=steps, eval_every=eval_every,
              eval_episodes=eval_episodes, set_=set_, device=device, group_size=None, executor="local", workers=None, address=None,
              cpus_per_job=1.0, gpus_per_job=0.0, retries=2, dry_run=False, results=results)
        return
    check_integer("--threads", threads, 1, MAX_THREADS)
    torch_threads(threads)
    store = ResultsStore(results_dir(results))
    try:
        run_ids = _train_or_resume(store, resume, algo, dataset, seeds, seed_start, dict(
            steps=steps, eval_every=eval_every, eval_episodes=eval_episodes, overrides=parse_overrides(set_), device=device,
            subset=subset, subset_mode=subset_mode, corrupt=corrupt, data_seed=data_seed, env=env, ref=ref, clip_actions=clip_actions,
            log_every=log_every, loggers=[name for name, chosen in (("tensorboard", tensorboard), ("wandb", wandb)) if chosen]))
    except KeyboardInterrupt as stop:  # click would swallow it into a bare exit code 130; say what happened
        err.print(str(stop) if isinstance(stop, train.Interrupted) else "interrupted before training started", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    _print_run_summaries(store, run_ids)


def _train_or_resume(store, resume: str | None, algo: str | None, dataset: str | None, seeds: int, seed_start: int, options: dict) -> list[str]:
    from offbench import train
    from offbench.data.user_files import is_user_path

    if resume is not None:
        return train.resume(resume, store, ProgressReporter(resume))
    if not algo or not dataset:
        raise OffbenchError("--algo and --dataset are required (or --resume GROUP_ID)",
                            "e.g. offbench run --algo td3bc --dataset hopper-medium --steps 5000")
    _check_seed_range(seeds, seed_start)
    if is_user_path(dataset):  # recorded absolute, so that --resume finds it from any directory
        dataset = str(Path(dataset).expanduser().resolve())
    plan = train.RunPlan(algo=algo, dataset=dataset, seeds=list(range(seed_start, seed_start + seeds)), **options)
    return train.run(plan, store, ProgressReporter(f"{algo} {dataset}"))


@app.command()
def sweep(
    protocol: Optional[str] = typer.Argument(None, help="A protocol by name (ci) or path (protocols/ci.toml); or give --algos and --datasets."),
    algos: Optional[str] = typer.Option(None, "--algos", help="Comma-separated algorithms (with a protocol: a subset of its algorithms)."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Comma-separated dataset ids, aliases or globs ('local/hopper-*')."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per cell (default: the protocol's, else 1)."),
    seed_start: int = typer.Option(0, "--seed-start", help="First seed."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Gradient steps (default: the protocol's, else each algorithm's)."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every K steps."),
    eval_episodes: Optional[int] = typer.Option(None, "--eval-episodes", help="Evaluation episodes per seed."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key of baselines/<algo>.toml in every cell: --set alpha=2.5 (repeatable)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (per job)."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Seeds per job (a seed group); default a cell's seeds, split so all workers get one."),
    executor: str = typer.Option("local", "--executor", help="local (a process pool) or ray (Ray tasks; pip install 'offbench[ray]')."),
    workers: Optional[int] = typer.Option(None, "--workers", help="local: worker processes (default: the cores); ray: CPUs of a local Ray instance."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: join a running cluster (e.g. auto, or ray://HOST:10001)."),
    cpus_per_job: float = typer.Option(1.0, "--cpus-per-job", help="ray: CPUs reserved per job."),
    gpus_per_job: float = typer.Option(0.0, "--gpus-per-job", help="ray: GPUs per job; a fraction (0.25) lets several seed groups share a device."),
    retries: int = typer.Option(2, "--retries", help="Times a job whose worker was lost (killed, out of memory) is run again."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the jobs and their estimated cost; train nothing."),
    results: Optional[Path] = ResultsDirOption,
) -> None:
    """Run a grid of algorithms x datasets x seeds: finished runs are skipped, checkpointed groups resumed, failed ones re-run."""
    from offbench.config import parse_overrides
    from offbench.execution import grid, jobs_of, make_executor, run_sweep
    from offbench.store import ResultsStore

    split = lambda text: [part.strip() for part in text.split(",") if part.strip()] if text else None  # noqa: E731
    budget = {"steps": steps, "eval_every": eval_every, "eval_episodes": eval_episodes}
    loaded = None
    if protocol is not None:
        from offbench.analysis.leaderboard import load_protocol

        loaded = load_protocol(protocol)
        chosen_algos, chosen_datasets = loaded.select(split(algos), split(datasets))
        seeds = loaded.seeds if seeds is None else seeds
    else:
        if not algos or not datasets:
            raise OffbenchError("give a protocol, or --algos and --datasets", "e.g. offbench sweep protocols/ci.toml, or "
                                "offbench sweep --algos td3bc,bc --datasets 'local/hopper-*' --seeds 3 --steps 5000")
        chosen_algos, chosen_datasets = split(algos), split(datasets)
    seeds = 1 if seeds is None else seeds
    _check_seed_range(seeds, seed_start)
    check_integer("--retries", retries, 0, MAX_RETRIES)
    for name, value in (("--workers", workers), ("--group-size", group_size)):
        if value is not None:
            check_integer(name, value, 1, MAX_SEEDS)
    cells = grid(chosen_algos, chosen_datasets, budget, parse_overrides(set_), loaded)
    store = ResultsStore(results_dir(results))
    if not dry_run:
        store.ensure_writable()  # before a Ray cluster is joined or started
    engine = make_executor(executor, workers, address, cpus_per_job, gpus_per_job, retries) if not dry_run or executor == "local" else None
    jobs = jobs_of(cells, range(seed_start, seed_start + seeds), group_size, engine.workers if engine else 1, device)
    _check_cells(jobs)
    if dry_run:
        _print_dry_run(jobs, store, device, loaded)
        return
    outcome = run_sweep(jobs, store, engine, print_line=lambda text: err.print(text, highlight=False, soft_wrap=True),
                        live=err if err.is_terminal else None)
    _print_sweep_end(outcome, store)
    if outcome.interrupted:
        raise typer.Exit(130)
    if not outcome.ok:
        raise typer.Exit(1)


MAX_THREADS = 1024
MAX_RETRIES = 100


def _check_seed_range(seeds: int, seed_start: int) -> None:
    """--seeds and --seed-start: seeds seed_start .. seed_start + seeds - 1, each a valid seed (offbench.protocol)."""
    check_integer("--seeds", seeds, 1, MAX_SEEDS)
    check_integer("--seed-start", seed_start, 0, MAX_SEED - seeds + 1)


def _check_cells(jobs) -> None:
    """Each cell's flags and `--set` values (a protocol's `[[overrides]]` included), checked as `offbench run` checks them,
    before the index is opened or a worker starts."""
    from offbench.train import check_before_loading

    seen = set()
    for job in jobs:
        if job.cell_key not in seen:
            seen.add(job.cell_key)
            check_before_loading(job.plan())


def _print_dry_run(jobs, store, device: str, protocol=None) -> None:
    """The jobs, each with its budget (steps, evaluations x episodes), the statistic its protocol scores it with
    (the analysis default, last-10 mean, without one), its state and estimated cost."""
    from offbench.execution.sweep import job_seed_steps, job_state, measured_rates
    from offbench.records import DEFAULT_LAST_K
    from offbench.train import pick_device, plan_budget

    device_type = pick_device(device).type
    rates = measured_rates(store, device_type)
    table = Table("job", "group id", "seeds", "steps", "eval", "statistic", "state", "est. hours")
    total, unmeasured, sources = 0.0, 0, {}
    for job in jobs:
        state = job_state(store, job)
        seed_steps = job_seed_steps(job)
        rate, source = rates.get(job.algo, (None, "no measurement yet: not in the total"))
        sources[job.algo] = f"{rate:.1f} seed-steps/s ({source})" if rate else source
        if state == "done" or rate:
            hours = 0.0 if state == "done" else seed_steps / rate / 3600
            total += hours
            shown = f"{hours:.2f}"
        else:
            unmeasured, shown = unmeasured + 1, "?"
        budget = plan_budget(job.plan())
        statistic = protocol.cell_statistic(job.algo, job.dataset).label if protocol else f"last-{DEFAULT_LAST_K} mean"
        table.add_row(job.label(), job.group_id, str(len(job.seeds)), f"{seed_steps // len(job.seeds):,}",
                      f"every {budget['eval_every']:,} x {budget['eval_episodes']}", statistic, state, shown)
    out.print(table)
    for algo, line in sources.items():
        out.print(f"{algo}: {line}", highlight=False)
    left_out = f" for the {len(jobs) - unmeasured} jobs with a measured speed" if unmeasured else ""
    out.print(f"{len(jobs)} jobs; about {total:.1f} device-hours of training left{left_out} on {device_type} (evaluation extra), one job per "
              f"{'core' if device_type == 'cpu' else 'device (or its share)'}; wall time is that over the jobs running at once", highlight=False)


def _print_sweep_end(outcome, store) -> None:
    done = sum(r.status == "done" for r in outcome.results)
    skipped = sum(r.status == "skipped" for r in outcome.results)
    out.print(f"sweep: {done} jobs trained, {skipped} already done, {len(outcome.failed)} failed; records in {store.root}", highlight=False)
    for result in outcome.failed:
        out.print(f"[bold red]failed[/bold red] {result.label} ({result.group_id}): {result.reason}", highlight=False, soft_wrap=True)
    for run_id in outcome.diverged:
        out.print(f"[bold red]diverged[/bold red] {run_id}: an evaluation returned NaN or inf (recorded; not re-run)", highlight=False)
    if outcome.interrupted:
        out.print("interrupted: finished runs are kept; run the same command again to go on", highlight=False)


def torch_threads(count: int) -> None:
    """Use `count` torch CPU threads (intra- and inter-op) in this process."""
    import torch

    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # only settable before the first parallel work; the intra-op count is what matters here
        pass


def _print_run_summaries(store, run_ids: list[str]) -> None:
    """Each seed's score under the analysis layer's default statistic (the mean of the last k evaluations),
    its final evaluation, and the group's mean ± std (ddof 1); a diverged seed has no score and is named."""
    import numpy as np

    from offbench.data.dataset import SCORE_NAMES

    name = SCORE_NAMES[store.load(run_ids[0]).config.dataset.score]
    scored, diverged = [], []
    for run_id in run_ids:
        summary = store.load(run_id).summary
        if summary.status == "diverged":
            diverged.append(run_id)
            out.print(f"{run_id}: [bold red]diverged[/bold red] (an evaluation returned NaN or inf at step {summary.diverged_at_step}): no score")
            continue
        scored.append(summary.last_k_score)
        averaged = min(summary.last_k, summary.evaluations or summary.last_k)
        success = "" if summary.final_success_rate is None or name == SCORE_NAMES["success-rate"] else f", success {summary.final_success_rate:.0f}%"
        out.print(f"{run_id}: {name} {summary.last_k_score:.1f} ({_averaged_over(averaged, summary.last_k)}; "
                  f"final {summary.final_score:.1f}, return {summary.final_return:.1f}{success}) after {summary.steps} steps, "
                  f"{summary.seed_steps_per_s:.0f} seed-steps/s")
    dataset_id = store.load(run_ids[0]).config.dataset.id
    summary = store.load(run_ids[0]).summary
    k, evaluations = summary.last_k, summary.evaluations or summary.last_k
    if scored:
        spread = f" ± {np.std(scored, ddof=1):.1f} (std over {len(scored)} seeds)" if len(scored) > 1 else " (1 seed)"
        over = f"last-{k} mean" if evaluations >= k else f"last-{k} mean: all {evaluations} evaluation{'s' * (evaluations > 1)}"
        out.print(f"[bold]{dataset_id}: {name} ({over}) {np.mean(scored):.1f}{spread}[/bold]")
    if diverged:
        out.print(f"[bold red]{len(diverged)} of {len(run_ids)} seeds diverged and are left out of the mean[/bold red]")
    out.print(f"records in {store.root}")


runs_app = typer.Typer(help="The results store: list runs, remove them, rebuild the index.")
app.add_typer(runs_app, name="runs")


def _averaged_over(averaged: int, k: int) -> str:
    """`mean of the last 10 evaluations`, or `mean of all 2 evaluations, fewer than the statistic's 10`."""
    if averaged >= k:
        return f"mean of the last {k} evaluations"
    return f"mean of all {averaged} evaluation{'s' * (averaged != 1)}, fewer than the statistic's {k}"


@runs_app.callback(invoke_without_command=True)
def runs(
    context: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Also list unfinished (running, interrupted, failed) runs."),
    results: Optional[Path] = ResultsDirOption,
) -> None:
    """List the runs in the results store (finished and diverged; --all for every run)."""
    if context.invoked_subcommand is not None:
        return
    import pandas as pd

    from offbench.store import ResultsStore

    store = ResultsStore(results_dir(results))
    frames = [store.runs(status=None)] if all_ else [store.runs("finished"), store.runs("diverged")]
    nonempty = [f for f in frames if len(f)]
    frame = pd.concat(nonempty).sort_values(["started_at", "run_id"]) if nonempty else frames[0]
    if frame.empty:
        out.print(f"no {'' if all_ else 'finished '}runs in {results_dir(results)}")
        return
    table = Table("run id", "algo", "dataset", "seed", "steps", "status", "final", "last-k mean (evaluations)", "group steps/s")
    for row in frame.itertuples():
        scored = row.last_k_score is not None and row.last_k_score == row.last_k_score  # a diverged run has none
        last_k = f"{_fmt(row.last_k_score)} ({min(int(row.last_k), evaluation_count(int(row.steps), int(row.eval_every)))})" if scored else "-"
        table.add_row(row.run_id, row.algo, row.dataset_id, str(row.seed), str(row.steps), row.status,
                      _fmt(row.final_score), last_k, _fmt(row.steps_per_s, "{:.0f}"))
    out.print(table)


@runs_app.command("rm")
def runs_rm(
    ids: list[str] = typer.Argument(..., help="Run ids or group ids (a group id removes all its runs and its checkpoint)."),
    force: bool = typer.Option(False, "--force", help="Also remove runs that are still running."),
    results: Optional[Path] = ResultsDirOption,
) -> None:
    """Remove runs: their folders, index rows and, once a group has no runs left, its checkpoint."""
    from offbench.store import ResultsStore

    store = ResultsStore(results_dir(results))
    frame = store.runs(status=None)
    chosen = frame[frame["run_id"].isin(ids) | frame["group_id"].isin(ids)]
    unknown = [i for i in ids if i not in set(chosen["run_id"]) | set(chosen["group_id"])]
    if unknown:
        raise OffbenchError(f"no run or group {unknown[0]} in {store.root}", "list them with `offbench runs --all`")
    alive = chosen[chosen["status"] == "running"]
    if not alive.empty and not force:
        raise OffbenchError(f"{alive['run_id'].iloc[0]} is still running", "stop it first, or pass --force")
    store.remove(list(chosen["run_id"]))
    out.print(f"removed {len(chosen)} runs from {store.root}")


@runs_app.command("prune")
def runs_prune(
    yes: bool = typer.Option(False, "--yes", help="Remove them; without it, only list what would go."),
    results: Optional[Path] = ResultsDirOption,
) -> None:
    """Remove every run that ended without a result (interrupted or failed), with their groups' checkpoints."""
    from offbench.store import ResultsStore

    store = ResultsStore(results_dir(results))
    frame = store.runs(status=None)
    dead = frame[frame["status"].astype(str).str.startswith(("interrupted", "failed"))]
    if dead.empty:
        out.print(f"nothing to prune in {store.root}")
        return
    for row in dead.itertuples():
        out.print(f"{row.run_id}: {row.status}", highlight=False)
    if not yes:
        out.print(f"{len(dead)} runs would be removed (resumable ones too); pass --yes to remove them")
        return
    store.remove(list(dead["run_id"]))
    out.print(f"removed {len(dead)} runs from {store.root}")


@runs_app.command("reindex")
def runs_reindex(results: Optional[Path] = ResultsDirOption) -> None:
    """Rebuild index.sqlite from the run folders (after it was lost or damaged)."""
    from offbench.store import ResultsStore

    store = ResultsStore(results_dir(results))

    def waiting() -> None:
        err.print(f"waiting for the processes that have {store.index_path} open to close it (a running sweep writes it often)")

    out.print(f"indexed {store.reindex(on_wait=waiting)} runs in {store.root}")


def _fmt(value, pattern: str = "{:.1f}") -> str:
    return "-" if value is None or value != value else pattern.format(value)


# ---- export / eval -------------------------------------------------------------------------------


@app.command("export")
def export(
    run_id: str = typer.Argument(..., help="A finished run's id (see `offbench runs`)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Where to write it (default: exports/RUN_ID.pt2)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file at --out (an earlier export of this run is replaced without it)."),
    results: Optional[Path] = ResultsDirOption,
) -> None:
    """Write a finished run's policy as a torch.export program that runs with torch alone (normaliser inside)."""
    from offbench.policy import export_policy
    from offbench.store import ResultsStore

    exported = export_policy(ResultsStore(results_dir(results)), run_id, out_file, force)
    meta = exported.metadata
    kind = "deterministic" if meta["noise_dim"] == 0 else f"stochastic: takes noise (N, {meta['noise_dim']}) of standard normals"
    out.print(f"wrote {exported.path} ({exported.path.stat().st_size // 1024} KiB): {meta['algo']} on {meta['dataset']['id']}, "
              f"seed {meta['seed']}, {meta['steps']} steps, env {meta['env']['id']}; {kind}", highlight=False, soft_wrap=True)
    out.print("load it with torch alone:", highlight=False)
    out.print(exported.snippet(), highlight=False, markup=False, soft_wrap=True)


@app.command("eval")
def eval_(
    run_id: str = typer.Argument(..., help="A finished run's id (see `offbench runs`)."),
    episodes: Optional[int] = typer.Option(None, "--episodes", help="Episodes (default: the run's evaluation episodes)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Evaluation seed: the env seeds and noise the protocol gives this seed (default: the run's)."),
    video: Optional[Path] = typer.Option(None, "--video", help="Also write an mp4 of the first episode, rendered headless (MUJOCO_GL=egl unless set)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file at --video."),
    results: Optional[Path] = ResultsDirOption,
) -> None:
    """Re-evaluate a finished run's policy in its recorded evaluation env; the run's records are not changed."""
    from offbench.data.dataset import SCORE_NAMES
    from offbench.policy import evaluate_policy
    from offbench.store import ResultsStore

    evaluation = evaluate_policy(ResultsStore(results_dir(results)), run_id, episodes, seed, video, force)
    if evaluation.diverged:
        out.print(f"{run_id}: [bold red]diverged[/bold red]: an episode's return was NaN or inf ({evaluation.episodes} episodes, "
                  f"seed {evaluation.seed}); no return or score", highlight=False, soft_wrap=True)
    else:
        out.print(f"{run_id}: return {evaluation.return_mean:.1f} ± {evaluation.return_std:.1f} (std over {evaluation.episodes} episodes, "
                  f"seed {evaluation.seed}), {SCORE_NAMES[evaluation.score]} {evaluation.normalized_score:.1f}", highlight=False, soft_wrap=True)
    if evaluation.matches_last_evaluation is not None:
        verdict = "the same returns as" if evaluation.matches_last_evaluation else "[bold red]returns that differ from[/bold red]"
        out.print(f"{verdict} the run's last recorded evaluation (step {evaluation.last_step})", highlight=False)
    if evaluation.video is not None:
        out.print(f"video of the first episode: {evaluation.video}", highlight=False)
    out.print(f"result in {evaluation.record_path}", highlight=False, soft_wrap=True)


# ---- data ----------------------------------------------------------------------------------------


@data_app.command("list")
def data_list() -> None:
    """Known datasets: present on this machine, makeable here, or needing a file."""
    from rich.markup import escape

    from offbench.data.registry import list_datasets

    table = Table("dataset", "state", "location / how to get it")
    for status in list_datasets():
        table.add_row(status.id, status.state, escape(status.location if status.state == "present" else status.note))
    out.print(table)
    out.print(escape("Listed once their files are in place (offbench downloads none): dqn-replay/<game>/run<r>-ckpt<N>[-<M>]-v0 (the DQN "
                     "Replay Dataset, e.g. dqn-replay/pong/run1-ckpt50-v0), minari/<namespace>/<name>-v<k> (e.g. minari/atari/pong/expert-v0, "
                     "and Minari's D4RL ports minari/D4RL/{pointmaze,antmaze,pen,door,hammer,relocate,kitchen}/<name>-v<k>, evaluated with "
                     "`pip install 'offbench[robotics]'`); loading an absent one says where its files go."))


@data_app.command("info")
def data_info(dataset: str = typer.Argument(..., help="Dataset id or alias.")) -> None:
    """Episodes, transitions, return statistics (raw and normalised), hash and source of a dataset."""
    from offbench.data.registry import describe, load_dataset, resolve

    dataset_id = resolve(dataset)
    info = describe(load_dataset(dataset_id, make_missing=False))
    table = Table("field", "value", title=dataset_id)
    for key, value in info.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    out.print(table)


@data_app.command("make")
def data_make(
    dataset: str = typer.Argument(..., help="A local/ dataset id or alias with a recipe."),
    force: bool = typer.Option(False, "--force", help="Remake it even if it is present."),
) -> None:
    """Make a local dataset by its recipe (datasets/catalogue.toml)."""
    from offbench.data.registry import describe, is_present, location, make_dataset, makeable_recipe, recorded_hash_mismatch, resolve
    from offbench.paths import check_data_dir

    dataset_id = resolve(dataset)
    makeable_recipe(dataset_id)
    if is_present(dataset_id) and not force:
        out.print(f"{dataset_id} is already present (use --force to remake it)")
        return
    check_data_dir(location(dataset_id))
    made = make_dataset(dataset_id, overwrite=force, on_steps=_making_progress(dataset_id))
    info = describe(made)
    if "behaviour_success" in info:  # an OGBench recording, shown as the single-task dataset it was loaded as
        out.print(f"made {dataset_id}: {info['recorded_episodes']} recorded episodes, recording sha256 {info['recording_sha256']}; "
                  f"{info['id']}: {info['transitions']} transitions, behaviour success {info['behaviour_success']:.1f}% of recorded episodes "
                  f"(task {info['task']}), sha256 {info['sha256']}")
    else:
        left_out = f" ({info['episodes_left_out_at_cap']} more left out at the 27,000-step cap)" if info.get("episodes_left_out_at_cap") else ""
        out.print(f"made {dataset_id}: {info['transitions']} transitions, {info['episodes']} episodes{left_out}, "
                  f"normalised return {info['normalized_mean']:.1f}, sha256 {info['sha256']}")
    mismatch = recorded_hash_mismatch(made)
    if mismatch:
        err.print(f"warning: {mismatch}")


# ---- entry point ---------------------------------------------------------------------------------


def main() -> None:
    """Console entry: user errors become one line on stderr and exit code 2, never a traceback."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # `nohup offbench run ...`: an ignored hang-up stays ignored
            signal.signal(signum, _stop_on)
    try:
        app()
    except OffbenchError as error:
        err.print(f"error: {error.line()}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except MemoryError as error:  # e.g. a data file declaring an array larger than the machine: nothing was written for it
        err.print(f"error: out of memory ({str(error)[:160] or 'MemoryError'}) — is an input larger than this machine can hold?", highlight=False,
                  markup=False, soft_wrap=True)
        sys.exit(2)


def _stop_on(signum: int, _frame: object) -> None:
    """SIGTERM and SIGHUP (a closed terminal, a scheduler's kill) stop a run as Ctrl-C does: recorded, with advice."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    main()
