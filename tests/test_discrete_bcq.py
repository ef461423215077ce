"""Discrete BCQ and offline DQN: the filter, targets and losses against plain per-seed PyTorch written out
here (the reference code's functions for one seed), target-update schedules, reward clipping, the seed
axis (also for the grouped-convolution trunk), the Atari/low-dim settings, and short protocol runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from algo_fixtures import assert_member_equals_alone, member_forward, seed_slice
from conftest import run_cli

import offbench.config
from offbench.algos.base import Batch, Problem
from offbench.algos.discrete_bcq import DiscreteBCQ, DiscreteBCQConfig, filtered_argmax
from offbench.algos.nets import epsilon_greedy
from offbench.algos.offline_dqn import OfflineDQN, OfflineDQNConfig
from offbench.analysis.scores import configuration_names, recorded_observation_kind
from offbench.config import resolve_config
from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.registry import make_dataset
from offbench.data.sampling import FrameStack, make_sampler
from offbench.data.spaces import Discrete, ObservationSpace
from offbench.errors import OffbenchError
from offbench.paths import data_dir
from offbench.policy import evaluate_policy, export_policy
from offbench.seeding import SeedStreams
from offbench.store import ResultsStore
from offbench.train import RunPlan, run

OBS, N_ACTIONS, B = 5, 4, 16
VECTOR = Problem(ObservationSpace((OBS,)), Discrete(N_ACTIONS))
FRAMES = Problem(ObservationSpace((4, 84, 84), "uint8"), Discrete(3))


def make_bcq(seeds: list[int], problem: Problem = VECTOR, **overrides) -> DiscreteBCQ:
    config = DiscreteBCQConfig(**{"hidden_dims": [32, 32], "batch_size": B, **overrides})
    return DiscreteBCQ(config, problem, SeedStreams.for_seeds(seeds))


def make_dqn(seeds: list[int], problem: Problem = VECTOR, **overrides) -> OfflineDQN:
    config = OfflineDQNConfig(**{"hidden_dims": [32, 32], "batch_size": B, **overrides})
    return OfflineDQN(config, problem, SeedStreams.for_seeds(seeds))


def make_batch(num_seeds: int, seed: int = 0, problem: Problem = VECTOR, batch_size: int = B, reward_scale: float = 1.0) -> Batch:
    g = torch.Generator().manual_seed(2000 + seed)
    shape = (num_seeds, batch_size, *problem.observation_space.shape)

    def observations() -> torch.Tensor:
        if problem.observation_space.dtype == "uint8":
            return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        return torch.randn(shape, generator=g)

    return Batch(
        observations=observations(),
        actions=torch.randint(problem.action_space.n, (num_seeds, batch_size), generator=g),
        rewards=torch.randn(num_seeds, batch_size, generator=g) * reward_scale,
        next_observations=observations(),
        not_dones=(torch.rand(num_seeds, batch_size, generator=g) > 0.2).float(),
    )


# ---- the plain per-seed reference ------------------------------------------------------------------


def heads(algo: DiscreteBCQ, network: torch.nn.Module, s: int, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed s's FC_Q: (Q values, imitation logits) for (B, obs_dim) observations."""
    return member_forward(network.q, s, obs), member_forward(network.imitation, s, obs)


def reference_filter(q: torch.Tensor, logits: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """The code's select_action / train: imt = exp(log_softmax); imt = (imt / imt.max > threshold); argmax(imt * q + (1 - imt) * -1e8)."""
    imt = F.log_softmax(logits, dim=1).exp()
    imt = (imt / imt.max(1, keepdim=True)[0] > threshold).float()
    return (imt * q + (1.0 - imt) * -1e8).argmax(1)


def spread_imitation(algo: DiscreteBCQ) -> None:
    """Make the imitation head decisive, so that the filter removes actions (and the Q argmax among them)."""
    with torch.no_grad():
        algo.network.imitation.layers[-1].weight.mul_(40.0)


# ---- the filter --------------------------------------------------------------------------------------


def test_filter_keeps_actions_above_the_threshold_ratio_and_takes_the_argmax_among_them() -> None:
    probs = torch.tensor([[0.50, 0.15, 0.20, 0.15],    # ratios 1, 0.3, 0.4, 0.3: 0.3 is not > 0.3
                          [0.10, 0.40, 0.05, 0.45],    # ratios .22, .89, .11, 1
                          [0.25, 0.25, 0.25, 0.25]])   # all allowed
    q = torch.tensor([[1.0, 9.0, 2.0, 8.0],
                      [-5.0, -7.0, 3.0, -6.0],         # the best Q (action 2) is filtered out; all allowed Q < 0
                      [0.0, 1.0, 3.0, 2.0]])
    actions = filtered_argmax(q, probs.log(), 0.3)
    assert actions.tolist() == [2, 3, 2]
    assert filtered_argmax(q, probs.log(), 0.0).tolist() == q.argmax(1).tolist()  # threshold 0: plain argmax
    ratio_just_above = torch.tensor([[0.5, 0.15 + 1e-4, 0.2, 0.15 - 1e-4]])
    assert filtered_argmax(torch.tensor([[0.0, 5.0, 1.0, 0.0]]), ratio_just_above.log(), 0.3).tolist() == [1]


def test_acting_takes_the_filtered_argmax_of_each_seed() -> None:
    algo = make_bcq([0, 1])
    spread_imitation(algo)
    obs = torch.randn(2, 64, OBS)
    actions = algo.act(obs, torch.ones(2, 64, dtype=torch.bool))
    unfiltered = []
    for s in range(2):
        q, logits = heads(algo, algo.network, s, obs[s])
        assert torch.equal(actions[s], reference_filter(q, logits))
        unfiltered.append(q.argmax(1))
    assert not torch.equal(actions, torch.stack(unfiltered))  # the filter changed some actions


def test_target_takes_the_online_filtered_argmax_and_the_target_networks_value() -> None:
    algo, batch = make_bcq([0, 1]), make_batch(2)
    spread_imitation(algo)
    with torch.no_grad():  # a target network that differs from the online one
        for p in algo.target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    target = algo.td_target(batch)
    filtered_differs = False
    for s in range(2):
        q_online, logits = heads(algo, algo.network, s, batch.next_observations[s])
        next_action = reference_filter(q_online, logits)
        q_target = member_forward(algo.target.q, s, batch.next_observations[s])
        expected = batch.rewards[s] + batch.not_dones[s] * 0.99 * q_target.gather(1, next_action[:, None]).squeeze(1)
        torch.testing.assert_close(target[s], expected, rtol=1e-6, atol=1e-6)
        filtered_differs |= not torch.equal(next_action, q_online.argmax(1))
    assert filtered_differs


# ---- the loss ------------------------------------------------------------------------------------------


def test_loss_is_huber_plus_nll_plus_a_hundredth_of_the_mean_squared_logit() -> None:
    algo, batch = make_bcq([0, 1]), make_batch(2, reward_scale=5.0)  # large errors: Huber's linear part shows
    target = algo.td_target(batch)
    losses = algo.losses(batch, target)
    for s in range(2):
        q, logits = heads(algo, algo.network, s, batch.observations[s])
        current = q.gather(1, batch.actions[s][:, None])
        q_loss = F.smooth_l1_loss(current, target[s][:, None])
        i_loss = F.nll_loss(F.log_softmax(logits, dim=1), batch.actions[s])
        torch.testing.assert_close(losses["q_loss"][s], q_loss, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(losses["imitation_loss"][s], i_loss, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(losses["logit_l2"][s], logits.pow(2).mean(), rtol=1e-6, atol=1e-6)
        assert ((current.squeeze(1) - target[s]).abs() > 1).any()  # some errors in the linear part of Huber
    metrics = algo.update(batch, 1)
    torch.testing.assert_close(metrics["loss"], losses["q_loss"] + losses["imitation_loss"] + 0.01 * losses["logit_l2"])


def test_one_update_is_one_adam_step_on_the_summed_loss_of_the_reference_network() -> None:
    """The whole step for one seed: the code's FC_Q as plain nn.Linear layers, its loss, one Adam step."""
    algo, batch = make_bcq([3]), make_batch(1)
    layers = {}
    for head in ("q", "imitation"):
        for i, layer in enumerate(getattr(algo.network, head).layers):
            linear = torch.nn.Linear(*layer.weight.shape[1:])
            with torch.no_grad():
                linear.weight.copy_(layer.weight[0].T)
                linear.bias.copy_(layer.bias[0, 0])
            layers[f"{head}{i}"] = linear
    reference = torch.nn.ModuleDict(layers)
    optimizer = torch.optim.Adam(reference.parameters(), lr=3e-4)

    def forward(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = reference["q2"](F.relu(reference["q1"](F.relu(reference["q0"](obs)))))
        i = reference["imitation2"](F.relu(reference["imitation1"](F.relu(reference["imitation0"](obs)))))
        return q, F.log_softmax(i, dim=1), i

    target = algo.td_target(batch)[0][:, None]
    q, imt, i = forward(batch.observations[0])
    loss = F.smooth_l1_loss(q.gather(1, batch.actions[0][:, None]), target) + F.nll_loss(imt, batch.actions[0]) + 1e-2 * i.pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    algo.update(batch, 1)
    for head in ("q", "imitation"):
        for i, layer in enumerate(getattr(algo.network, head).layers):
            torch.testing.assert_close(layer.weight[0].T, reference[f"{head}{i}"].weight, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(layer.bias[0, 0], reference[f"{head}{i}"].bias, rtol=1e-5, atol=1e-7)


def test_rewards_are_clipped_for_learning_only() -> None:
    algo, batch = make_bcq([0], clip_rewards=True), make_batch(1)
    rewards = torch.tensor([[5.0, -3.0, 0.5, -0.25] * (B // 4)])
    batch = Batch(batch.observations, batch.actions, rewards.clone(), batch.next_observations, torch.zeros(1, B))
    assert algo.td_target(batch).tolist() == [[1.0, -1.0, 0.5, -0.25] * (B // 4)]
    assert torch.equal(batch.rewards, rewards)  # the batch (and the data) keep their rewards
    unclipped = make_bcq([0], clip_rewards=False)
    assert torch.equal(unclipped.td_target(batch), rewards)
    dqn = make_dqn([0], clip_rewards=True)
    assert dqn.td_target(batch).tolist() == [[1.0, -1.0, 0.5, -0.25] * (B // 4)]


# ---- target updates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [make_bcq, make_dqn])
def test_polyak_moves_the_target_by_tau_every_step(make) -> None:
    algo, batch = make([0]), make_batch(1)
    old = [p.clone() for p in algo.target.parameters()]
    algo.update(batch, 1)
    for t, o, p in zip(algo.target.parameters(), old, algo.network.parameters()):
        torch.testing.assert_close(t, 0.995 * o + 0.005 * p, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [make_bcq, make_dqn])
def test_hard_copies_happen_exactly_every_target_update_every_steps(make) -> None:
    algo = make([0], target_update="hard", target_update_every=3)
    initial = [p.clone() for p in algo.target.parameters()]
    for step in range(1, 7):
        algo.update(make_batch(1, seed=step), step)
        copied = all(torch.equal(t, p) for t, p in zip(algo.target.parameters(), algo.network.parameters()))
        if step % 3 == 0:
            assert copied, step
            at_copy = [p.clone() for p in algo.target.parameters()]
        else:
            assert not copied, step
            expected = initial if step < 3 else at_copy
            assert all(torch.equal(t, e) for t, e in zip(algo.target.parameters(), expected)), step


def test_the_baseline_gives_the_atari_set_to_frames_and_the_low_dim_set_to_vectors() -> None:
    for algo, cls in (("discrete-bcq", DiscreteBCQ), ("offline-dqn", OfflineDQN)):
        atari = resolve_config(algo, cls, None, {}, "frames")
        assert (atari.lr, atari.adam_eps, atari.batch_size, atari.target_update, atari.target_update_every) == (6.25e-5, 1.5e-4, 32, "hard", 8000)
        assert (atari.clip_rewards, atari.eval_eps, atari.hidden_dims, atari.sampler, atari.frame_stack) == (True, 0.001, [512], "frame-stack", 4)
        low_dim = resolve_config(algo, cls, None, {}, "vector")
        assert (low_dim.lr, low_dim.adam_eps, low_dim.batch_size, low_dim.target_update, low_dim.tau) == (3e-4, 1e-8, 64, "polyak", 0.005)
        assert (low_dim.clip_rewards, low_dim.eval_eps, low_dim.hidden_dims, low_dim.sampler) == (False, 0.0, [256, 256], "uniform")
        assert resolve_config(algo, cls, None, {"eval_eps": 0.05}, "frames").eval_eps == 0.05  # the user's --set still wins
    assert resolve_config("discrete-bcq", DiscreteBCQ, None, {}, "frames").threshold == 0.3
    with pytest.raises(OffbenchError, match="'target_update' must be one of polyak, hard, got 'soft'"):
        resolve_config("discrete-bcq", DiscreteBCQ, None, {"target_update": "soft"})


# ---- evaluation acting ---------------------------------------------------------------------------------


def test_epsilon_greedy_maps_normals_to_uniform_actions_with_probability_epsilon() -> None:
    greedy = torch.zeros(1, 200_000, dtype=torch.int64)
    noise = torch.randn(1, 200_000, 2, generator=torch.Generator().manual_seed(0))
    actions = epsilon_greedy(greedy, noise, 6, 0.3)
    explored = torch.special.ndtr(noise[..., 0]) < 0.3
    assert torch.equal(actions[~explored], greedy[~explored])
    assert torch.equal(actions[explored], (torch.special.ndtr(noise[..., 1][explored]) * 6).long())
    assert abs(explored.float().mean().item() - 0.3) < 0.005
    counts = torch.bincount(actions[explored], minlength=6).float() / explored.sum()
    assert (counts - 1 / 6).abs().max() < 0.01
    extreme = torch.tensor([[[-10.0, 10.0]] * 5])  # explore, and v = Phi(10) = 1.0 in float32: clamped to n - 1
    assert torch.equal(epsilon_greedy(greedy[:, :5], extreme, 6, 0.3), torch.full((1, 5), 5))


@pytest.mark.parametrize("make", [make_bcq, make_dqn])
def test_acting_with_eval_eps_draws_from_the_evaluation_stream_and_the_policy_module_repeats_it(make) -> None:
    algo = make([0, 1], eval_eps=0.5)
    obs = torch.randn(2, 40, OBS)
    states = [g.get_state() for g in algo.streams.eval]
    noise = torch.stack([torch.randn(40, 2, generator=g) for g in algo.streams.eval])
    for g, state in zip(algo.streams.eval, states):
        g.set_state(state)
    actions = algo.act(obs, torch.ones(2, 40, dtype=torch.bool))
    greedy = make([0, 1]).act(obs, torch.ones(2, 40, dtype=torch.bool))
    assert torch.equal(actions, epsilon_greedy(greedy, noise, N_ACTIONS, 0.5))
    assert (actions != greedy).any()
    for s in range(2):
        policy = algo.policy_module(s)
        assert policy.noise_dim == 2 and make([0]).policy_module(0).noise_dim == 0
        assert torch.equal(policy(obs[s : s + 1], noise[s : s + 1]), actions[s : s + 1])


# ---- the seed axis, Conv_Q -------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [make_bcq, make_dqn])
def test_a_seed_in_a_group_trains_as_the_same_seed_alone(make) -> None:
    pair, alone = make([0, 1]), make([1])
    for step in range(1, 5):
        batch = make_batch(2, seed=step)
        pair.update(batch, step)
        alone.update(seed_slice(batch, slice(1, None)), step)
    heads_names = ("q", "imitation") if isinstance(pair, DiscreteBCQ) else ("q",)
    for name in heads_names:
        for net in ("network", "target"):
            assert_member_equals_alone(getattr(getattr(pair, net), name), getattr(getattr(alone, net), name), seed=1, num_seeds=2)


def conv_q_reference(algo: DiscreteBCQ, s: int, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The code's Conv_Q for seed s, as plain nn.Conv2d / nn.Linear layers holding that seed's weights."""
    convs = []
    for conv, (out, k, stride) in zip(algo.network.trunk.convs, ((32, 8, 4), (64, 4, 2), (64, 3, 1))):
        plain = torch.nn.Conv2d(conv.weight.shape[1], out, k, stride=stride)
        with torch.no_grad():
            plain.weight.copy_(conv.weight[s * out : (s + 1) * out])
            plain.bias.copy_(conv.bias[s * out : (s + 1) * out])
        convs.append(plain)
    c = frames.float()
    for plain in convs:
        c = F.relu(plain(c))
    c = c.reshape(-1, 3136)
    q = member_forward(algo.network.q, s, c)
    i = member_forward(algo.network.imitation, s, c)
    return q, F.log_softmax(i, dim=1), i


def test_conv_q_on_uint8_frame_stacks_matches_the_plain_network_of_each_seed() -> None:
    algo = make_bcq([0, 1, 2], FRAMES, hidden_dims=[512])
    assert algo.network.trunk.convs[0].weight.shape == (3 * 32, 4, 8, 8)  # one grouped conv for the three seeds
    frames = torch.randint(0, 256, (3, 5, 4, 84, 84), dtype=torch.uint8)
    q, log_probs, logits = algo.network(frames)
    assert q.shape == log_probs.shape == logits.shape == (3, 5, 3)
    for s in range(3):
        for got, expected in zip((q[s], log_probs[s], logits[s]), conv_q_reference(algo, s, frames[s])):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    member = algo.policy_module(1)
    assert torch.equal(member(frames[1:2]), algo.act(frames, torch.ones(3, 5, dtype=torch.bool))[1:2])


def test_conv_q_seed_in_a_group_trains_as_alone_with_hard_copies() -> None:
    pair = make_bcq([0, 1], FRAMES, hidden_dims=[64], target_update="hard", target_update_every=2, clip_rewards=True)
    alone = make_bcq([1], FRAMES, hidden_dims=[64], target_update="hard", target_update_every=2, clip_rewards=True)
    for step in range(1, 4):
        batch = make_batch(2, seed=step, problem=FRAMES, batch_size=4, reward_scale=3.0)
        pair.update(batch, step)
        alone.update(seed_slice(batch, slice(1, None)), step)
    for net in ("network", "target"):
        for group_conv, alone_conv in zip(getattr(pair, net).trunk.convs, getattr(alone, net).trunk.convs):
            rows = alone_conv.weight.shape[0]
            torch.testing.assert_close(group_conv.weight[rows:], alone_conv.weight, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(group_conv.bias[rows:], alone_conv.bias, rtol=1e-4, atol=1e-6)
        for name in ("q", "imitation"):
            assert_member_equals_alone(getattr(getattr(pair, net), name), getattr(getattr(alone, net), name), seed=1, num_seeds=2, rtol=1e-4, atol=1e-6)


def test_offline_dqn_target_is_the_max_of_the_target_network_and_its_loss_is_huber() -> None:
    algo, batch = make_dqn([0, 1]), make_batch(2, reward_scale=5.0)
    with torch.no_grad():
        for p in algo.target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    target = algo.td_target(batch)
    losses = algo.losses(batch, target)
    for s in range(2):
        q_target = member_forward(algo.target.q, s, batch.next_observations[s])
        expected = batch.rewards[s] + batch.not_dones[s] * 0.99 * q_target.max(1, keepdim=True)[0].squeeze(1)
        torch.testing.assert_close(target[s], expected, rtol=1e-6, atol=1e-6)
        current = member_forward(algo.network.q, s, batch.observations[s]).gather(1, batch.actions[s][:, None])
        torch.testing.assert_close(losses["q_loss"][s], F.smooth_l1_loss(current, target[s][:, None]), rtol=1e-6, atol=1e-6)
    assert set(losses) == {"q_loss", "q_mean"} and not hasattr(algo.network, "imitation")


def test_a_box_action_dataset_is_refused_in_one_line() -> None:
    with pytest.raises(OffbenchError, match="discrete-bcq needs a discrete action space; local/x-v5 has a 3-dimensional box"):
        DiscreteBCQ.check_problem("discrete-bcq", Problem.vector(11, 3), "local/x-v5")


# ---- protocol runs -------------------------------------------------------------------------------------

TINY_CARTPOLE = "local/cartpole-dqn-tiny-v1"
TINY_CARTPOLE_RECIPE = {  # the catalogue's local/cartpole-dqn-v1 recipe, 800 transitions
    "env_id": "CartPole-v1", "recipe": "noisy-dqn", "policy": "cartpole/dqn-partial.pt", "low_noise_p": 0.2, "rand_action_p": 0.2,
    "eval_eps": 0.001, "steps": 800, "seed": 0, "num_envs": 4, "max_episode_steps": 500, "reference": "classic:cartpole",
}


@pytest.fixture()
def tiny_cartpole(data_root: Path) -> str:
    """800 CartPole transitions of the committed behaviour policy with the buffer noise, made by a recipe."""
    if not (data_dir() / TINY_CARTPOLE).exists():
        make_dataset(TINY_CARTPOLE, recipe=TINY_CARTPOLE_RECIPE)
    return TINY_CARTPOLE


@pytest.mark.parametrize("algo", ["discrete-bcq", "offline-dqn"])
def test_offbench_run_on_cartpole_records_raw_returns_and_keeps_a_policy_that_repeats_them(algo: str, tiny_cartpole: str, tmp_path: Path) -> None:
    result = run_cli("run", "--algo", algo, "--dataset", tiny_cartpole, "--seeds", "2", "--steps", "40", "--eval-every", "20",
                     "--eval-episodes", "2", "--results-dir", str(tmp_path), "--set", "hidden_dims=[16, 16]", "--set", "batch_size=16")
    assert result.returncode == 0, result.stderr
    store = ResultsStore(tmp_path)
    run_ids = sorted(store.runs()["run_id"])
    metrics = ("q_loss", "imitation_loss", "logit_l2") if algo == "discrete-bcq" else ("q_loss",)
    for run_id in run_ids:
        record = store.load(run_id)
        assert record.config.algo_config["target_update"] == "polyak" and record.config.algo_config["eval_eps"] == 0.0
        assert record.config.dataset.ref_min_score == 22.66 and record.config.dataset.action_space == {"kind": "discrete", "n": 2}
        assert [entry["step"] for entry in record.curve] == [20, 40]
        for entry in record.curve:
            assert np.isfinite([entry[k] for k in ("normalized_score", *metrics)]).all()
            assert all(r >= 8 and r == int(r) for r in entry["returns"])  # raw CartPole returns (+1 per step), not clipped or normalised
            torch.testing.assert_close(entry["normalized_score"], float(np.mean([100 * (r - 22.66) / (500 - 22.66) for r in entry["returns"]])))
        assert evaluate_policy(store, run_id).matches_last_evaluation


def test_an_epsilon_greedy_run_keeps_a_policy_that_repeats_its_evaluation_and_exports(tiny_cartpole: str, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    overrides = {"hidden_dims": [16, 16], "batch_size": 16, "eval_eps": 0.3}
    run_id = run(RunPlan("discrete-bcq", tiny_cartpole, seeds=[0, 1], steps=20, eval_every=20, eval_episodes=3, overrides=overrides), store)[1]
    evaluation = evaluate_policy(store, run_id)  # the noise drawn from the seed's evaluation stream, as `act` drew it
    assert evaluation.matches_last_evaluation
    exported = export_policy(store, run_id, tmp_path / "policy.pt2")
    assert exported.metadata["noise_dim"] == 2
    actions = torch.export.load(exported.path).module()(torch.zeros(5, 4), torch.randn(5, 2))
    assert actions.dtype == torch.int64 and actions.shape == (5,)


def test_frame_stacks_from_the_sampler_train_conv_q_with_the_atari_settings() -> None:
    """A tiny frames dataset (two 30-frame episodes) through the frame-stack sampler, with the baseline's Atari set."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (60, 84, 84), dtype=np.uint8)
    terminals = np.zeros(60, dtype=bool)
    terminals[[29, 59]] = True
    metadata = DatasetMetadata("test/frames-v0", "test", "none", ObservationSpace((84, 84), "uint8"), Discrete(3))
    dataset = OfflineDataset.build(metadata, observations=frames, actions=rng.integers(0, 3, 60), rewards=rng.normal(0, 5, 60),
                                   next_observations=None, terminals=terminals, timeouts=np.zeros(60, dtype=bool),
                                   episode_starts=np.array([0, 30]))
    config = resolve_config("discrete-bcq", DiscreteBCQ, None, {"batch_size": 4, "hidden_dims": [32]}, "frames")
    sampler = make_sampler(dataset, torch.device("cpu"), config)
    assert isinstance(sampler, FrameStack) and sampler.observation_space == FRAMES.observation_space
    algo = DiscreteBCQ(config, Problem(sampler.observation_space, Discrete(3)), SeedStreams.for_seeds([0, 1]))
    batch = sampler.sample(algo.streams.sampling, config.batch_size)
    assert batch.observations.dtype == torch.uint8 and batch.observations.shape == (2, 4, 4, 84, 84)
    metrics = algo.update(batch, 1)
    assert all(torch.isfinite(value).all() for value in metrics.values())


def test_frames_of_another_size_are_refused_in_one_line() -> None:
    with pytest.raises(OffbenchError, match=r"the DQN conv trunk takes stacks of 84x84 frames \(k, 84, 84\), got uint8 observations of shape \(4, 64, 64\)"):
        make_bcq([0], Problem(ObservationSpace((4, 64, 64), "uint8"), Discrete(3)))


def test_reports_compare_each_run_with_the_baseline_of_its_kind_of_observations() -> None:
    atari = dataclasses.asdict(resolve_config("discrete-bcq", DiscreteBCQ, None, {}, "frames"))
    low_dim = dataclasses.asdict(resolve_config("discrete-bcq", DiscreteBCQ, None, {}, "vector"))
    runs = [("local/pong-tiny-v5", atari), ("local/cartpole-dqn-v1", low_dim), ("local/cartpole-dqn-v1", {**low_dim, "threshold": 0.1})]
    names = configuration_names("discrete-bcq", runs, ["frames", "vector", "vector"])
    assert names[:2] == [("discrete-bcq", ""), ("discrete-bcq", "")]  # each run equals its own baseline
    assert names[2] == ("discrete-bcq [threshold=0.1]", "threshold=0.1")
    assert recorded_observation_kind({"shape": [4, 84, 84], "dtype": "uint8"}) == "frames" and recorded_observation_kind(None) is None


def test_a_misspelt_observations_table_or_key_in_a_baseline_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    monkeypatch.setattr(offbench.config, "resource_dir", lambda name: baselines)
    (baselines / "discrete-bcq.toml").write_text("[config]\nlr = 1e-3\n\n[observations.frame]\nlr = 1e-4\n")
    with pytest.raises(OffbenchError, match=r"baselines/discrete-bcq.toml: unknown table \[observations.frame\] \(kinds: vector, frames\)"):
        resolve_config("discrete-bcq", DiscreteBCQ, None, {})
    (baselines / "discrete-bcq.toml").write_text("[config]\nlr = 1e-3\n\n[observations.frames]\nthreshhold = 0.2\n")
    with pytest.raises(OffbenchError, match=r"unknown config key 'threshhold' for discrete-bcq in \[observations.frames\]"):
        resolve_config("discrete-bcq", DiscreteBCQ, None, {})  # refused before a frames dataset is ever loaded
