"""TD3+BC mathematics, checked against plain per-seed PyTorch written out here."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from algo_fixtures import assert_member_equals_alone, first_steps, member_forward, random_batch, train_beside_and_alone

from offbench.algos.base import Batch, Problem
from offbench.algos.nets import EnsembleConv2d, EnsembleMLP, polyak_update
from offbench.algos.td3bc import TD3BC, TD3BCConfig
from offbench.data.sampling import state_normalizer
from offbench.seeding import SeedStreams

OBS, ACT, B = 5, 2, 16
make_batch = functools.partial(random_batch, batch_size=B, obs_dim=OBS, act_dim=ACT)


def make_algo(seeds: list[int], **overrides) -> TD3BC:
    config = TD3BCConfig(hidden_dims=[32, 32], batch_size=B, **overrides)
    return TD3BC(config, Problem.vector(OBS, ACT, 1.0), SeedStreams.for_seeds(seeds))


def reference_target(algo: TD3BC, batch: Batch, noise: torch.Tensor) -> torch.Tensor:
    cfg, S = algo.config, algo.num_seeds
    targets = []
    for s in range(S):
        eps = (noise[s] * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
        next_a = (torch.tanh(member_forward(algo.actor_target, s, batch.next_observations[s])) + eps).clamp(-1, 1)
        sa = torch.cat([batch.next_observations[s], next_a], dim=-1)
        q1 = member_forward(algo.critic_target, s, sa).squeeze(-1)
        q2 = member_forward(algo.critic_target, S + s, sa).squeeze(-1)
        targets.append(batch.rewards[s] + cfg.discount * batch.not_dones[s] * torch.minimum(q1, q2))
    return torch.stack(targets)


def noise_that_algo_will_draw(algo: TD3BC, batch: Batch) -> torch.Tensor:
    states = [g.get_state() for g in algo.streams.noise]
    noise = torch.stack([torch.randn(batch.actions.shape[1:], generator=g) for g in algo.streams.noise])
    for g, state in zip(algo.streams.noise, states):
        g.set_state(state)
    return noise


def test_td_target_matches_per_seed_reference() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    noise = noise_that_algo_will_draw(algo, batch)
    torch.testing.assert_close(algo.td_target(batch), reference_target(algo, batch, noise), rtol=1e-5, atol=1e-5)


def test_target_noise_is_clipped_and_next_action_stays_in_bounds() -> None:
    algo, batch = make_algo([0], policy_noise=50.0, noise_clip=0.5), make_batch(1)
    noise = noise_that_algo_will_draw(algo, batch)
    assert (noise * 50.0).abs().max() > 0.5  # the raw noise would leave the clip range
    torch.testing.assert_close(algo.td_target(batch), reference_target(algo, batch, noise), rtol=1e-5, atol=1e-5)
    # a huge clip lets the action saturate at max_action: the target then equals Q at a = +-1
    algo_wide, batch = make_algo([0], policy_noise=50.0, noise_clip=1e6), make_batch(1)
    noise = noise_that_algo_will_draw(algo_wide, batch)
    saturated = torch.sign(noise[0])
    sa = torch.cat([batch.next_observations[0], saturated], dim=-1)
    q = torch.minimum(member_forward(algo_wide.critic_target, 0, sa), member_forward(algo_wide.critic_target, 1, sa)).squeeze(-1)
    expected = batch.rewards[0] + 0.99 * batch.not_dones[0] * q
    torch.testing.assert_close(algo_wide.td_target(batch)[0], expected, rtol=1e-5, atol=1e-5)


def test_target_takes_the_minimum_of_the_twins() -> None:
    algo, batch = make_algo([0]), make_batch(1)
    with torch.no_grad():
        algo.critic_target.layers[-1].bias[1] -= 100.0  # twin 2 (member S + 0) is the minimum everywhere
    state = algo.streams.noise[0].get_state()
    base = algo.td_target(batch)
    with torch.no_grad():
        algo.critic_target.layers[-1].bias[0] += 100.0  # twin 1 much higher: the min ignores it
    algo.streams.noise[0].set_state(state)
    torch.testing.assert_close(algo.td_target(batch), base)
    with torch.no_grad():
        algo.critic_target.layers[-1].bias[1] -= 100.0  # twin 2 much lower: the min follows it
    algo.streams.noise[0].set_state(state)
    torch.testing.assert_close(algo.td_target(batch), base - 0.99 * 100.0 * batch.not_dones, rtol=1e-5, atol=1e-4)


def test_critic_loss_is_sum_of_twin_mses() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    target = torch.randn(2, B)
    loss, _ = algo.critic_loss(batch, target)
    for s in range(2):
        sa = torch.cat([batch.observations[s], batch.actions[s]], dim=-1)
        q1, q2 = member_forward(algo.critic, s, sa).squeeze(-1), member_forward(algo.critic, 2 + s, sa).squeeze(-1)
        expected = ((q1 - target[s]) ** 2).mean() + ((q2 - target[s]) ** 2).mean()
        torch.testing.assert_close(loss[s], expected, rtol=1e-5, atol=1e-5)


def test_actor_loss_formula_and_lambda_scale_invariance() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    loss = algo.actor_loss(batch)
    for s in range(2):
        pi = torch.tanh(member_forward(algo.actor, s, batch.observations[s]))
        q = member_forward(algo.critic, s, torch.cat([batch.observations[s], pi], dim=-1)).squeeze(-1)
        expected = -2.5 / q.abs().mean() * q.mean() + ((pi - batch.actions[s]) ** 2).mean()
        torch.testing.assert_close(loss[s], expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # scaling Q by 10 leaves lambda * Q unchanged: the point of the normalisation
        algo.critic.layers[-1].weight.mul_(10.0)
        algo.critic.layers[-1].bias.mul_(10.0)
    torch.testing.assert_close(algo.actor_loss(batch), loss, rtol=1e-5, atol=1e-5)


def test_lambda_is_detached_from_the_graph() -> None:
    algo, batch = make_algo([0]), make_batch(1)
    algo.actor_loss(batch).sum().backward()
    pi = torch.tanh(member_forward(algo.actor, 0, batch.observations[0]))
    q = member_forward(algo.critic, 0, torch.cat([batch.observations[0], pi], dim=-1)).squeeze(-1)
    lmbda = (2.5 / q.abs().mean()).detach()
    reference = -lmbda * q.mean() + ((pi - batch.actions[0]) ** 2).mean()
    grads = torch.autograd.grad(reference, [algo.actor.layers[0].weight])[0]
    torch.testing.assert_close(algo.actor.layers[0].weight.grad, grads, rtol=1e-4, atol=1e-6)


def test_policy_delay_and_polyak_targets() -> None:
    algo, batch = make_algo([0], policy_freq=2, tau=0.005), make_batch(1)
    actor0, actor_target0 = copy.deepcopy(algo.actor), copy.deepcopy(algo.actor_target)
    critic_target0 = copy.deepcopy(algo.critic_target)
    metrics = algo.update(batch, step=1)
    assert "actor_loss" not in metrics
    for a, b in zip(algo.actor.parameters(), actor0.parameters()):
        torch.testing.assert_close(a, b)  # no actor step on odd steps
    for a, b in zip(algo.critic_target.parameters(), critic_target0.parameters()):
        torch.testing.assert_close(a, b)  # targets only move with the actor
    algo.update(batch, step=2)
    moved = [not torch.equal(a, b) for a, b in zip(algo.actor.parameters(), actor0.parameters())]
    assert all(moved)
    for target, new, old in zip(algo.actor_target.parameters(), algo.actor.parameters(), actor_target0.parameters()):
        torch.testing.assert_close(target, 0.995 * old + 0.005 * new, rtol=1e-6, atol=1e-7)


def test_a_new_network_holds_finite_weights_before_any_seeding() -> None:
    """Parameters are never left as uninitialised memory (which can hold NaN) until `reset_parameters`."""
    for _ in range(20):
        networks = [EnsembleMLP(3, 5, [64, 64], 2, layer_norm=True), EnsembleConv2d(3, 4, 32, kernel_size=8, stride=4)]
        for parameter in (p for network in networks for p in network.parameters()):
            assert torch.isfinite(parameter).all()
            assert parameter.abs().max() <= 1.0


def test_polyak_update_formula() -> None:
    target, source = EnsembleMLP(2, 3, [4], 1), EnsembleMLP(2, 3, [4], 1)
    target.reset_parameters([torch.Generator().manual_seed(i) for i in range(2)])
    source.reset_parameters([torch.Generator().manual_seed(i + 2) for i in range(2)])
    before = [p.clone() for p in target.parameters()]
    polyak_update(target, source, tau=0.25)
    for t, b, s in zip(target.parameters(), before, source.parameters()):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * s)


def test_seed_in_a_group_equals_the_same_seed_alone() -> None:
    """Seed 0 trained beside seed 1 ends where seed 0 trained alone ends: seeds share nothing."""
    pair, alone = make_algo([0, 1]), make_algo([0])
    train_beside_and_alone(pair, alone, make_batch, steps=4, seed=0)
    assert_member_equals_alone(pair.actor, alone.actor, seed=0, num_seeds=2)
    assert_member_equals_alone(pair.critic, alone.critic, seed=0, num_seeds=2, twins=True)


def test_state_normalizer_is_mean_and_std_plus_epsilon() -> None:
    observations = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=np.float32)
    mean, std = state_normalizer(observations)
    np.testing.assert_allclose(mean, [2.0, 1.0])
    np.testing.assert_allclose(std, [np.sqrt(8 / 3) + 1e-3, 1e-3], rtol=1e-6)


@pytest.mark.parametrize("seeds", [[0], [3, 4]])
def test_act_is_deterministic_and_bounded(seeds: list[int]) -> None:
    algo = make_algo(seeds)
    obs = torch.randn(len(seeds), 7, OBS) * 100
    actions = algo.act(obs, first_steps(obs))
    assert actions.shape == (len(seeds), 7, ACT)
    assert actions.abs().max() <= 1.0
    torch.testing.assert_close(actions, algo.act(obs, first_steps(obs)))
