"""CLI commands of the analysis layer, registered by offbench/cli.py::

    app.command("report")(report)
    app.command("check")(check)
    app.add_typer(leaderboard_app, name="leaderboard")

Thin: parse options, call offbench.analysis, print. User-fixable problems raise OffbenchError (the
main CLI prints one line, exit 2). `check` exits 1 when a cell fails. The analysis modules are imported
inside the commands: rliable takes seconds to import, and `offbench --help` should not wait for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from offbench.errors import OffbenchError
from offbench.paths import results_dir, safe_name
from offbench.protocol import MAX_SEED, check_integer

if TYPE_CHECKING:
    from offbench.analysis.leaderboard import Protocol
    from offbench.analysis.scores import Statistic
    from offbench.analysis.tables import Table

# Piped output (CI logs) gets wide lines instead of rich's 80-column default, as in offbench.cli.
_out = Console(width=None if sys.stdout.isatty() else 220)
_err = Console(stderr=True, width=None if sys.stderr.isatty() else 220)

ResultsDirOption = Annotated[
    Optional[Path], typer.Option("--results-dir", help="Results store (default: $OFFBENCH_RESULTS_DIR or ./results).")
]
AlgosOption = Annotated[
    Optional[list[str]], typer.Option("--algos", help="Algorithms, comma-separated or repeated (default: all).")
]
DatasetsOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--datasets",
        help="Dataset ids, short names (hopper-medium, hopper-medium+first10000) or globs of either; "
        "transformed data only when the selector names a transform (default: all).",
    ),
]
StatisticOption = Annotated[
    Optional[str], typer.Option("--statistic", help="Run score: final | last-k | best (default: last-k).")
]
KOption = Annotated[Optional[int], typer.Option("--k", help="k of last-k: mean of the last k evaluations (default: 10).")]
StepsOption = Annotated[Optional[int], typer.Option("--steps", help="Only runs with this training budget.")]
RepsOption = Annotated[Optional[int], typer.Option("--reps", help="Bootstrap resamples (default: 2000).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Bootstrap seed: the same inputs and seed give identical intervals.")]
ProtocolOption = Annotated[
    Optional[str], typer.Option("--protocol", help="Protocol name (protocols/NAME.toml) or path to a protocol TOML.")
]
DEFAULT_LEADERBOARD = Path("results/leaderboard.json")  # cwd-relative: the project's committed file
LeaderboardOption = Annotated[
    Path, typer.Option("--leaderboard", help="Leaderboard file (committed with the project).")
]

leaderboard_app = typer.Typer(help="Frozen reference scores that `offbench check` compares new runs with.", no_args_is_help=True)


def report(
    protocol: ProtocolOption = None,
    algos: AlgosOption = None,
    datasets: DatasetsOption = None,
    statistic: StatisticOption = None,
    k: KOption = None,
    steps: StepsOption = None,
    reps: RepsOption = None,
    paper: Annotated[bool, typer.Option("--paper", help="50 000 bootstrap resamples (publication).")] = False,
    seed: SeedOption = 0,
    name: Annotated[str, typer.Option("--name", help="Report name: writes reports/NAME/.")] = "main",
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: reports/NAME).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into an output directory that holds files other than an earlier report.")] = False,
    results: ResultsDirOption = None,
) -> None:
    """Tables (Markdown, LaTeX, CSV), figures and report.md from the finished runs in the store; with --protocol, its
    algorithms and datasets, each cell's runs under its budget and scored with its statistic (the tables say which)."""
    from offbench.analysis.leaderboard import load_protocol
    from offbench.analysis.report import build_report
    from offbench.analysis.stats import PAPER_REPS
    from offbench.store import ResultsStore

    if paper and reps is not None:
        raise OffbenchError("--paper sets --reps to 50000", "pass one of them")
    chosen = load_protocol(protocol) if protocol else None
    algo_names, dataset_ids = _names(algos), _names(datasets)
    if chosen is not None:
        if statistic is not None or k is not None or steps is not None:
            raise OffbenchError("a protocol fixes the statistic and budget", "drop --statistic/--k/--steps")
        algo_names, dataset_ids = chosen.select(algo_names, dataset_ids)
        dataset_ids = list(dict.fromkeys(d for _, d in chosen.recorded_cells(algo_names, dataset_ids)))
    out_dir = out or Path("reports") / safe_name("report name", name)
    result = build_report(
        ResultsStore(results_dir(results)),
        out_dir,
        name=name,
        algos=algo_names,
        datasets=dataset_ids,
        statistic=chosen.statistic if chosen else _statistic(statistic, k),
        where=_where(steps),
        reps=PAPER_REPS if paper else _reps(reps),
        seed=_seed(seed),
        force=force,
        cells=chosen.scoring if chosen else None,
    )
    _warn(result.warnings)
    _out.print(Text(f"report written to {out_dir / 'report.md'} ({len(result.files)} files)"))


def check(
    protocol: ProtocolOption = None,
    algos: AlgosOption = None,
    datasets: DatasetsOption = None,
    margin: Annotated[
        Optional[float], typer.Option("--margin", help="Normalised points of tolerated drop (default: protocol's, else 5).")
    ] = None,
    reps: RepsOption = None,
    seed: SeedOption = 0,
    leaderboard: LeaderboardOption = DEFAULT_LEADERBOARD,
    summary: Annotated[
        Optional[Path], typer.Option("--summary", help="Also append the table as Markdown to this file (e.g. $GITHUB_STEP_SUMMARY).")
    ] = None,
    results: ResultsDirOption = None,
) -> None:
    """Compare new runs with the leaderboard under the same protocol and hyperparameters; exit 1 if a cell
    regressed, diverged, has other hyperparameters than its reference, or is missing."""
    from offbench.analysis.leaderboard import DEFAULT_MARGIN, check_margin, check_runs, check_table, load_leaderboard, load_protocol
    from offbench.analysis.scores import damaged_warnings
    from offbench.io import check_output_path
    from offbench.store import ResultsStore

    chosen = load_protocol(protocol) if protocol else None
    margin = check_margin("--margin", margin) if margin is not None else (chosen.margin if chosen else DEFAULT_MARGIN)
    reps = _reps(reps)
    if summary is not None:  # appended, as a GitHub step summary is: what the file holds stays; not a folder, device or fifo
        summary = check_output_path(summary, "--summary", force=True)
    store = ResultsStore(results_dir(results))
    checks = check_runs(
        load_leaderboard(leaderboard),
        store,
        protocol=chosen,
        algos=_names(algos),
        datasets=_names(datasets),
        margin=margin,
        reps=reps,
        seed=_seed(seed),
    )
    table = check_table(checks, margin, reps)
    _print(table, styles=["bold red" if c.failed else "green" for c in checks])
    _warn(damaged_warnings(store.damaged_runs()))  # runs the index could not read: they may belong to any cell
    if summary is not None:
        with open(summary, "a", encoding="utf-8") as markdown:
            markdown.write(table.markdown() + "\n")
    failed = [c for c in checks if c.failed]
    if failed:
        _err.print(Text(f"{len(failed)} of {len(checks)} cells failed", style="bold red"))
        raise typer.Exit(code=1)
    _out.print(Text(f"all {len(checks)} cells passed"))


@leaderboard_app.command("update")
def update(
    protocol: ProtocolOption = None,
    algos: AlgosOption = None,
    datasets: DatasetsOption = None,
    statistic: StatisticOption = None,
    k: KOption = None,
    steps: StepsOption = None,
    leaderboard: LeaderboardOption = DEFAULT_LEADERBOARD,
    results: ResultsDirOption = None,
) -> None:
    """Freeze the selected finished runs (per-seed scores, resolved config and provenance) into the leaderboard
    file; refused for a cell with a diverged run."""
    from offbench.analysis.leaderboard import freeze_entries, load_leaderboard, load_protocol, save_leaderboard, utc_now
    from offbench.analysis.scores import collect_scores
    from offbench.store import ResultsStore

    store = ResultsStore(results_dir(results))
    chosen = load_protocol(protocol) if protocol else None
    if chosen is not None:
        if statistic is not None or k is not None or steps is not None:
            raise OffbenchError("a protocol fixes the statistic and budget", "drop --statistic/--k/--steps")
        algo_names, dataset_ids = chosen.select(_names(algos), _names(datasets))
        cells = chosen.recorded_cells(algo_names, dataset_ids)
        scores = collect_scores(store, algo_names, list(dict.fromkeys(d for _, d in cells)), chosen.statistic, cells=chosen.scoring)
        _warn_missing_cells(chosen, cells, scores.runs[["algo", "dataset_id"]].itertuples(index=False))
    else:
        where = _where(steps)
        scores = collect_scores(store, _names(algos), _names(datasets), _statistic(statistic, k), where)
    _warn(scores.warnings)
    now = utc_now()
    board, added, replaced = load_leaderboard(leaderboard, missing_ok=True).updated(
        freeze_entries(scores, protocol_name=chosen.name if chosen else None, now=now), now
    )
    save_leaderboard(board, leaderboard)
    _out.print(Text(f"{leaderboard}: revision {board.revision}, {len(added)} entries added, {len(replaced)} replaced"))
    _out.print(Text(f"commit it to make it the reference: git add {leaderboard}"))


@leaderboard_app.command("show")
def show(leaderboard: LeaderboardOption = DEFAULT_LEADERBOARD) -> None:
    """List the leaderboard's entries."""
    from offbench.analysis.leaderboard import entries_table, load_leaderboard

    _print(entries_table(load_leaderboard(leaderboard)))


def _names(values: Sequence[str] | None) -> list[str] | None:
    """`--algos a,b --algos c` -> [a, b, c]; None when not given."""
    names = [name.strip() for value in values or () for name in value.split(",") if name.strip()]
    return names or None


def _statistic(name: str | None, k: int | None) -> Statistic:
    from offbench.analysis.scores import Statistic

    return Statistic(name or "last-k", 10 if k is None else check_integer("--k", k))


def _reps(reps: int | None) -> int:
    from offbench.analysis.stats import DEFAULT_REPS

    if reps is not None and reps < 100:
        raise OffbenchError(f"--reps {reps} is too few for a 95% interval", "use at least 100 (default 2000)")
    return DEFAULT_REPS if reps is None else check_integer("--reps", reps, 100, MAX_REPS)


MAX_REPS = 1_000_000  # 20x the publication setting (--paper); each resample is an array of every run's score


def _where(steps: int | None) -> dict[str, int] | None:
    """The index filter of --steps (a budget to select), checked to fit the index."""
    return None if steps is None else {"steps": check_integer("--steps", steps)}


def _seed(seed: int) -> int:
    """--seed of the bootstrap, checked to be a seed numpy takes."""
    return check_integer("--seed", seed, 0, MAX_SEED)


def _warn(warnings: Sequence[str]) -> None:
    for warning in warnings:
        _err.print(Text.assemble(("warning: ", "yellow"), warning))


def _warn_missing_cells(protocol: Protocol, cells: Sequence[tuple[str, str]], present: Iterable[tuple[str, str]]) -> None:
    have = set(present)
    _warn([f"{algo} on {dataset}: no finished runs under protocol {protocol.name}; not frozen" for algo, dataset in cells if (algo, dataset) not in have])


def _print(table: Table, styles: Sequence[str] | None = None) -> None:
    """Render a result table with rich; cells are plain Text, so brackets are never read as markup."""
    rich_table = RichTable(caption=Text(table.caption), caption_justify="left")
    for column, align in zip(table.display.columns, table.align):
        rich_table.add_column(Text(str(column)), justify="left" if align == "l" else "right")
    for i, row in enumerate(table.display.itertuples(index=False)):
        rich_table.add_row(*(Text(str(v)) for v in row), style=styles[i] if styles else None)
    _out.print(rich_table)
    for note in table.notes:
        _out.print(Text(note))
