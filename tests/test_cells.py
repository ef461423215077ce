"""A cell is one configuration: runs that differ in a resolved hyperparameter are never pooled, in a
table, a frozen reference or a check."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_fixtures import write_run

from offbench.analysis.leaderboard import Leaderboard, check_runs, entries_table, freeze_entries
from offbench.analysis.scores import baseline_config, collect_scores, configuration_names
from offbench.analysis.tables import per_dataset_data, per_dataset_table
from offbench.store import ResultsStore

HOPPER, WALKER = "local/hopper-medium-v5", "local/walker2d-medium-v5"
CHEETAH, CHEETAH_REPLAY = "local/halfcheetah-medium-v5", "local/halfcheetah-medium-replay-v5"


def config(algo: str, dataset: str, **overrides: object) -> dict[str, object]:
    """The config `offbench run --set` resolves: the baseline file's values for the dataset, then the overrides."""
    return {**baseline_config(algo, dataset), **overrides}


def write_cell(store: ResultsStore, seeds: range, score: float, tag: str, dataset: str = HOPPER, **overrides: object) -> None:
    for seed in seeds:
        write_run(store, "td3bc", dataset, seed, [score, score + seed], tag=tag, overrides=overrides)


def test_configurations_are_named_by_their_difference_from_the_baseline() -> None:
    names = configuration_names(
        "td3bc",
        [(HOPPER, config("td3bc", HOPPER)), (HOPPER, config("td3bc", HOPPER, alpha=5.0)), (WALKER, config("td3bc", WALKER, alpha=5.0))],
    )
    assert names == [("td3bc", ""), ("td3bc [alpha=5]", "alpha=5"), ("td3bc [alpha=5]", "alpha=5")]


def test_without_the_baseline_configuration_the_most_common_one_is_plain() -> None:
    runs = [(HOPPER, config("td3bc", HOPPER, alpha=5.0))] * 2 + [(HOPPER, config("td3bc", HOPPER, alpha=7.0, tau=0.01))]
    assert configuration_names("td3bc", runs) == [
        ("td3bc", "alpha=5"),
        ("td3bc", "alpha=5"),
        ("td3bc [alpha=7, tau=0.01]", "alpha=7, tau=0.01"),
    ]


def test_keys_outside_the_baseline_file_name_a_configuration_only_where_they_differ() -> None:
    uniform, prioritized = (config("td3bc", HOPPER, sampler=s, timeouts_as_terminals=False) for s in ("uniform", "prioritized"))
    assert configuration_names("td3bc", [(HOPPER, uniform)] * 2) == [("td3bc", "")] * 2
    assert configuration_names("td3bc", [(HOPPER, uniform)] * 2 + [(HOPPER, prioritized)])[2] == (
        "td3bc [sampler=prioritized]",
        "sampler=prioritized",
    )


def test_per_dataset_overrides_of_the_baseline_file_are_the_default() -> None:
    cheetah, replay = config("driftql", CHEETAH), config("driftql", CHEETAH_REPLAY)
    assert cheetah["alpha"] != replay["alpha"]  # driftql.toml sets alpha per dataset
    names = configuration_names("driftql", [(CHEETAH, cheetah), (CHEETAH_REPLAY, replay), (CHEETAH_REPLAY, {**replay, "alpha": 3.0})])
    assert names == [("driftql", ""), ("driftql", ""), ("driftql [alpha=3]", "alpha=3")]


def test_runs_with_other_hyperparameters_are_separate_rows_never_one_cell(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    write_cell(store, range(3), 60.0, "default")
    write_cell(store, range(3), 5.0, "broken", actor_lr=0.0, alpha=1000.0)  # the same seeds: not reruns of each other
    scores = collect_scores(store)
    assert scores.algos == ("td3bc", "td3bc [actor_lr=0, alpha=1000]")
    assert scores.cell("td3bc", HOPPER).tolist() == pytest.approx([60.0, 60.5, 61.0])  # last-10 mean of [score, score + seed]
    assert scores.cell("td3bc [actor_lr=0, alpha=1000]", HOPPER).tolist() == pytest.approx([5.0, 5.5, 6.0])
    assert any("different hyperparameters" in w and "td3bc [actor_lr=0, alpha=1000] (3 runs)" in w for w in scores.warnings)
    assert not any("ignoring run" in w for w in scores.warnings)
    data = per_dataset_data(scores, reps=200, seed=0)
    assert data.set_index("algo").loc["td3bc [actor_lr=0, alpha=1000]", "hyperparameters"] == "actor_lr=0, alpha=1000"
    assert "| Dataset | Steps | Eval episodes | td3bc | td3bc [actor_lr=0, alpha=1000] |" in per_dataset_table(data, 200).markdown()


def test_each_configuration_is_frozen_into_its_own_entry_and_checked_against_it(tmp_path: Path) -> None:
    reference = ResultsStore(tmp_path / "reference")
    write_cell(reference, range(3), 60.0, "default")
    write_cell(reference, range(3), 30.0, "alpha5", alpha=5.0)
    entries = freeze_entries(collect_scores(reference), None, "now")
    assert [(e.algo, e.algo_config["alpha"]) for e in entries] == [("td3bc", 2.5), ("td3bc", 5.0)]
    board = Leaderboard(tuple(entries), revision=1)
    assert list(entries_table(board).display["Hyperparameters"]) == ["defaults", "alpha=5"]

    new = ResultsStore(tmp_path / "new")
    write_cell(new, range(3, 6), 30.0, "alpha5", alpha=5.0)  # would regress against the default entry
    checks = check_runs(board, new, reps=200)
    assert [(c.algo, c.verdict) for c in checks] == [("td3bc [alpha=5]", "pass")]
    assert checks[0].new.tolist() == pytest.approx([31.5, 32.0, 32.5])  # last-10 mean of [30, 30 + seed]
