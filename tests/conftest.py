"""Shared fixtures: an isolated data directory (for every test) holding a tiny locally made dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # the CI box has 2 cores; oversubscribed OpenMP threads are very slow

TINY_ID = "local/hopper-tiny-v5"
TINY_RECIPE = {
    "env_id": "Hopper-v5", "recipe": "random", "steps": 3000, "seed": 0, "num_envs": 4,
    "max_episode_steps": 1000, "reference": "d4rl:hopper",
}
FAST_SETTINGS = ["--set", "hidden_dims=[32, 32]", "--set", "batch_size=32"]


@pytest.fixture(autouse=True)
def seeded_global_rng() -> None:
    """Tests that draw from torch's global generator see the same numbers on every run and machine order."""
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("offbench-data")
    previous = os.environ.get("OFFBENCH_DATA_DIR")
    os.environ["OFFBENCH_DATA_DIR"] = str(root)
    from offbench.data import registry
    from offbench.data.registry import make_dataset

    registry.OGBENCH_CACHE = str(root / "ogbench-cache")  # never the machine's own OGBench downloads

    make_dataset(TINY_ID, recipe=TINY_RECIPE)
    yield root
    if previous is None:
        os.environ.pop("OFFBENCH_DATA_DIR", None)
    else:
        os.environ["OFFBENCH_DATA_DIR"] = previous


@pytest.fixture()
def empty_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Data, Minari and D4RL roots that hold nothing: every dataset is absent."""
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl-cache"))
    return tmp_path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m offbench ARGS` as a user would, with one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "offbench", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
