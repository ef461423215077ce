"""Leaderboard freezing, the regression check, protocol refusal and protocol files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from analysis_fixtures import analysis_cli, write_run, write_synthetic_store
from typer.testing import CliRunner, Result

from offbench.analysis.leaderboard import Leaderboard, check_runs, freeze_entries, load_leaderboard, load_protocol, regression_verdict
from offbench.analysis.scores import baseline_config, collect_scores
from offbench.analysis.stats import Interval
from offbench.errors import OffbenchError
from offbench.store import ResultsStore

HOPPER, WALKER = "local/hopper-random-v5", "local/walker2d-random-v5"
LEVELS = {("td3bc", HOPPER): 60.0, ("td3bc", WALKER): 40.0, ("iql", HOPPER): 55.0, ("iql", WALKER): 70.0}
PROTOCOL = """\
name = "tiny"
algos = ["td3bc", "iql"]
datasets = ["local/hopper-random-v5", "local/walker2d-random-v5"]
seeds = 5
steps = 1000
eval_every = 100
eval_episodes = 5
statistic = "last-k"
k = 3
margin = 5.0
"""


def invoke(*args: object) -> Result:
    return CliRunner().invoke(analysis_cli(), [str(a) for a in args])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultsStore, Path]:
    """A store with 5 seeds per cell, frozen into a leaderboard (statistic last-3 mean)."""
    root = tmp_path_factory.mktemp("reference")
    store = write_synthetic_store(root / "results", LEVELS, range(5), rng_seed=0)
    board = root / "leaderboard.json"
    result = invoke("leaderboard", "update", "--statistic", "last-k", "--k", 3, "--results-dir", store.root, "--leaderboard", board)
    assert result.exit_code == 0, result.output
    return store, board


def new_store(path: Path, levels: dict[tuple[str, str], float] = LEVELS, **kwargs: object) -> ResultsStore:
    """New runs: other seeds (5-9), other noise, other run ids."""
    return write_synthetic_store(path, levels, range(5, 10), rng_seed=1, tag="new", **kwargs)


def test_update_freezes_per_seed_scores_and_provenance(reference: tuple[ResultsStore, Path]) -> None:
    store, path = reference
    data = json.loads(path.read_text())
    assert (data["format"], data["version"], data["revision"]) == ("offbench-leaderboard", 3, 1)
    assert [(e["algo"], e["dataset"]["id"]) for e in data["entries"]] == [
        ("iql", HOPPER), ("iql", WALKER), ("td3bc", HOPPER), ("td3bc", WALKER)
    ]  # fmt: skip
    entry = data["entries"][2]
    assert entry["protocol"] == {"steps": 1000, "eval_every": 100, "eval_episodes": 5, "statistic": "last-k", "k": 3}
    assert entry["dataset"]["sha256"] == f"sha-{HOPPER}"
    assert {k: v for k, v in entry["evaluation"].items() if k != "key"} == {
        "env": "Synthetic-v0", "env_kwargs": {}, "wrappers": [], "ref_min_score": -20.0, "ref_max_score": 3000.0}
    assert len(entry["evaluation"]["key"]) == 12
    assert entry["algo_config"] == baseline_config("td3bc", HOPPER) and data["entries"][0]["algo_config"] == {}
    assert [s["seed"] for s in entry["seeds"]] == [0, 1, 2, 3, 4]
    first = entry["seeds"][0]
    curve = store.load(first["run_id"]).curve
    assert first["score"] == pytest.approx(np.mean([e["normalized_score"] for e in curve[-3:]]))
    assert first["git_commit"].startswith("0123456789") and first["git_dirty"] is False
    assert entry["provenance"]["packages"]["torch"] == ["2.13.0"]


def test_update_again_replaces_entries_and_bumps_the_revision(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    store, path = reference
    copy = tmp_path / "leaderboard.json"
    copy.write_text(path.read_text())
    invoke("leaderboard", "update", "--algos", "td3bc", "--statistic", "last-k", "--k", 3,
           "--results-dir", store.root, "--leaderboard", copy)  # fmt: skip
    board = load_leaderboard(copy)
    assert board.revision == 2 and len(board.entries) == 4  # the two td3bc entries were replaced
    invoke("leaderboard", "update", "--algos", "td3bc", "--statistic", "final", "--results-dir", store.root, "--leaderboard", copy)
    board = load_leaderboard(copy)
    assert board.revision == 3 and len(board.entries) == 6  # another statistic is another protocol: added


def test_check_passes_an_unchanged_algorithm_run_with_new_seeds(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    _, board = reference
    store = new_store(tmp_path / "new")
    result = invoke("check", "--results-dir", store.root, "--leaderboard", board, "--reps", 500)
    assert result.exit_code == 0, result.output
    checks = check_runs(load_leaderboard(board), store, reps=500)
    assert [c.verdict for c in checks] == ["pass"] * 4
    assert all(len(c.new) == 5 and len(c.reference) == 5 for c in checks)


def test_check_flags_an_injected_regression(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    _, board = reference
    store = new_store(tmp_path / "new", {**LEVELS, ("td3bc", HOPPER): LEVELS[("td3bc", HOPPER)] - 20})
    summary = tmp_path / "summary.md"
    summary.write_text("## an earlier step's summary\n")  # $GITHUB_STEP_SUMMARY is appended to, never replaced
    result = invoke("check", "--results-dir", store.root, "--leaderboard", board, "--reps", 500, "--summary", summary)
    assert result.exit_code == 1 and summary.read_text().startswith("## an earlier step's summary\nScore regression check")
    os.mkfifo(tmp_path / "fifo")
    refused = invoke("check", "--results-dir", store.root, "--leaderboard", board, "--reps", 500, "--summary", tmp_path / "fifo")
    assert isinstance(refused.exception, OffbenchError) and "--summary" in str(refused.exception) and "fifo" in str(refused.exception)
    rows = [line for line in summary.read_text().splitlines() if line.startswith("| td3bc") or line.startswith("| iql")]
    assert [row.split(" | ")[-1] for row in rows] == ["pass |", "pass |", "regressed |", "pass |"]
    regressed = next(c for c in check_runs(load_leaderboard(board), store, reps=500) if c.verdict == "regressed")
    assert (regressed.algo, regressed.dataset) == ("td3bc", HOPPER)
    assert regressed.difference.high < -5 and regressed.difference.estimate == pytest.approx(
        regressed.new.mean() - regressed.reference.mean()
    )


def test_a_drop_within_the_margin_passes(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    _, board = reference
    store = new_store(tmp_path / "new", {**LEVELS, ("td3bc", HOPPER): LEVELS[("td3bc", HOPPER)] - 20})
    checks = check_runs(load_leaderboard(board), store, algos=["td3bc"], datasets=[HOPPER], margin=40.0, reps=500)
    assert [c.verdict for c in checks] == ["pass"]


def test_check_refuses_runs_under_another_protocol(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    _, board = reference
    longer = new_store(tmp_path / "steps", {("td3bc", HOPPER): 60.0}, steps=2000)
    with pytest.raises(OffbenchError, match=r"refusing to compare td3bc on local/hopper-random-v5.*steps=2000") as longer_error:
        check_runs(load_leaderboard(board), longer)
    assert "rerun under the leaderboard's protocol" in longer_error.value.hint
    regenerated = new_store(tmp_path / "sha", {("td3bc", HOPPER): 60.0}, sha256="f" * 64)
    result = invoke("check", "--results-dir", regenerated.root, "--leaderboard", board)
    assert isinstance(result.exception, OffbenchError) and "ffffffffffff" in str(result.exception)
    assert "other data bytes" in result.exception.hint


@pytest.mark.parametrize("settings", [{"eval_env": "Other-v0"}, {"references": (0.0, 3000.0)}])
def test_check_refuses_runs_scored_under_other_evaluation_settings(reference: tuple[ResultsStore, Path], tmp_path: Path, settings) -> None:
    _, board = reference
    other = new_store(tmp_path / "eval", {("td3bc", HOPPER): 60.0}, **settings)
    with pytest.raises(OffbenchError, match=r"refusing to compare td3bc on local/hopper-random-v5.*evaluation [0-9a-f]{12}") as refused:
        check_runs(load_leaderboard(board), other)
    assert "other evaluation settings" in refused.value.hint


def test_frozen_runs_are_never_compared_with_themselves(reference: tuple[ResultsStore, Path]) -> None:
    store, board = reference
    with pytest.raises(OffbenchError, match="no new runs"):
        check_runs(load_leaderboard(board), store)


def test_a_protocol_requires_every_cell(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    store, _ = reference
    protocol_path = tmp_path / "tiny.toml"
    protocol_path.write_text(PROTOCOL)
    board = tmp_path / "leaderboard.json"
    update = invoke("leaderboard", "update", "--protocol", protocol_path, "--results-dir", store.root, "--leaderboard", board)
    assert update.exit_code == 0, update.output
    assert {e.protocol["name"] for e in load_leaderboard(board).entries} == {"tiny"}

    partial = new_store(tmp_path / "new", {cell: level for cell, level in LEVELS.items() if cell != ("iql", WALKER)})
    result = invoke("check", "--protocol", protocol_path, "--results-dir", partial.root, "--leaderboard", board, "--reps", 200)
    assert result.exit_code == 1
    checks = check_runs(load_leaderboard(board), partial, protocol=load_protocol(protocol_path), reps=200)
    assert {(c.algo, c.dataset): c.verdict for c in checks}[("iql", WALKER)] == "no new runs"
    assert sum(c.failed for c in checks) == 1

    protocol_path.write_text(PROTOCOL.replace('["td3bc", "iql"]', '["td3bc", "iql", "cql"]'))
    checks = check_runs(load_leaderboard(board), partial, protocol=load_protocol(protocol_path), reps=200)
    assert {(c.algo, c.dataset) for c in checks if c.verdict == "no reference"} == {("cql", HOPPER), ("cql", WALKER)}


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format": "something-else", "version": 1, "revision": 1, "entries": []}',
        '{"format": "offbench-leaderboard", "version": 99, "revision": 1, "entries": []}',
        '{"format": "offbench-leaderboard", "version": 1, "revision": 1, "entries": [{"algo": "td3bc"}]}',
    ],
)
def test_a_corrupt_leaderboard_is_a_user_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "leaderboard.json"
    path.write_text(content)
    with pytest.raises(OffbenchError, match="is not a valid leaderboard"):
        load_leaderboard(path)
    with pytest.raises(OffbenchError, match="no leaderboard at"):
        load_leaderboard(tmp_path / "missing.json")


def test_a_single_seed_cannot_be_frozen(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    write_run(store, "td3bc", HOPPER, 0, [1.0, 2.0])
    result = invoke("leaderboard", "update", "--results-dir", store.root, "--leaderboard", tmp_path / "lb.json")
    assert isinstance(result.exception, OffbenchError) and "at least two" in str(result.exception)


def test_regression_verdict_needs_the_whole_interval_below_minus_margin() -> None:
    assert regression_verdict(Interval(-8.0, -12.0, -5.5), margin=5.0) == "regressed"
    assert regression_verdict(Interval(-8.0, -12.0, -4.5), margin=5.0) == "pass"  # could be within the margin
    assert regression_verdict(Interval(-3.0, -4.0, -2.0), margin=5.0) == "pass"  # significant but small
    assert regression_verdict(Interval(9.0, 6.0, 12.0), margin=5.0) == "improved"


def test_protocol_files(tmp_path: Path) -> None:
    ci = load_protocol("ci")
    assert ci.name == "ci" and ci.algos and ci.datasets and ci.seeds >= 2 and ci.budget["steps"] <= 10_000
    bad = tmp_path / "bad.toml"
    bad.write_text(PROTOCOL + "learning_rate = 3e-4\n")
    with pytest.raises(OffbenchError, match="unknown keys learning_rate"):
        load_protocol(bad)
    bad.write_text(PROTOCOL.replace("steps = 1000", 'steps = "1000"'))
    with pytest.raises(OffbenchError, match="steps has the wrong type"):
        load_protocol(bad)
    with pytest.raises(OffbenchError, match="no protocol 'nightly'"):
        load_protocol("nightly")


def test_a_diverged_new_run_fails_the_check(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    _, board = reference
    store = new_store(tmp_path / "new")
    trainer = write_run(store, "td3bc", HOPPER, 10, [60.0] * 10, diverged_at=7, tag="new")  # as offbench.train records it
    nan = write_run(store, "iql", WALKER, 10, [70.0] * 9 + [float("nan")], tag="new")  # a NaN score from other code
    summary = tmp_path / "summary.md"
    result = invoke("check", "--results-dir", store.root, "--leaderboard", board, "--reps", 200, "--summary", summary)
    assert result.exit_code == 1
    checks = {(c.algo, c.dataset): c for c in check_runs(load_leaderboard(board), store, reps=200)}
    assert {cell: c.verdict for cell, c in checks.items() if c.failed} == {("td3bc", HOPPER): "diverged", ("iql", WALKER): "diverged"}
    assert f"{trainer} (at step 800)" in checks[("td3bc", HOPPER)].note
    assert len(checks[("iql", WALKER)].new) == 5 and np.isfinite(checks[("iql", WALKER)].new).all()
    assert f"iql on {WALKER}: 1 new runs diverged (a NaN or inf evaluation): {nan} (at step 1000)" in summary.read_text()


def test_a_cell_with_a_diverged_run_cannot_be_frozen(tmp_path: Path) -> None:
    store = write_synthetic_store(tmp_path / "results", {("td3bc", HOPPER): 60.0}, range(3))
    trainer = write_run(store, "td3bc", HOPPER, 3, [60.0] * 10, diverged_at=9)
    nan = write_run(store, "td3bc", HOPPER, 4, [60.0] * 9 + [float("inf")])
    board = tmp_path / "leaderboard.json"
    result = invoke("leaderboard", "update", "--results-dir", store.root, "--leaderboard", board)
    assert isinstance(result.exception, OffbenchError) and not board.exists()
    assert f"refusing to freeze cells with diverged runs (td3bc on {HOPPER}: {trainer}, {nan})" in str(result.exception)
    [entry] = freeze_entries(collect_scores(store))  # the entry names its diverged seeds, never as scores
    assert [s["score"] is None for s in entry.seeds] == [False, False, False, True, True]
    assert entry.diverged_runs == [trainer, nan]
    with pytest.raises(OffbenchError, match="refusing to freeze"):
        Leaderboard().updated([entry], "now")
    with pytest.raises(OffbenchError, match="refusing to freeze"):  # nor built by hand, so never checked against
        Leaderboard(entries=(entry,))


def test_a_reference_score_must_be_finite(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    _, board = reference
    data = json.loads(board.read_text())
    data["entries"][0]["seeds"][0]["score"] = float("nan")  # json writes a bare NaN token
    path = tmp_path / "leaderboard.json"
    path.write_text(json.dumps(data))
    with pytest.raises(OffbenchError, match="is not a valid leaderboard: .*a numeric score within"):
        load_leaderboard(path)


def test_check_fails_new_runs_with_other_hyperparameters(reference: tuple[ResultsStore, Path], tmp_path: Path) -> None:
    _, board = reference
    other = new_store(tmp_path / "other", {("td3bc", HOPPER): 60.0}, overrides={"alpha": 5.0})
    result = invoke("check", "--results-dir", other.root, "--leaderboard", board, "--reps", 200)
    assert result.exit_code == 1 and "alpha 2.5 -> 5" in result.output
    [check] = check_runs(load_leaderboard(board), other, reps=200)
    assert (check.algo, check.dataset, check.verdict, len(check.new)) == ("td3bc", HOPPER, "other hyperparameters", 0)
    assert check.failed and check.note.startswith("the new runs' hyperparameters differ from the reference's (alpha 2.5 -> 5)")

    both = write_synthetic_store(tmp_path / "other", {("td3bc", HOPPER): 60.0}, range(5, 10), rng_seed=1, tag="default")
    [check] = check_runs(load_leaderboard(board), both, reps=200)
    assert check.verdict == "pass" and len(check.new) == 5  # the default runs only
    assert check.note == "5 new runs with other hyperparameters were not compared (alpha 2.5 -> 5)"


def test_a_version_1_leaderboard_loads_and_its_entries_match_any_hyperparameters(
    reference: tuple[ResultsStore, Path], tmp_path: Path
) -> None:
    store, board = reference
    data = json.loads(board.read_text())
    data["version"] = 1
    for entry in data["entries"]:
        del entry["algo_config"], entry["evaluation"]
    old = tmp_path / "leaderboard.json"
    old.write_text(json.dumps(data))
    assert all(e.algo_config is None and e.evaluation is None for e in load_leaderboard(old).entries)
    other = new_store(tmp_path / "other", {("td3bc", HOPPER): 60.0}, overrides={"alpha": 5.0})
    assert [c.verdict for c in check_runs(load_leaderboard(old), other, reps=200)] == ["pass"]
    update = invoke("leaderboard", "update", "--statistic", "last-k", "--k", 3, "--results-dir", store.root, "--leaderboard", old)
    assert update.exit_code == 0, update.output
    updated = load_leaderboard(old)
    assert (updated.revision, len(updated.entries)) == (2, 4) and all(e.algo_config is not None for e in updated.entries)
