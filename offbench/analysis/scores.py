"""Collect per-run scores from the results store under a stated statistic.

A run's score is one number taken from its evaluation curve (normalised score x100 per evaluation):

- `final`:  the last evaluation;
- `last-k`: the mean of the last k evaluations (k = 10 by default, the TD3+BC paper's metric; all of
            them when a run has fewer than k);
- `best`:   the best evaluation. Optimistic: it selects on the evaluation episodes themselves.

Rules that keep a score table honest, applied by `collect_scores`:

- only finished runs count (the store's index plus the summary file);
- one cell (algorithm x dataset) holds one protocol: a cell whose runs differ in dataset sha256,
  steps, eval_every or eval_episodes is refused, never averaged;
- one run per seed: when a seed was run twice under the same protocol, the latest finished run is
  kept and a warning says so;
- a cell with fewer than `MIN_SEEDS` seeds gets a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from offbench.data import ids
from offbench.errors import OffbenchError
from offbench.protocol import BUDGET_KEYS
from offbench.store import ResultsStore, RunRecord

STATISTICS = ("final", "last-k", "best")
MIN_SEEDS = 5
PROTOCOL_COLUMNS = ("dataset_sha256", *BUDGET_KEYS)


@dataclass(frozen=True)
class Statistic:
    """How one run's evaluation curve becomes its score."""

    name: str = "last-k"
    k: int = 10

    def __post_init__(self) -> None:
        if self.name not in STATISTICS:
            raise OffbenchError(f"unknown statistic {self.name!r}", f"choose one of {', '.join(STATISTICS)}")
        if self.k < 1:
            raise OffbenchError(f"last-k needs k >= 1, got {self.k}")

    @property
    def label(self) -> str:
        """Short name for table captions: `final`, `last-10 mean`, `best`."""
        return f"last-{self.k} mean" if self.name == "last-k" else self.name

    @property
    def description(self) -> str:
        return {
            "final": "the normalised score of its final evaluation",
            "last-k": f"the mean normalised score of its last {self.k} evaluations",
            "best": "the best normalised score over its evaluations (optimistic: selected on the test episodes)",
        }[self.name]

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.name, **({"k": self.k} if self.name == "last-k" else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Statistic:
        return cls(data["statistic"], int(data.get("k", 10)))

    def of(self, curve_scores: Sequence[float]) -> float:
        if len(curve_scores) == 0:
            raise ValueError("a finished run without evaluations has no score")
        if self.name == "final":
            return float(curve_scores[-1])
        if self.name == "best":
            return float(np.max(curve_scores))
        return float(np.mean(curve_scores[-self.k :]))


DEFAULT_STATISTIC = Statistic()


@dataclass(frozen=True)
class ScoreSet:
    """Scores of the selected finished runs: one row per run, plus the records they came from.

    `runs` columns: the store's index columns (algo, dataset_id, dataset_sha256, seed, steps, ...)
    and `score`. `algos` and `datasets` keep the requested order.
    """

    statistic: Statistic
    runs: pd.DataFrame
    records: Mapping[str, RunRecord]
    algos: tuple[str, ...]
    datasets: tuple[str, ...]
    warnings: tuple[str, ...]

    def cell_runs(self, algo: str, dataset: str) -> pd.DataFrame:
        """The runs of one cell, sorted by seed."""
        runs = self.runs
        return runs[(runs["algo"] == algo) & (runs["dataset_id"] == dataset)].sort_values("seed")

    def dataset_runs(self, dataset: str) -> pd.DataFrame:
        """The runs of every selected algorithm on one dataset."""
        return self.runs[self.runs["dataset_id"] == dataset]

    def cell(self, algo: str, dataset: str) -> np.ndarray:
        """Scores of one cell, ordered by seed."""
        return self.cell_runs(algo, dataset)["score"].to_numpy(float)

    def has_cell(self, algo: str, dataset: str) -> bool:
        return len(self.cell_runs(algo, dataset)) > 0

    def curves(self, algo: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation steps (T,) and normalised scores (runs, T) of one cell, on the steps all its runs share."""
        curves = [self.records[r].curve for r in self.cell_runs(algo, dataset)["run_id"]]
        common = set.intersection(*({e["step"] for e in curve} for curve in curves))
        values = [[e["normalized_score"] for e in curve if e["step"] in common] for curve in curves]
        return np.array(sorted(common)), np.array(values, float)

    def aggregate_matrices(self) -> tuple[dict[str, np.ndarray], tuple[str, ...], list[str]]:
        """One (runs, datasets) matrix per algorithm, for rliable, and the warnings this choice causes.

        rliable's aggregates compare algorithms on one task set, and its stratified bootstrap needs
        the same number of runs on every task of an algorithm. So: only datasets that every algorithm
        ran are aggregated, and each algorithm keeps its lowest-numbered `n` seeds per dataset, `n`
        being its smallest seed count (a rule fixed before looking at scores, so no seed is chosen
        for its score). Algorithms may still differ from each other in `n`.
        """
        warnings = []
        common = tuple(d for d in self.datasets if all(self.has_cell(a, d) for a in self.algos))
        if not common:
            raise OffbenchError(
                "no dataset has finished runs of every selected algorithm, so nothing can be aggregated",
                "select algorithms and datasets that overlap with --algos/--datasets",
            )
        if missing := [d for d in self.datasets if d not in common]:
            warnings.append(f"aggregates leave out {', '.join(missing)}: not every algorithm has runs there")
        matrices = {}
        for algo in self.algos:
            cells = [self.cell(algo, d) for d in common]
            n = min(len(c) for c in cells)
            if any(len(c) > n for c in cells):
                warnings.append(
                    f"{algo}: aggregates use its {n} lowest-numbered seeds per dataset "
                    f"(its datasets have {n}-{max(len(c) for c in cells)} seeds; "
                    "the stratified bootstrap needs equal runs per dataset)"
                )
            matrices[algo] = np.stack([c[:n] for c in cells], axis=1)
        return matrices, common, warnings


def collect_scores(
    store: ResultsStore,
    algos: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    statistic: Statistic = DEFAULT_STATISTIC,
    where: Mapping[str, Any] | None = None,
) -> ScoreSet:
    """Score the finished runs of the chosen algorithms and datasets (all when None).

    `datasets` entries are selectors (`select_datasets`): ids, short names or globs of either.
    `where` keeps only runs whose index columns equal the given values (e.g. `{"steps": 1000}`).
    """
    index = store.runs("finished")
    if index.empty:
        raise OffbenchError(f"no finished runs in {store.root}", "train with `offbench run` or pass --results-dir")
    algo_names = select_algos(index["algo"], algos)
    dataset_ids = select_datasets(index["dataset_id"], datasets)
    index = index[index["algo"].isin(algo_names) & index["dataset_id"].isin(dataset_ids)]
    for column, value in (where or {}).items():
        index = index[index[column] == value]
    if index.empty:
        condition = ", ".join(f"{k}={v}" for k, v in (where or {}).items())
        raise OffbenchError(f"no finished runs match the selection{' with ' + condition if condition else ''}")
    ensure_one_protocol_per_cell(index)
    index, warnings = latest_run_per_seed(index)
    runs, records = score_runs(store, index, statistic)
    algo_names = [a for a in algo_names if a in set(runs["algo"])]
    dataset_ids = [d for d in dataset_ids if d in set(runs["dataset_id"])]
    warnings += few_seed_warnings(runs)
    return ScoreSet(statistic, runs, records, tuple(algo_names), tuple(dataset_ids), tuple(warnings))


def select_algos(available: Iterable[str], wanted: Sequence[str] | None) -> list[str]:
    """The requested algorithms in the requested order (all, sorted, when None)."""
    names = sorted(set(available))
    if wanted is None:
        return names
    if unknown := [a for a in wanted if a not in names]:
        raise OffbenchError(
            f"no finished runs of {', '.join(unknown)}", f"algorithms in this store: {', '.join(names) or 'none'}"
        )
    return list(dict.fromkeys(wanted))


def select_datasets(available: Iterable[str], wanted: Sequence[str] | None) -> list[str]:
    """Dataset ids the selectors pick, in selector order (all, sorted, when None).

    A selector is an id, a short name (`hopper-medium`, `hopper-medium+first10000`) or a glob of either;
    one without "+" never picks transformed data (`offbench.data.ids.selects`).
    """
    names = sorted(set(available))
    if wanted is None:
        return names
    selected: list[str] = []
    for selector in wanted:
        matches = [i for i in names if ids.selects(selector, i)]
        if not matches:
            raise OffbenchError(f"no finished runs on a dataset matching {selector!r}", _selection_hint(selector, names))
        selected += [m for m in matches if m not in selected]
    return selected


def _selection_hint(selector: str, names: Sequence[str]) -> str:
    transformed = [] if "+" in selector else [ids.short_name(i) for i in names if ids.selects(f"{selector}+*", i)]
    if transformed:
        return f"only transformed data has runs; name the transform: {', '.join(dict.fromkeys(transformed))}"
    return f"datasets in this store: {', '.join(names)}"


def ensure_one_protocol_per_cell(index: pd.DataFrame) -> None:
    """Refuse cells whose runs were trained or evaluated differently (their mean would mean nothing)."""
    for (algo, dataset), cell in index.groupby(["algo", "dataset_id"], sort=False):
        protocols = cell.groupby(list(PROTOCOL_COLUMNS)).size()
        if len(protocols) > 1:
            listed = "; ".join(
                ", ".join(f"{c}={v}" for c, v in zip(PROTOCOL_COLUMNS, key)) + f" ({n} runs)"
                for key, n in protocols.items()
            )
            raise OffbenchError(
                f"{algo} on {dataset} mixes protocols: {listed}",
                "select one (e.g. --steps) or keep them in separate --results-dir stores",
            )


def latest_run_per_seed(index: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep one run per (algo, dataset, seed): the latest finished one."""
    ordered = index.sort_values(["finished_at", "run_id"])
    duplicated = ordered.duplicated(["algo", "dataset_id", "seed"], keep="last")
    warnings = [
        f"{row.algo} on {row.dataset_id}, seed {row.seed}: ignoring run {row.run_id}, a later finished run has the same seed"
        for row in ordered[duplicated].itertuples()
    ]
    return ordered[~duplicated].reset_index(drop=True), warnings


def score_runs(
    store: ResultsStore, index: pd.DataFrame, statistic: Statistic
) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    """Load the records of `index` rows and add their `score` column."""
    records = {run_id: store.load(run_id) for run_id in index["run_id"]}
    scores = []
    for run_id, record in records.items():
        curve = [entry["normalized_score"] for entry in record.curve]
        if not curve:
            raise OffbenchError(f"run {run_id} is finished but has no evaluations", f"inspect {store.run_dir(run_id)}")
        scores.append(statistic.of(curve))
    return index.assign(score=scores).reset_index(drop=True), records


def few_seed_warnings(runs: pd.DataFrame) -> list[str]:
    counts = runs.groupby(["algo", "dataset_id"], sort=False).size()
    return [
        f"{algo} on {dataset}: only {n} seed{'s' if n > 1 else ''} (fewer than {MIN_SEEDS}); treat its interval with caution"
        for (algo, dataset), n in counts.items()
        if n < MIN_SEEDS
    ]
