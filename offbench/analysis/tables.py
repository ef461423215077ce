"""Result tables: tidy numbers for CSV, formatted cells for Markdown and LaTeX (booktabs).

Every table carries a caption that states its statistic and how its intervals were computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from offbench.analysis.scores import MIN_SEEDS, ScoreSet
from offbench.analysis.stats import AGGREGATE_METRICS, mean_interval, stream_seed
from offbench.data.dataset import SCORE_NAMES

FEW_SEEDS_MARK = "†"
_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", FEW_SEEDS_MARK: r"$^\dagger$", "–": "--", ">": r"$>$",
}  # fmt: skip


@dataclass(frozen=True)
class Table:
    """One result table. `data`: tidy numbers (the CSV); `display`: formatted strings (Markdown, LaTeX)."""

    data: pd.DataFrame
    display: pd.DataFrame
    caption: str
    label: str
    align: str  # one "l" or "r" per display column
    notes: tuple[str, ...] = ()

    def markdown(self) -> str:
        header = "| " + " | ".join(self.display.columns) + " |"
        rule = "| " + " | ".join(":---" if a == "l" else "---:" for a in self.align) + " |"
        rows = ["| " + " | ".join(str(v).replace("|", r"\|") for v in row) + " |" for row in self.display.to_numpy()]
        notes = "".join(f"\n{note}\n" for note in self.notes)
        return f"{self.caption}\n\n" + "\n".join([header, rule, *rows]) + "\n" + notes

    def latex(self) -> str:
        def line(cells: object) -> str:
            return "    " + " & ".join(_latex_escape(str(c)) for c in cells) + r" \\"

        notes = [r"  \par\smallskip\footnotesize " + _latex_escape(n) for n in self.notes]
        return "\n".join(
            [
                r"\begin{table}[htbp]",
                r"  \centering",
                r"  \caption{" + _latex_escape(self.caption) + "}",
                r"  \label{tab:" + self.label + "}",
                r"  \begin{tabular}{" + self.align + "}",
                r"    \toprule",
                line(self.display.columns),
                r"    \midrule",
                *(line(row) for row in self.display.to_numpy()),
                r"    \bottomrule",
                r"  \end{tabular}",
                *notes,
                r"\end{table}",
                "",
            ]
        )

    def csv(self) -> str:
        return self.data.to_csv(index=False, lineterminator="\n")


def per_dataset_data(scores: ScoreSet, reps: int, seed: int) -> pd.DataFrame:
    """Mean, std and 95% bootstrap CI over scored seeds for every (dataset, algo) cell, with its protocol,
    hyperparameters and diverged-run count (a cell whose runs all diverged has no mean: NaN, shown as text)."""
    rows = []
    for dataset in scores.datasets:
        for algo in scores.algos:
            cell, diverged = scores.cell_runs(algo, dataset), scores.cell_diverged(algo, dataset)
            if cell.empty and diverged.empty:
                continue
            values = cell["score"].to_numpy(float)
            first = (cell if len(cell) else diverged).iloc[0]
            rows.append(
                {
                    "dataset": dataset,
                    "algo": algo,
                    "hyperparameters": first["hyperparameters"],
                    "statistic": scores.cell_statistic(algo, dataset).label,
                    "seeds": len(values),
                    "diverged": len(diverged),
                    "steps": int(first["steps"]),
                    "eval_every": int(first["eval_every"]),
                    "eval_episodes": int(first["eval_episodes"]),
                    **_summary(values, reps, stream_seed(seed, "cell", algo, dataset)),
                    "dataset_sha256": first["dataset_sha256"],
                    "score_kind": first["score_kind"],
                }
            )
    return pd.DataFrame(rows)


def _summary(values: np.ndarray, reps: int, seed: int) -> dict[str, float]:
    if len(values) == 0:
        return dict.fromkeys(("mean", "std", "ci_low", "ci_high"), float("nan"))
    ci = mean_interval(values, reps, seed)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": ci.estimate, "std": std, "ci_low": ci.low, "ci_high": ci.high}


def per_dataset_table(data: pd.DataFrame, reps: int) -> Table:
    """Datasets as rows, algorithms as columns; each cell `mean ± std [CI] n=seeds`. When the algorithms are scored by
    different statistics (a protocol's per-algorithm override), each column names its own, `driftql (final)`, or each
    cell does where one algorithm's datasets differ."""
    algos = list(dict.fromkeys(data["algo"]))
    per_algo = {algo: list(dict.fromkeys(data.loc[data["algo"] == algo, "statistic"])) for algo in algos}
    mixed = len(dict.fromkeys(data["statistic"])) > 1
    headers = {algo: f"{algo} ({per_algo[algo][0]})" if mixed and len(per_algo[algo]) == 1 else algo for algo in algos}
    rows = []
    for dataset, group in data.groupby("dataset", sort=False):
        cells = {headers[row.algo]: _score_cell(row) + (f" ({row.statistic})" if mixed and len(per_algo[row.algo]) > 1 else "")
                 for row in group.itertuples()}
        rows.append(
            {
                "Dataset": dataset,
                "Steps": _distinct(f"{s:,}" for s in group["steps"]),
                "Eval episodes": _distinct(str(e) for e in group["eval_episodes"]),
                **{headers[algo]: cells.get(headers[algo], "–") for algo in algos},
            }
        )
    statistics = ", ".join(dict.fromkeys(data["statistic"]))
    kinds = score_kinds(data)
    if kinds != {"normalized-return"}:  # say per row which score a cell holds
        names = dict(zip(data["dataset"], data["score_kind"].map(SCORE_NAMES)))
        rows = [{"Dataset": row["Dataset"], "Score": names[row["Dataset"]], **{k: v for k, v in row.items() if k != "Dataset"}} for row in rows]
    caption = (
        f"{score_caption(kinds)} per dataset (statistic: {statistics}): mean ± std over seeds "
        f"[95% bootstrap CI of the mean, {reps} resamples of the seeds]; n = seeds."
    )
    if data["diverged"].any():
        caption += " Diverged runs (a NaN or inf evaluation) have no score and are left out of every mean."
    notes = (f"{FEW_SEEDS_MARK} fewer than {MIN_SEEDS} seeds: treat the interval with caution.",)
    few = bool(((data["seeds"] > 0) & (data["seeds"] < MIN_SEEDS)).any())
    align = ("lrr" if kinds == {"normalized-return"} else "llrr") + "l" * len(algos)
    return Table(data, pd.DataFrame(rows), caption, "offbench-per-dataset", align, notes if few else ())


def score_kinds(data: pd.DataFrame) -> set[str]:
    """The scores the rows hold (`score_kind`; rows without it are normalised returns, as runs recorded before it)."""
    return set(data["score_kind"]) if "score_kind" in data else {"normalized-return"}


def score_caption(kinds: set[str]) -> str:
    """`Normalised score`, `Success rate (%)`, or for a mix `Score (normalised return x100 or success rate x100, ...)`."""
    if kinds == {"normalized-return"}:
        return "Normalised score"
    if kinds == {"success-rate"}:
        return "Success rate (%)"
    return "Score (x100: the normalised return or the success rate, as the Score column says)"


def aggregate_table(intervals: pd.DataFrame, runs: dict[str, int], datasets: int, statistic: str | Mapping[str, str], reps: int,
                    kinds: set[str] | None = None) -> Table:
    """Algorithms as rows, aggregate metrics as columns; each cell `estimate [CI]`.

    `statistic`: the label of every row, or {algorithm: label} (a Statistic column when they differ).

    `kinds`: the scores of the aggregated datasets (`score_kinds`), named in the caption; a mix is pooled
    as the per-dataset numbers are, each x100 with 100 the best, and the caption says so.
    """
    row_statistic = statistic if isinstance(statistic, Mapping) else dict.fromkeys(runs, statistic)
    statistic = " / ".join(dict.fromkeys(row_statistic.values()))
    mixed = len(set(row_statistic.values())) > 1
    data = intervals.assign(runs_per_dataset=intervals["algo"].map(runs), datasets=datasets, statistic=intervals["algo"].map(row_statistic))
    rows = []
    for algo, group in intervals.groupby("algo", sort=False):
        cells = {row.metric: f"{row.estimate:.1f} [{row.ci_low:.1f}, {row.ci_high:.1f}]" for row in group.itertuples()}
        rows.append({"Algorithm": algo, **({"Statistic": row_statistic[algo]} if mixed else {}), "Runs": str(runs[algo]),
                     **{m: cells[m] for m in AGGREGATE_METRICS}})
    kinds = kinds or {"normalized-return"}
    what = score_caption(kinds) if len(kinds) == 1 else "score (x100: normalised return on some datasets, success rate on others)"
    caption = (
        f"Aggregate {what[0].lower() + what[1:]} over {datasets} dataset{'s' * (datasets != 1)} (statistic: {statistic}): point estimate "
        f"[95% stratified-bootstrap CI, rliable, {reps} resamples]. Runs = seeds per dataset. "
        "Optimality gap = mean shortfall below 100; lower is better."
    )
    if mixed:
        caption += " Each row's statistic is its algorithm's (the Statistic column): rows scored differently compare with care."
    return Table(data, pd.DataFrame(rows), caption, "offbench-aggregate", ("llr" if mixed else "lr") + "l" * len(AGGREGATE_METRICS))


def improvement_table(poi: pd.DataFrame, datasets: int, reps: int) -> Table:
    """One row per algorithm pair: P(X > Y) [CI]."""
    display = pd.DataFrame(
        {
            "X": poi["algo_x"],
            "Y": poi["algo_y"],
            "P(X > Y)": [f"{r.estimate:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]" for r in poi.itertuples()],
        }
    )
    caption = (
        f"Probability of improvement P(X > Y) averaged over {datasets} dataset{'s' * (datasets != 1)} "
        f"[95% stratified independent-bootstrap CI, {reps} resamples]; 0.5 = no difference."
    )
    return Table(poi, display, caption, "offbench-improvement", "lll")


def _score_cell(row: Any) -> str:
    """`mean ± std [CI] n=seeds`, then `(d of n diverged)` when runs diverged; only that when all did."""
    diverged = f"{row.diverged} of {row.seeds + row.diverged} diverged"
    if row.seeds == 0:
        return diverged
    std = "–" if np.isnan(row.std) else f"{row.std:.1f}"
    mark = FEW_SEEDS_MARK if row.seeds < MIN_SEEDS else ""
    return f"{row.mean:.1f} ± {std} [{row.ci_low:.1f}, {row.ci_high:.1f}] n={row.seeds}{mark}" + (f" ({diverged})" if row.diverged else "")


def _distinct(values: Iterable[str]) -> str:
    """The distinct values of a row, in order (one value when the row's algorithms agree)."""
    return " / ".join(dict.fromkeys(values))


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
