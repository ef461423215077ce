"""Scores from the store (statistics, selection, honesty rules) and the tables built from them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import write_run

from offbench.analysis.scores import Statistic, collect_scores
from offbench.analysis.stats import stream_seed
from offbench.analysis.tables import aggregate_table, per_dataset_data, per_dataset_table
from offbench.errors import OffbenchError
from offbench.store import ResultsStore

HOPPER, WALKER = "local/hopper-random-v5", "local/walker2d-random-v5"

FIXTURE_ROWS = [
    # dataset, algo, seeds, steps, eval_episodes, mean, std, ci_low, ci_high
    (HOPPER, "td3bc", 5, 1000, 5, 12.34, 1.21, 11.02, 13.46),
    (HOPPER, "iql", 3, 2000, 5, 20.0, 2.0, 18.31, 21.72),
    (WALKER, "td3bc", 1, 1000, 10, 5.0, float("nan"), 5.0, 5.0),
]
EXPECTED_MARKDOWN = """\
Normalised score per dataset (statistic: last-10 mean): mean ± std over seeds [95% bootstrap CI of the mean, 2000 resamples of the seeds]; n = seeds.

| Dataset | Steps | Eval episodes | td3bc | iql |
| :--- | ---: | ---: | :--- | :--- |
| local/hopper-random-v5 | 1,000 / 2,000 | 5 | 12.3 ± 1.2 [11.0, 13.5] n=5 | 20.0 ± 2.0 [18.3, 21.7] n=3† |
| local/walker2d-random-v5 | 1,000 | 10 | 5.0 ± – [5.0, 5.0] n=1† | – |

† fewer than 5 seeds: treat the interval with caution.
"""
EXPECTED_LATEX_ROW = (
    r"    local/hopper-random-v5 & 1,000 / 2,000 & 5 & 12.3 $\pm$ 1.2 [11.0, 13.5] n=5 "
    r"& 20.0 $\pm$ 2.0 [18.3, 21.7] n=3$^\dagger$ \\"
)


def fixture_table() -> pd.DataFrame:
    columns = ["dataset", "algo", "seeds", "steps", "eval_episodes", "mean", "std", "ci_low", "ci_high"]
    return pd.DataFrame(FIXTURE_ROWS, columns=columns).assign(statistic="last-10 mean", eval_every=100, diverged=0)


def test_per_dataset_markdown_is_exact() -> None:
    assert per_dataset_table(fixture_table(), reps=2000).markdown() == EXPECTED_MARKDOWN


def test_per_dataset_latex_uses_booktabs_and_escapes() -> None:
    latex = per_dataset_table(fixture_table(), reps=2000).latex().splitlines()
    assert latex[4:7] == [r"  \begin{tabular}{lrrll}", r"    \toprule", r"    Dataset & Steps & Eval episodes & td3bc & iql \\"]
    assert latex[7] == r"    \midrule" and latex[8] == EXPECTED_LATEX_ROW and latex[10] == r"    \bottomrule"
    assert r"[95\% bootstrap CI" in latex[2]
    assert latex[-2] == r"\end{table}" or latex[-1] == r"\end{table}"


def test_table_without_few_seed_cells_has_no_footnote() -> None:
    table = per_dataset_table(fixture_table().iloc[:1], reps=2000)
    assert "†" not in table.markdown() and table.notes == ()


def test_aggregate_markdown_cells() -> None:
    intervals = pd.DataFrame(
        [("td3bc", m, 50.0 + i, 48.04, 52.96) for i, m in enumerate(["IQM", "Mean", "Median", "Optimality gap"])],
        columns=["algo", "metric", "estimate", "ci_low", "ci_high"],
    )
    lines = aggregate_table(intervals, {"td3bc": 5}, 9, "final", 2000).markdown().splitlines()
    assert lines[2] == "| Algorithm | Runs | IQM | Mean | Median | Optimality gap |"
    assert lines[4] == "| td3bc | 5 | 50.0 [48.0, 53.0] | 51.0 [48.0, 53.0] | 52.0 [48.0, 53.0] | 53.0 [48.0, 53.0] |"
    assert "over 9 datasets (statistic: final)" in lines[0] and "2000 resamples" in lines[0]


@pytest.mark.parametrize(
    ("statistic", "expected"),
    [(Statistic("final"), 30.0), (Statistic("last-k", 2), 25.0), (Statistic("best"), 40.0), (Statistic("last-k", 10), 25.0)],
)
def test_statistic_of_a_curve(statistic: Statistic, expected: float) -> None:
    assert statistic.of([10.0, 40.0, 20.0, 30.0]) == expected


def test_unknown_statistic_is_a_user_error() -> None:
    with pytest.raises(OffbenchError, match="unknown statistic"):
        Statistic("median")


@pytest.fixture()
def store(tmp_path: Path) -> ResultsStore:
    """td3bc: 5 seeds on hopper (final scores 20..24), 3 on walker; iql: 5 seeds on hopper only."""
    store = ResultsStore(tmp_path / "results")
    for seed in range(5):
        write_run(store, "td3bc", HOPPER, seed, [0.0, 10.0, 20.0 + seed])
        write_run(store, "iql", HOPPER, seed, [0.0, 30.0, 40.0 + seed])
    for seed in range(3):
        write_run(store, "td3bc", WALKER, seed, [5.0, 15.0 + seed])
    return store


def test_per_dataset_data_is_computed_from_the_curves(store: ResultsStore) -> None:
    scores = collect_scores(store, statistic=Statistic("last-k", 2))
    data = per_dataset_data(scores, reps=200, seed=0).set_index(["dataset", "algo"])
    hopper = (10.0 + 20.0 + np.arange(5)) / 2  # last-2 mean of [0, 10, 20 + seed]
    row = data.loc[(HOPPER, "td3bc")]
    assert row["seeds"] == 5 and row["steps"] == 1000 and row["eval_episodes"] == 5 and row["statistic"] == "last-2 mean"
    assert row["mean"] == pytest.approx(hopper.mean()) and row["std"] == pytest.approx(hopper.std(ddof=1))
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    assert data.loc[(WALKER, "td3bc"), "seeds"] == 3
    assert (WALKER, "iql") not in data.index


def test_cell_intervals_are_reproducible_and_seeded_per_cell(store: ResultsStore) -> None:
    scores = collect_scores(store)
    pd.testing.assert_frame_equal(per_dataset_data(scores, 200, 3), per_dataset_data(scores, 200, 3))
    assert stream_seed(3, "cell", "td3bc", HOPPER) != stream_seed(3, "cell", "iql", HOPPER)


def test_selection_by_short_name_glob_and_order(store: ResultsStore) -> None:
    scores = collect_scores(store, algos=["td3bc", "iql"], datasets=["walker2d-random", "local/hop*"])
    assert scores.algos == ("td3bc", "iql") and scores.datasets == (WALKER, HOPPER)
    with pytest.raises(OffbenchError, match="no finished runs of cql"):
        collect_scores(store, algos=["cql"])
    with pytest.raises(OffbenchError, match="matching 'ant-random'"):
        collect_scores(store, datasets=["ant-random"])


def test_few_seeds_warn_and_aggregates_use_the_common_datasets(store: ResultsStore) -> None:
    scores = collect_scores(store)
    assert any("td3bc on local/walker2d-random-v5: only 3 seeds" in w for w in scores.warnings)
    matrices, datasets, warnings = scores.aggregate_matrices()
    assert datasets == (HOPPER,) and matrices["td3bc"].shape == (5, 1)
    assert any("leave out local/walker2d-random-v5" in w for w in warnings)


def test_unequal_seed_counts_truncate_to_the_lowest_seeds(store: ResultsStore) -> None:
    matrices, _, warnings = collect_scores(store, algos=["td3bc"]).aggregate_matrices()
    assert matrices["td3bc"].shape == (3, 2)
    np.testing.assert_allclose(matrices["td3bc"][:, 0], np.array([30.0, 31.0, 32.0]) / 3)  # seeds 0-2, mean of [0, 10, 20 + seed]
    assert any("3 lowest-numbered seeds" in w for w in warnings)


def test_a_cell_mixing_protocols_is_refused(store: ResultsStore) -> None:
    write_run(store, "iql", HOPPER, 7, [1.0, 2.0], steps=5000)
    with pytest.raises(OffbenchError, match="iql on local/hopper-random-v5 mixes protocols"):
        collect_scores(store)
    assert collect_scores(store, where={"steps": 5000}).cell("iql", HOPPER).tolist() == [1.5]


def test_a_cell_mixing_evaluation_settings_is_refused(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    write_run(store, "td3bc", HOPPER, 0, [10.0, 20.0])
    write_run(store, "td3bc", HOPPER, 1, [10.0, 20.0], eval_env="Hopper-v4", tag="v4")
    with pytest.raises(OffbenchError, match=r"td3bc on local/hopper-random-v5 mixes protocols: .*evaluation="):
        collect_scores(store)


def test_a_rerun_seed_counts_once(store: ResultsStore) -> None:
    write_run(store, "iql", HOPPER, 0, [0.0, 10.0, 99.0], tag="rerun")
    scores = collect_scores(store, statistic=Statistic("final"))
    assert scores.cell("iql", HOPPER).tolist() == [99.0, 41.0, 42.0, 43.0, 44.0]
    assert any("seed 0: ignoring run iql__local_hopper-random-v5__s0__a" in w for w in scores.warnings)


def test_unfinished_runs_are_not_counted(store: ResultsStore) -> None:
    config = dataclasses.replace(store.load("iql__local_hopper-random-v5__s0__a").config, run_id="crashed", seed=9)
    store.start_run("crashed", config, {})
    assert len(collect_scores(store).cell("iql", HOPPER)) == 5


def test_diverged_runs_are_kept_apart_never_scored(store: ResultsStore) -> None:
    trainer = write_run(store, "td3bc", HOPPER, 5, [0.0, 10.0, 20.0], diverged_at=1)  # as offbench.train records one
    nan = write_run(store, "td3bc", HOPPER, 6, [0.0, 10.0, float("nan")])  # a NaN written as a score by other code
    scores = collect_scores(store, statistic=Statistic("final"))
    assert scores.cell("td3bc", HOPPER).tolist() == [20.0, 21.0, 22.0, 23.0, 24.0]
    assert sorted(scores.cell_diverged("td3bc", HOPPER)["run_id"]) == sorted([trainer, nan])
    warning = next(w for w in scores.warnings if "diverged" in w)
    assert "td3bc on local/hopper-random-v5: 2 of 7 runs diverged" in warning
    assert f"{trainer} (at step 666)" in warning and f"{nan} (at step 999)" in warning
    matrices, _, _ = scores.aggregate_matrices()
    assert np.isfinite(matrices["td3bc"]).all()


def test_the_table_counts_diverged_runs_in_their_cell(store: ResultsStore) -> None:
    write_run(store, "td3bc", HOPPER, 5, [0.0, 10.0, 20.0], diverged_at=2)
    for seed in range(2):
        write_run(store, "iql", WALKER, seed, [1.0, float("inf")])
    scores = collect_scores(store)
    data = per_dataset_data(scores, reps=200, seed=0).set_index(["dataset", "algo"])
    assert data.loc[(HOPPER, "td3bc"), "seeds"] == 5 and data.loc[(HOPPER, "td3bc"), "diverged"] == 1
    assert np.isfinite(data.loc[(HOPPER, "td3bc"), ["mean", "std", "ci_low", "ci_high"]].astype(float)).all()
    markdown = per_dataset_table(data.reset_index(), reps=200).markdown()
    assert "n=5 (1 of 6 diverged)" in markdown
    assert "| local/walker2d-random-v5 | 1,000 | 5 | 2 of 2 diverged | 10.5 ± 0.5 " in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert not any(re.search(r"\b(nan|inf)\b", row) for row in rows)
    assert "Diverged runs (a NaN or inf evaluation) have no score" in markdown
