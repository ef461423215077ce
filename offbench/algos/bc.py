"""BC — behaviour cloning: the deterministic TD3+BC actor trained with the behaviour-cloning term only.

Spec: none of its own; it is the reference row every table needs. It is TD3+BC (shared/specs/td3bc.md)
with the critic and the Q term removed: a 2x256 ReLU MLP with a max_action * tanh output, trained by
the MSE to the dataset actions, Adam 3e-4, batch 256. State normalisation (mean/std over the dataset,
std + 1e-3) is applied by the sampler when `normalize_states` is set. Each seed's actor is initialised
from its generator exactly as TD3+BC's actor is, so BC and TD3+BC start from the same policy.

Deviations (also in baselines/bc.toml [deviations]): none. Seeds are trained as members of batched
networks (independent parameters, independent Adam moments, losses summed over seeds), which is the same
optimisation as separate processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from offbench.algos.base import AlgorithmConfig, Batch, OfflineAlgorithm, Problem
from offbench.algos.nets import EnsembleMLP, TanhPolicy, per_seed_mean
from offbench.config import Count, LearningRate, Widths
from offbench.seeding import SeedStreams


@dataclass
class BCConfig(AlgorithmConfig):
    actor_lr: LearningRate = 3e-4
    batch_size: Count = 256
    hidden_dims: Widths = field(default_factory=lambda: [256, 256])
    normalize_states: bool = True


class BC(OfflineAlgorithm):
    config_class = BCConfig

    def __init__(self, config: BCConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        S, obs_dim, act_dim = self.num_seeds, problem.observation_dim, problem.action_dim
        self.actor = EnsembleMLP(S, obs_dim, config.hidden_dims, act_dim)
        self.actor.reset_parameters(streams.init)
        self.optimizers = {"actor": torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)}

    # ---- networks -------------------------------------------------------------------------------

    def policy(self, observations: torch.Tensor) -> torch.Tensor:
        return self.problem.max_action * torch.tanh(self.actor(observations))

    # ---- losses ---------------------------------------------------------------------------------

    def actor_loss(self, batch: Batch) -> torch.Tensor:
        """Per-seed mean over batch and action dims of (pi(s) - a)^2: shape (S,)."""
        return per_seed_mean((self.policy(batch.observations) - batch.actions) ** 2)

    # ---- update and act -------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        actor_loss = self.actor_loss(batch)
        self.optimizer_step("actor", actor_loss.sum())
        return {"actor_loss": actor_loss.detach()}

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        return self.policy(observations)

    def policy_module(self, index: int) -> nn.Module:
        return TanhPolicy(self.actor.member(index), self.problem.max_action)

    # ---- for algorithms built on this one -------------------------------------------------------

    def trained_networks(self) -> dict[str, tuple[nn.Module, nn.Module | None]]:
        return {"actor": (self.actor, None)}

    def all_losses(self, batch: Batch) -> torch.Tensor:
        return self.actor_loss(batch).sum()
