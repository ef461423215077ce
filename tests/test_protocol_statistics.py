"""A protocol's per-algorithm statistic (`[[overrides]]` statistic / k) and the seed algorithms' D4RL protocols.

Exact: DriftQL's D4RL cells are scored by their final evaluation (the paper's Table 1 at 500K), not the mean of
the last 10 evaluations, which at evaluations every 100K over 500K averages in the 100K one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from analysis_fixtures import analysis_cli, write_run
from conftest import run_cli
from typer.testing import CliRunner

from offbench.analysis.leaderboard import load_leaderboard, load_protocol
from offbench.analysis.scores import Statistic, collect_scores
from offbench.config import baseline_values, dataset_transforms
from offbench.errors import OffbenchError
from offbench.store import ResultsStore

HOPPER = "local/hopper-random-v5"
MIXED = """\
name = "mixed"
algos = ["td3bc", "driftql"]
datasets = ["local/hopper-random-v5"]
seeds = 2
steps = 1000
eval_every = 100
eval_episodes = 5
statistic = "last-k"
k = 10
[[overrides]]
algos = ["driftql"]
steps = 500
statistic = "final"
"""
# td3bc: 10 evaluations 10..100, last-10 mean 55 (+ seed); driftql: 5 evaluations 10..50, final 50 (+ seed)
TD3BC_CURVE, DRIFTQL_CURVE = [10.0 * i for i in range(1, 11)], [10.0 * i for i in range(1, 6)]


def _store(root: Path, tag: str = "a", seeds: range = range(2)) -> ResultsStore:
    store = ResultsStore(root)
    for seed in seeds:
        write_run(store, "td3bc", HOPPER, seed, [v + seed for v in TD3BC_CURVE], steps=1000, tag=tag)
        write_run(store, "driftql", HOPPER, seed, [v + seed for v in DRIFTQL_CURVE], steps=500, tag=tag)
        write_run(store, "driftql", HOPPER, seed, [1.0] * 10, steps=1000, tag=tag + "other")  # another budget: not the protocol's
    return store


def _protocol(tmp_path: Path, text: str = MIXED) -> Path:
    path = tmp_path / "mixed.toml"
    path.write_text(text)
    return path


def test_an_override_sets_the_statistic_of_its_cells(tmp_path: Path) -> None:
    protocol = load_protocol(_protocol(tmp_path))
    assert protocol.cell_statistic("td3bc", HOPPER) == Statistic("last-k", 10)
    assert protocol.cell_statistic("driftql", HOPPER).label == "final"
    assert protocol.scoring("driftql", HOPPER) == ({"steps": 500, "eval_every": 100, "eval_episodes": 5}, Statistic("final", 10))
    only_k = load_protocol(_protocol(tmp_path, MIXED.replace('statistic = "final"', "k = 3")))
    assert only_k.cell_statistic("driftql", HOPPER) == Statistic("last-k", 3) and only_k.cell_statistic("td3bc", HOPPER).k == 10


@pytest.mark.parametrize(
    "bad, message",
    [
        ('statistic = "median"', "overrides entry 1: statistic 'median' is not one of final, last-k, best"),
        ('statistic = "final"\nk = 0', "overrides entry 1: k must be positive, got 0"),
        ('statistic = "final"\nk = 2.5', "overrides entry 1: k has the wrong type (float)"),
        ("statistic = 3", "overrides entry 1: statistic has the wrong type (int)"),
    ],
)
def test_a_bad_override_statistic_is_one_line_and_exit_2(tmp_path: Path, bad: str, message: str) -> None:
    path = _protocol(tmp_path, MIXED.replace('statistic = "final"', bad))
    with pytest.raises(OffbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_protocol(path)
    if bad.startswith('statistic = "median"'):  # the CLI's one line and exit code, once (the loader's message is the same for all)
        result = run_cli("sweep", str(path), "--dry-run", "--results-dir", str(tmp_path / "results"))
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    top = _protocol(tmp_path, MIXED.replace('statistic = "last-k"', 'statistic = "median"'))
    with pytest.raises(OffbenchError, match="statistic 'median' is not one of"):
        load_protocol(top)


def test_scores_report_freeze_and_check_use_each_cells_statistic(tmp_path: Path) -> None:
    store, path = _store(tmp_path / "results"), _protocol(tmp_path)
    protocol = load_protocol(path)
    scores = collect_scores(store, ["td3bc", "driftql"], [HOPPER], protocol.statistic, cells=protocol.scoring)
    assert scores.cell("td3bc", HOPPER).tolist() == [55.0, 56.0]  # mean of 10..100 (+ seed)
    assert scores.cell("driftql", HOPPER).tolist() == [50.0, 51.0]  # final of the 500-step runs; the 1000-step runs left out
    assert scores.statistic_label() == "last-10 mean (td3bc); final (driftql)"

    runner = CliRunner()
    out = tmp_path / "report"
    result = runner.invoke(analysis_cli(), ["report", "--protocol", str(path), "--results-dir", str(store.root), "--out", str(out), "--reps", "200"])
    assert result.exit_code == 0, result.output
    per_dataset = (out / "tables" / "per_dataset.md").read_text()
    assert "td3bc (last-10 mean)" in per_dataset and "driftql (final)" in per_dataset and "50.5 ±" in per_dataset and "55.5 ±" in per_dataset
    report = (out / "report.md").read_text()
    assert "Statistic: **last-10 mean (td3bc); final (driftql)**" in report
    assert "for driftql, the normalised score of its final evaluation (`final`)" in report
    refused = runner.invoke(analysis_cli(), ["report", "--protocol", str(path), "--statistic", "best", "--results-dir", str(store.root),
                                             "--out", str(tmp_path / "r2")])
    assert isinstance(refused.exception, OffbenchError) and "a protocol fixes the statistic" in str(refused.exception)

    board = tmp_path / "leaderboard.json"
    update = runner.invoke(analysis_cli(), ["leaderboard", "update", "--protocol", str(path), "--results-dir", str(store.root), "--leaderboard", str(board)])
    assert update.exit_code == 0, update.output
    entries = {e.algo: e for e in load_leaderboard(board).entries}
    assert entries["driftql"].protocol == {"steps": 500, "eval_every": 100, "eval_episodes": 5, "statistic": "final", "name": "mixed"}
    assert entries["td3bc"].protocol == {"steps": 1000, "eval_every": 100, "eval_episodes": 5, "statistic": "last-k", "k": 10, "name": "mixed"}
    assert entries["driftql"].scores().tolist() == [50.0, 51.0]

    new = _store(tmp_path / "new", tag="new", seeds=range(2, 4))
    check = runner.invoke(analysis_cli(), ["check", "--protocol", str(path), "--results-dir", str(new.root), "--leaderboard", str(board),
                                           "--reps", "200", "--summary", str(tmp_path / "summary.md")])
    assert check.exit_code == 0, check.output
    summary = (tmp_path / "summary.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines() if line.startswith("| td3bc") or line.startswith("| driftql")}
    assert "| final | pass |" in rows["driftql"] and "| last-10 mean | pass |" in rows["td3bc"]
    assert "52.5 ± 0.7 (n=2)" in rows["driftql"]  # final of seeds 2, 3: 52, 53


def test_d4rl_locomotion_scores_driftql_by_its_final_evaluation() -> None:
    paper = load_protocol("d4rl-locomotion")
    assert paper.scoring("driftql", "d4rl/hopper-medium-v2") == (
        {"steps": 500_000, "eval_every": 100_000, "eval_episodes": 50}, Statistic("final", 10))
    for algo in ("td3bc", "bc", "bcq", "sparse-reg", "neubay"):
        assert paper.cell_statistic(algo, "d4rl/walker2d-medium-expert-v2") == Statistic("last-k", 10)


ANTMAZE = ["antmaze-umaze", "antmaze-umaze-diverse", "antmaze-medium-play", "antmaze-medium-diverse", "antmaze-large-play", "antmaze-large-diverse"]
ADROIT = [f"{task}-{kind}" for task in ("pen", "door", "hammer", "relocate") for kind in ("human", "cloned", "expert")]


@pytest.mark.parametrize(
    "name, algo, datasets, budget, seeds",
    [
        ("driftql-d4rl-antmaze", "driftql", [f"d4rl/{a}-v2" for a in ANTMAZE], (500_000, 100_000, 100), 8),
        ("driftql-d4rl-adroit", "driftql", [f"d4rl/{a}-v1" for a in ADROIT], (500_000, 100_000, 10), 8),
        ("neubay-d4rl-antmaze", "neubay", [f"d4rl/{a}-v2" for a in ANTMAZE[:4]], (3_000_000, 30_000, 100), 6),
        ("neubay-d4rl-adroit", "neubay", ["d4rl/pen-human-v1", "d4rl/pen-cloned-v1", "d4rl/hammer-cloned-v1"], (2_000_000, 20_000, 20), 6),
    ],
)
def test_the_seed_algorithms_d4rl_protocols(tmp_path: Path, name: str, algo: str, datasets: list[str], budget: tuple, seeds: int) -> None:
    """The papers' datasets, budgets, episodes (100 AntMaze, 10 DriftQL Adroit, 20 NEUBAY Adroit) and the final
    evaluation; every dataset picks up its per-task config (keyed by alias), AntMaze its reward shift."""
    protocol = load_protocol(name)
    assert (protocol.algos, list(protocol.datasets), protocol.seeds) == ((algo,), datasets, seeds)
    for dataset in datasets:
        cell_budget, statistic = protocol.scoring(algo, dataset)
        assert tuple(cell_budget.values()) == budget and statistic.label == "final"
        tuned = baseline_values(algo, dataset)
        assert tuned != baseline_values(algo, None)
        assert "reward_shift" not in tuned  # a transform, never a config field
        shifted = "antmaze" in dataset
        assert dataset_transforms(algo, dataset) == ({"reward_shift": -1.0} if shifted else {})
        assert protocol.recorded(algo, dataset) == dataset + ("+reward-1" if shifted else "")
    dry = run_cli("sweep", name, "--dry-run", "--results-dir", str(tmp_path))
    assert dry.returncode == 0, dry.stderr
    assert f"{len(datasets)} jobs" in dry.stdout
    lines = [line for line in dry.stdout.splitlines() if f"{algo} d4rl/" in line]
    assert len(lines) == len(datasets)
    for line in lines:
        assert f"every {budget[1]:,} x {budget[2]} " in line and " final " in line and f"seeds 0-{seeds - 1}" in line


def test_scores_csv_unchanged_without_a_protocol(tmp_path: Path) -> None:
    """Without --protocol every run is scored by the one statistic given, as before."""
    store = _store(tmp_path / "results")
    scores = collect_scores(store, ["driftql"], [HOPPER], Statistic("last-k", 3), where={"steps": 500})
    assert scores.cell("driftql", HOPPER).tolist() == [40.0, 41.0] and not scores.mixed_statistics
    assert np.isclose(scores.cell("driftql", HOPPER).mean(), 40.5)
    assert json.loads(json.dumps(scores.statistic.to_dict())) == {"statistic": "last-k", "k": 3}
