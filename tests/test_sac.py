"""SAC behaviour-policy trainer: a short run writes finite losses, snapshots and a log."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from offbench.behavior import sac
from offbench.behavior.policy import TanhGaussianActor, export_run, load_snapshot, make_policy, select_medium
from offbench.errors import OffbenchError


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def test_short_run_writes_snapshots_and_finite_losses(tmp_path):
    cfg = sac.Config(env="Hopper-v5", steps=300, seed=0, out=str(tmp_path / "run"), snapshot_every=150,
                     eval_episodes=2, learning_starts=100, buffer_size=1000, batch_size=32, hidden=32)
    sac.train(cfg)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [s["step"] for s in log["snapshots"]] == [0, 150, 300]
    last = log["snapshots"][-1]
    assert all(math.isfinite(last[k]) for k in ("critic_loss", "actor_loss", "alpha", "return_mean"))
    snapshot = load_snapshot(tmp_path / "run" / last["path"])
    assert snapshot["env_steps"] == 300 and snapshot["eval"]["episodes"] == 2
    assert all(t.dtype == torch.float32 for t in snapshot["actor"].values())

    dest = tmp_path / "policies" / "hopper"
    cards = export_run(tmp_path / "run", dest, expert_target=1e9, eval_episodes=1)
    medium = cards["medium"]["env_steps"]
    assert set(cards) == {"expert-so-far", "medium", "replay"}
    assert sorted(p.name for p in (dest / "replay").iterdir()) == [f"step_{s:07d}.pt" for s in (0, 150, 300) if s < medium]
    export_run(tmp_path / "run", dest, expert_target=-1e9, eval_episodes=1)  # exported again: the target now reached
    assert sorted(p.name for p in dest.iterdir()) == ["expert.json", "expert.pt", "medium.json", "medium.pt", "replay", "replay.json"]
    (tmp_path / "secret.txt").write_text("not a snapshot")
    log["snapshots"][0]["path"] = str(tmp_path / "secret.txt")  # a log is untrusted: it may name any file
    (tmp_path / "run" / "log.json").write_text(json.dumps(log))
    with pytest.raises(OffbenchError, match="which is not a file inside the run"):
        export_run(tmp_path / "run", tmp_path / "other", expert_target=1e9, eval_episodes=1)
    assert not (tmp_path / "other").exists()


def test_numpy_policy_matches_torch_actor():
    torch.manual_seed(0)
    actor = sac.Actor(11, 3, 32, -np.ones(3), np.ones(3))
    obs = np.random.default_rng(0).standard_normal((5, 11)).astype(np.float32)
    numpy_actor = TanhGaussianActor.from_snapshot(sac.snapshot_dict(actor, "Hopper-v5", 0))
    with torch.no_grad():
        mean, _ = actor(torch.from_numpy(obs))
    np.testing.assert_allclose(numpy_actor.mean_action(obs), torch.tanh(mean).numpy(), atol=1e-5)


def test_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = sac.Actor(11, 3, 32, -np.ones(3), np.ones(3))
    obs = torch.randn(64, 11)
    torch.manual_seed(1)
    action, log_prob = actor.sample(obs)
    torch.manual_seed(1)
    mean, log_std = actor(obs)
    base = torch.distributions.Normal(mean, log_std.exp())
    pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
    expected = (base.log_prob(pre_tanh) - torch.log1p(-torch.tanh(pre_tanh).square())).sum(-1)
    torch.testing.assert_close(action, torch.tanh(pre_tanh))
    torch.testing.assert_close(log_prob, expected, atol=1e-3, rtol=1e-4)


def test_select_medium_picks_closest_to_a_third_of_expert():
    snapshots = [(0, 15.0), (10_000, 400.0), (20_000, 950.0), (30_000, 1100.0), (40_000, 3000.0)]
    assert select_medium(snapshots, expert_return=3000.0, expert_step=40_000) == 20_000  # |950-1000| < |1100-1000|
    assert select_medium(snapshots, expert_return=3300.0, expert_step=40_000) == 30_000
    assert select_medium([(0, 900.0), (5, 1100.0)], expert_return=3000.0, expert_step=5) == 0  # tie: the earlier one
    with pytest.raises(OffbenchError):
        select_medium([], expert_return=3000.0, expert_step=0)


def test_a_collapse_after_the_best_snapshot_is_never_the_medium_policy():
    """Walker2d's run dipped to 1566 at 850k after its best (4842 at 830k): a third of 4842 is 1614, but
    the medium policy is the learner on its way up (1532 at 280k), not a trained policy that falls."""
    snapshots = [(0, 8.0), (270_000, 1171.0), (280_000, 1532.0), (290_000, 3022.0), (830_000, 4842.0), (850_000, 1566.0)]
    assert select_medium(snapshots, expert_return=4842.0, expert_step=830_000) == 280_000


def test_missing_or_foreign_policy_file_is_a_user_error(tmp_path):
    with pytest.raises(OffbenchError):
        make_policy(tmp_path / "absent.pt", sampled=True)
    torch.save({"something": 1}, tmp_path / "foreign.pt")
    with pytest.raises(OffbenchError):
        load_snapshot(tmp_path / "foreign.pt")


def _small_config(tmp_path, steps: int, **kw) -> sac.Config:
    return sac.Config(env="Hopper-v5", steps=steps, seed=0, out=str(tmp_path), snapshot_every=100, checkpoint_every=100,
                      eval_episodes=1, learning_starts=50, buffer_size=1000, batch_size=16, hidden=16, **kw)


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    sac.train(_small_config(tmp_path / "whole", 300))
    sac.train(_small_config(tmp_path / "split", 200))  # "killed" after its step-200 checkpoint
    log = sac.train(_small_config(tmp_path / "split", 300), resume=True)
    assert [r["step"] for r in log["resumed_at"]] == [200]
    whole = json.loads((tmp_path / "whole" / "log.json").read_text())
    assert [s["step"] for s in log["snapshots"]] == [0, 100, 200, 300]
    assert log["train_episodes"] == whole["train_episodes"]
    for name in ("step_0000200.pt", "step_0000300.pt"):
        a, b = (load_snapshot(tmp_path / run / "snapshots" / name) for run in ("whole", "split"))
        assert all(torch.equal(a["actor"][k], b["actor"][k]) for k in a["actor"])
    a, b = (torch.load(tmp_path / run / sac.CHECKPOINT, weights_only=False) for run in ("whole", "split"))
    assert all(torch.equal(a["buffer"][k], b["buffer"][k]) for k in sac.BUFFER_FIELDS)
    assert all(torch.equal(x, y) for x, y in zip(a["agent"]["critic"].values(), b["agent"]["critic"].values()))


def test_resume_refuses_other_settings_and_a_second_run_refuses_to_overwrite(tmp_path):
    with pytest.raises(OffbenchError, match="nothing to resume"):
        sac.train(_small_config(tmp_path, 100), resume=True)
    sac.train(_small_config(tmp_path, 100))
    with pytest.raises(OffbenchError, match="--resume"):
        sac.train(_small_config(tmp_path, 100))
    with pytest.raises(OffbenchError, match="lr=0.0003 \\(now 0.001\\)"):
        sac.train(_small_config(tmp_path, 200, lr=1e-3), resume=True)
    with pytest.raises(OffbenchError, match="already at --steps 100"):
        sac.train(_small_config(tmp_path, 100), resume=True)
