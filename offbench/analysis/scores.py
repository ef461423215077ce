"""Collect per-run scores from the results store under a stated statistic.

A run's score is one number taken from its evaluation curve (normalised score x100 per evaluation):

- `final`:  the last evaluation;
- `last-k`: the mean of the last k evaluations (k = 10 by default, the TD3+BC paper's metric; all of
            them when a run has fewer than k);
- `best`:   the best evaluation. Optimistic: it selects on the evaluation episodes themselves.

Rules that keep a score table honest, applied by `collect_scores`:

- only runs that are over count (the store's index plus the summary file): finished ones, and
  diverged ones, which are kept apart and never scored;
- a run is *diverged* when its status says so or any evaluation's normalised score is NaN, inf or
  missing: it has no score, is left out of every mean and named in the warnings;
- one cell (algorithm x configuration x dataset) holds one set of hyperparameters: runs that differ in
  any resolved config value (`config.algo_config`) are separate rows, `td3bc [alpha=5]`, named by
  their difference from the plain configuration (`configuration_names`);
- one cell holds one protocol: a cell whose runs differ in dataset sha256, evaluation settings (env,
  env kwargs, wrappers, reference returns: `RunConfig.evaluation`), steps, eval_every or eval_episodes
  is refused, never averaged;
- one run per seed: when a seed was run twice under the same protocol, the latest run is kept and a
  warning says so;
- a cell with fewer than `MIN_SEEDS` scored seeds gets a warning.

Under a protocol (`collect_scores(..., cells=protocol.scoring)`), each cell keeps only the runs trained under
its budget and is scored with its own statistic: a protocol's `[[overrides]]` may set both per algorithm
(DriftQL's D4RL cells are `final` beside the others' `last-10 mean`), and every table says which one a row used.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from offbench.config import baseline_values, observation_kind
from offbench.data import ids
from offbench.data.spaces import ObservationSpace
from offbench.errors import OffbenchError
from offbench.protocol import BUDGET_KEYS
from offbench.records import DEFAULT_LAST_K
from offbench.store import ResultsStore, RunRecord

STATISTICS = ("final", "last-k", "best")
MIN_SEEDS = 5
PROTOCOL_COLUMNS = ("dataset_sha256", "evaluation", *BUDGET_KEYS)  # evaluation: offbench.records.evaluation_settings key


@dataclass(frozen=True)
class Statistic:
    """How one run's evaluation curve becomes its score."""

    name: str = "last-k"
    k: int = DEFAULT_LAST_K  # the k every run summary records, so the end-of-run line and the tables agree

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
        return cls(data["statistic"], int(data.get("k", DEFAULT_LAST_K)))

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
    """Scores of the selected runs: one row per scored run, the diverged runs apart, and their records.

    `selected` columns: the store's index columns (dataset_id, dataset_sha256, seed, steps, ...), `algo`
    (the row label: the algorithm, plus its configuration's difference when it has several,
    `td3bc [alpha=5]`) and `hyperparameters` (the difference from baselines/<algo>.toml, "" for none), for
    every selected run. `runs`: the scored ones, with `score`; `diverged`: those without a score, never
    counted. `algos` (row labels) and `datasets` keep the requested order.
    """

    statistic: Statistic
    selected: pd.DataFrame
    runs: pd.DataFrame
    diverged: pd.DataFrame
    records: Mapping[str, RunRecord]
    algos: tuple[str, ...]
    datasets: tuple[str, ...]
    warnings: tuple[str, ...]
    # Each run's statistic where a protocol set it per cell ({run_id: Statistic}); a run not in it: `statistic`
    run_statistics: Mapping[str, Statistic] = field(default_factory=dict)

    def cell_statistic(self, algo: str, dataset: str) -> Statistic:
        """The statistic that scored one cell (its runs share it: a cell is one algorithm on one dataset)."""
        cell = pd.concat([self.cell_runs(algo, dataset), self.cell_diverged(algo, dataset)])
        return self.run_statistics.get(cell["run_id"].iloc[0], self.statistic) if len(cell) else self.statistic

    def row_statistics(self) -> dict[str, list[Statistic]]:
        """{row label: the distinct statistics of its cells}, in row order."""
        found: dict[str, dict[str, Statistic]] = {algo: {} for algo in self.algos}
        for algo in self.algos:
            for dataset in self.datasets:
                if self.has_cell(algo, dataset) or len(self.cell_diverged(algo, dataset)):
                    statistic = self.cell_statistic(algo, dataset)
                    found[algo].setdefault(statistic.label, statistic)
        return {algo: list(statistics.values()) or [self.statistic] for algo, statistics in found.items()}

    @property
    def mixed_statistics(self) -> bool:
        """Whether the rows are scored by more than one statistic (a protocol's per-algorithm override)."""
        return len({s.label for statistics in self.row_statistics().values() for s in statistics}) > 1

    def statistic_label(self) -> str:
        """`last-10 mean`, or per row when they differ: `final (driftql); last-10 mean (td3bc, bc)`."""
        if not self.mixed_statistics:
            return self.row_statistics()[self.algos[0]][0].label if self.algos else self.statistic.label
        rows: dict[str, list[str]] = {}
        for algo, statistics in self.row_statistics().items():
            for statistic in statistics:
                rows.setdefault(statistic.label, []).append(algo)
        return "; ".join(f"{label} ({', '.join(algos)})" for label, algos in rows.items())

    def cell_runs(self, algo: str, dataset: str) -> pd.DataFrame:
        """The scored runs of one cell, sorted by seed."""
        return _cell(self.runs, algo, dataset)

    def cell_diverged(self, algo: str, dataset: str) -> pd.DataFrame:
        """The diverged runs of one cell, sorted by seed."""
        return _cell(self.diverged, algo, dataset)

    def dataset_runs(self, dataset: str) -> pd.DataFrame:
        """The scored runs of every selected algorithm on one dataset."""
        return self.runs[self.runs["dataset_id"] == dataset]

    def cell(self, algo: str, dataset: str) -> np.ndarray:
        """Scores of one cell, ordered by seed."""
        return self.cell_runs(algo, dataset)["score"].to_numpy(float)

    def has_cell(self, algo: str, dataset: str) -> bool:
        """Whether the cell has a scored run."""
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
        the same number of runs on every task of an algorithm. So: only datasets on which every algorithm
        has scored runs are aggregated (an algorithm with none anywhere is left out), and each algorithm
        keeps its lowest-numbered `n` seeds per dataset, `n` being its smallest seed count (a rule fixed
        before looking at scores, so no seed is chosen for its score). Algorithms may still differ from
        each other in `n`. When no dataset is left there are no matrices ({}, ()) and one warning says why.
        """
        algos = [a for a in self.algos if any(self.has_cell(a, d) for d in self.datasets)]
        warnings = [f"aggregates leave out {a}: none of its runs has a score" for a in self.algos if a not in algos]
        common = tuple(d for d in self.datasets if algos and all(self.has_cell(a, d) for a in algos))
        if not common:
            where = "; ".join(f"{a}: {', '.join(d for d in self.datasets if self.has_cell(a, d))}" for a in algos)
            return {}, (), [*warnings, f"no aggregate: no dataset has scored runs of every row ({where}); the per-dataset table and "
                                       "learning curves are all this report has (choose rows that overlap with --algos/--datasets)"]
        if missing := [d for d in self.datasets if d not in common]:
            warnings.append(f"aggregates leave out {', '.join(missing)}: not every algorithm has scored runs there")
        matrices = {}
        for algo in algos:
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


def _cell(runs: pd.DataFrame, algo: str, dataset: str) -> pd.DataFrame:
    return runs[(runs["algo"] == algo) & (runs["dataset_id"] == dataset)].sort_values("seed")


def collect_scores(
    store: ResultsStore,
    algos: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    statistic: Statistic = DEFAULT_STATISTIC,
    where: Mapping[str, Any] | None = None,
    cells: Callable[[str, str], tuple[Mapping[str, int], Statistic]] | None = None,
) -> ScoreSet:
    """Score the finished runs of the chosen algorithms and datasets (all when None); keep diverged runs apart.

    `algos` are algorithm names (every configuration of each is selected); `datasets` entries are
    selectors (`select_datasets`): ids, short names or globs of either. `where` keeps only runs whose
    index columns equal the given values (e.g. `{"steps": 1000}`). `cells(algo, dataset) -> (budget,
    statistic)` (a protocol's `scoring`) keeps only each cell's runs under its budget and scores them with
    its statistic instead of `statistic`.
    Raises OffbenchError when no run matches, when a cell mixes protocols, or when a finished run has
    no evaluations.
    """
    index = finished_or_diverged(store)
    if index.empty:
        raise OffbenchError(f"no finished runs in {store.root}", "train with `offbench run` or pass --results-dir")
    algo_names = select_algos(index["algo"], algos)
    dataset_ids = select_datasets(index["dataset_id"], datasets)
    index = index[index["algo"].isin(algo_names) & index["dataset_id"].isin(dataset_ids)]
    for column, value in (where or {}).items():
        index = index[index[column] == value]
    per_run: dict[str, Statistic] = {}
    if cells is not None:
        scoring = {cell: cells(*cell) for cell in dict.fromkeys(zip(index["algo"], index["dataset_id"]))}
        under = [all(getattr(row, key) == value for key, value in scoring[(row.algo, row.dataset_id)][0].items())
                 for row in index.itertuples()]
        index = index[np.array(under, bool)]
        per_run = {row.run_id: scoring[(row.algo, row.dataset_id)][1] for row in index.itertuples()}
    if index.empty:
        condition = ", ".join(f"{k}={v}" for k, v in (where or {}).items())
        raise OffbenchError(f"no finished runs match the selection{' with ' + condition if condition else ''}")
    records, damaged = store.load_intact(index["run_id"])
    index = index[~index["run_id"].isin(damaged)]
    damaged = {**store.damaged_runs(), **damaged}
    index, labels, warnings = name_configurations(index, records, algo_names)
    warnings = [*damaged_warnings(damaged), *warnings]
    ensure_one_protocol_per_cell(index)
    index, rerun_warnings = latest_run_per_seed(index)
    runs, diverged = score_runs(index, records, statistic, store, per_run)
    present = set(index["algo"])
    kept = set(index["dataset_id"])
    warnings += (rerun_warnings + few_seed_warnings(runs) + short_curve_warnings(runs, records, statistic, per_run)
                 + diverged_warnings(runs, diverged, records))
    return ScoreSet(
        statistic,
        index,
        runs,
        diverged,
        {run_id: records[run_id] for run_id in index["run_id"]},
        tuple(a for a in labels if a in present),
        tuple(d for d in dataset_ids if d in kept),
        tuple(warnings),
        per_run,
    )


def damaged_warnings(damaged: Mapping[str, str]) -> list[str]:
    """One caveat per run left out because a file of its record does not parse."""
    return [f"run {run_id} is left out: {damage} (restore it or `offbench runs rm {run_id}`)" for run_id, damage in damaged.items()]


def finished_or_diverged(store: ResultsStore) -> pd.DataFrame:
    """The index rows of the runs that are over: finished and diverged (each with its summary file)."""
    # .get: `ResultsStore.runs(status)` returns a frame without columns when no run has that status
    over = {run_id for status in ("finished", "diverged") for run_id in store.runs(status).get("run_id", ())}
    index = store.runs(None)
    return index[index["run_id"].isin(over)].reset_index(drop=True)


def select_algos(available: Iterable[str], wanted: Sequence[str] | None) -> list[str]:
    """The requested algorithms in the requested order (all, sorted, when None).

    Raises OffbenchError for an algorithm without runs.
    """
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
    one without "+" never picks transformed data (`offbench.data.ids.selects`). Raises OffbenchError for
    a selector that picks nothing.
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
    """Refuse cells whose runs were trained or evaluated differently (their mean would mean nothing).

    Raises OffbenchError naming the cell and its protocols.
    """
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
    """Keep one run per (algo, dataset, seed): the latest one to end."""
    ordered = index.sort_values(["finished_at", "run_id"])
    duplicated = ordered.duplicated(["algo", "dataset_id", "seed"], keep="last")
    warnings = [
        f"{row.algo} on {row.dataset_id}, seed {row.seed}: ignoring run {row.run_id}, a later run has the same seed"
        for row in ordered[duplicated].itertuples()
    ]
    return ordered[~duplicated].reset_index(drop=True), warnings


def score_runs(
    index: pd.DataFrame, records: Mapping[str, RunRecord], statistic: Statistic, store: ResultsStore,
    per_run: Mapping[str, Statistic] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the `index` rows into scored runs (with a `score` column) and diverged runs (no score); a run in
    `per_run` is scored with its statistic there, any other with `statistic`.

    Raises OffbenchError for a finished run without evaluations.
    """
    diverged = np.array([divergence(records[run_id]) is not None for run_id in index["run_id"]], bool)
    scored = index[~diverged]
    scores = []
    for run_id in scored["run_id"]:
        curve = [entry["normalized_score"] for entry in records[run_id].curve]
        if not curve:
            raise OffbenchError(f"run {run_id} is finished but has no evaluations", f"inspect {store.run_dir(run_id)}")
        scores.append((per_run or {}).get(run_id, statistic).of(curve))
    return scored.assign(score=scores).reset_index(drop=True), index[diverged].reset_index(drop=True)


def divergence(record: RunRecord) -> str | None:
    """Where a run diverged: its first evaluation with a NaN, inf or missing score, or its summary's status.

    None for a run whose every evaluation has a finite score.
    """
    for entry in record.curve:
        score = entry.get("normalized_score")
        if entry.get("diverged") or score is None or not math.isfinite(score):
            return f"at step {entry['step']}"
    if record.summary is not None and record.summary.status == "diverged":
        return f"at step {record.summary.diverged_at_step}"
    return None


def few_seed_warnings(runs: pd.DataFrame) -> list[str]:
    counts = runs.groupby(["algo", "dataset_id"], sort=False).size()
    return [
        f"{algo} on {dataset}: only {n} seed{'s' if n > 1 else ''} (fewer than {MIN_SEEDS}); treat its interval with caution"
        for (algo, dataset), n in counts.items()
        if n < MIN_SEEDS
    ]


def short_curve_warnings(runs: pd.DataFrame, records: Mapping[str, RunRecord], default: Statistic,
                         per_run: Mapping[str, Statistic] | None = None) -> list[str]:
    """For last-k: one warning per cell whose runs have fewer than k evaluations (their score is the mean of all of them)."""
    warnings = []
    for (algo, dataset), cell in runs.groupby(["algo", "dataset_id"], sort=False):
        statistic = (per_run or {}).get(cell["run_id"].iloc[0], default)
        if statistic.name != "last-k":
            continue
        evaluations = min(len(records[run_id].curve) for run_id in cell["run_id"])  # one protocol per cell: one count
        if evaluations < statistic.k:
            warnings.append(f"{algo} on {dataset}: its runs have {evaluations} evaluation{'s' * (evaluations != 1)}, fewer than "
                            f"k = {statistic.k}: their {statistic.label} is the mean of all of them")
    return warnings


def diverged_warnings(runs: pd.DataFrame, diverged: pd.DataFrame, records: Mapping[str, RunRecord]) -> list[str]:
    """One warning per cell with diverged runs, naming each run and where it diverged."""
    warnings = []
    for (algo, dataset), cell in diverged.groupby(["algo", "dataset_id"], sort=False):
        total = len(cell) + len(_cell(runs, algo, dataset))
        listed = ", ".join(f"{r} ({divergence(records[r])})" for r in cell["run_id"])
        warnings.append(
            f"{algo} on {dataset}: {len(cell)} of {total} runs diverged (a NaN or inf evaluation) and are left "
            f"out of every score and mean: {listed}"
        )
    return warnings


# ---- configurations ----------------------------------------------------------------------------


class _Marker:
    """A value that is not a config value: a key missing from a record, or one at its baseline value."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


UNSET: Any = _Marker("unset")  # a key the record or the baseline does not have
_DEFAULT: Any = _Marker("default")  # in a label: a key at the value baselines/<algo>.toml gives it


def name_configurations(
    index: pd.DataFrame, records: Mapping[str, RunRecord], algos: Sequence[str]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Label every run with its configuration (`configuration_names`): (index, row labels in order, warnings).

    `algo` becomes the row label and `hyperparameters` the difference from baselines/<algo>.toml.
    """
    index = index.assign(hyperparameters="")
    labels, warnings = [], []
    for algo in algos:
        rows = index.index[index["algo"] == algo]
        configs = [records[index.at[i, "run_id"]].config for i in rows]
        names = configuration_names(algo, [(index.at[i, "dataset_id"], config.algo_config) for i, config in zip(rows, configs)],
                                    [recorded_observation_kind(config.dataset.observation_space) for config in configs])
        index.loc[rows, "algo"] = [label for label, _ in names]
        index.loc[rows, "hyperparameters"] = [difference for _, difference in names]
        counts = Counter(label for label, _ in names)
        labels += sorted(counts, key=lambda label: (label != algo, label))
        if len(counts) > 1:
            listed = ", ".join(f"{label} ({n} runs)" for label, n in sorted(counts.items(), key=lambda c: (c[0] != algo, c[0])))
            warnings.append(f"{algo}: runs with different hyperparameters are kept apart, one row per configuration: {listed}")
    return index, labels, warnings


def configuration_names(
    algo: str, runs: Sequence[tuple[str, Mapping[str, Any]]], kinds: Sequence[str | None] | None = None
) -> list[tuple[str, str]]:
    """The row label and the hyperparameter difference of each (dataset id, resolved config) of one algorithm.

    A run's configuration is its config's difference from its dataset's baseline (`baseline_config`, with
    the run's kind of observations from `kinds` when given, so an Atari run is compared with the Atari set),
    so `--set alpha=5` is one configuration on every dataset. The label is the plain algorithm name for
    the configuration equal to the baseline (keys outside the TOML aside) when one is present, else for
    the one with the most runs (then the fewest differences from the baseline); every other one is
    `algo [key=value, ...]` over the keys in which it differs from that one (`default`: the baseline's
    value, `unset`: not in the record). The difference text lists the keys that differ from the baseline
    and are in the TOML or differ between configurations ("" for none).
    """
    if not runs:
        return []
    keyed = list(zip([dataset for dataset, _ in runs], kinds or [None] * len(runs)))
    baselines = {key: baseline_config(algo, *key) for key in keyed}
    toml_keys = set().union(*baselines.values())
    deltas = [config_delta(config, baselines[key]) for key, (_, config) in zip(keyed, runs)]
    distinct = {_canonical(d): d for d in deltas}
    counts = Counter(_canonical(d) for d in deltas)
    plain = min(distinct, key=lambda c: (bool(toml_keys & set(distinct[c])), -counts[c], len(distinct[c]), c))
    keys = sorted({k for d in distinct.values() for k in d})
    varying = {k for k in keys if len({_canonical(d.get(k, _DEFAULT)) for d in distinct.values()}) > 1}

    def value(delta: Mapping[str, Any], key: str) -> str:
        return format_value(delta.get(key, _DEFAULT if key in toml_keys else UNSET))

    names = {}
    for c, delta in distinct.items():
        changed = [k for k in keys if _canonical(delta.get(k, _DEFAULT)) != _canonical(distinct[plain].get(k, _DEFAULT))]
        label = algo if c == plain else f"{algo} [{', '.join(f'{k}={value(delta, k)}' for k in changed)}]"
        names[c] = (label, ", ".join(f"{k}={value(delta, k)}" for k in keys if k in delta and (k in toml_keys or k in varying)))
    return [names[_canonical(d)] for d in deltas]


def baseline_config(algo: str, dataset_id: str, kind: str | None = None) -> dict[str, Any]:
    """The hyperparameters baselines/<algo>.toml gives `dataset_id`: its [config], then [observations.<kind>]
    when `kind` is given, then its [datasets] overrides, as `offbench.config.resolve_config` applies them
    ({} for an algorithm without a baseline file)."""
    try:
        return baseline_values(algo, dataset_id, kind)
    except OffbenchError:
        return {}


def recorded_observation_kind(space: Mapping[str, Any] | None) -> str | None:
    """`vector` or `frames` for a record's observation space (None for records that predate spaces)."""
    return None if space is None else observation_kind(ObservationSpace(tuple(space["shape"]), space["dtype"]))


def config_delta(config: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """The keys in which `config` differs from `baseline`, with `config`'s value (`UNSET` where it lacks the key)."""
    keys = sorted(set(config) | set(baseline))
    return {k: config.get(k, UNSET) for k in keys if config.get(k, UNSET) != baseline.get(k, UNSET)}


def config_changes(reference: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """`alpha 2.5 -> 1000, tau 0.005 -> unset`: the keys in which `new` differs from `reference`."""
    return ", ".join(
        f"{k} {format_value(reference.get(k, UNSET))} -> {format_value(v)}" for k, v in config_delta(new, reference).items()
    )


def format_value(value: Any) -> str:
    """A config value as a label shows it: `5` for 5.0 (exact, else its repr), `true`, `[256, 256]`, `uniform`."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, (str, _Marker)):
        return str(value)
    return json.dumps(value)


def _canonical(value: Any) -> str:
    """A stable text for a config value or dict (a marker never reads as a config string)."""
    return json.dumps(value, sort_keys=True, default=lambda marker: {"marker": repr(marker)})
