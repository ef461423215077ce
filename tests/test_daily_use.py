"""Daily use from a shell: version and help, names that cannot escape their folder, threads, progress in pipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST_SETTINGS, TINY_ID, run_cli

from offbench import __version__
from offbench.errors import OffbenchError
from offbench.store import ResultsStore


def test_version_flag():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"offbench {__version__}"


def test_run_help_lists_algorithms_and_what_is_required():
    done = run_cli("run", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for algo in ("td3bc", "bc", "bcq", "sparse-reg", "driftql"):
        assert algo in text
    assert "required" in text


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", ""])
def test_report_name_cannot_leave_reports(tmp_path: Path, name: str):
    done = run_cli("report", "--name", name, "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert done.returncode == 2 and "report name" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "escape").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a/b", "..", ""])
def test_run_and_group_ids_cannot_leave_the_store(tmp_path: Path, bad: str):
    store = ResultsStore(tmp_path / "results")
    with pytest.raises(OffbenchError, match="not a valid"):
        store.run_dir(bad)
    with pytest.raises(OffbenchError, match="not a valid"):
        store.checkpoint_path(bad)
    done = run_cli("run", "--resume", bad, "--results-dir", str(tmp_path / "results"))
    assert done.returncode == 2 and "not a valid" in done.stderr


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    results = tmp_path_factory.mktemp("piped") / "results"
    done = run_cli("run", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "60", "--eval-every", "20", "--eval-episodes", "1",
                   *FAST_SETTINGS, "--results-dir", str(results))
    assert done.returncode == 0, done.stderr
    return done, results


def test_piped_output_shows_progress_lines(piped_run):
    done, _ = piped_run
    lines = [line for line in done.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["20/60", "40/60", "60/60"]
    assert all("steps/s" in line and "score" in line and "ETA" in line for line in lines)
    assert "━" not in done.stderr  # no progress-bar glyphs in a log


def test_run_states_its_budget_up_front(piped_run):
    done, _ = piped_run
    assert done.stderr.splitlines()[0] == f"td3bc on {TINY_ID}: 60 steps, 1 seed, an evaluation of 1 episode every 20 steps"


def test_a_bare_run_says_it_trains_the_full_protocol_budget():
    from offbench.train import Reporter, RunPlan, budget_line, build_group

    group = build_group(RunPlan("td3bc", TINY_ID, [0, 1], overrides={"hidden_dims": [8, 8]}), Reporter())
    assert budget_line(group) == (f"td3bc on {TINY_ID}: 1,000,000 steps (the protocol default of baselines/td3bc.toml; --steps for fewer), "
                                  "2 seeds, an evaluation of 10 episodes every 5,000 steps")


def test_one_torch_thread_by_default_and_threads_recorded(piped_run, tmp_path: Path):
    _, results = piped_run
    (run_dir, *_) = sorted((results / "runs").iterdir())
    assert json.loads((run_dir / "provenance.json").read_text())["torch_threads"] == 1
    more = run_cli("run", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "10", "--eval-every", "10", "--eval-episodes", "1",
                   "--threads", "2", *FAST_SETTINGS, "--results-dir", str(tmp_path / "r2"))
    assert more.returncode == 0, more.stderr
    (run_dir,) = (tmp_path / "r2" / "runs").iterdir()
    assert json.loads((run_dir / "provenance.json").read_text())["torch_threads"] == 2
    bad = run_cli("run", "--algo", "td3bc", "--dataset", TINY_ID, "--threads", "0", "--results-dir", str(tmp_path / "r3"))
    assert bad.returncode == 2 and "--threads" in bad.stderr


@pytest.mark.parametrize("eval_every", [30, 20, 10])  # 20 and 10: an evaluation falls on the step the estimate is made
def test_a_long_run_states_its_estimated_training_time_once_it_has_measured_its_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                      eval_every: int):
    from offbench import train

    messages: list[str] = []

    class Listening(train.Reporter):
        def message(self, text: str) -> None:
            messages.append(text)

    monkeypatch.setattr(train, "LONG_RUN_STEPS", 50)
    monkeypatch.setattr(train, "ESTIMATE_AFTER_STEPS", 20)
    plan = train.RunPlan("td3bc", TINY_ID, [0], steps=60, eval_every=eval_every, eval_episodes=1, overrides={"hidden_dims": [8, 8]})
    train.run(plan, ResultsStore(tmp_path / "results"), Listening())
    estimates = [m for m in messages if m.startswith("about ")]
    assert len(estimates) == 1 and "of training left at" in estimates[0] and "steps/s on cpu" in estimates[0]


def test_piped_output_shows_dataset_making_progress(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A first run that makes its dataset prints plain lines while it makes it, not minutes of silence."""
    from offbench import cli

    clock = iter([0.0, 5.0, 20.0, 25.0, 40.0])  # the start, then the time of each call below
    monkeypatch.setattr(cli.time, "monotonic", lambda: next(clock))
    advance = cli._plain_making_progress("local/x-v5", 100)
    for _ in range(4):
        advance(25)
    advance(0)  # a recipe that reports again once done prints nothing more
    assert capsys.readouterr().err.splitlines() == [
        "making local/x-v5: 50/100 rows (50%)  2 rows/s  ETA 0:00:20",  # 15 s after the start
        "making local/x-v5: 100/100 rows (100%)  2 rows/s  ETA 0:00:00",  # always at the end
    ]
    clock = iter([0.0, 20.0])
    cli._plain_making_progress("local/hopper-medium-replay-v5", None)(50)  # a recipe without a stated total
    assert capsys.readouterr().err.splitlines() == ["making local/hopper-medium-replay-v5: 50 rows  2 rows/s"]
