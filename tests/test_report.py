"""`offbench report` end to end on a synthetic store: files, numbers, protocol text, reproducibility."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from analysis_fixtures import analysis_cli, write_run, write_synthetic_store
from typer.testing import CliRunner, Result

from offbench.errors import OffbenchError
from offbench.store import ResultsStore

DATASETS = ["local/hopper-random-v5", "local/walker2d-random-v5", "local/halfcheetah-random-v5"]
ALGOS = ["td3bc", "iql", "cql"]
TABLES = ["per_dataset", "aggregate", "improvement"]
FIGURES = ["aggregate_intervals", "performance_profiles", "probability_of_improvement", "learning_curves"]


def invoke(*args: object) -> Result:
    return CliRunner().invoke(analysis_cli(), [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ResultsStore:
    """3 algorithms x 3 datasets x 5 seeds, except cql with 3 seeds on walker2d."""
    root = tmp_path_factory.mktemp("store") / "results"
    levels = {(a, d): 20.0 + 15 * i + 5 * j for i, a in enumerate(ALGOS) for j, d in enumerate(DATASETS)}
    write_synthetic_store(root, {c: v for c, v in levels.items() if c != ("cql", DATASETS[1])}, range(5), n_evals=12)
    return write_synthetic_store(root, {("cql", DATASETS[1]): levels[("cql", DATASETS[1])]}, range(3), n_evals=12)


@pytest.fixture(scope="module")
def report_dir(store: ResultsStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "r"
    result = invoke("report", "--results-dir", store.root, "--algos", ",".join(ALGOS), "--reps", 200, "--out", out, "--name", "demo")
    assert result.exit_code == 0, result.output
    return out


def test_report_writes_every_table_and_figure(report_dir: Path) -> None:
    for table in TABLES:
        for suffix in ("md", "tex", "csv"):
            assert (report_dir / "tables" / f"{table}.{suffix}").stat().st_size > 0
    for figure in FIGURES:
        assert (report_dir / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (report_dir / "figures" / f"{figure}.pdf").read_bytes()[:5] == b"%PDF-"
    markdown = (report_dir / "report.md").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", markdown):
        assert (report_dir / link).exists(), link
    assert set(re.findall(r"!\[[^]]*\]\(figures/(\w+)\.png\)", markdown)) == set(FIGURES)
    assert (report_dir / "tables" / "per_dataset.md").read_text().strip() in markdown


def test_report_numbers_are_recomputed_from_the_records(store: ResultsStore, report_dir: Path) -> None:
    scores = pd.read_csv(report_dir / "scores.csv")
    assert len(scores) == 3 * 3 * 5 - 2
    record = store.load(scores["run_id"][0])
    assert scores["score"][0] == pytest.approx(sum(e["normalized_score"] for e in record.curve[-10:]) / 10)
    per_dataset = pd.read_csv(report_dir / "tables" / "per_dataset.csv").set_index(["dataset", "algo"])
    means = scores.groupby(["dataset_id", "algo"])["score"].mean()
    for (dataset, algo), mean in means.items():
        assert per_dataset.loc[(dataset, algo), "mean"] == pytest.approx(mean)
    assert (per_dataset["statistic"] == "last-10 mean").all()
    # cql has 3 seeds on one dataset, so its aggregates use seeds 0-2 everywhere
    aggregate = pd.read_csv(report_dir / "tables" / "aggregate.csv").set_index(["algo", "metric"])
    cql = scores[(scores["algo"] == "cql") & (scores["seed"] < 3)]
    assert aggregate.loc[("cql", "Mean"), "estimate"] == pytest.approx(cql["score"].mean())
    assert aggregate.loc[("cql", "Mean"), "runs_per_dataset"] == 3
    assert aggregate.loc[("td3bc", "Mean"), "estimate"] == pytest.approx(scores[scores["algo"] == "td3bc"]["score"].mean())


def test_report_states_its_protocol_and_caveats(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text()
    protocol = markdown.split("## Protocol")[1].split("## Caveats")[0]
    for dataset in DATASETS:
        assert f"`{dataset}`: source local" in protocol
    assert "Training steps: 1,000; evaluation every 83 steps with 5 episodes" in protocol
    assert "td3bc 5, iql 5, cql 3-5" in protocol
    assert "mean normalised score of its last 10 evaluations" in protocol
    assert "200 resamples, seed 0" in protocol
    assert "torch 2.13.0" in protocol and "Synthetic CPU (2 cores)" in protocol and "rliable 1.2.0" in protocol
    caveats = markdown.split("## Caveats")[1].split("## Per-dataset")[0]
    assert "cql on local/walker2d-random-v5: only 3 seeds" in caveats
    assert "cql: aggregates use its 3 lowest-numbered seeds" in caveats
    assert "n=3†" in markdown


def test_same_seed_same_report_other_seed_other_intervals(store: ResultsStore, report_dir: Path, tmp_path: Path) -> None:
    args = ("report", "--results-dir", store.root, "--algos", ",".join(ALGOS), "--reps", 200, "--name", "demo")
    assert invoke(*args, "--out", tmp_path / "same").exit_code == 0
    for name in ["report.md", "scores.csv", *(f"tables/{t}.{s}" for t in TABLES for s in ("md", "tex", "csv"))]:
        assert (tmp_path / "same" / name).read_bytes() == (report_dir / name).read_bytes(), name
    assert invoke(*args, "--seed", 1, "--out", tmp_path / "other").exit_code == 0
    ours, other = (pd.read_csv(d / "tables" / "per_dataset.csv") for d in (report_dir, tmp_path / "other"))
    pd.testing.assert_series_equal(ours["mean"], other["mean"])
    assert not ours["ci_low"].equals(other["ci_low"])


def test_single_algorithm_report_skips_pairwise_comparison(store: ResultsStore, tmp_path: Path) -> None:
    result = invoke("report", "--results-dir", store.root, "--algos", "td3bc", "--statistic", "final", "--reps", 200, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "Needs at least two algorithms" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "figures" / "probability_of_improvement.png").exists()
    assert "statistic: final" in (tmp_path / "tables" / "per_dataset.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--algos", "sac"), "no finished runs of sac"),
        (("--paper", "--reps", "500"), "--paper sets --reps"),
        (("--statistic", "median"), "unknown statistic"),
        (("--steps", "7"), "no finished runs match the selection with steps=7"),
    ],
)
def test_report_user_errors(store: ResultsStore, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = invoke("report", "--results-dir", store.root, "--out", tmp_path, *args)
    assert isinstance(result.exception, OffbenchError) and message in str(result.exception)


def test_report_on_an_empty_store(tmp_path: Path) -> None:
    result = invoke("report", "--results-dir", tmp_path / "empty", "--out", tmp_path / "out")
    assert isinstance(result.exception, OffbenchError) and "no finished runs in" in str(result.exception)


def test_report_lists_diverged_runs_as_caveats_and_never_prints_nan(tmp_path: Path) -> None:
    store = write_synthetic_store(tmp_path / "results", {(a, d): 40.0 for a in ALGOS[:2] for d in DATASETS[:2]}, range(5))
    trainer = write_run(store, "td3bc", DATASETS[0], 5, [10.0] * 10, diverged_at=4)  # as offbench.train records it
    nan = write_run(store, "td3bc", DATASETS[0], 6, [10.0] * 9 + [float("nan")])  # a NaN score written by other code
    out = tmp_path / "report"
    result = invoke("report", "--results-dir", store.root, "--reps", 200, "--out", out)
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    caveats = markdown.split("## Caveats")[1].split("## Per-dataset")[0]
    assert f"td3bc on {DATASETS[0]}: 2 of 7 runs diverged" in caveats
    assert f"{trainer} (at step 500)" in caveats and f"{nan} (at step 1000)" in caveats
    assert "n=5 (2 of 7 diverged)" in (out / "tables" / "per_dataset.md").read_text()
    assert "20 scored runs and 2 diverged runs (no score): iql, td3bc on 2 datasets." in markdown
    for path in [out / "report.md", out / "scores.csv", *sorted((out / "tables").iterdir())]:
        assert not re.search(r"\bnan\b", path.read_text()), path
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 20 and not {trainer, nan} & set(scores["run_id"])
    assert pd.read_csv(out / "tables" / "aggregate.csv")[["estimate", "ci_low", "ci_high"]].notna().all().all()


def test_report_keeps_each_configuration_in_its_own_row(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_synthetic_store(root, {("td3bc", d): 40.0 for d in DATASETS[:2]}, range(5))
    store = write_synthetic_store(root, {("td3bc", d): 20.0 for d in DATASETS[:2]}, range(5), tag="alpha", overrides={"alpha": 5.0})
    out = tmp_path / "report"
    result = invoke("report", "--results-dir", store.root, "--reps", 200, "--out", out)
    assert result.exit_code == 0, result.output
    assert "| Dataset | Steps | Eval episodes | td3bc | td3bc [alpha=5] |" in (out / "tables" / "per_dataset.md").read_text()
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    assert scores.groupby("algo")["hyperparameters"].unique().to_dict() == {"td3bc": [""], "td3bc [alpha=5]": ["alpha=5"]}
    assert scores.groupby(["algo", "dataset_id"]).size().tolist() == [5, 5, 5, 5]
    aggregate = pd.read_csv(out / "tables" / "aggregate.csv")
    assert set(aggregate["algo"]) == {"td3bc", "td3bc [alpha=5]"} and (aggregate["runs_per_dataset"] == 5).all()
    markdown = (out / "report.md").read_text()
    assert "- `td3bc`: the defaults (baselines/td3bc.toml)" in markdown
    assert "- `td3bc [alpha=5]`: alpha=5 (baselines/td3bc.toml)" in markdown
    assert "td3bc: runs with different hyperparameters are kept apart" in markdown.split("## Caveats")[1]


def test_rows_on_disjoint_datasets_get_the_per_dataset_table_and_a_caveat_instead_of_no_report(tmp_path: Path) -> None:
    """A configuration run on other datasets than the defaults (`--set` on a tiny test) must not stop the whole report."""
    root = tmp_path / "results"
    write_synthetic_store(root, {("td3bc", DATASETS[0]): 40.0, ("iql", DATASETS[0]): 30.0}, range(5))
    store = write_synthetic_store(root, {("td3bc", DATASETS[1]): 20.0}, range(5), tag="alpha", overrides={"alpha": 5.0}, n_evals=3)
    out = tmp_path / "report"
    first = invoke("report", "--results-dir", store.root, "--reps", 200, "--out", out, "--datasets", DATASETS[0])
    assert first.exit_code == 0 and (out / "tables" / "aggregate.md").exists()  # an earlier report with an aggregate, same folder
    result = invoke("report", "--results-dir", store.root, "--reps", 200, "--out", out)
    assert result.exit_code == 0, result.output
    header = next(line for line in (out / "tables" / "per_dataset.md").read_text().splitlines() if line.startswith("| Dataset"))
    assert {"td3bc", "td3bc [alpha=5]", "iql"} <= {cell.strip() for cell in header.split("|")}
    markdown = (out / "report.md").read_text()
    caveats = markdown.split("## Caveats")[1].split("## Per-dataset")[0]
    assert (f"no aggregate: no dataset has scored runs of every row (iql: {DATASETS[0]}; td3bc: {DATASETS[0]}; "
            f"td3bc [alpha=5]: {DATASETS[1]})") in caveats
    assert f"td3bc [alpha=5] on {DATASETS[1]}: its runs have 3 evaluations, fewer than k = 10: their last-10 mean is the mean of all" in caveats
    assert f"td3bc on {DATASETS[0]}: its runs have" not in caveats  # 10 evaluations: no caveat
    assert "Not computed: no dataset has scored runs of every row" in markdown
    assert (out / "figures" / "learning_curves.png").exists()
    stale = [out / "tables" / f"aggregate.{suffix}" for suffix in ("md", "tex", "csv")] + [out / "figures" / "aggregate_intervals.png"]
    assert not any(path.exists() for path in stale)  # the earlier report's aggregate is not left beside this one
