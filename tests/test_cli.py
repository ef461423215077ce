"""The CLI as a user meets it: a short end-to-end run, listing, and bad input (exit 2, one line, store intact)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import FAST_SETTINGS, TINY_ID, run_cli


@pytest.fixture(scope="module")
def finished_store(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("cli") / "results"
    done = run_cli("run", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "60", "--eval-every", "30",
                   "--eval-episodes", "2", "--seeds", "2", *FAST_SETTINGS, "--results-dir", str(results))
    assert done.returncode == 0, done.stderr
    assert "normalised score (last-10 mean: all 2 evaluations)" in done.stdout  # 2 evaluations: the mean of both, said so
    assert "(mean of all 2 evaluations, fewer than the statistic's 10; final" in done.stdout
    return results


def store_fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_writes_one_finished_record_per_seed(finished_store: Path) -> None:
    runs = sorted((finished_store / "runs").iterdir())
    assert len(runs) == 2
    for seed, run_dir in enumerate(runs):
        config = json.loads((run_dir / "config.json").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        curve = json.loads((run_dir / "curve.json").read_text())
        provenance = json.loads((run_dir / "provenance.json").read_text())
        assert config["seed"] == seed and config["dataset"]["id"] == TINY_ID and len(config["dataset"]["sha256"]) == 64
        assert config["algo_config"]["hidden_dims"] == [32, 32] and config["overrides"]["batch_size"] == 32
        assert [entry["step"] for entry in curve] == [30, 60]
        assert len(curve[-1]["returns"]) == 2 and "critic_loss" in curve[-1] and "actor_loss" in curve[-1]
        assert summary["status"] == "finished" and summary["final_score"] == curve[-1]["normalized_score"]
        assert summary["steps"] == 60 and summary["steps_per_s"] > 0
        assert provenance["packages"]["torch"] and provenance["cpu"] and provenance["wall_time_s"] > 0


def test_runs_lists_finished_runs(finished_store: Path) -> None:
    listing = run_cli("runs", "--results-dir", str(finished_store))
    assert listing.returncode == 0
    assert listing.stdout.count("td3bc") >= 2 and "finished" in listing.stdout


def test_data_list_shows_states_sizes_and_the_sources_listed_only_when_present(data_root: Path) -> None:
    listing = run_cli("data", "list")
    assert listing.returncode == 0, listing.stderr
    assert "local/pong-random-v5" in listing.stdout and "about 7.1 GB of frames" in listing.stdout
    assert "dqn-replay/<game>/run<r>-ckpt<N>[-<M>]-v0" in listing.stdout and "minari/atari/pong/expert-v0" in listing.stdout


def test_data_info_reports_statistics(data_root: Path) -> None:
    info = run_cli("data", "info", TINY_ID)
    assert info.returncode == 0, info.stderr
    for field in ("transitions", "episodes", "return_mean", "normalized_mean", "sha256", "local"):
        assert field in info.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--algo", "nope", "--dataset", TINY_ID], "unknown algorithm 'nope'"),
    (["run", "--algo", "td3bc", "--dataset", "unicorn-flying"], "unknown dataset 'unicorn-flying'"),
    (["run", "--algo", "td3bc", "--dataset", TINY_ID, "--set", "learning_rate=1"], "unknown config key 'learning_rate' for td3bc"),
    (["run", "--algo", "td3bc", "--dataset", TINY_ID, "--set", "alpha=big"], "config key 'alpha' for td3bc expects float"),
    (["run", "--algo", "td3bc", "--dataset", TINY_ID, "--steps", "0"], "--steps must be positive"),
    (["run", "--algo", "td3bc", "--dataset", TINY_ID, "--set", "alpha=nan"], "config key 'alpha' for td3bc must be a finite number"),
    (["run", "--algo", "td3bc", "--dataset", TINY_ID, "--set", "alpha=-3"], "config key 'alpha' for td3bc must be >= 0"),
    (["run", "--algo", "td3bc", "--dataset", TINY_ID, "--set", "batch_size=0"], "config key 'batch_size' for td3bc must be >= 1"),
    (["run", "--algo", "td3bc", "--dataset", "d4rl/hopper-medium-v2"], "hopper_medium-v2.hdf5"),
    (["run", "--resume", "no-such-group"], "no checkpoint for group no-such-group"),
    (["data", "info", "d4rl/walker2d-expert-v2"], "walker2d_expert-v2.hdf5"),
])
def test_bad_input_is_one_line_and_exit_2(finished_store: Path, args: list[str], message: str) -> None:
    before = store_fingerprint(finished_store)
    result = run_cli(*args, "--results-dir", str(finished_store)) if args[0] == "run" else run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert store_fingerprint(finished_store) == before


def test_corrupt_checkpoint_is_refused_and_store_untouched(finished_store: Path) -> None:
    checkpoint = next((finished_store / "checkpoints").glob("*.pt"))
    original = checkpoint.read_bytes()
    try:
        checkpoint.write_bytes(original[: len(original) // 2])
        before = store_fingerprint(finished_store)
        result = run_cli("run", "--resume", checkpoint.stem, "--results-dir", str(finished_store))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "is unreadable" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert store_fingerprint(finished_store) == before
    finally:
        checkpoint.write_bytes(original)
