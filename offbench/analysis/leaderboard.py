"""Leaderboard: frozen reference scores, and the score-regression check that gates CI on them.

The leaderboard is one JSON file committed with the project (`results/leaderboard.json` by default;
`.gitignore` keeps `/results/leaderboard*`). It holds one entry per algorithm x resolved hyperparameters
x dataset x protocol, where a protocol is (steps, eval_every, eval_episodes, statistic); each entry pins
the dataset's sha256 and the runs' resolved config (`algo_config`), and keeps every seed's (finite)
score with its run id and provenance. See docs/analysis.md for the format.

The check compares new runs with an entry only under the entry's protocol and hyperparameters: same
dataset id and sha256, the same evaluation settings (env, env kwargs, wrappers and reference returns), same
steps, eval_every and eval_episodes, the same resolved config, and the new runs scored with the entry's
statistic. Runs of the same algorithm and dataset under another protocol
are refused, never compared; runs with other hyperparameters fail the cell ("other hyperparameters"),
and a diverged new run fails it too ("diverged"). An entry frozen before the config was kept (no
`algo_config`) matches any hyperparameters; one frozen before the evaluation settings were kept (no
`evaluation`) matches any evaluation settings.

Regression test, per cell: d = mean(new) - mean(reference) over seeds, with a 95% bootstrap CI that
resamples the new and the reference seeds independently. The cell has *regressed* when the whole CI
lies below -margin (significantly worse by more than the margin), *improved* when it lies above
+margin, and *passes* otherwise.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offbench.analysis.scores import (
    STATISTICS,
    ScoreSet,
    Statistic,
    config_changes,
    configuration_names,
    damaged_warnings,
    divergence,
    finished_or_diverged,
    latest_run_per_seed,
    score_runs,
    select_algos,
    select_datasets,
)
from offbench.analysis.stats import DEFAULT_REPS, Interval, difference_of_means, stream_seed
from offbench.analysis.tables import Table
from offbench.data.dataset import SCORE_NAMES
from offbench.data.ids import is_id, parse, selects
from offbench.errors import OffbenchError
from offbench.io import read_json, read_toml, write_json
from offbench.paths import resource_dir
from offbench.protocol import BUDGET_KEYS, BUDGET_LIMITS, MAX_SEEDS, check_budget, check_integer
from offbench.records import DEFAULT_LAST_K
from offbench.store import ResultsStore, RunRecord

LEADERBOARD_FORMAT = "offbench-leaderboard"
FORMAT_VERSION = 3  # 2: entries keep `algo_config`; 3: and `evaluation`. Older entries match any config / evaluation
READABLE_VERSIONS = (1, 2, 3)
DEFAULT_MARGIN = 5.0
FAILING_VERDICTS = ("regressed", "diverged", "other hyperparameters", "no new runs", "no reference", "too few seeds")


# ---- protocols -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """A named benchmark protocol (protocols/<name>.toml): what to train, how long, how to score."""

    name: str
    algos: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: int
    steps: int
    eval_every: int
    eval_episodes: int
    statistic: Statistic = field(default_factory=Statistic)
    margin: float = DEFAULT_MARGIN
    description: str = ""
    # Per-cell overrides, in file order, later ones winning: {"algos": [...], "datasets": [selectors], "set": {key: value},
    # any of steps / eval_every / eval_episodes, and statistic / k}; a missing algos or datasets matches every one (`cell`).
    overrides: tuple[dict[str, Any], ...] = ()

    def _entries_for(self, algo: str, dataset: str) -> list[dict[str, Any]]:
        listed = _listed(dataset)  # a recorded id (d4rl/antmaze-umaze-v2+reward-1) is its listed dataset's cell
        return [entry for entry in self.overrides if algo in entry.get("algos", [algo])
                and any(selects(d, listed) or d == listed for d in entry.get("datasets", [listed]))]

    def recorded(self, algo: str, dataset: str) -> str:
        """The id the runs of a cell record: the listed dataset plus the transforms its algorithm's baseline asks
        for (`d4rl/antmaze-umaze-v2+reward-1` for DriftQL: offbench.config.dataset_transforms), as `offbench run` applies them."""
        from offbench.config import dataset_transforms

        known = is_id(dataset) and (resource_dir("baselines") / f"{algo}.toml").is_file()  # records of an algorithm without one ask for none
        shift = dataset_transforms(algo, dataset).get("reward_shift", 0.0) if known else 0.0
        return f"{dataset}+reward{float(shift):g}" if shift else dataset

    def recorded_cells(self, algos: Sequence[str], datasets: Sequence[str]) -> list[tuple[str, str]]:
        """(algorithm, recorded dataset id) of every cell of `algos` x `datasets` (`recorded`)."""
        return [(algo, self.recorded(algo, dataset)) for algo in algos for dataset in datasets]

    def cell(self, algo: str, dataset: str) -> tuple[dict[str, int], dict[str, Any]]:
        """The budget and config overrides (`--set`) of one algorithm x dataset cell of this protocol."""
        budget, settings = dict(self.budget), {}
        for entry in self._entries_for(algo, dataset):
            budget |= {key: entry[key] for key in BUDGET_KEYS if key in entry}
            settings |= entry.get("set", {})
        return budget, settings

    def cell_statistic(self, algo: str, dataset: str) -> Statistic:
        """How a run of one cell is scored: the protocol's statistic and k, each replaced by the last override
        of the cell that sets it (DriftQL's D4RL cells: `final`, the paper's 500K evaluation)."""
        name, k = self.statistic.name, self.statistic.k
        for entry in self._entries_for(algo, dataset):
            name, k = entry.get("statistic", name), entry.get("k", k)
        return Statistic(name, k)

    def scoring(self, algo: str, dataset: str) -> tuple[dict[str, int], Statistic]:
        """The budget a cell's runs were trained under and the statistic that scores them (reports, freezing, checks)."""
        return self.cell(algo, dataset)[0], self.cell_statistic(algo, dataset)

    @property
    def budget(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in BUDGET_KEYS}

    def select(self, algos: Sequence[str] | None, datasets: Sequence[str] | None) -> tuple[list[str], list[str]]:
        """The protocol's algorithms and datasets, or the given subset of them."""
        if outside := [a for a in algos or () if a not in self.algos]:
            raise OffbenchError(f"{', '.join(outside)}: not an algorithm of protocol {self.name}", f"it lists {', '.join(self.algos)}")
        chosen_datasets = list(self.datasets)
        if datasets:
            if outside := [d for d in datasets if not any(selects(d, listed) for listed in self.datasets)]:
                raise OffbenchError(f"{', '.join(outside)}: not a dataset of protocol {self.name}", f"it lists {', '.join(self.datasets)}")
            chosen_datasets = [listed for listed in self.datasets if any(selects(d, listed) for d in datasets)]
        return list(algos or self.algos), chosen_datasets


_PROTOCOL_TYPES = {
    "name": str, "description": str, "algos": list, "datasets": list, "seeds": int, "steps": int,
    "eval_every": int, "eval_episodes": int, "statistic": str, "k": int, "margin": (int, float), "overrides": list,
}  # fmt: skip
_OVERRIDE_TYPES = {"algos": list, "datasets": list, "set": dict, "steps": int, "eval_every": int, "eval_episodes": int,
                   "statistic": str, "k": int}


def _check_overrides(path: Path, entries: list[Any]) -> tuple[dict[str, Any], ...]:
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise OffbenchError(f"{path}: overrides entry {n} is not a table", "write [[overrides]] tables")
        if unknown := sorted(set(entry) - set(_OVERRIDE_TYPES)):
            raise OffbenchError(f"{path}: overrides entry {n} has unknown keys {', '.join(unknown)}", f"allowed: {', '.join(_OVERRIDE_TYPES)}")
        for key, value in entry.items():
            if not isinstance(value, _OVERRIDE_TYPES[key]) or isinstance(value, bool):
                raise OffbenchError(f"{path}: overrides entry {n}: {key} has the wrong type ({type(value).__name__})")
            if key in BUDGET_KEYS:
                check_integer(f"{path}: overrides entry {n}: {key}", value, 1, BUDGET_LIMITS[key])
        _check_statistic(f"{path}: overrides entry {n}: ", entry)
        _check_names(path, f"overrides entry {n}: ", entry)
    return tuple(entries)


def _check_statistic(where: str, table: dict[str, Any]) -> None:
    """A protocol's (or an override's) `statistic` is one of STATISTICS and its `k` a positive integer: one line each."""
    if "statistic" in table and table["statistic"] not in STATISTICS:
        raise OffbenchError(f"{where}statistic {table['statistic']!r} is not one of {', '.join(STATISTICS)}"[:200],
                            "final: the last evaluation; last-k: the mean of the last k; best: the best evaluation")
    if "k" in table:
        check_integer(f"{where}k", table["k"])


def _check_names(path: Path, where: str, table: dict[str, Any]) -> None:
    """A protocol's `algos` and `datasets` lists hold names (strings), each once."""
    for key in ("algos", "datasets"):
        names = table.get(key, [])
        if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
            raise OffbenchError(f"{path}: {where}{key} must be a list of distinct names, got {names!r}"[:200])


def check_margin(name: str, margin: float) -> float:
    """`margin` if it is a finite non-negative number of points; NaN or inf would turn every regression into a pass."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise OffbenchError(f"{name} must be a finite non-negative number of points, got {margin!r}", f"the default is {DEFAULT_MARGIN:g}")
    return float(margin)


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A protocol by name (`ci` -> protocols/ci.toml) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = resource_dir("protocols") / f"{name_or_path}.toml"
    if not path.is_file():
        shipped = sorted(p.stem for p in resource_dir("protocols").glob("*.toml"))
        raise OffbenchError(f"no protocol {name_or_path!r} ({path})", f"protocols: {', '.join(shipped) or 'none'}")
    data = read_toml(path)
    if unknown := sorted(set(data) - set(_PROTOCOL_TYPES)):
        raise OffbenchError(f"{path}: unknown keys {', '.join(unknown)}", f"allowed: {', '.join(_PROTOCOL_TYPES)}")
    if missing := [k for k in ("algos", "datasets", "seeds", *BUDGET_KEYS) if k not in data]:
        raise OffbenchError(f"{path}: missing {', '.join(missing)}")
    for key, value in data.items():
        if not isinstance(value, _PROTOCOL_TYPES[key]) or isinstance(value, bool):
            raise OffbenchError(f"{path}: {key} has the wrong type ({type(value).__name__})")
    _check_names(path, "", data)
    check_integer(f"{path}: seeds", data["seeds"], 1, MAX_SEEDS)
    _check_statistic(f"{path}: ", data)
    check_budget({key: data[key] for key in BUDGET_KEYS}, where=str(path))
    return Protocol(
        name=data.get("name", path.stem),
        algos=tuple(data["algos"]),
        datasets=tuple(data["datasets"]),
        seeds=data["seeds"],
        steps=data["steps"],
        eval_every=data["eval_every"],
        eval_episodes=data["eval_episodes"],
        statistic=Statistic(data.get("statistic", "last-k"), data.get("k", DEFAULT_LAST_K)),
        margin=check_margin(f"{path}: margin", data.get("margin", DEFAULT_MARGIN)),
        description=data.get("description", ""),
        overrides=_check_overrides(path, data.get("overrides", [])),
    )


def _listed(dataset: str) -> str:
    """A recorded id's dataset as a protocol lists it: without the baseline's reward shift (`+reward-1`)."""
    if not is_id(dataset):
        return dataset
    parsed = parse(dataset)
    kept = [t for t in parsed.transforms if not t.startswith("reward")]
    return "".join([parsed.base, *(f"+{t}" for t in kept)])


# ---- the leaderboard file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """Reference scores of one algorithm with one set of hyperparameters on one dataset under one protocol."""

    algo: str
    dataset: dict[str, Any]  # id, sha256, source, env_id, ref_min_score, ref_max_score
    protocol: dict[str, Any]  # steps, eval_every, eval_episodes, statistic, k (last-k), name
    seeds: list[dict[str, Any]]  # seed, score (finite; None and diverged=True before `updated` refuses it), run_id, git_commit, git_dirty, finished_at
    provenance: dict[str, Any]  # packages {name: [versions]}, python [...], hardware [...]
    frozen_at: str
    algo_config: dict[str, Any] | None = None  # the runs' resolved config; None: frozen before it was kept
    evaluation: dict[str, Any] | None = None  # the runs' RunConfig.evaluation (env, kwargs, wrappers, references, key); None: frozen before it was kept

    @property
    def statistic(self) -> Statistic:
        return Statistic.from_dict(self.protocol)

    @property
    def budget(self) -> dict[str, int]:
        return {key: self.protocol[key] for key in BUDGET_KEYS}

    @property
    def cell_key(self) -> tuple[Any, ...]:
        """Algorithm, dataset, budget and statistic (the sha256 is checked, not keyed)."""
        return (self.algo, self.dataset["id"], *self.budget.values(), self.statistic.label)

    @property
    def key(self) -> tuple[Any, ...]:
        """One reference per algorithm, resolved config, dataset, budget and statistic."""
        return (*self.cell_key, None if self.algo_config is None else json.dumps(self.algo_config, sort_keys=True))

    def matches(self, algo_config: Mapping[str, Any]) -> bool:
        """Whether runs with this resolved config compare with the entry (any config, for an entry without one)."""
        return self.algo_config is None or dict(self.algo_config) == dict(algo_config)

    def supersedes(self, old: Entry) -> bool:
        """Whether freezing this entry replaces `old`: the same key, or the same cell frozen without a config."""
        return old.key == self.key or (old.algo_config is None and old.cell_key == self.cell_key)

    def scores(self) -> np.ndarray:
        return np.array([s["score"] for s in self.seeds], float)

    @property
    def diverged_runs(self) -> list[str]:
        """The run ids of the seeds that diverged or have no finite score (only in entries fresh from
        `freeze_entries`: a loaded leaderboard's scores are checked finite)."""
        return [s["run_id"] for s in self.seeds if s.get("diverged") or s["score"] is None or not math.isfinite(s["score"])]

    @property
    def evaluation_key(self) -> str | None:
        return None if self.evaluation is None else self.evaluation["key"]

    def describe_protocol(self) -> str:
        return _describe(self.dataset["sha256"], self.evaluation_key, self.budget) + f", statistic {self.statistic.label}"


@dataclass(frozen=True)
class Leaderboard:
    entries: tuple[Entry, ...] = ()
    revision: int = 0
    updated_at: str | None = None

    def __post_init__(self) -> None:
        """Refuse an entry with a diverged run: a reference never holds a NaN or inf score, and a cell is
        frozen with every seed it was given or not at all (raises OffbenchError, naming the runs)."""
        refused = [f"{e.algo} on {e.dataset['id']}: {', '.join(e.diverged_runs)}" for e in self.entries if e.diverged_runs]
        if refused:
            raise OffbenchError(
                f"refusing to freeze cells with diverged runs ({'; '.join(refused)})",
                "a reference never holds a NaN or inf score: rerun those seeds, or leave the cells out with --algos/--datasets",
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LEADERBOARD_FORMAT,
            "version": FORMAT_VERSION,
            "revision": self.revision,
            "updated_at": self.updated_at,
            "entries": [{f.name: getattr(e, f.name) for f in fields(Entry)} for e in self.entries],
        }

    def updated(self, new: Sequence[Entry], now: str) -> tuple[Leaderboard, list[Entry], list[Entry]]:
        """A new revision with `new` added or replacing the entries they supersede; (board, added, replaced).

        Raises OffbenchError when an entry of `new` has a diverged run (see `__post_init__`).
        """
        superseded = [any(n.supersedes(e) for n in new) for e in self.entries]
        replaced = [e for e, gone in zip(self.entries, superseded) if gone]
        kept = [e for e, gone in zip(self.entries, superseded) if not gone]
        entries = sorted([*kept, *new], key=lambda e: tuple(map(str, e.key)))
        added = [n for n in new if not any(n.supersedes(e) for e in self.entries)]
        return Leaderboard(tuple(entries), self.revision + 1, now), added, replaced


def load_leaderboard(path: Path, missing_ok: bool = False) -> Leaderboard:
    """Read and validate a leaderboard file (version 1 or 2).

    Raises OffbenchError for a missing file (unless `missing_ok`) and for a damaged one: not JSON, another
    format or version, a missing field, or a score that is not a finite number.
    """
    if not path.exists():
        if missing_ok:
            return Leaderboard()
        raise OffbenchError(f"no leaderboard at {path}", "freeze one with `offbench leaderboard update` and commit it")
    hint = f"restore it with `git checkout -- {path}` or rebuild it with `offbench leaderboard update`"
    try:
        data = read_json(path)
        if data.get("format") != LEADERBOARD_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {LEADERBOARD_FORMAT!r}")
        if data.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"version {data.get('version')!r} is not supported (this offbench reads {', '.join(map(str, READABLE_VERSIONS))})")
        entries = tuple(_parse_entry(raw) for raw in data["entries"])
        return Leaderboard(entries, int(data["revision"]), data.get("updated_at"))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OffbenchError) as exc:  # RecursionError: nested past the parser
        raise OffbenchError(f"{path} is not a valid leaderboard: {str(exc)[:200]}", hint) from None


def save_leaderboard(board: Leaderboard, path: Path) -> None:
    write_json(path, board.to_json())


def freeze_entries(scores: ScoreSet, protocol_name: str | None = None, now: str | None = None) -> list[Entry]:
    """Leaderboard entries for every cell of `scores`, each with its runs' resolved config.

    A diverged run is listed among its cell's seeds with `"score": None, "diverged": True`, so the entry
    says what happened but can never become a reference: `Leaderboard.updated` refuses it. Raises
    OffbenchError when a cell without diverged runs has only one seed (a reference needs two to be
    checked against).
    """
    now = now or utc_now()
    entries = []
    for algo, dataset in itertools.product(scores.algos, scores.datasets):
        runs, diverged = scores.cell_runs(algo, dataset), scores.cell_diverged(algo, dataset)
        if runs.empty and diverged.empty:
            continue
        if len(runs) < 2 and diverged.empty:
            raise OffbenchError(
                f"{algo} on {dataset} has one seed: a reference needs at least two to be checked against",
                "train more seeds (offbench run --seeds N) before freezing it",
            )
        if not diverged.empty:
            runs = pd.concat([runs, diverged]).sort_values("seed", kind="stable")
        diverged_ids = set(diverged["run_id"])
        records = [scores.records[r] for r in runs["run_id"]]
        dataset_info = {k: v for k, v in records[0].config.dataset.to_dict().items() if k != "requested"}
        first = runs.iloc[0]
        protocol = {key: int(first[key]) for key in BUDGET_KEYS} | scores.cell_statistic(algo, dataset).to_dict()
        if protocol_name:
            protocol["name"] = protocol_name
        seeds = [
            {
                "seed": int(row.seed),
                **({"score": None, "diverged": True} if row.run_id in diverged_ids else {"score": float(row.score)}),
                "run_id": row.run_id,
                "git_commit": record.provenance.get("git_commit"),
                "git_dirty": record.provenance.get("git_dirty"),
                "finished_at": record.summary.finished_at if record.summary else None,
            }
            for row, record in zip(runs.itertuples(), records)
        ]
        config = records[0].config  # a cell's runs share one resolved config (`configuration_names`)
        provenance = _provenance(r.provenance for r in records)
        entries.append(Entry(config.algo, dataset_info, protocol, seeds, provenance, now, dict(config.algo_config), config.evaluation))
    return entries


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- the regression check ---------------------------------------------------------------------


@dataclass(frozen=True)
class CellCheck:
    """The verdict for one leaderboard cell; `algo` is its row label (`td3bc [alpha=5]` beside other configs)."""

    algo: str
    dataset: str
    reference: np.ndarray
    new: np.ndarray
    difference: Interval | None
    verdict: str  # pass | improved | regressed | diverged | other hyperparameters | no new runs | no reference | too few seeds
    note: str = ""  # one line: why it failed, or which new runs were not compared
    score: str = "normalized-return"  # what the scores hold (offbench.data.dataset.SCORES), from the entry's evaluation settings
    statistic: str = ""  # the label of the statistic that scored both sides (the entry's; a missing cell's, the protocol's)

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING_VERDICTS


def regression_verdict(difference: Interval, margin: float) -> str:
    """`regressed` when the CI of mean(new) - mean(reference) lies entirely below -margin."""
    if difference.high < -margin:
        return "regressed"
    if difference.low > margin:
        return "improved"
    return "pass"


def check_runs(
    board: Leaderboard,
    store: ResultsStore,
    *,
    protocol: Protocol | None = None,
    algos: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    margin: float = DEFAULT_MARGIN,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> list[CellCheck]:
    """Compare the store's new runs with the leaderboard, cell by cell.

    With a protocol, every algorithm x dataset it lists (or the `algos`/`datasets` subset of them) must
    have a reference and new runs: a missing one fails. Without, every selected entry that has new runs
    of its algorithm and dataset is checked. An entry is compared with the new runs of its resolved
    config only; a cell whose new runs all have other hyperparameters, or one with a diverged new run,
    fails. Runs frozen into the leaderboard are not "new" and are never compared with themselves.
    Raises OffbenchError when the leaderboard is empty, when a cell's new runs are all under another
    protocol, or when nothing was checked.
    """
    margin = check_margin("margin", margin)
    entries = _select_entries(board, protocol, algos, datasets)
    checks = [] if protocol is None else _missing_references(entries, protocol, protocol.recorded_cells(*protocol.select(algos, datasets)))
    labelled = sorted(zip(entries, entry_labels(entries)), key=lambda pair: (pair[0].algo, pair[0].dataset["id"], pair[1]))
    index = finished_or_diverged(store)
    for _, group in itertools.groupby(labelled, key=lambda pair: (pair[0].algo, pair[0].dataset["id"])):
        checks += _check_cell(list(group), index, store, protocol is not None, margin, reps, seed)
    if not checks:
        raise OffbenchError(
            f"no new runs in {store.root} match a leaderboard entry",
            "train them under the leaderboard's protocol first (see protocols/ and `offbench leaderboard show`)",
        )
    return checks


def check_table(checks: Sequence[CellCheck], margin: float, reps: int) -> Table:
    def scores(values: np.ndarray) -> str:
        if len(values) == 0:
            return "–"
        std = f"{np.std(values, ddof=1):.1f}" if len(values) > 1 else "–"
        return f"{np.mean(values):.1f} ± {std} (n={len(values)})"

    rows = [
        {
            "Algorithm": c.algo,
            "Dataset": c.dataset if c.score == "normalized-return" else f"{c.dataset} ({SCORE_NAMES[c.score]})",
            "Reference": scores(c.reference),
            "New": scores(c.new),
            "New - reference [95% CI]": "–"
            if c.difference is None
            else f"{c.difference.estimate:+.1f} [{c.difference.low:+.1f}, {c.difference.high:+.1f}]",
            "Statistic": c.statistic or "–",
            "Verdict": c.verdict,
        }
        for c in checks
    ]
    data = pd.DataFrame(
        [
            {
                "algo": c.algo,
                "dataset": c.dataset,
                "reference_mean": np.mean(c.reference) if len(c.reference) else np.nan,
                "new_mean": np.mean(c.new) if len(c.new) else np.nan,
                "difference": c.difference.estimate if c.difference else np.nan,
                "ci_low": c.difference.low if c.difference else np.nan,
                "ci_high": c.difference.high if c.difference else np.nan,
                "statistic": c.statistic,
                "verdict": c.verdict,
            }
            for c in checks
        ]
    )
    caption = (
        f"Score regression check: a cell has regressed when the 95% bootstrap CI of mean(new) - "
        f"mean(reference) ({reps} resamples) lies entirely below -{margin:g} normalised points."
    )
    if any(c.score != "normalized-return" for c in checks):
        caption += " A dataset marked (success rate) is scored by success rate x100, and the margin is in its points."
    notes = tuple(f"{c.algo} on {c.dataset}: {c.note}" for c in checks if c.note)
    return Table(data, pd.DataFrame(rows), caption, "offbench-check", "lllllll", notes)


def entries_table(board: Leaderboard) -> Table:
    """The leaderboard's entries, with each one's hyperparameters as their difference from baselines/<algo>.toml."""
    rows = [
        {
            "Algorithm": e.algo,
            "Hyperparameters": hyperparameters,
            "Dataset": e.dataset["id"],
            "Protocol": e.protocol.get("name", "–"),
            "Steps": f"{e.protocol['steps']:,}",
            "Eval": f"every {e.protocol['eval_every']:,} x {e.protocol['eval_episodes']}",
            "Statistic": e.statistic.label,
            "Score": f"{e.scores().mean():.1f} ± {e.scores().std(ddof=1):.1f} (n={len(e.seeds)})",
            "Frozen": e.frozen_at,
        }
        for e, hyperparameters in zip(board.entries, _entry_hyperparameters(board.entries))
    ]
    data = pd.DataFrame(
        [{"algo": e.algo, "algo_config": e.algo_config, "dataset": e.dataset["id"], **e.protocol} for e in board.entries]
    )
    caption = f"Leaderboard revision {board.revision} ({board.updated_at or 'never updated'})."
    return Table(data, pd.DataFrame(rows), caption, "offbench-leaderboard", "llllrllll")


def entry_labels(entries: Sequence[Entry]) -> list[str]:
    """Each entry's row label: its algorithm, plus its config's difference where the algorithm has several."""
    return [label for label, _ in _entry_names(entries)]


def _entry_hyperparameters(entries: Sequence[Entry]) -> list[str]:
    return [hyperparameters or "defaults" for _, hyperparameters in _entry_names(entries)]


def _entry_names(entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """(label, difference from the baseline) per entry, named as `configuration_names` names runs;
    an entry frozen without a config is `(algo, "not recorded")`."""
    names = [(e.algo, "not recorded") for e in entries]
    for algo in dict.fromkeys(e.algo for e in entries):
        positions = [i for i, e in enumerate(entries) if e.algo == algo and e.algo_config is not None]
        configured = configuration_names(algo, [(entries[i].dataset["id"], entries[i].algo_config) for i in positions])
        for i, name in zip(positions, configured):
            names[i] = name
    return names


# ---- internals ---------------------------------------------------------------------------------


MAX_SCORE = 1e6  # normalised points (x100): a reference score beyond it would overflow the check's bootstrap into inf or NaN


def _parse_entry(raw: Mapping[str, Any]) -> Entry:
    optional = ("algo_config", "evaluation")
    entry = Entry(**{f.name: raw[f.name] for f in fields(Entry) if f.name not in optional}, **{k: raw.get(k) for k in optional})
    for key in optional:
        if getattr(entry, key) is not None and not isinstance(getattr(entry, key), dict):
            raise ValueError(f"{entry.algo} on {entry.dataset['id']}: {key} must be an object")
    if entry.evaluation is not None and not isinstance(entry.evaluation.get("key"), str):
        raise ValueError(f"{entry.algo} on {entry.dataset['id']}: evaluation needs its key")
    for key in ("id", "sha256"):
        if not isinstance(entry.dataset[key], str):
            raise ValueError(f"dataset {key} must be a string")
    check_budget({key: entry.protocol[key] for key in BUDGET_KEYS}, where="protocol")
    check_integer("protocol k", entry.protocol.get("k", DEFAULT_LAST_K))
    if entry.protocol["statistic"] not in STATISTICS:
        raise ValueError(f"unknown statistic {entry.protocol['statistic']!r}")
    for s in entry.seeds:
        score = s["score"]
        if not isinstance(s["seed"], int) or isinstance(score, bool) or not isinstance(score, (int, float)) or not abs(score) <= MAX_SCORE:
            raise ValueError(f"{entry.algo} on {entry.dataset['id']}: a seed needs an integer seed and a numeric score within "
                             f"+-{MAX_SCORE:g} points")
    return entry


def _provenance(provenances: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    packages: dict[str, dict[str, None]] = {}
    python: dict[str, None] = {}
    hardware: dict[str, None] = {}
    for p in provenances:
        for name, version in p.get("packages", {}).items():
            if version is not None:  # None: not installed where the run trained
                packages.setdefault(name, {})[str(version)] = None
        python[str(p.get("python"))] = None
        hardware[" / ".join(str(p[k]) for k in ("device", "cpu", "gpu") if p.get(k))] = None
    return {
        "packages": {name: list(versions) for name, versions in sorted(packages.items())},
        "python": list(python),
        "hardware": list(hardware),
    }


def _select_entries(
    board: Leaderboard, protocol: Protocol | None, algos: Sequence[str] | None, datasets: Sequence[str] | None
) -> list[Entry]:
    entries = list(board.entries)
    if not entries:
        raise OffbenchError("the leaderboard is empty", "freeze references with `offbench leaderboard update`")
    if protocol is not None:
        wanted = set(protocol.recorded_cells(*protocol.select(algos, datasets)))
        return [e for e in entries if (e.algo, e.dataset["id"]) in wanted and _under(e, *protocol.scoring(e.algo, e.dataset["id"]))]
    wanted_algos = set(select_algos((e.algo for e in entries), algos))
    wanted_datasets = set(select_datasets((e.dataset["id"] for e in entries), datasets))
    return [e for e in entries if e.algo in wanted_algos and e.dataset["id"] in wanted_datasets]


def _under(entry: Entry, budget: Mapping[str, int], statistic: Statistic) -> bool:
    """Whether an entry was frozen under a protocol cell's budget and statistic."""
    return entry.budget == dict(budget) and entry.statistic.label == statistic.label


def _missing_references(entries: Sequence[Entry], protocol: Protocol, cells: Sequence[tuple[str, str]]) -> list[CellCheck]:
    present = {(e.algo, e.dataset["id"]) for e in entries}
    empty = np.array([])
    return [
        CellCheck(algo, dataset, empty, empty, None, "no reference", statistic=protocol.cell_statistic(algo, dataset).label)
        for algo, dataset in cells
        if (algo, dataset) not in present
    ]


def _check_cell(
    group: list[tuple[Entry, str]], index: pd.DataFrame, store: ResultsStore, required: bool, margin: float, reps: int, seed: int
) -> list[CellCheck]:
    """Check the (entry, label) pairs of one (algo, dataset); refuse when its new runs match none of their protocols."""
    entries = [entry for entry, _ in group]
    algo, dataset = entries[0].algo, entries[0].dataset["id"]
    frozen = {s["run_id"] for e in entries for s in e.seeds}
    runs = index[(index["algo"] == algo) & (index["dataset_id"] == dataset) & ~index["run_id"].isin(frozen)]
    comparable = [runs[_same_protocol(runs, e)] for e in entries]
    if not runs.empty and all(c.empty for c in comparable):
        found = "; ".join(
            dict.fromkeys(_describe(r.dataset_sha256, r.evaluation, {k: getattr(r, k) for k in BUDGET_KEYS}) for r in runs.itertuples())
        )
        expected = "; ".join(e.describe_protocol() for e in entries)
        raise OffbenchError(
            f"refusing to compare {algo} on {dataset} across protocols: the leaderboard holds {expected}; "
            f"the new runs have {found}",
            _refusal_hint(runs, entries),
        )
    records, damaged = store.load_intact(run_id for c in comparable for run_id in c["run_id"])
    comparable = [c[~c["run_id"].isin(damaged)] for c in comparable]
    checks = []
    for (entry, label), candidates in zip(group, comparable):
        configs = [records[r].config.algo_config for r in candidates["run_id"]]
        same = candidates[np.array([entry.matches(c) for c in configs], bool)]
        claimed = [any(e.matches(c) for e in entries if _same_protocol_as(e, entry)) for c in configs]
        unclaimed = candidates[~np.array(claimed, bool)]
        check = _check_entry(entry, label, same, unclaimed, records, store, required, margin, reps, seed)
        score = (entry.evaluation or {}).get("score", "normalized-return")  # evaluation_settings names a score other than the default
        checks += [dataclasses.replace(check, score=score, statistic=entry.statistic.label)] if check else []
    if damaged:
        left_out = "; ".join(damaged_warnings(damaged))
        checks = [dataclasses.replace(c, note="; ".join(filter(None, [c.note, left_out]))) for c in checks]
    return checks


def _check_entry(
    entry: Entry,
    label: str,
    same: pd.DataFrame,
    unclaimed: pd.DataFrame,
    records: Mapping[str, RunRecord],
    store: ResultsStore,
    required: bool,
    margin: float,
    reps: int,
    seed: int,
) -> CellCheck | None:
    """The verdict for one entry given its new runs with its config (`same`) and those no entry of the cell claims."""
    dataset, reference, none = entry.dataset["id"], entry.scores(), np.array([])
    other = "; ".join(dict.fromkeys(config_changes(entry.algo_config or {}, records[r].config.algo_config) for r in unclaimed["run_id"]))
    if same.empty and not unclaimed.empty:
        note = f"the new runs' hyperparameters differ from the reference's ({other}); rerun with the reference's or freeze one for them"
        return CellCheck(label, dataset, reference, none, None, "other hyperparameters", note)
    if same.empty:
        return CellCheck(label, dataset, reference, none, None, "no new runs") if required else None
    same, _ = latest_run_per_seed(same)
    scored, diverged = score_runs(same, records, entry.statistic, store)
    new = scored["score"].to_numpy(float)
    note = f"{len(unclaimed)} new runs with other hyperparameters were not compared ({other})" if len(unclaimed) else ""
    if not diverged.empty:
        listed = ", ".join(f"{r} ({divergence(records[r])})" for r in diverged["run_id"])
        return CellCheck(label, dataset, reference, new, None, "diverged", f"{len(diverged)} new runs diverged (a NaN or inf evaluation): {listed}")
    if len(new) < 2 or len(reference) < 2:
        return CellCheck(label, dataset, reference, new, None, "too few seeds", note)
    difference = difference_of_means(new, reference, reps, stream_seed(seed, "check", label, dataset))
    return CellCheck(label, dataset, reference, new, difference, regression_verdict(difference, margin), note)


def _refusal_hint(runs: pd.DataFrame, entries: list[Entry]) -> str:
    if any((_same_budget(runs, e) & (runs["dataset_sha256"] == e.dataset["sha256"])).any() for e in entries):
        return ("same data and budget, other evaluation settings (env, env kwargs, wrappers or reference returns: "
                "`evaluation` in the leaderboard entry and the runs' records); rerun with the reference's, or freeze a "
                "reference for these with `offbench leaderboard update`")
    if any(_same_budget(runs, e).any() for e in entries):
        return ("same budget, other data bytes: a downloaded dataset may be another version, a local one made by "
                "another generation or machine (datasets/README.md); freeze a reference on this data with "
                "`offbench leaderboard update`")
    return "rerun under the leaderboard's protocol, or freeze a new reference with `offbench leaderboard update`"


def _same_protocol_as(entry: Entry, other: Entry) -> bool:
    return entry.dataset["sha256"] == other.dataset["sha256"] and entry.budget == other.budget and entry.evaluation_key == other.evaluation_key


def _same_protocol(runs: pd.DataFrame, entry: Entry) -> pd.Series:
    same_evaluation = True if entry.evaluation is None else runs["evaluation"] == entry.evaluation_key
    return (runs["dataset_sha256"] == entry.dataset["sha256"]) & same_evaluation & _same_budget(runs, entry)


def _same_budget(runs: pd.DataFrame, entry: Entry) -> pd.Series:
    same = pd.Series(True, index=runs.index)
    for key, value in entry.budget.items():
        same &= runs[key] == value
    return same


def _describe(sha256: str, evaluation: str | None, budget: Mapping[str, Any]) -> str:
    settings = f"evaluation {evaluation}, " if evaluation else ""
    return f"dataset sha256 {str(sha256)[:12]}, {settings}" + ", ".join(f"{k}={int(v)}" for k, v in budget.items())
