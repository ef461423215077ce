"""BCQ mathematics, checked against plain per-seed PyTorch written out here, and one short protocol run."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from algo_fixtures import assert_member_equals_alone, first_steps, member_forward, random_batch, seed_slice, with_first_steps
from conftest import TINY_ID

from offbench.algos.base import Batch, Problem
from offbench.algos.bcq import BCQ, BCQConfig
from offbench.algos.nets import EnsembleMLP
from offbench.seeding import SeedStreams
from offbench.store import ResultsStore
from offbench.train import RunPlan, run

OBS, ACT, B, MAX_ACTION = 5, 2, 8, 1.5
LATENT = 2 * ACT
make_batch = functools.partial(random_batch, batch_size=B, obs_dim=OBS, act_dim=ACT, action_scale=MAX_ACTION)


def make_algo(seeds: list[int], **overrides) -> BCQ:
    config = BCQConfig(hidden_dims=[32, 24], vae_hidden_dims=[32, 32], batch_size=B, **overrides)
    return BCQ(config, Problem.vector(OBS, ACT, MAX_ACTION), SeedStreams.for_seeds(list(seeds)))


def peek_normal(generators: list[torch.Generator], shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The standard normals each generator will draw next for `shape`, leaving the generators untouched."""
    states = [g.get_state() for g in generators]
    draws = [torch.randn(shape, generator=g) for g in generators]
    for g, state in zip(generators, states):
        g.set_state(state)
    return draws


# ---- the plain per-seed reference (the reference code's functions for one seed) --------------------


def decode(algo: BCQ, s: int, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return MAX_ACTION * torch.tanh(member_forward(algo.decoder, s, torch.cat([obs, z], 1)))


def perturb(actor: EnsembleMLP, s: int, obs: torch.Tensor, actions: torch.Tensor, phi: float = 0.05) -> torch.Tensor:
    xi = phi * MAX_ACTION * torch.tanh(member_forward(actor, s, torch.cat([obs, actions], 1)))
    return (actions + xi).clamp(-MAX_ACTION, MAX_ACTION)


def twin_q(critic: EnsembleMLP, s: int, num_seeds: int, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sa = torch.cat([obs, actions], 1)
    return member_forward(critic, s, sa).squeeze(-1), member_forward(critic, num_seeds + s, sa).squeeze(-1)


def reference_target(algo: BCQ, batch: Batch, noise: list[torch.Tensor]) -> torch.Tensor:
    S, targets = algo.num_seeds, []
    for s in range(S):
        next_obs = torch.repeat_interleave(batch.next_observations[s], 10, 0)
        actions = perturb(algo.actor_target, s, next_obs, decode(algo, s, next_obs, noise[s].clamp(-0.5, 0.5)))
        q1, q2 = twin_q(algo.critic_target, s, S, next_obs, actions)
        q = 0.75 * torch.min(q1, q2) + 0.25 * torch.max(q1, q2)
        targets.append(batch.rewards[s] + batch.not_dones[s] * 0.99 * q.reshape(B, -1).max(1)[0])
    return torch.stack(targets)


# ---- tests ----------------------------------------------------------------------------------------


def test_soft_clipped_double_q_target_matches_per_seed_reference() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    with torch.no_grad():  # spread the twins apart so that lambda's weighting of min and max shows
        algo.critic_target.layers[-1].bias[2:] += 3.0
    noise = peek_normal(algo.streams.noise, (B * 10, LATENT))
    torch.testing.assert_close(algo.td_target(batch), reference_target(algo, batch, noise), rtol=1e-5, atol=1e-5)


def test_perturbation_is_bounded_by_phi_and_the_action_is_clipped() -> None:
    algo = make_algo([0])
    with torch.no_grad():  # saturate tanh for every input: xi = Phi * max_action * tanh(10), the bound
        algo.actor.layers[-1].weight.zero_()
        algo.actor.layers[-1].bias.fill_(10.0)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(1, 64, OBS, generator=g)
    actions = (torch.rand(1, 64, ACT, generator=g) * 2 - 1) * MAX_ACTION
    actions[0, :8] = MAX_ACTION  # at the box edge: a + xi must be clipped back in
    actions[0, 8:16] = -MAX_ACTION
    out = algo.perturb(obs, actions)
    torch.testing.assert_close(out[0], perturb(algo.actor, 0, obs[0], actions[0]))
    assert ((out - actions).abs() <= 0.05 * MAX_ACTION + 1e-6).all()
    assert (out.abs() <= MAX_ACTION).all()
    interior = (actions.abs() < MAX_ACTION - 0.1)
    assert ((out - actions).abs()[interior] > 0.99 * 0.05 * MAX_ACTION).all()  # saturated: the bound is reached
    assert ((out - actions).abs()[~interior].min() == 0.0)  # some edge actions were pushed out and clipped


def test_vae_loss_formula_with_log_std_clamp() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)

    def reference() -> torch.Tensor:
        eps = peek_normal(algo.streams.noise, (B, LATENT))
        losses = []
        for s in range(2):
            h = member_forward(algo.encoder, s, torch.cat([batch.observations[s], batch.actions[s]], 1))
            mean, std = h[:, :LATENT], h[:, LATENT:].clamp(-4, 15).exp()
            recon = decode(algo, s, batch.observations[s], mean + std * eps[s])
            kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
            losses.append(F.mse_loss(recon, batch.actions[s]) + 0.5 * kl)
        return torch.stack(losses)

    expected = reference()
    torch.testing.assert_close(algo.vae_loss(batch), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # push log_std far below the clamp: the loss must see log_std = -4, not -50
        algo.encoder.layers[-1].bias[:, :, LATENT:] -= 50.0
    expected = reference()
    torch.testing.assert_close(algo.vae_loss(batch), expected, rtol=1e-5, atol=1e-5)


def test_actor_loss_is_minus_q1_of_perturbed_decoded_actions() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    z = peek_normal(algo.streams.noise, (B, LATENT))
    loss = algo.actor_loss(batch)
    for s in range(2):
        obs = batch.observations[s]
        actions = perturb(algo.actor, s, obs, decode(algo, s, obs, z[s].clamp(-0.5, 0.5)))
        torch.testing.assert_close(loss[s], -twin_q(algo.critic, s, 2, obs, actions)[0].mean(), rtol=1e-5, atol=1e-6)


def test_act_returns_the_argmax_q1_candidate() -> None:
    algo, N = make_algo([0, 1]), 3
    obs = torch.randn(2, N, OBS)
    z = peek_normal(algo.streams.eval, (N * 100, LATENT))
    with torch.no_grad():  # twin 2 disagrees wildly: acting must follow Q1 only
        algo.critic.layers[-1].weight[2:] *= -50.0
    actions = algo.act(obs, first_steps(obs))
    assert actions.shape == (2, N, ACT)
    for s in range(2):
        repeated = torch.repeat_interleave(obs[s], 100, 0)
        candidates = perturb(algo.actor, s, repeated, decode(algo, s, repeated, z[s].clamp(-0.5, 0.5)))
        q1, q2 = twin_q(algo.critic, s, 2, repeated, candidates)
        expected = candidates.view(N, 100, ACT)[torch.arange(N), q1.view(N, 100).argmax(1)]
        torch.testing.assert_close(actions[s], expected, rtol=1e-5, atol=1e-6)
        assert not torch.equal(q1.view(N, 100).argmax(1), q2.view(N, 100).argmax(1))


def test_seed_in_a_group_equals_the_same_seed_alone_and_acting_leaves_training_draws_alone() -> None:
    pair, alone = make_algo([0, 1]), make_algo([1])
    for step in range(1, 4):
        batch = make_batch(2, seed=step)
        pair.update(batch, step)
        pair.act(*with_first_steps(torch.randn(2, 4, OBS)))  # evaluating in between must not move the training stream
        alone.update(seed_slice(batch, slice(1, None)), step)
    for name in ("actor", "critic", "encoder", "decoder", "actor_target", "critic_target"):
        assert_member_equals_alone(getattr(pair, name), getattr(alone, name), seed=1, num_seeds=2, twins=name.startswith("critic"))


def test_polyak_every_step_on_actor_and_critic() -> None:
    algo, batch = make_algo([0]), make_batch(1)
    old_targets = [[p.clone() for p in net.parameters()] for net in (algo.actor_target, algo.critic_target)]
    algo.update(batch, step=1)
    for net, target, old in zip((algo.actor, algo.critic), (algo.actor_target, algo.critic_target), old_targets):
        for t, o, p in zip(target.parameters(), old, net.parameters()):
            torch.testing.assert_close(t, 0.995 * o + 0.005 * p, rtol=1e-6, atol=1e-7)
            assert not torch.equal(t, o)


def test_protocol_run_records_finite_scores(data_root: Path, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    overrides = {"hidden_dims": [16, 16], "vae_hidden_dims": [16, 16], "batch_size": 16}
    run_ids = run(RunPlan("bcq", TINY_ID, seeds=[0, 1], steps=30, eval_every=15, eval_episodes=2, overrides=overrides), store)
    assert sorted(store.runs()["seed"]) == [0, 1]
    for record in map(store.load, run_ids):
        assert record.config.protocol.normalize_states is False
        assert [entry["step"] for entry in record.curve] == [15, 30]
        for entry in record.curve:
            assert np.isfinite([entry[k] for k in ("normalized_score", "vae_loss", "critic_loss", "actor_loss")]).all()
        assert np.isfinite(record.summary.final_score)


def test_training_state_and_streams_round_trip_restores_acting_draws() -> None:
    algo, batch = make_algo([0, 1]), make_batch(2)
    algo.update(batch, 1)
    algo.act(*with_first_steps(torch.randn(2, 3, OBS)))
    state, streams = copy.deepcopy(algo.training_state()), algo.streams.state_dict()
    restored = make_algo([5, 6])
    restored.load_training_state(state)
    restored.streams.load_state_dict(streams)  # the trainer checkpoints the streams with the algorithm
    obs = torch.randn(2, 3, OBS)
    torch.testing.assert_close(restored.act(obs, first_steps(obs)), algo.act(obs, first_steps(obs)), rtol=0, atol=0)
