"""NEUBAY under the protocol: the CLI end to end with world-model reuse, the seed axis, kill and resume in both stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ID, run_cli

from offbench.algos import world_model as wm
from offbench.algos.neubay import Neubay
from offbench.errors import OffbenchError
from offbench.policy import evaluate_policy, export_policy
from offbench.store import ResultsStore
from offbench.train import RunPlan, load_checkpoint, resume, run

TINY = {"ensemble_size": 4, "selected_size": 3, "world_hidden": 16, "world_max_epochs": 4, "world_checkpoint_every": 1, "rollouts": 4,
        "encoder_dim": 16, "lru_hidden": 8, "head_dims": [16, 16], "critic_heads": 4, "tape_length": 48, "utd": 0.2}


def plan(seeds: list[int], **overrides: object) -> RunPlan:
    return RunPlan("neubay", TINY_ID, seeds=seeds, steps=12, eval_every=6, eval_episodes=2, overrides={**TINY, **overrides})


def curve(store: ResultsStore, run_id: str) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "time_s"} for entry in store.load(run_id).curve]


def world_files() -> list[Path]:
    return sorted((wm.data_dir() / "world_models").glob("*.pt"))


def test_cli_trains_the_world_model_once_and_reuses_it(tmp_path: Path) -> None:
    sets = [arg for key, value in {**TINY, "world_hidden": 12}.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    args = ["run", "--algo", "neubay", "--dataset", TINY_ID, "--steps", "8", "--eval-every", "8", "--eval-episodes", "2",
            "--results-dir", str(tmp_path), *sets]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "world model seed 0: epoch" in first.stdout + first.stderr
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert "world model seed 0: reusing" in second.stdout + second.stderr and "epoch 1" not in second.stdout + second.stderr
    record = next(ResultsStore(tmp_path).finished_records())
    entry = record.curve[-1]
    assert {"horizon_median", "horizon_q90", "truncated_by_uncertainty", "model_reward", "real_reward"} <= set(entry)
    assert set(record.summary.stage_time_s) == {"world_model"}
    bad = run_cli("run", "--algo", "neubay", "--dataset", TINY_ID, "--set", "rollouts=0", "--results-dir", str(tmp_path))
    assert bad.returncode == 2 and "rollouts" in bad.stderr + bad.stdout and "Traceback" not in bad.stderr


def test_a_seed_beside_another_trains_as_it_does_alone(tmp_path: Path) -> None:
    group, alone = ResultsStore(tmp_path / "group"), ResultsStore(tmp_path / "alone")
    pair = run(plan([0, 1]), group)
    single = run(plan([1]), alone)
    expected, actual = curve(alone, single[0]), curve(group, pair[1])
    assert [e["step"] for e in actual] == [6, 12]
    for a, b in zip(actual, expected):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    group_state = load_checkpoint(group, group.load(pair[1]).config.group_id)["algorithm"]
    alone_state = load_checkpoint(alone, alone.load(single[0]).config.group_id)["algorithm"]
    assert torch.equal(group_state["buffers"][1]["storage"]["observations"], alone_state["buffers"][0]["storage"]["observations"])
    torch.testing.assert_close(group_state["modules"]["actor_head.out.weight"][1:2], alone_state["modules"]["actor_head.out.weight"], rtol=1e-4, atol=1e-6)
    for command in (export_policy, evaluate_policy):  # no standalone policy: one clear line, not a crash
        with pytest.raises(OffbenchError, match="defines no standalone policy .policy_module. .its policy is recurrent"):
            command(alone, single[0])


def test_a_run_killed_in_the_world_model_stage_resumes_to_the_same_model(tmp_path: Path) -> None:
    settings = {**TINY, "world_hidden": 20}
    straight = ResultsStore(tmp_path / "straight")
    run(plan([0], **settings), straight)
    reference = {path: wm.load_world_model(path, 11, 3) for path in world_files()}
    newest = max(reference, key=lambda p: p.stat().st_mtime)
    newest.unlink()  # train it again, killed after two epochs
    killed = ResultsStore(tmp_path / "killed")
    Neubay.crash_after_epochs = 2
    try:
        with pytest.raises(KeyboardInterrupt):
            run(plan([0], **settings), killed)
    finally:
        Neubay.crash_after_epochs = None
    group_id = next(killed.checkpoints_dir.glob("*.pt")).stem
    state = load_checkpoint(killed, group_id)
    assert state["stages_done"] == [] and state["algorithm"]["world_progress"]["0"]["epoch"] == 2
    resumed = resume(group_id, killed)
    again = wm.load_world_model(newest, 11, 3)
    assert again["epochs"] == reference[newest]["epochs"] == 4
    for name, tensor in reference[newest]["members"].items():
        assert torch.equal(tensor, again["members"][name]), name
    assert torch.equal(reference[newest]["val_mse"], again["val_mse"])
    assert curve(killed, resumed[0]) == curve(straight, next(straight.finished_records()).run_id)


def test_a_run_killed_in_the_agent_stage_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = ResultsStore(tmp_path / "straight")
    reference = run(plan([0, 1]), straight)
    killed = ResultsStore(tmp_path / "killed")
    original = Neubay.update

    def crash_at_9(self: Neubay, batch: object, step: int) -> dict:
        if step == 9:
            raise KeyboardInterrupt
        return original(self, batch, step)

    monkeypatch.setattr(Neubay, "update", crash_at_9)
    with pytest.raises(KeyboardInterrupt):
        run(plan([0, 1]), killed)
    monkeypatch.setattr(Neubay, "update", original)
    group_id = next(killed.checkpoints_dir.glob("*.pt")).stem
    assert load_checkpoint(killed, group_id)["step"] == 6
    resumed = resume(group_id, killed)
    assert [curve(killed, r) for r in resumed] == [curve(straight, r) for r in reference]
    final_killed = load_checkpoint(killed, group_id)["algorithm"]["modules"]
    final_straight = load_checkpoint(straight, straight.load(reference[0]).config.group_id)["algorithm"]["modules"]
    assert [name for name in final_straight if not torch.equal(final_killed[name], final_straight[name])] == []


def test_evaluation_hands_the_previous_reward_to_a_policy_that_reads_rewards() -> None:
    from offbench.evaluate import evaluate

    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def act(observations: np.ndarray, episode_start: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        seen.append((episode_start.copy(), rewards.copy()))
        return np.zeros(observations.shape[:2], dtype=np.int64)

    evaluate(act, "CartPole-v1", [0, 1], 2)
    assert seen[0][0].all() and not seen[0][1].any()  # first observations: starts, reward 0
    for starts, rewards in seen[1:]:
        assert rewards.shape == (2, 2) and np.all(rewards[starts] == 0) and np.all(rewards[~starts] == 1.0)  # CartPole pays 1 per step
