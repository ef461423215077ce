"""`offbench report`: run records in, publishable tables, figures and report.md out.

Output layout under the report directory::

    report.md                     everything below, embedded, with a protocol section from the records
    scores.csv                    one row per scored run: run id, algorithm (row label), hyperparameters
                                  (difference from baselines/<algo>.toml), dataset, seed, protocol, score
    tables/per_dataset.{md,tex,csv}
    tables/aggregate.{md,tex,csv}
    tables/improvement.{md,tex,csv}        (two or more algorithms)
    figures/aggregate_intervals.{png,pdf}
    figures/performance_profiles.{png,pdf}
    figures/probability_of_improvement.{png,pdf}   (two or more algorithms)
    figures/learning_curves.{png,pdf}

The report folder is checked before anything is computed (`check_report_folder`): it is written into when it is
new, empty or an earlier report's (its report.md says so), otherwise only with `force`; none of the files above
may be a folder, device, fifo or socket.

The same records, selection, statistic, `reps` and `seed` give byte-identical tables. Diverged runs
(`offbench.analysis.scores.divergence`) are listed under the caveats and counted in their cell of the
per-dataset table; they never enter a score, mean, aggregate, profile or curve.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from offbench.analysis import plots
from offbench.analysis.scores import DEFAULT_STATISTIC, PROTOCOL_COLUMNS, ScoreSet, Statistic, collect_scores
from offbench.analysis.stats import (
    DEFAULT_REPS,
    aggregate_intervals,
    curve_band,
    pairwise_improvement,
    performance_profiles,
    profile_thresholds,
    stream_seed,
)
from offbench.analysis.tables import Table, aggregate_table, improvement_table, per_dataset_data, per_dataset_table
from offbench.io import atomic_write, check_output_folder, check_output_path
from offbench.store import ResultsStore

ANALYSIS_PACKAGES = ("offbench", "rliable", "arch", "numpy", "scipy", "pandas", "matplotlib")
SCORE_COLUMNS = [
    "run_id", "algo", "hyperparameters", "dataset_id", "dataset_sha256", "evaluation", "seed", "steps", "eval_every", "eval_episodes", "score",
]  # fmt: skip


@dataclass(frozen=True)
class Report:
    out_dir: Path
    files: tuple[Path, ...]
    warnings: tuple[str, ...]


def build_report(
    store: ResultsStore,
    out_dir: Path,
    *,
    name: str = "main",
    algos: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    statistic: Statistic = DEFAULT_STATISTIC,
    where: Mapping[str, Any] | None = None,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    force: bool = False,
    cells: Callable[[str, str], tuple[Mapping[str, int], Statistic]] | None = None,
) -> Report:
    """Compute every table and figure for the selected runs and write them, with report.md, to `out_dir`.

    Raises OffbenchError, before anything is computed, for an output folder `check_report_folder` refuses (one
    holding other files is written into only with `force`), and when the selection is empty or refused
    (`collect_scores`). When no dataset has runs of every row, the aggregate sections are left out and a caveat
    says so.
    """
    check_report_folder(out_dir, force)
    scores = collect_scores(store, algos, datasets, statistic, where, cells)
    matrices, aggregated, aggregate_warnings = scores.aggregate_matrices()
    warnings = [*scores.warnings, *_mixed_protocol_warnings(scores), *aggregate_warnings]

    per_dataset = per_dataset_table(per_dataset_data(scores, reps, seed), reps)
    colors = plots.algo_colors(scores.algos)
    figures = {"learning_curves": plots.curves_figure(learning_curves(scores, reps, seed), colors)}
    aggregate = improvement = None
    if matrices:
        intervals = aggregate_intervals(matrices, reps, seed)
        runs = {algo: matrix.shape[0] for algo, matrix in matrices.items()}
        kinds = set(scores.runs.loc[scores.runs["dataset_id"].isin(aggregated), "score_kind"])
        labels = {algo: " / ".join(s.label for s in statistics) for algo, statistics in scores.row_statistics().items()}
        aggregate = aggregate_table(intervals, runs, len(aggregated), {algo: labels[algo] for algo in runs}, reps, kinds)
        poi = pairwise_improvement(matrices, reps, seed)
        improvement = improvement_table(poi, len(aggregated), reps) if len(poi) else None
        figures["aggregate_intervals"] = plots.aggregate_figure(intervals, colors)
        figures["performance_profiles"] = plots.profile_figure(performance_profiles(matrices, profile_thresholds(matrices), reps, seed), colors)
        if improvement is not None:
            figures["probability_of_improvement"] = plots.improvement_figure(poi, colors)

    files = [_write_text(out_dir / "scores.csv", scores.runs[SCORE_COLUMNS].to_csv(index=False, lineterminator="\n"))]
    tables = {"per_dataset": per_dataset, "aggregate": aggregate, "improvement": improvement}
    for table_name, table in tables.items():
        if table is not None:
            files += _write_table(table, out_dir / "tables" / table_name)
    for figure_name, fig in figures.items():
        files += plots.save_figure(fig, out_dir / "figures" / figure_name)
    markdown = _report_markdown(name, scores, per_dataset, aggregate, improvement, aggregated, warnings, reps, seed)
    files.append(_write_text(out_dir / "report.md", markdown))
    _remove_stale_outputs(out_dir, files)
    return Report(out_dir, tuple(files), tuple(warnings))


TABLE_NAMES = ("per_dataset", "aggregate", "improvement")
FIGURE_NAMES = ("aggregate_intervals", "performance_profiles", "probability_of_improvement", "learning_curves")
REPORT_TITLE = "# offbench report: "  # report.md's first line starts so: how an earlier report's folder is recognised


def report_files(out_dir: Path) -> list[Path]:
    """Every file a report may write in `out_dir` (or remove as stale)."""
    tables = [out_dir / "tables" / f"{name}.{suffix}" for name in TABLE_NAMES for suffix in ("md", "tex", "csv")]
    figures = [out_dir / "figures" / f"{name}.{suffix}" for name in FIGURE_NAMES for suffix in ("png", "pdf")]
    return [out_dir / "scores.csv", out_dir / "report.md", *tables, *figures]


def check_report_folder(out_dir: Path, force: bool = False) -> Path:
    """`out_dir`, when a report may be written there: new, empty or an earlier report's, or any folder with `force`.

    Raises one-line `OffbenchError` (`offbench.io.check_output_folder`) for a path that is not a writable folder,
    a folder holding other files without `force`, or a report file that is a folder, device, fifo or socket.
    """
    check_output_folder(out_dir, "--out", force, is_report_folder)
    for path in report_files(out_dir):
        check_output_path(path, "--out", force=True, make_parents=True)
    return out_dir


def is_report_folder(folder: Path) -> bool:
    """Whether `folder` holds an earlier offbench report: its report.md is a regular file that starts with the title."""
    report = folder / "report.md"
    if not report.is_file():
        return False
    try:
        with report.open(encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(REPORT_TITLE)
    except OSError:
        return False


def _remove_stale_outputs(out_dir: Path, written: Sequence[Path]) -> None:
    """Remove the tables and figures an earlier report left in `out_dir` that this one did not write (e.g. the
    aggregate of a selection that had one), so the folder never shows numbers of another selection."""
    for path in report_files(out_dir):
        if path not in written:
            path.unlink(missing_ok=True)


def learning_curves(scores: ScoreSet, reps: int, seed: int) -> dict[str, dict[str, plots.Curve]]:
    """Per dataset and algorithm: evaluation steps, mean score over seeds, pointwise 95% CI."""
    curves: dict[str, dict[str, plots.Curve]] = {}
    for dataset in scores.datasets:
        curves[dataset] = {}
        for algo in scores.algos:
            if scores.has_cell(algo, dataset):
                steps, values = scores.curves(algo, dataset)
                band = curve_band(values, reps, stream_seed(seed, "curve", algo, dataset))
                curves[dataset][algo] = (steps, *band)
    return curves


def protocol_markdown(scores: ScoreSet, reps: int, seed: int) -> str:
    """The protocol section of report.md, generated from the run records."""
    records = list(scores.records.values())
    runs = scores.selected
    diverged = f" and {_count(len(scores.diverged), 'diverged run')} (no score)" if len(scores.diverged) else ""
    packages = _package_versions(r.provenance.get("packages", {}) for r in records)
    commits = _distinct(str(r.provenance.get("git_commit", "unknown"))[:10] for r in records)
    dirty = sum(bool(r.provenance.get("git_dirty")) for r in records)
    hardware = _distinct(_hardware(r.provenance) for r in records)
    python = _distinct(str(r.provenance.get("python", "unknown")) for r in records)
    analysis = ", ".join(f"{p} {_version(p)}" for p in ANALYSIS_PACKAGES)
    lines = [
        f"{_count(len(scores.runs), 'scored run')}{diverged}: {', '.join(scores.algos)} on {_count(len(scores.datasets), 'dataset')}.",
        "",
        "**Datasets.**",
        "",
        *(_dataset_line(scores, d) for d in scores.datasets),
        "",
        f"**Budget.** Training steps: {_distinct(f'{s:,}' for s in runs['steps'])}; evaluation every "
        f"{_distinct(f'{s:,}' for s in runs['eval_every'])} steps with "
        f"{_distinct(str(e) for e in runs['eval_episodes'])} episodes.",
        "",
        f"**Seeds** per dataset (scored): {', '.join(_seed_counts(scores))}.",
        "",
        _hyperparameters_markdown(scores),
        "",
        f"**Statistic.** A run's score is {_statistic_description(scores)}; "
        "scores are normalised as 100 x (return - reference min) / (reference max - reference min)"
        + (", except on goal-reaching datasets scored by success rate (x100: the share of evaluation episodes that end in "
           "success), which the tables mark." if "success-rate" in set(scores.runs["score_kind"]) else "."),
        "",
        "**Intervals.** 95% percentile-bootstrap confidence intervals, "
        f"{reps} resamples, seed {seed} (the same inputs and seed give identical intervals). Per-dataset "
        "intervals resample seeds; aggregate metrics (rliable) resample seeds within each dataset "
        "(stratified bootstrap); learning-curve bands are pointwise.",
        "",
        f"**Software.** Python {python}; {packages}; git commit {commits}"
        + (f" ({dirty} runs from a working tree with uncommitted changes)" if dirty else "")
        + ".",
        "",
        f"**Hardware.** {hardware}.",
        "",
        f"**Analysis.** {analysis}.",
    ]
    return "\n".join(lines)


def _statistic_description(scores: ScoreSet) -> str:
    """`the normalised score of its final evaluation (`final`)`, or one such clause per row when rows differ."""
    if not scores.mixed_statistics:
        statistic = scores.row_statistics()[scores.algos[0]][0] if scores.algos else scores.statistic
        return f"{statistic.description} (`{statistic.label}`)"
    return "; ".join(f"for {algo}, {' or '.join(f'{s.description} (`{s.label}`)' for s in statistics)}"
                     for algo, statistics in scores.row_statistics().items()) + " (the protocol's statistic per algorithm)"


def _report_markdown(
    name: str,
    scores: ScoreSet,
    per_dataset: Table,
    aggregate: Table | None,
    improvement: Table | None,
    aggregated: Sequence[str],
    warnings: Sequence[str],
    reps: int,
    seed: int,
) -> str:
    parts = [
        f"{REPORT_TITLE}{name}",
        f"Statistic: **{scores.statistic_label()}**. Every number is recomputed from the run records listed "
        "in [scores.csv](scores.csv).",
        "## Protocol",
        protocol_markdown(scores, reps, seed),
    ]
    if warnings:
        parts += ["## Caveats", "\n".join(f"- {w}" for w in warnings)]
    parts += [
        "## Per-dataset scores",
        per_dataset.markdown().rstrip(),
        _links("per_dataset"),
        "## Aggregate performance",
    ]
    if aggregate is None:
        parts.append("Not computed: no dataset has scored runs of every row (see Caveats).")
    else:
        parts += [
            f"Aggregated over {_count(len(aggregated), 'dataset')}: {', '.join(aggregated)}.",
            aggregate.markdown().rstrip(),
            _links("aggregate"),
            "![Aggregate metrics with 95% CIs](figures/aggregate_intervals.png)",
            "## Performance profiles",
            "Fraction of all runs (every seed on every aggregated dataset) scoring above each threshold, "
            "with 95% stratified-bootstrap bands.",
            "![Performance profiles](figures/performance_profiles.png)",
        ]
    parts.append("## Probability of improvement")
    if aggregate is None:
        parts.append("Not computed (no aggregate).")
    elif improvement is None:
        parts.append("Needs at least two algorithms.")
    else:
        parts += [
            improvement.markdown().rstrip(),
            _links("improvement"),
            "![Probability of improvement](figures/probability_of_improvement.png)",
        ]
    parts += [
        "## Learning curves",
        "Mean normalised score over seeds against training steps, with pointwise 95% bootstrap bands.",
        "![Learning curves](figures/learning_curves.png)",
    ]
    return "\n\n".join(parts) + "\n"


def _seed_counts(scores: ScoreSet) -> list[str]:
    seeds = scores.runs.groupby(["algo", "dataset_id"], sort=False).size()
    counts = []
    for algo in scores.algos:
        per_dataset = [int(seeds.get((algo, d), 0)) for d in scores.datasets if scores.has_cell(algo, d) or len(scores.cell_diverged(algo, d))]
        low, high = min(per_dataset), max(per_dataset)
        counts.append(f"{algo} {low}" + (f"-{high}" if high > low else ""))
    return counts


def _hyperparameters_markdown(scores: ScoreSet) -> str:
    """Each row's hyperparameters as their difference from its baseline file, from the records."""
    runs = scores.selected
    lines = []
    for algo in scores.algos:
        row = runs[runs["algo"] == algo].iloc[0]
        name = scores.records[row["run_id"]].config.algo
        lines.append(f"- `{algo}`: {row['hyperparameters'] or 'the defaults'} (baselines/{name}.toml)")
    return "\n".join(
        [
            "**Hyperparameters**, as each run resolved them (config.json), written as their difference from "
            "`baselines/<algo>.toml` with its per-dataset overrides (keys outside the file are shown where "
            "configurations differ in them). Runs that differ in any value are separate rows, never pooled:",
            "",
            *lines,
        ]
    )


def _dataset_line(scores: ScoreSet, dataset: str) -> str:
    runs = scores.selected
    runs = runs[runs["dataset_id"] == dataset]
    config = scores.records[runs["run_id"].iloc[0]].config
    info, evaluation = config.dataset, config.evaluation
    hashes = ", ".join(f"`{h[:12]}`" for h in dict.fromkeys(runs["dataset_sha256"]))
    kwargs = f" with {evaluation['env_kwargs']}" if evaluation["env_kwargs"] else ""
    wrappers = f", wrappers {', '.join(evaluation['wrappers'])}" if evaluation["wrappers"] else ""
    scored = ("scored by success rate x100 over the evaluation episodes" if info.score == "success-rate" else
              f"reference returns [{info.ref_min_score}, {info.ref_max_score}] ({info.ref_source or 'source unknown'})")
    return (
        f"- `{dataset}`: source {info.source or 'unknown'}, evaluated in {evaluation['env'] or info.env_id or 'unknown'}{kwargs}{wrappers}, "
        f"{scored}, sha256 {hashes}"
    )


def _mixed_protocol_warnings(scores: ScoreSet) -> list[str]:
    """Algorithms compared on one dataset should share its contents and budget; say so when they do not."""
    warnings = []
    for dataset in scores.datasets:
        protocols = scores.dataset_runs(dataset).groupby(list(PROTOCOL_COLUMNS))["algo"].unique()
        if len(protocols) > 1:
            listed = "; ".join(
                ", ".join(f"{c}={str(v)[:12]}" for c, v in zip(PROTOCOL_COLUMNS, key)) + f": {', '.join(algos)}"
                for key, algos in protocols.items()
            )
            warnings.append(f"{dataset}: algorithms ran under different protocols ({listed})")
    return warnings


def _package_versions(package_dicts: Iterable[Mapping[str, str]]) -> str:
    versions: dict[str, dict[str, None]] = {}
    for packages in package_dicts:
        for package, version in packages.items():
            if version is not None:  # None: not installed where the run trained
                versions.setdefault(package, {})[str(version)] = None
    return ", ".join(f"{p} {' / '.join(v)}" for p, v in sorted(versions.items())) or "package versions not recorded"


def _hardware(provenance: Mapping[str, Any]) -> str:
    parts = [f"{key} {provenance[key]}" for key in ("device", "cpu", "gpu") if provenance.get(key)]
    return ", ".join(parts) or "not recorded"


def _distinct(values: Iterable[str]) -> str:
    """`v` when all values agree, else `v1 (n1 runs), v2 (n2 runs)`."""
    counts = Counter(values)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{value} ({n} runs)" for value, n in counts.items())


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _links(stem: str) -> str:
    return f"Also as [CSV](tables/{stem}.csv) and [LaTeX](tables/{stem}.tex)."


def _write_table(table: Table, stem: Path) -> list[Path]:
    return [
        _write_text(stem.with_suffix(".md"), table.markdown()),
        _write_text(stem.with_suffix(".tex"), table.latex()),
        _write_text(stem.with_suffix(".csv"), table.csv()),
    ]


def _write_text(path: Path, text: str) -> Path:
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path

