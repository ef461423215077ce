"""DriftQL mathematics, checked against plain per-seed PyTorch written out here."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from algo_fixtures import assert_member_equals_alone, first_steps, member_forward, random_batch, train_beside_and_alone, with_first_steps
from conftest import TINY_ID

from offbench.algos.base import Problem
from offbench.algos.driftql import DriftQL, DriftQLConfig, drift_field, gelu_tanh
from offbench.algos.nets import EnsembleLayerNorm, EnsembleMLP
from offbench.errors import OffbenchError
from offbench.seeding import SeedStreams
from offbench.store import ResultsStore
from offbench.train import RunPlan, run

OBS, ACT, B, N = 5, 2, 8, 4
make_batch = functools.partial(random_batch, batch_size=B, obs_dim=OBS, act_dim=ACT, action_scale=0.9)


def make_algo(seeds: list[int], **overrides) -> DriftQL:
    config = DriftQLConfig(**{"hidden_dims": [16, 16], "batch_size": B, "drift_ngen": N, **overrides})
    return DriftQL(config, Problem.vector(OBS, ACT, 1.0), SeedStreams.for_seeds(list(seeds)))


def draws(algo: DriftQL, *rows: int) -> list[list[torch.Tensor]]:
    """The standard-normal noise each seed's generator will give for draws of `rows` x noise_dim, in order."""
    states = [g.get_state() for g in algo.streams.noise]
    noise = [[torch.randn(r, algo.noise_dim, generator=g) for r in rows] for g in algo.streams.noise]
    for g, state in zip(algo.streams.noise, states):
        g.set_state(state)
    return noise


def reference_repulsion(generated: torch.Tensor, temp: float, kernel: str) -> torch.Tensor:
    """sum_{k != i} w_ik (a_k - a_i), w_ik = exp(l_ik) / sum_{j != i} exp(l_ij), one state: (N, A) -> (N, A)."""
    n, a = generated.shape
    out = torch.zeros_like(generated)
    for i in range(n):
        logits = {}
        for k in range(n):
            if k != i:
                d = math.sqrt(float(((generated[i] - generated[k]) ** 2).sum()) + 1e-12) / math.sqrt(a)
                logits[k] = -d / temp if kernel == "laplace" else -d * d / (2 * temp * temp)
        total = sum(math.exp(v) for v in logits.values())
        for k, v in logits.items():
            out[i] += math.exp(v) / total * (generated[k] - generated[i])
    return out


def reference_drift_loss(algo: DriftQL, s: int, observations: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    cfg = algo.config
    generated = member_forward(algo.actor, s, torch.cat([observations.repeat_interleave(N, 0), noise], -1), gelu_tanh).clamp(-1, 1).view(B, N, ACT)
    targets = []
    for b in range(B):
        gen = generated[b].detach().double()
        drift = (actions[b].double() - gen) - reference_repulsion(gen, cfg.drift_temp, cfg.kernel)
        targets.append((gen + cfg.drift_eta * drift).clamp(-1, 1).float())
    return ((generated - torch.stack(targets)) ** 2).mean()


# ---- the drift field ----------------------------------------------------------------------------


def test_attraction_alone_points_at_the_dataset_action() -> None:
    generated, positive = torch.rand(3, N, ACT) * 2 - 1, torch.rand(3, ACT) * 2 - 1
    attraction, _ = drift_field(generated, positive, 0.2, "laplace")
    torch.testing.assert_close(attraction, positive.unsqueeze(1) - generated)
    torch.testing.assert_close(generated + attraction, positive.unsqueeze(1).expand_as(generated))  # one step lands on a+


def test_two_samples_repel_each_other_with_full_weight() -> None:
    """N = 2: the softmax over the one other sample is 1, so V_1 = (p - a1) - (a2 - a1) with a1,2 = p +- d."""
    p, d = torch.tensor([0.1, -0.2]), torch.tensor([0.05, 0.03])
    generated = torch.stack([p + d, p - d]).unsqueeze(0)
    attraction, repulsion = drift_field(generated, p.unsqueeze(0), 0.5, "gaussian")
    torch.testing.assert_close(repulsion[0], torch.stack([-2 * d, 2 * d]))
    torch.testing.assert_close((generated + attraction - repulsion)[0], torch.stack([p + 2 * d, p - 2 * d]))


def test_repulsion_pushes_nearby_samples_apart() -> None:
    g = torch.Generator().manual_seed(0)
    cluster = 0.3 + 0.01 * torch.randn(1, 8, ACT, generator=g)
    _, repulsion = drift_field(cluster, torch.zeros(1, ACT), 0.1, "laplace")
    spread = lambda x: torch.cdist(x[0], x[0]).sum()  # noqa: E731
    assert spread(cluster - repulsion) > spread(cluster)
    near = torch.tensor([[[0.0, 0.0], [0.01, 0.0], [0.9, 0.9]]])  # a nearby pair and a far sample
    _, repulsion = drift_field(near, torch.zeros(1, ACT), 0.1, "gaussian")
    assert float((-repulsion[0, 0]) @ (near[0, 0] - near[0, 1])) > 0  # each is pushed away from the other
    assert float((-repulsion[0, 1]) @ (near[0, 1] - near[0, 0])) > 0


def test_identical_samples_on_the_data_action_are_a_fixed_point() -> None:
    same = torch.full((2, N, ACT), 0.4)
    attraction, repulsion = drift_field(same, torch.full((2, ACT), 0.4), 0.2, "laplace")
    assert torch.isfinite(repulsion).all()
    torch.testing.assert_close(attraction - repulsion, torch.zeros_like(same))


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_kernel_weights_follow_their_formula(kernel: str) -> None:
    g = torch.Generator().manual_seed(1)
    generated = torch.rand(3, 5, 3, generator=g) * 2 - 1
    _, repulsion = drift_field(generated, torch.zeros(3, 3), 0.3, kernel)
    for state in range(3):
        expected = reference_repulsion(generated[state].double(), 0.3, kernel).float()
        torch.testing.assert_close(repulsion[state], expected, rtol=1e-5, atol=1e-6)


def test_drifted_target_is_clipped_and_data_actions_are_clamped() -> None:
    algo = make_algo([0], drift_eta=5.0)
    generated = torch.full((1, 1, N, ACT), 0.9)  # identical samples: no repulsion
    torch.testing.assert_close(algo.drifted_target(generated, torch.full((1, 1, ACT), 1.0)), torch.ones(1, 1, N, ACT))  # 0.9 + 5 * 0.1 -> 1
    algo = make_algo([0], drift_eta=0.5)
    target = algo.drifted_target(generated, torch.full((1, 1, ACT), 3.0))  # a+ = 3 counts as 1
    torch.testing.assert_close(target, torch.full((1, 1, N, ACT), 0.95))


def test_no_gradient_flows_through_the_drifted_target() -> None:
    algo, batch = make_algo([0]), make_batch(1)
    state = algo.streams.noise[0].get_state()
    algo.drift_loss(batch.observations, batch.actions).sum().backward()
    got = [p.grad.clone() for p in algo.actor.parameters()]
    algo.streams.noise[0].set_state(state)
    generated = algo.policy(batch.observations.repeat_interleave(N, 1), algo.streams.noise).view(1, B, N, ACT)
    assert not algo.drifted_target(generated, batch.actions).requires_grad
    constant = algo.drifted_target(generated, batch.actions)
    detached = torch.autograd.grad(((generated - constant) ** 2).mean(), list(algo.actor.parameters()), retain_graph=True)
    attraction, repulsion = drift_field(generated, batch.actions, algo.config.drift_temp, algo.config.kernel)
    through = torch.autograd.grad(((generated - (generated + attraction - repulsion).clamp(-1, 1)) ** 2).mean(), list(algo.actor.parameters()))
    for g, d in zip(got, detached):
        torch.testing.assert_close(g, d, rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(d, t, rtol=1e-3, atol=1e-6) for d, t in zip(detached, through))  # the check can tell


# ---- critic, actor, update ----------------------------------------------------------------------


@pytest.mark.parametrize("q_agg", ["min", "mean"])
def test_td_target_uses_the_current_actor_and_both_target_critics(q_agg: str) -> None:
    algo, batch = make_algo([0, 1], q_agg=q_agg), make_batch(2)
    with torch.no_grad():  # the actor now differs from its initial copy: there must be no target actor
        for p in algo.actor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    noise = draws(algo, B)
    got = algo.td_target(batch)
    for s in range(2):
        next_a = member_forward(algo.actor, s, torch.cat([batch.next_observations[s], noise[s][0]], -1), gelu_tanh).clamp(-1, 1)
        sa = torch.cat([batch.next_observations[s], next_a], -1)
        q1, q2 = (member_forward(algo.critic_target, j * 2 + s, sa, gelu_tanh, layer_norm=True).squeeze(-1) for j in range(2))
        agg = torch.minimum(q1, q2) if q_agg == "min" else (q1 + q2) / 2
        torch.testing.assert_close(got[s], batch.rewards[s] + 0.99 * batch.not_dones[s] * agg, rtol=1e-5, atol=1e-5)


def test_critic_loss_is_the_mean_over_both_critics() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    target = torch.randn(2, B)
    loss, _ = algo.critic_loss(batch, target)
    for s in range(2):
        sa = torch.cat([batch.observations[s], batch.actions[s]], -1)
        q1, q2 = (member_forward(algo.critic, j * 2 + s, sa, gelu_tanh, layer_norm=True).squeeze(-1) for j in range(2))
        torch.testing.assert_close(loss[s], (((q1 - target[s]) ** 2).mean() + ((q2 - target[s]) ** 2).mean()) / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_actor_loss_is_alpha_drift_minus_mean_critic(kernel: str) -> None:
    algo, batch = make_algo([0, 1], alpha=7.0, kernel=kernel, drift_temp=0.3), make_batch(2)
    noise = draws(algo, B * N, B)
    loss, drift = algo.actor_loss(batch)
    for s in range(2):
        expected_drift = reference_drift_loss(algo, s, batch.observations[s], batch.actions[s], noise[s][0])
        pi = member_forward(algo.actor, s, torch.cat([batch.observations[s], noise[s][1]], -1), gelu_tanh).clamp(-1, 1)
        sa = torch.cat([batch.observations[s], pi], -1)
        q1, q2 = (member_forward(algo.critic, m, sa, gelu_tanh, layer_norm=True) for m in (s, 2 + s))
        q = (q1 + q2).squeeze(-1) / 2
        torch.testing.assert_close(drift[s], expected_drift, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss[s], 7.0 * expected_drift - q.mean(), rtol=1e-5, atol=1e-5)


def test_update_is_one_adam_step_with_each_loss_on_its_own_network() -> None:
    """Critic moves by the TD loss only, actor by the actor loss only, then the target critic by Polyak."""
    algo, ref = make_algo([0]), make_algo([0])
    optimizer = torch.optim.Adam([*ref.actor.parameters(), *ref.critic.parameters()], lr=3e-4)
    for step in range(1, 3):
        batch = make_batch(1, seed=step)
        algo.update(batch, step)
        target_before = [p.clone() for p in ref.critic_target.parameters()]
        critic_loss, _ = ref.critic_loss(batch, ref.td_target(batch))
        actor_loss, _ = ref.actor_loss(batch)
        grads = (torch.autograd.grad(critic_loss.sum(), list(ref.critic.parameters()))
                 + torch.autograd.grad(actor_loss.sum(), list(ref.actor.parameters())))
        for p, g in zip([*ref.critic.parameters(), *ref.actor.parameters()], grads):
            p.grad = g
        optimizer.step()
        for t, old, new in zip(ref.critic_target.parameters(), target_before, ref.critic.parameters()):
            t.data.copy_(0.995 * old + 0.005 * new)
    for mine, theirs in zip(algo.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)


# ---- per-member LayerNorm, init, seeds ----------------------------------------------------------


def test_layer_norm_is_per_member_and_independent_across_members() -> None:
    norm = EnsembleLayerNorm(3, 4)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(3, 1, 4) + 0.5)
        norm.bias.copy_(torch.randn(3, 1, 4))
    x = torch.randn(3, 6, 4)
    out = norm(x)
    for m in range(3):
        torch.testing.assert_close(out[m], F.layer_norm(x[m], (4,), norm.weight[m, 0], norm.bias[m, 0], eps=1e-6))
    torch.testing.assert_close(norm(x[1:], slice(1, 3)), out[1:])
    out[0].sum().backward()
    assert norm.weight.grad[1:].abs().sum() == 0 and norm.bias.grad[1:].abs().sum() == 0
    assert norm.weight.grad[0].abs().sum() > 0


def test_critic_layer_norms_belong_to_one_seed_each() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    assert [n.weight.shape for n in algo.critic.norms] == [(4, 1, 16), (4, 1, 16)]  # 2 critics x 2 seeds
    before = algo.q_values(batch.observations, batch.actions)
    with torch.no_grad():
        for n in algo.critic.norms:  # seed 1's members: twin-major 1 and 3
            n.weight[1::2].mul_(3.0)
    after = algo.q_values(batch.observations, batch.actions)
    torch.testing.assert_close(after[:, 0], before[:, 0])
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_glorot_uniform_init_and_zero_biases() -> None:
    net = EnsembleMLP(2, 30, [50], 1, layer_norm=True, glorot_init=True)
    net.reset_parameters([torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    for layer in net.layers:
        bound = math.sqrt(6 / (layer.weight.shape[1] + layer.weight.shape[2]))
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert layer.bias.abs().max() == 0
    assert not torch.equal(net.layers[0].weight[0], net.layers[0].weight[1])


def test_seed_in_a_group_equals_the_same_seed_alone() -> None:
    pair, alone = make_algo([0, 1]), make_algo([0])
    train_beside_and_alone(pair, alone, make_batch, steps=3, seed=0)
    assert_member_equals_alone(pair.actor, alone.actor, seed=0, num_seeds=2)
    assert_member_equals_alone(pair.critic, alone.critic, seed=0, num_seeds=2, twins=True)
    obs = torch.randn(2, 3, OBS)
    torch.testing.assert_close(pair.act(obs, first_steps(obs))[:1], alone.act(obs[:1], first_steps(obs[:1])), rtol=1e-5, atol=1e-6)


def test_act_is_stochastic_bounded_and_draws_only_from_the_eval_stream() -> None:
    algo = make_algo([0, 1])
    assert algo.act(*with_first_steps(torch.randn(2, 7, OBS) * 100)).abs().max() <= 1.0
    obs = torch.randn(2, 7, OBS)
    streams = algo.streams.state_dict()
    first, second = algo.act(obs, first_steps(obs)), algo.act(obs, first_steps(obs))
    assert first.shape == (2, 7, ACT)
    assert not torch.equal(first, second)  # a fresh z every call
    after = algo.streams.state_dict()
    for purpose in ("init", "sampling", "noise"):  # acting never moves a training stream
        assert all(torch.equal(a, b) for a, b in zip(streams[purpose], after[purpose]))
    algo.streams.load_state_dict(streams)
    torch.testing.assert_close(algo.act(obs, first_steps(obs)), first)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(OffbenchError, match="unknown kernel 'cosine'"):
        make_algo([0], kernel="cosine")
    with pytest.raises(OffbenchError, match=r"'drift_ngen' for DriftQLConfig must be >= 2, got 1"):
        make_algo([0], drift_ngen=1)


def test_short_training_run_ends_with_finite_scores(data_root: Path, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    plan = RunPlan("driftql", TINY_ID, seeds=[0, 1], steps=20, eval_every=10, eval_episodes=2,
                   overrides={"hidden_dims": [16, 16], "batch_size": 16, "drift_ngen": 4})
    run(plan, store)
    frame = store.runs()
    assert sorted(frame["seed"]) == [0, 1] and (frame["steps"] == 20).all()
    assert frame["final_score"].map(math.isfinite).all()
