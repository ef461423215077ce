"""BC mathematics, checked against plain per-seed PyTorch written out here, and one short protocol run."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from algo_fixtures import assert_member_equals_alone, first_steps, member_forward, random_batch, train_beside_and_alone
from conftest import TINY_ID

from offbench.algos.base import Problem
from offbench.algos.bc import BC, BCConfig
from offbench.algos.td3bc import TD3BC, TD3BCConfig
from offbench.seeding import SeedStreams
from offbench.store import ResultsStore
from offbench.train import RunPlan, run

OBS, ACT, B, MAX_ACTION = 5, 2, 16, 1.5
make_batch = functools.partial(random_batch, batch_size=B, obs_dim=OBS, act_dim=ACT, action_scale=MAX_ACTION)


def make_algo(seeds: list[int], **overrides) -> BC:
    config = BCConfig(hidden_dims=[32, 32], batch_size=B, **overrides)
    return BC(config, Problem.vector(OBS, ACT, MAX_ACTION), SeedStreams.for_seeds(list(seeds)))


def test_bc_loss_is_per_seed_mse_to_dataset_actions() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    loss = algo.actor_loss(batch)
    for s in range(2):
        pi = MAX_ACTION * torch.tanh(member_forward(algo.actor, s, batch.observations[s]))
        torch.testing.assert_close(loss[s], torch.nn.functional.mse_loss(pi, batch.actions[s]), rtol=1e-6, atol=1e-7)


def test_update_is_one_adam_step_on_the_bc_loss() -> None:
    algo, batch = make_algo([0]), make_batch(1)
    reference = [p.detach().clone().requires_grad_(True) for p in algo.actor.parameters()]
    optimizer = torch.optim.Adam(reference, lr=3e-4)
    x = batch.observations[0]
    for i, (w, b) in enumerate(zip(reference[0::2], reference[1::2])):
        x = x @ w[0] + b[0, 0]
        x = torch.relu(x) if i < 2 else MAX_ACTION * torch.tanh(x)
    torch.nn.functional.mse_loss(x, batch.actions[0]).backward()
    optimizer.step()
    algo.update(batch, step=1)
    for p, r in zip(algo.actor.parameters(), reference):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-7)


def test_seed_in_a_group_equals_the_same_seed_alone() -> None:
    pair, alone = make_algo([0, 1]), make_algo([1])
    train_beside_and_alone(pair, alone, make_batch, steps=4, seed=1)
    assert_member_equals_alone(pair.actor, alone.actor, seed=1, num_seeds=2, rtol=1e-6, atol=1e-7)


def test_bc_starts_from_td3bc_actor_and_acts_deterministically_in_bounds() -> None:
    bc = make_algo([3, 4])
    td3bc = TD3BC(TD3BCConfig(hidden_dims=[32, 32]), Problem.vector(OBS, ACT, MAX_ACTION), SeedStreams.for_seeds(list((3, 4))))
    for a, b in zip(bc.actor.parameters(), td3bc.actor.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    obs = torch.randn(2, 7, OBS) * 100
    actions = bc.act(obs, first_steps(obs))
    assert actions.shape == (2, 7, ACT) and actions.abs().max() <= MAX_ACTION
    torch.testing.assert_close(actions, td3bc.act(obs, first_steps(obs)))


def test_protocol_run_records_finite_scores(data_root: Path, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    plan = RunPlan("bc", TINY_ID, seeds=[0, 1], steps=30, eval_every=15, eval_episodes=2, overrides={"hidden_dims": [16, 16], "batch_size": 16})
    run_ids = run(plan, store)
    assert sorted(store.runs()["seed"]) == [0, 1]
    for record in map(store.load, run_ids):
        assert [entry["step"] for entry in record.curve] == [15, 30]
        assert all(np.isfinite([entry["normalized_score"], entry["actor_loss"]]).all() for entry in record.curve)
        assert np.isfinite(record.summary.final_score)
