"""DriftQL — Houssaini, Danesh, Abyaneh, Fujimoto, Lin & Meger, "Drift Q-Learning" (arXiv 2606.00350, 2026).

Spec: shared/specs/driftql.md; reference code: DT6A/driftql (`agents/driftql.py`, JAX, on the FQL codebase).
A one-step generator a = clip(f(s, z)), z ~ N(0, I), trained by
    L_pi = alpha * L_drift - mean_s (Q_1 + Q_2)/2 (s, clip(f(s, z))),
where L_drift pulls N generated actions per state towards a stop-gradient target ahat + eta * V, with the
drift V = (a+ - ahat_i) - sum_{k != i} w_ik (ahat_k - ahat_i): attraction to the dataset action a+ minus a
kernel-weighted (Laplace or Gaussian, softmax over k != i) repulsion among the generated actions. Two
critics with LayerNorm learn y = r + gamma * mask * AGG_j Qbar_j(s', clip(f(s', z'))) from the current
actor (there is no target actor). One Adam over all parameters; critic and actor step together.

Details kept from the reference code: hidden layers Linear -> GELU (tanh approximation, Flax's default) ->
LayerNorm (eps 1e-6) in the critic only; Glorot-uniform weights and zero biases; distances divided by
sqrt(A) with eps 1e-12 inside the square root; the drift loss averaged over states, samples and action
dimensions; dataset actions clipped to +-(1 - 1e-5); no state normalisation; acting samples a fresh z.
Fixed at the released values, so not configurable: drift batch = batch, no drift or Q-loss normalisation.

Deviations (also in baselines/driftql.toml [deviations]): seeds are members of batched networks (same
optimisation as separate processes); evaluation noise comes from the seed's evaluation stream
(offbench.seeding) so evaluating does not change training; actions are clipped to +-max_action
(the paper's box is [-1, 1]); the reference's replacement of NaN actions by 0 is not copied; the self pair
is masked with a -inf logit and distances come from differences (same weights up to rounding). Protocol
matters (one budget per algorithm, time-outs kept, no AntMaze reward shift) are the shared protocol's.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from offbench.algos.base import AlgorithmConfig, Batch, OfflineAlgorithm, Problem
from offbench.algos.nets import EnsembleMLP, per_seed_mean, polyak_update, seeded_normal
from offbench.config import Count, Fraction, LearningRate, NonNegative, Positive, Range, Widths
from offbench.errors import OffbenchError
from offbench.seeding import SeedStreams

DRIFT_EPS = 1e-12  # inside the square root of the pairwise distances (`drift_eps`)
ACTION_CLIP_EPS = 1e-5  # dataset actions are clipped to +-(1 - eps) * max_action (FQL's `action_clip_eps`)

KERNEL_LOGITS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "laplace": lambda distance, temp: -distance / temp,
    "gaussian": lambda distance, temp: -distance.square() / (2 * temp * temp),
}
AGGREGATES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "min": lambda q: q.min(dim=0).values,
    "mean": lambda q: q.mean(dim=0),
}


@dataclass
class DriftQLConfig(AlgorithmConfig):
    lr: LearningRate = 3e-4
    batch_size: Count = 256
    discount: Fraction = 0.99
    tau: Fraction = 0.005
    alpha: NonNegative = 10.0  # weight of the drift loss
    kernel: str = "laplace"  # or "gaussian"
    drift_temp: Positive = 0.2  # kernel temperature
    drift_ngen: Annotated[int, Range(2)] = 32  # generated actions per state (repulsion needs another sample)
    drift_eta: NonNegative = 1.0  # drift step size
    noise_dim: Annotated[int, Range(0)] = 0  # 0: the action dimension
    q_agg: str = "min"  # over the two target critics in the TD target: "min" or "mean"
    q_agg_actor: str = "mean"  # over the two critics in the actor's Q term
    hidden_dims: Widths = field(default_factory=lambda: [512, 512, 512, 512])
    normalize_states: bool = False


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """Flax's `nn.gelu` (approximate=True), the reference code's activation."""
    return F.gelu(x, approximate="tanh")


def drift_field(generated: torch.Tensor, positive: torch.Tensor, temp: float, kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Attraction V+ and repulsion V- for N generated actions (..., N, A) and one dataset action (..., A).

    V+_i = a+ - ahat_i;  V-_i = sum_{k != i} w_ik (ahat_k - ahat_i), w_i. = softmax_k(logit(d_ik)),
    d_ik = ||ahat_i - ahat_k|| / sqrt(A).
    """
    num, action_dim = generated.shape[-2:]
    attraction = positive.unsqueeze(-2) - generated
    offsets = generated.unsqueeze(-3) - generated.unsqueeze(-2)  # [..., i, k, :] = ahat_k - ahat_i
    distance = torch.sqrt(offsets.square().sum(dim=-1) + DRIFT_EPS) / math.sqrt(action_dim)
    self_pair = torch.eye(num, dtype=torch.bool, device=generated.device)
    weights = torch.softmax(KERNEL_LOGITS[kernel](distance, temp).masked_fill(self_pair, -math.inf), dim=-1)
    repulsion = (weights.unsqueeze(-1) * offsets).sum(dim=-2)
    return attraction, repulsion


class DriftQL(OfflineAlgorithm):
    config_class = DriftQLConfig

    def __init__(self, config: DriftQLConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        _check(config)
        S, obs_dim, act_dim = self.num_seeds, problem.observation_dim, problem.action_dim
        self.noise_dim = config.noise_dim or act_dim
        self.actor = EnsembleMLP(S, obs_dim + self.noise_dim, config.hidden_dims, act_dim, gelu_tanh, glorot_init=True)
        self.critic = EnsembleMLP(2 * S, obs_dim + act_dim, config.hidden_dims, 1, gelu_tanh, layer_norm=True, glorot_init=True)
        self.actor.reset_parameters(streams.init)
        self.critic.reset_parameters(streams.init + streams.init)  # twins: member q*S + s
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizers = {"model": torch.optim.Adam([*self.actor.parameters(), *self.critic.parameters()], lr=config.lr)}

    # ---- networks -------------------------------------------------------------------------------

    def policy(self, observations: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """clip(f(s, z)) with a fresh z ~ N(0, I) per row, drawn from `generators`: (S, n, obs) -> (S, n, A)."""
        noise = seeded_normal(generators, (observations.shape[1], self.noise_dim))
        max_action = self.problem.max_action
        return self.actor(torch.cat([observations, noise], dim=-1)).clamp(-max_action, max_action)

    def q_values(self, observations: torch.Tensor, actions: torch.Tensor, critic: EnsembleMLP | None = None) -> torch.Tensor:
        """Both critics: (2, S, B)."""
        inputs = torch.cat([observations, actions], dim=-1).repeat(2, 1, 1)
        return (self.critic if critic is None else critic)(inputs).view(2, self.num_seeds, -1)

    # ---- losses ---------------------------------------------------------------------------------

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + gamma * not_done * AGG_j Qbar_j(s', clip(f(s', z'))), current actor."""
        next_actions = self.policy(batch.next_observations, self.streams.noise)
        target_q = AGGREGATES[self.config.q_agg](self.q_values(batch.next_observations, next_actions, self.critic_target))
        return batch.rewards + self.config.discount * batch.not_dones * target_q

    def critic_loss(self, batch: Batch, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-seed mean over both critics and the batch of (Q_j(s, a) - y)^2: shape (S,); also the mean Q."""
        q = self.q_values(batch.observations, batch.actions)
        return ((q - target.unsqueeze(0)) ** 2).mean(dim=(0, 2)), q.mean(dim=(0, 2))

    @torch.no_grad()
    def drifted_target(self, generated: torch.Tensor, dataset_actions: torch.Tensor) -> torch.Tensor:
        """clip(ahat + eta * (V+ - V-)), outside the graph: (S, B, N, A)."""
        cfg, max_action = self.config, self.problem.max_action
        attraction, repulsion = drift_field(generated, dataset_actions.clamp(-max_action, max_action), cfg.drift_temp, cfg.kernel)
        return (generated + cfg.drift_eta * (attraction - repulsion)).clamp(-max_action, max_action)

    def drift_loss(self, observations: torch.Tensor, dataset_actions: torch.Tensor) -> torch.Tensor:
        """Per-seed mean over states, samples and action dims of (ahat - stopgrad(target))^2: shape (S,)."""
        S, B, _ = observations.shape
        N = self.config.drift_ngen
        generated = self.policy(observations.repeat_interleave(N, dim=1), self.streams.noise).view(S, B, N, -1)
        return per_seed_mean((generated - self.drifted_target(generated, dataset_actions)) ** 2)

    def actor_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-seed alpha * L_drift - mean AGG_actor Q_j(s, clip(f(s, z))): shape (S,); also L_drift."""
        drift = self.drift_loss(batch.observations, batch.actions)
        q = AGGREGATES[self.config.q_agg_actor](self.q_values(batch.observations, self.policy(batch.observations, self.streams.noise)))
        return self.config.alpha * drift - q.mean(dim=1), drift

    # ---- update and act -------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        bound = (1 - ACTION_CLIP_EPS) * self.problem.max_action
        batch = dataclasses.replace(batch, actions=batch.actions.clamp(-bound, bound))
        target = self.td_target(batch)
        critic_loss, q_mean = self.critic_loss(batch, target)
        actor_loss, drift_loss = self.actor_loss(batch)
        optimizer = self.optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        critic_loss.sum().backward(inputs=list(self.critic.parameters()))
        actor_loss.sum().backward(inputs=list(self.actor.parameters()))  # the Q term moves only the actor
        optimizer.step()
        polyak_update(self.critic_target, self.critic, self.config.tau)
        metrics = {"critic_loss": critic_loss, "q_mean": q_mean, "actor_loss": actor_loss, "drift_loss": drift_loss}
        return {name: value.detach() for name, value in metrics.items()}

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        """Stochastic, as in the paper: a fresh z per step from each seed's evaluation stream."""
        return self.policy(observations, self.streams.eval)

    def policy_module(self, index: int) -> nn.Module:
        return DriftQLPolicy(self, index)


class DriftQLPolicy(nn.Module):
    """One seed's `DriftQL.act` alone, with z given: forward(observations (1, N, obs), noise z (1, N, noise_dim)) -> clip(f(s, z))."""

    def __init__(self, driftql: DriftQL, index: int) -> None:
        super().__init__()
        self.actor, self.max_action, self.noise_dim = driftql.actor.member(index), driftql.problem.max_action, driftql.noise_dim

    def forward(self, observations: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.actor(torch.cat([observations, noise], dim=-1)).clamp(-self.max_action, self.max_action)


def _check(config: DriftQLConfig) -> None:
    choices = {"kernel": KERNEL_LOGITS, "q_agg": AGGREGATES, "q_agg_actor": AGGREGATES}
    for key, valid in choices.items():
        value = getattr(config, key)
        if value not in valid:
            raise OffbenchError(f"driftql: unknown {key} '{value}'", f"choose one of: {', '.join(valid)}")

