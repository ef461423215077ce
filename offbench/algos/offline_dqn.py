"""Offline DQN — DQN trained on a fixed batch, the control of Fujimoto, Conti, Ghavamzadeh & Pineau,
"Benchmarking Batch Deep Reinforcement Learning Algorithms" (NeurIPS 2019 Deep RL Workshop, arXiv 1910.01708).

Spec: shared/specs/discrete_bcq.md (offline DQN is discrete BCQ without the action filter and the
imitation head); reference code: sfujim/BCQ (discrete_BCQ/DQN.py, main.py). A Q network learns from the
fixed batch with DQN's target, the max over the target network's values (DQN.py; no double Q):

    y = r + gamma * not_done * max_a Q'(s', a)                                   (r clipped to [-1, 1] on Atari)
    L = Huber(Q(s, a), y)

Networks (`offbench.algos.nets.q_trunk`): frame stacks get the DQN conv trunk and a Q head
(3136 -> 512 -> |A|); vectors get one MLP (obs -> 256 -> 256 -> |A|). One Adam covers trunk and head.
The target network copies the whole network: hard copies every `target_update_every` steps (Atari) or
Polyak with tau every step (low-dim). Evaluation acts epsilon-greedily (eval_eps: 0.001 Atari, 0
low-dim) around the argmax, the random draws coming from the seed's evaluation stream.

Deviations (also in baselines/offline-dqn.toml [deviations]): none in the mathematics. Seeds are trained
as members of batched networks (grouped convolutions, batched matmuls: independent parameters and Adam
moments, losses summed over seeds). Atari and low-dim settings are chosen by the dataset's observations
(the code chooses by env id).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from offbench.algos.base import AlgorithmConfig, Batch, OfflineAlgorithm, Problem
from offbench.algos.nets import EnsembleMLP, epsilon_greedy, hard_update, per_seed_mean, polyak_update, q_trunk, seeded_normal
from offbench.config import Count, Depth, Fraction, LearningRate, Positive, Widths
from offbench.errors import OffbenchError
from offbench.seeding import SeedStreams

TARGET_UPDATES = ("polyak", "hard")


@dataclass
class OfflineDQNConfig(AlgorithmConfig):
    lr: LearningRate = 3e-4
    adam_eps: Positive = 1e-8
    batch_size: Count = 64
    discount: Fraction = 0.99
    target_update: str = "polyak"  # "polyak" (every step, tau) or "hard" (a copy every target_update_every steps)
    tau: Fraction = 0.005
    target_update_every: Count = 8000
    clip_rewards: bool = False  # rewards clipped to [-1, 1] in the target (learning only; scores are unclipped)
    eval_eps: Fraction = 0.0  # probability of a uniform action when evaluating
    hidden_dims: Widths = field(default_factory=lambda: [256, 256])  # the head's hidden widths
    frame_stack: Depth = 4  # frames per observation (read by the frame-stack sampler)
    normalize_states: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_update not in TARGET_UPDATES:
            raise OffbenchError(f"config key 'target_update' must be one of {', '.join(TARGET_UPDATES)}, got {self.target_update!r}")


class QNetwork(nn.Module):
    """Q values for S seeds: (S, B, *obs_shape) -> (S, B, A).

    The DQN conv trunk and a head 3136 -> hidden -> A for frame stacks, one MLP for vectors.
    """

    def __init__(self, trunk: nn.Module, q: EnsembleMLP) -> None:
        super().__init__()
        self.trunk, self.q = trunk, q

    @classmethod
    def build(cls, members: int, problem: Problem, hidden_dims: list[int]) -> QNetwork:
        trunk, features = q_trunk(members, problem.observation_space)
        n = problem.action_space.n
        return cls(trunk, EnsembleMLP(members, features, hidden_dims, n))

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        self.trunk.reset_parameters(generators)
        self.q.reset_parameters(generators)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.q(self.trunk(observations))

    def member(self, index: int) -> QNetwork:
        """Seed `index`'s network alone (one member, CPU, no gradients)."""
        return QNetwork(self.trunk.member(index), self.q.member(index)).requires_grad_(False)


class OfflineDQN(OfflineAlgorithm):
    config_class = OfflineDQNConfig
    action_kinds = ("discrete",)
    observation_kinds = ("vector", "frames")
    needs_symmetric_box = False

    def __init__(self, config: OfflineDQNConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        self.network = QNetwork.build(self.num_seeds, problem, config.hidden_dims)
        self.network.reset_parameters(streams.init)
        self.target = copy.deepcopy(self.network).requires_grad_(False)
        self.optimizers = {"network": torch.optim.Adam(self.network.parameters(), lr=config.lr, eps=config.adam_eps)}

    # ---- losses ---------------------------------------------------------------------------------

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + gamma * not_done * max_a Q'(s', a): (S, B)."""
        cfg = self.config
        target_q = self.target(batch.next_observations).max(dim=2).values
        rewards = batch.rewards.clamp(-1.0, 1.0) if cfg.clip_rewards else batch.rewards
        return rewards + cfg.discount * batch.not_dones * target_q

    def losses(self, batch: Batch, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-seed Huber(Q(s, a), y), (S,); also mean Q(s, a)."""
        q = self.network(batch.observations)
        actions = batch.actions.unsqueeze(2)
        q_taken = q.gather(2, actions).squeeze(2)
        return {
            "q_loss": per_seed_mean(F.smooth_l1_loss(q_taken, target, reduction="none")),
            "q_mean": per_seed_mean(q_taken).detach(),
        }

    # ---- update and act -------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        losses = self.losses(batch, self.td_target(batch))
        loss = losses["q_loss"]
        self.optimizer_step("network", loss.sum())
        if cfg.target_update == "polyak":
            polyak_update(self.target, self.network, cfg.tau)
        elif step % cfg.target_update_every == 0:
            hard_update(self.target, self.network)
        return {"loss": loss.detach(), **{name: value.detach() for name, value in losses.items()}}

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        """The argmax, epsilon-greedy with eval_eps (draws (S, N, 2) normals from streams.eval when eval_eps > 0)."""
        greedy = self.network(observations).argmax(dim=-1)
        if self.config.eval_eps == 0:
            return greedy
        noise = seeded_normal(self.streams.eval, (observations.shape[1], 2))
        return epsilon_greedy(greedy, noise, self.problem.action_space.n, self.config.eval_eps)

    def policy_module(self, index: int) -> nn.Module:
        return OfflineDQNPolicy(self, index)


class OfflineDQNPolicy(nn.Module):
    """One seed's `OfflineDQN.act` alone: `forward(observations (1, N, *obs_shape), noise (1, N, 2) or None) -> (1, N)`.

    `noise_dim` is 2 when eval_eps > 0 (the normals `act` draws per state), else 0.
    """

    def __init__(self, dqn: OfflineDQN, index: int) -> None:
        super().__init__()
        self.network = dqn.network.member(index)
        self.eval_eps, self.num_actions = dqn.config.eval_eps, dqn.problem.action_space.n
        self.noise_dim = 2 if self.eval_eps > 0 else 0

    def forward(self, observations: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        greedy = self.network(observations).argmax(dim=-1)
        return greedy if noise is None else epsilon_greedy(greedy, noise, self.num_actions, self.eval_eps)
