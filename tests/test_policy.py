"""Trained policies out: each run keeps its policy, `offbench export` writes it for torch alone, `offbench eval`
re-evaluates it; both reproduce the run's last recorded evaluation return for return."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from algo_fixtures import random_batch
from conftest import TINY_ID, run_cli

from offbench.algos import get_algorithm
from offbench.algos.base import Problem
from offbench.data.sampling import state_normalizer
from offbench.policy import POLICY_FILE, evaluate_policy, export_policy
from offbench.seeding import SeedStreams, stream_seed
from offbench.store import ResultsStore
from offbench.train import RunPlan, run

SMALL = {
    "td3bc": {"hidden_dims": [32, 32], "batch_size": 32},
    "bc": {"hidden_dims": [32, 32], "batch_size": 32},
    "bcq": {"hidden_dims": [32, 32], "vae_hidden_dims": [32, 32], "batch_size": 32, "act_samples": 10},
    "driftql": {"hidden_dims": [32, 32], "batch_size": 32, "drift_ngen": 4},
    "sparse-reg": {"hidden_dims": [32, 32], "batch_size": 32, "mask_every": 5},
}

# Loads exported policies with torch, gymnasium and numpy only, and repeats each one's recorded last evaluation
# as the protocol runs it: one vector env of all its episodes, every env acting each step until all are done.
PLAIN_TORCH_EVALUATION = """
import json, sys
import gymnasium as gym, numpy as np, torch

returns = {}
for path in sys.argv[1:]:
    extra = {"offbench.json": ""}
    policy = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["offbench.json"])
    last, noise_dim = meta["last_evaluation"], meta["noise_dim"]
    n = len(last["env_seeds"])
    envs = gym.make_vec(meta["env"]["id"], num_envs=n, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}, **meta["env"]["kwargs"])
    generator = torch.Generator().manual_seed(last["noise_seed"]) if noise_dim else None
    observations, _ = envs.reset(seed=last["env_seeds"])
    total, running = np.zeros(n), np.ones(n, dtype=bool)
    while running.any():
        inputs = [torch.as_tensor(observations, dtype=torch.float32)]
        if noise_dim:
            inputs.append(torch.randn(n, noise_dim, generator=generator))
        observations, rewards, terminated, truncated, _ = envs.step(policy(*inputs).numpy())
        total += rewards * running
        running &= ~(terminated | truncated)
    returns[path] = total.tolist()
assert not [name for name in sys.modules if name.split(".")[0] == "offbench"]
print(json.dumps(returns))
"""


@pytest.fixture(scope="module")
def finished(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultsStore, dict[str, list[str]]]:
    """A store with one finished group per algorithm (two seeds for TD3+BC): algo -> run ids."""
    store = ResultsStore(tmp_path_factory.mktemp("policies") / "results")
    runs = {}
    for algo, overrides in SMALL.items():
        seeds = [0, 1] if algo == "td3bc" else [2]
        runs[algo] = run(RunPlan(algo, TINY_ID, seeds=seeds, steps=20, eval_every=10, eval_episodes=3, overrides=overrides), store)
    return store, runs


def fingerprint(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("algo, overrides", [
    ("td3bc", {}), ("bc", {}), ("bcq", {"hidden_dims": [64, 48], "vae_hidden_dims": [64, 64], "act_samples": 7}),
    ("driftql", {"hidden_dims": [64, 64], "drift_ngen": 4}), ("sparse-reg", {"mask_every": 2}), ("sparse-reg", {"base": "bc", "mask_every": 2}),
])
def test_each_algorithms_standalone_policy_computes_its_act_bit_for_bit(algo: str, overrides: dict) -> None:
    algorithm_class = get_algorithm(algo)
    streams = SeedStreams.for_seeds([4, 9])
    algorithm = algorithm_class(algorithm_class.config_class_for(overrides)(**overrides), Problem.vector(11, 3, 1.0), streams)
    for step in range(1, 4):
        algorithm.update(random_batch(2, seed=step, batch_size=16, obs_dim=11, act_dim=3), step)
    for num in (1, 5):
        observations = torch.randn(2, num, 11)
        streams.start_evaluation(7)
        actions = algorithm.act(observations, torch.ones(2, num, dtype=torch.bool))
        for index, seed in enumerate(streams.seeds):
            module = algorithm.policy_module(index)
            generator = torch.Generator().manual_seed(stream_seed(seed, "eval", 7))  # the seed's evaluation stream, as act draws it
            noise = torch.randn((1, num, module.noise_dim), generator=generator) if module.noise_dim else None
            with torch.no_grad():
                assert torch.equal(module(observations[index : index + 1], noise)[0], actions[index]), (algo, num, index)
    assert (algorithm.policy_module(0).noise_dim > 0) == (algo in ("bcq", "driftql"))


def test_a_finished_run_keeps_its_seed_policy_and_normaliser_only(finished: tuple) -> None:
    from offbench.data import load_dataset

    store, runs = finished
    state = torch.load(store.run_dir(runs["td3bc"][1]) / POLICY_FILE, weights_only=True)
    assert state["seed"] == 1 and state["algo"] == "td3bc" and state["step"] == 20 and state["noise_dim"] == 0
    assert set(state["module"]) == {f"actor.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")}  # no critic, no target
    assert all(tensor.shape[0] == 1 for tensor in state["module"].values())  # that seed's member only
    mean, std = state_normalizer(load_dataset(TINY_ID).observations)
    assert torch.equal(state["normalizer"]["mean"], torch.as_tensor(mean)) and torch.equal(state["normalizer"]["std"], torch.as_tensor(std))
    assert torch.load(store.run_dir(runs["bcq"][0]) / POLICY_FILE, weights_only=True)["normalizer"] is None  # BCQ: no state normalisation


def test_exports_run_with_plain_torch_and_reproduce_each_runs_last_evaluation(finished: tuple, tmp_path: Path) -> None:
    store, runs = finished
    chosen = {algo: ids[-1] for algo, ids in runs.items()}
    paths = {algo: export_policy(store, run_id, tmp_path / f"{algo}.pt2").path for algo, run_id in chosen.items()}
    done = subprocess.run([sys.executable, "-c", PLAIN_TORCH_EVALUATION, *map(str, paths.values())], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    returns = json.loads(done.stdout)
    for algo, run_id in chosen.items():
        recorded = store.load(run_id).curve[-1]["returns"]
        assert returns[str(paths[algo])] == recorded, algo  # exactly: the same floats, episode for episode


def test_export_cli_writes_a_described_file_and_prints_how_to_load_it(finished: tuple, tmp_path: Path) -> None:
    store, runs = finished
    run_id = runs["td3bc"][0]
    done = run_cli("export", run_id, "--results-dir", str(store.root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "exports" / f"{run_id}.pt2"
    assert f"wrote exports/{run_id}.pt2" in done.stdout and 'torch.export.load("exports/' in done.stdout
    assert done.stdout.count("\n") <= 6  # the description, "load it with torch alone:" and the 3-line snippet
    extra = {"offbench.json": ""}
    torch.export.load(path, extra_files=extra)
    meta = json.loads(extra["offbench.json"])
    record = store.load(run_id)
    assert (meta["run_id"], meta["dataset"]["id"], meta["env"]["id"]) == (run_id, TINY_ID, "Hopper-v5")
    assert meta["observation_space"] == {"shape": [11], "dtype": "float32"} and meta["action_space"]["kind"] == "box"
    assert len(meta["normalizer"]["mean"]) == 11 and meta["noise_dim"] == 0
    assert meta["last_evaluation"]["returns"] == record.curve[-1]["returns"] and meta["last_evaluation"]["env_seeds"] == [100000, 100001, 100002]


def test_eval_repeats_the_last_evaluation_and_leaves_the_records_alone(finished: tuple) -> None:
    store, runs = finished
    run_id = runs["bcq"][0]  # stochastic: the noise is drawn as the run's evaluation drew it
    before = fingerprint(store.run_dir(run_id))
    done = run_cli("eval", run_id, "--results-dir", str(store.root))
    assert done.returncode == 0, done.stderr
    assert "the same returns as the run's last recorded evaluation (step 20)" in done.stdout and "normalised score" in done.stdout
    written = [p for p in store.run_dir(run_id).rglob("*") if p.is_file() and str(p.relative_to(store.run_dir(run_id))) not in before]
    assert [p.parent.name for p in written] == ["evaluations"]  # one result file; every record as it was
    assert fingerprint(store.run_dir(run_id)) == {**before, str(written[0].relative_to(store.run_dir(run_id))): written[0].read_bytes()}
    result = json.loads(written[0].read_text())
    assert result["returns"] == store.load(run_id).curve[-1]["returns"] and result["matches_last_evaluation"] is True
    more = evaluate_policy(store, run_id, episodes=5, seed=7)  # new seeds, more episodes
    assert more.returns.shape == (5,) and more.matches_last_evaluation is None and np.isfinite(more.normalized_score)


def test_eval_writes_a_video_of_the_first_episode_headless(finished: tuple, tmp_path: Path) -> None:
    store, runs = finished
    run_id, video = runs["td3bc"][0], tmp_path / "episode.mp4"
    env = {key: value for key, value in os.environ.items() if key != "MUJOCO_GL"}  # eval picks the headless renderer itself
    done = subprocess.run([sys.executable, "-m", "offbench", "eval", run_id, "--video", str(video), "--results-dir", str(store.root)],
                          capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    if done.returncode != 0 and "rendering failed" in done.stderr:
        pytest.skip(f"no headless OpenGL renderer works on this machine: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert "the same returns as" in done.stdout  # rendering changes no return
    assert video.stat().st_size > 1000 and video.read_bytes()[4:8] == b"ftyp"  # an mp4 container
    import imageio.v2 as imageio

    assert imageio.get_reader(video).count_frames() >= 2  # that decodes: the reset frame and each step's
    assert [p.name for p in tmp_path.iterdir()] == ["episode.mp4"]  # no temporary file left beside it


@pytest.mark.parametrize("case, message", [
    ("unknown", "no run no-such-run"),
    ("unfinished", "has not finished"),
    ("no-policy", "has no saved policy"),
    ("damaged-policy", "is unreadable"),
    ("episodes-0", "--episodes must be positive, got 0"),
    ("video-folder", "does not exist"),
    ("export-folder", "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(finished: tuple, tmp_path: Path, case: str, message: str) -> None:
    store, runs = finished
    source = runs["td3bc"][0]
    if case in ("unfinished", "no-policy", "damaged-policy"):  # a copy of a finished run: interrupted, from before policies were kept, damaged
        shutil.copytree(store.run_dir(source), store.run_dir(f"{case}-run"))
        if case == "damaged-policy":
            (store.run_dir(f"{case}-run") / POLICY_FILE).write_bytes(b"PK\x03\x04 half a zip")
        else:
            (store.run_dir(f"{case}-run") / ("summary.json" if case == "unfinished" else POLICY_FILE)).unlink()
    run_id = {"unknown": "no-such-run", "unfinished": "unfinished-run", "no-policy": "no-policy-run", "damaged-policy": "damaged-policy-run"}.get(case, source)
    args = {"episodes-0": ["eval", run_id, "--episodes", "0"], "video-folder": ["eval", run_id, "--video", str(tmp_path / "missing" / "v.mp4")],
            "export-folder": ["export", run_id, "--out", str(tmp_path / "missing" / "p.pt2")]}.get(case, ["eval", run_id])
    before = fingerprint(store.root)
    done = run_cli(*args, "--results-dir", str(store.root), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert fingerprint(store.root) == before and list(tmp_path.iterdir()) == []
    if case == "unknown":
        export = run_cli("export", run_id, "--results-dir", str(store.root), cwd=tmp_path)
        assert export.returncode == 2 and message in export.stderr and list(tmp_path.iterdir()) == []
