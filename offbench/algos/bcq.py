"""BCQ — Fujimoto, Meger & Precup, "Off-Policy Deep Reinforcement Learning without Exploration" (ICML 2019).

Spec: shared/specs/bcq.md; reference code: sfujim/BCQ (continuous_BCQ). A conditional VAE models the
dataset's actions; a perturbation model xi nudges decoded actions by at most Phi * max_action; twin
critics learn from a soft clipped double-Q target maximised over n decoded and perturbed actions per
next state; acting returns the argmax-Q1 action among 100 such candidates. No state normalisation.

Candidates are an extra batch dimension on the seed axis: n candidates for each of B states are
(S, B * n, .) tensors, candidate j of state i at row i * n + j, as `repeat_interleave` in the code.

Deviations (also in baselines/bcq.toml [deviations]): none in the mathematics. The encoder's mean and
log_std heads are one 750 -> 2 * latent layer (the same function and init as two 750 -> latent layers).
The actor's decoder samples are drawn without a graph (the code backpropagates into the VAE but discards
those gradients). Acting draws its latents from the seed's evaluation stream (offbench.seeding), so
evaluating never changes a seed's training draws; a seed's standalone policy (`BCQPolicy`, what
`offbench export` writes) takes those latents as an input, so it is deterministic given its inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from offbench.algos.base import AlgorithmConfig, Batch, OfflineAlgorithm, Problem
from offbench.algos.nets import EnsembleMLP, per_seed_mean, polyak_update, seeded_normal
from offbench.config import Count, Fraction, LearningRate, NonNegative, Positive, Samples, Widths
from offbench.seeding import SeedStreams

LOG_STD_MIN, LOG_STD_MAX = -4.0, 15.0  # the encoder's log_std clamp, "for numerical stability"


@dataclass
class BCQConfig(AlgorithmConfig):
    actor_lr: LearningRate = 1e-3
    critic_lr: LearningRate = 1e-3
    vae_lr: LearningRate = 1e-3
    batch_size: Count = 100
    discount: Fraction = 0.99
    tau: Fraction = 0.005
    lmbda: Fraction = 0.75  # soft clipped double Q: lmbda * min + (1 - lmbda) * max
    phi: NonNegative = 0.05  # max perturbation, x max_action
    target_samples: Samples = 10  # candidates per next state in the critic target
    act_samples: Samples = 100  # candidates per state when acting
    kl_weight: NonNegative = 0.5
    latent_clip: Positive = 0.5  # z ~ N(0, I) clipped to [-latent_clip, latent_clip] when decoding without an encoder
    hidden_dims: Widths = field(default_factory=lambda: [400, 300])  # perturbation model and critics
    vae_hidden_dims: Widths = field(default_factory=lambda: [750, 750])
    normalize_states: bool = False


class BCQ(OfflineAlgorithm):
    config_class = BCQConfig

    def __init__(self, config: BCQConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        S, obs_dim, act_dim = self.num_seeds, problem.observation_dim, problem.action_dim
        self.latent_dim = 2 * act_dim
        self.actor = EnsembleMLP(S, obs_dim + act_dim, config.hidden_dims, act_dim)  # the perturbation model xi
        self.critic = EnsembleMLP(2 * S, obs_dim + act_dim, config.hidden_dims, 1)  # twins: member q*S + s
        self.encoder = EnsembleMLP(S, obs_dim + act_dim, config.vae_hidden_dims, 2 * self.latent_dim)  # mean, log_std
        self.decoder = EnsembleMLP(S, obs_dim + self.latent_dim, config.vae_hidden_dims, act_dim)
        self.actor.reset_parameters(streams.init)
        self.critic.reset_parameters(streams.init + streams.init)
        self.encoder.reset_parameters(streams.init)
        self.decoder.reset_parameters(streams.init)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizers = {
            "vae": torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=config.vae_lr),
            "actor": torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr),
        }

    # ---- networks -------------------------------------------------------------------------------

    def encode(self, observations: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clamped log_std of q(z | s, a): each (S, B, latent_dim)."""
        mean, log_std = self.encoder(torch.cat([observations, actions], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def decode(self, observations: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """D(s, z) = max_action * tanh(.): (S, B, action_dim)."""
        return self.problem.max_action * torch.tanh(self.decoder(torch.cat([observations, latents], dim=-1)))

    def prior_latents(self, generators: list[torch.Generator], num: int) -> torch.Tensor:
        """z ~ N(0, I) clipped to [-latent_clip, latent_clip]: (S, num, latent_dim), seed s from generators[s]."""
        clip = self.config.latent_clip
        return seeded_normal(generators, (num, self.latent_dim)).clamp(-clip, clip)

    def perturb(self, observations: torch.Tensor, actions: torch.Tensor, actor: EnsembleMLP | None = None) -> torch.Tensor:
        """clip(a + Phi * max_action * tanh(xi(s, a)), -max_action, max_action)."""
        max_action = self.problem.max_action
        xi = self.config.phi * max_action * torch.tanh((self.actor if actor is None else actor)(torch.cat([observations, actions], dim=-1)))
        return (actions + xi).clamp(-max_action, max_action)

    def candidates(self, observations: torch.Tensor, generators: list[torch.Generator], actor: EnsembleMLP | None = None) -> torch.Tensor:
        """Decoded and perturbed actions, one per row of `observations` (S, M, obs_dim): (S, M, action_dim)."""
        return self.perturb(observations, self.decode(observations, self.prior_latents(generators, observations.shape[1])), actor)

    def q_values(self, observations: torch.Tensor, actions: torch.Tensor, critic: EnsembleMLP | None = None) -> torch.Tensor:
        """Both twins: (2, S, B)."""
        inputs = torch.cat([observations, actions], dim=-1).repeat(2, 1, 1)
        return (self.critic if critic is None else critic)(inputs).view(2, self.num_seeds, -1)

    def q1(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The first twin only: (S, B)."""
        return self.critic(torch.cat([observations, actions], dim=-1), slice(0, self.num_seeds)).squeeze(-1)

    # ---- losses ---------------------------------------------------------------------------------

    def vae_loss(self, batch: Batch) -> torch.Tensor:
        """Per-seed MSE(D(s, mu + sigma * eps), a) + kl_weight * KL, KL = -0.5 mean(1 + log sigma^2 - mu^2 - sigma^2)."""
        mean, log_std = self.encode(batch.observations, batch.actions)
        std = log_std.exp()
        latents = mean + std * seeded_normal(self.streams.noise, mean.shape[1:])
        recon = per_seed_mean((self.decode(batch.observations, latents) - batch.actions) ** 2)
        kl = -0.5 * per_seed_mean(1 + 2 * log_std - mean**2 - std**2)
        return recon + self.config.kl_weight * kl

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + gamma * not_done * max_j [lmbda * min_i + (1 - lmbda) * max_i] Q_i'(s', xi'(s', D(s', z_j)))."""
        cfg, n = self.config, self.config.target_samples
        next_observations = batch.next_observations.repeat_interleave(n, dim=1)  # (S, B * n, obs_dim)
        actions = self.candidates(next_observations, self.streams.noise, self.actor_target)
        q = self.q_values(next_observations, actions, self.critic_target)
        soft_q = cfg.lmbda * q.min(dim=0).values + (1 - cfg.lmbda) * q.max(dim=0).values
        best_q = soft_q.view(self.num_seeds, -1, n).max(dim=2).values
        return batch.rewards + cfg.discount * batch.not_dones * best_q

    def critic_loss(self, batch: Batch, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-seed MSE(Q1, y) + MSE(Q2, y): shape (S,); also the mean Q1 per seed."""
        q = self.q_values(batch.observations, batch.actions)
        per_seed = ((q - target.unsqueeze(0)) ** 2).mean(dim=2).sum(dim=0)
        return per_seed, per_seed_mean(q[0])

    def actor_loss(self, batch: Batch) -> torch.Tensor:
        """Per-seed -mean Q1(s, xi(s, D(s, z))), z from the clipped prior."""
        with torch.no_grad():
            sampled = self.decode(batch.observations, self.prior_latents(self.streams.noise, batch.observations.shape[1]))
        return -self.q1(batch.observations, self.perturb(batch.observations, sampled)).mean(dim=1)

    # ---- update and act -------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        vae_loss = self.vae_loss(batch)
        self.optimizer_step("vae", vae_loss.sum())
        target = self.td_target(batch)
        critic_loss, q_mean = self.critic_loss(batch, target)
        self.optimizer_step("critic", critic_loss.sum())
        actor_loss = self.actor_loss(batch)
        self.optimizer_step("actor", actor_loss.sum())
        polyak_update(self.actor_target, self.actor, self.config.tau)
        polyak_update(self.critic_target, self.critic, self.config.tau)
        return {"vae_loss": vae_loss.detach(), "critic_loss": critic_loss.detach(), "q_mean": q_mean.detach(), "actor_loss": actor_loss.detach()}

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        """The argmax-Q1 action among act_samples decoded and perturbed candidates per state."""
        S, N, n = observations.shape[0], observations.shape[1], self.config.act_samples
        repeated = observations.repeat_interleave(n, dim=1)  # (S, N * n, obs_dim)
        actions = self.candidates(repeated, self.streams.eval).view(S, N, n, -1)
        best = self.q1(repeated, actions.view(S, N * n, -1)).view(S, N, n).argmax(dim=2)
        return actions.gather(2, best[:, :, None, None].expand(S, N, 1, actions.shape[-1])).squeeze(2)

    def policy_module(self, index: int) -> nn.Module:
        return BCQPolicy(self, index)


class BCQPolicy(nn.Module):
    """One seed's `BCQ.act` alone, with the act_samples prior latents per state given as `noise`.

    `forward(observations (1, N, obs_dim), noise (1, N, act_samples * latent_dim) of N(0, I) draws)`: the
    noise of state i, read as (act_samples, latent_dim), is its candidates' latents (clipped here), which
    is how `act` reads one (N * act_samples, latent_dim) draw. Decoder, perturbation model and first critic.
    """

    def __init__(self, bcq: BCQ, index: int) -> None:
        super().__init__()
        cfg = bcq.config
        self.decoder, self.actor, self.q1 = bcq.decoder.member(index), bcq.actor.member(index), bcq.critic.member(index)  # twin 1: member s
        self.max_action, self.phi, self.latent_clip = bcq.problem.max_action, cfg.phi, cfg.latent_clip
        self.samples, self.latent_dim = cfg.act_samples, bcq.latent_dim
        self.noise_dim = cfg.act_samples * bcq.latent_dim

    def forward(self, observations: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        N, n, max_action = observations.shape[1], self.samples, self.max_action
        repeated = observations.repeat_interleave(n, dim=1)  # (1, N * n, obs_dim)
        latents = noise.reshape(1, N * n, self.latent_dim).clamp(-self.latent_clip, self.latent_clip)
        decoded = max_action * torch.tanh(self.decoder(torch.cat([repeated, latents], dim=-1)))
        xi = self.phi * max_action * torch.tanh(self.actor(torch.cat([repeated, decoded], dim=-1)))
        actions = (decoded + xi).clamp(-max_action, max_action)
        best = self.q1(torch.cat([repeated, actions], dim=-1)).view(1, N, n).argmax(dim=2)
        actions = actions.view(1, N, n, -1)
        return actions.gather(2, best[:, :, None, None].expand(1, N, 1, actions.shape[-1])).squeeze(2)
