"""TD3+BC — Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning" (NeurIPS 2021).

Spec: shared/specs/td3bc.md; reference code: sfujim/TD3_BC. TD3 with a behaviour-cloning term in the
actor loss, whose Q term is scaled by lambda = alpha / mean|Q|. State normalisation (mean/std over the
dataset, std + 1e-3) is applied by the sampler (offbench.data.sampling) when `normalize_states` is set.

Deviations (also in baselines/td3bc.toml [deviations]): none in the mathematics. Seeds are trained as
members of batched networks (independent parameters, independent Adam moments, losses summed over
seeds), which is the same optimisation as separate processes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from offbench.algos.base import AlgorithmConfig, Batch, OfflineAlgorithm, Problem
from offbench.algos.nets import EnsembleMLP, TanhPolicy, per_seed_mean, polyak_update, seeded_normal
from offbench.config import Count, Fraction, LearningRate, NonNegative, Widths
from offbench.seeding import SeedStreams


@dataclass
class TD3BCConfig(AlgorithmConfig):
    actor_lr: LearningRate = 3e-4
    critic_lr: LearningRate = 3e-4
    batch_size: Count = 256
    discount: Fraction = 0.99
    tau: Fraction = 0.005
    policy_noise: NonNegative = 0.2  # x max_action
    noise_clip: NonNegative = 0.5  # x max_action
    policy_freq: Count = 2
    alpha: NonNegative = 2.5
    hidden_dims: Widths = field(default_factory=lambda: [256, 256])
    normalize_states: bool = True


class TD3BC(OfflineAlgorithm):
    config_class = TD3BCConfig

    def __init__(self, config: TD3BCConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        S, obs_dim, act_dim = self.num_seeds, problem.observation_dim, problem.action_dim
        self.actor = EnsembleMLP(S, obs_dim, config.hidden_dims, act_dim)
        self.critic = EnsembleMLP(2 * S, obs_dim + act_dim, config.hidden_dims, 1)  # twins: member q*S + s
        self.actor.reset_parameters(streams.init)
        self.critic.reset_parameters(streams.init + streams.init)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizers = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr),
        }

    # ---- networks -------------------------------------------------------------------------------

    def policy(self, observations: torch.Tensor, actor: EnsembleMLP | None = None) -> torch.Tensor:
        return self.problem.max_action * torch.tanh((self.actor if actor is None else actor)(observations))

    def q_values(self, observations: torch.Tensor, actions: torch.Tensor, critic: EnsembleMLP | None = None) -> torch.Tensor:
        """Both twins: (2, S, B)."""
        inputs = torch.cat([observations, actions], dim=-1).repeat(2, 1, 1)
        return (self.critic if critic is None else critic)(inputs).view(2, self.num_seeds, -1)

    def q1(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The first twin only: (S, B)."""
        return self.critic(torch.cat([observations, actions], dim=-1), slice(0, self.num_seeds)).squeeze(-1)

    # ---- losses ---------------------------------------------------------------------------------

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + gamma * not_done * min_i Q_i'(s', clip(pi'(s') + clip(eps, -c, c), -max_a, max_a))."""
        cfg, max_action = self.config, self.problem.max_action
        noise = seeded_normal(self.streams.noise, batch.actions.shape[1:]) * cfg.policy_noise * max_action
        noise = noise.clamp(-cfg.noise_clip * max_action, cfg.noise_clip * max_action)
        next_actions = (self.policy(batch.next_observations, self.actor_target) + noise).clamp(-max_action, max_action)
        target_q = self.q_values(batch.next_observations, next_actions, self.critic_target).min(dim=0).values
        return batch.rewards + cfg.discount * batch.not_dones * target_q

    def critic_loss(self, batch: Batch, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-seed MSE(Q1, y) + MSE(Q2, y): shape (S,); also the mean Q1 per seed."""
        q = self.q_values(batch.observations, batch.actions)
        per_seed = ((q - target.unsqueeze(0)) ** 2).mean(dim=2).sum(dim=0)
        return per_seed, per_seed_mean(q[0])

    def actor_loss(self, batch: Batch) -> torch.Tensor:
        """Per-seed -lambda * mean Q1(s, pi(s)) + mean (pi(s) - a)^2, lambda = alpha / mean|Q1| (detached)."""
        pi = self.policy(batch.observations)
        q = self.q1(batch.observations, pi)
        lmbda = self.config.alpha / q.abs().mean(dim=1).detach()
        return -lmbda * q.mean(dim=1) + per_seed_mean((pi - batch.actions) ** 2)

    # ---- update and act -------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        target = self.td_target(batch)
        critic_loss, q_mean = self.critic_loss(batch, target)
        self.optimizer_step("critic", critic_loss.sum())
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q_mean.detach()}
        if step % self.config.policy_freq == 0:
            actor_loss = self.actor_loss(batch)
            self.optimizer_step("actor", actor_loss.sum())
            polyak_update(self.actor_target, self.actor, self.config.tau)
            polyak_update(self.critic_target, self.critic, self.config.tau)
            metrics["actor_loss"] = actor_loss.detach()
        return metrics

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        return self.policy(observations)

    def policy_module(self, index: int) -> nn.Module:
        return TanhPolicy(self.actor.member(index), self.problem.max_action)

    # ---- for algorithms built on this one -------------------------------------------------------

    def trained_networks(self) -> dict[str, tuple[nn.Module, nn.Module | None]]:
        return {"actor": (self.actor, self.actor_target), "critic": (self.critic, self.critic_target)}

    def all_losses(self, batch: Batch) -> torch.Tensor:
        """Critic and actor losses on one batch, no policy delay, summed over seeds."""
        return self.critic_loss(batch, self.td_target(batch))[0].sum() + self.actor_loss(batch).sum()
