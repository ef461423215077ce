"""Discrete BCQ — Fujimoto, Conti, Ghavamzadeh & Pineau, "Benchmarking Batch Deep Reinforcement Learning
Algorithms" (NeurIPS 2019 Deep RL Workshop, arXiv 1910.01708).

Spec: shared/specs/discrete_bcq.md; reference code: sfujim/BCQ (discrete_BCQ/discrete_BCQ.py, main.py).
A Q network and an imitation network G(a|s) learn from the fixed batch. The BCQ action filter allows the
actions with G(a|s) / max_a' G(a'|s) > threshold (0.3); acting and the target both take the argmax of Q
over allowed actions, written as argmax(mask * Q + (1 - mask) * -1e8) as in the code. The next action
comes from the online network, its value from the target network:

    y = r + gamma * not_done * Q'(s', argmax_{a allowed at s'} Q(s', a))        (r clipped to [-1, 1] on Atari)
    L = Huber(Q(s, a), y) + NLL(log G(.|s), a) + 0.01 * mean(logits^2)

Networks (`offbench.algos.nets.q_trunk`): frame stacks get Conv_Q, the DQN conv trunk shared by a Q
head and an imitation head (3136 -> 512 -> |A| each); vectors get FC_Q, two separate MLPs
(obs -> 256 -> 256 -> |A|). One Adam covers trunk and heads. The target network copies the whole
network: hard copies every `target_update_every` steps (Atari) or Polyak with tau every step (low-dim).
Evaluation acts epsilon-greedily (eval_eps: 0.001 Atari, 0 low-dim) around the filtered argmax, the
random draws coming from the seed's evaluation stream.

Deviations (also in baselines/discrete-bcq.toml [deviations]): none in the mathematics. Seeds are trained
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
from offbench.config import Count, Depth, Fraction, LearningRate, NonNegative, Positive, Widths
from offbench.errors import OffbenchError
from offbench.seeding import SeedStreams

TARGET_UPDATES = ("polyak", "hard")
MASKED_Q = -1e8  # the value a filtered-out action takes in the argmax (the code's "large negative number")


@dataclass
class DiscreteBCQConfig(AlgorithmConfig):
    lr: LearningRate = 3e-4
    adam_eps: Positive = 1e-8
    batch_size: Count = 64
    discount: Fraction = 0.99
    threshold: Fraction = 0.3  # BCQ_threshold: allowed iff G(a|s) / max G(.|s) > threshold
    logit_penalty: NonNegative = 0.01  # weight of mean(logits^2), an L2 penalty on the imitation logits
    target_update: str = "polyak"  # "polyak" (every step, tau) or "hard" (a copy every target_update_every steps)
    tau: Fraction = 0.005
    target_update_every: Count = 8000
    clip_rewards: bool = False  # rewards clipped to [-1, 1] in the target (learning only; scores are unclipped)
    eval_eps: Fraction = 0.0  # probability of a uniform action when evaluating
    hidden_dims: Widths = field(default_factory=lambda: [256, 256])  # each head's hidden widths
    frame_stack: Depth = 4  # frames per observation (read by the frame-stack sampler)
    normalize_states: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_update not in TARGET_UPDATES:
            raise OffbenchError(f"config key 'target_update' must be one of {', '.join(TARGET_UPDATES)}, got {self.target_update!r}")


def filtered_argmax(q: torch.Tensor, log_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """argmax over allowed actions of Q: (..., A) Q values and log G(.|s) -> (...) int64.

    allowed(a) = G(a|s) / max_a' G(a'|s) > threshold, applied as mask * Q + (1 - mask) * -1e8 (the code).
    """
    probs = log_probs.exp()
    mask = (probs / probs.max(dim=-1, keepdim=True).values > threshold).float()
    return (mask * q + (1 - mask) * MASKED_Q).argmax(dim=-1)


class QImitationNetwork(nn.Module):
    """Q values and imitation logits for S seeds: (S, B, *obs_shape) -> (q, log G, logits), each (S, B, A).

    Conv_Q for frame stacks (one conv trunk, two heads 3136 -> hidden -> A), FC_Q for vectors (two MLPs).
    """

    def __init__(self, trunk: nn.Module, q: EnsembleMLP, imitation: EnsembleMLP) -> None:
        super().__init__()
        self.trunk, self.q, self.imitation = trunk, q, imitation

    @classmethod
    def build(cls, members: int, problem: Problem, hidden_dims: list[int]) -> QImitationNetwork:
        trunk, features = q_trunk(members, problem.observation_space)
        n = problem.action_space.n
        return cls(trunk, EnsembleMLP(members, features, hidden_dims, n), EnsembleMLP(members, features, hidden_dims, n))

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        self.trunk.reset_parameters(generators)
        self.q.reset_parameters(generators)
        self.imitation.reset_parameters(generators)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.trunk(observations)
        logits = self.imitation(features)
        return self.q(features), F.log_softmax(logits, dim=-1), logits

    def member(self, index: int) -> QImitationNetwork:
        """Seed `index`'s network alone (one member, CPU, no gradients)."""
        return QImitationNetwork(self.trunk.member(index), self.q.member(index), self.imitation.member(index)).requires_grad_(False)


class DiscreteBCQ(OfflineAlgorithm):
    config_class = DiscreteBCQConfig
    action_kinds = ("discrete",)
    observation_kinds = ("vector", "frames")
    needs_symmetric_box = False

    def __init__(self, config: DiscreteBCQConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        self.network = QImitationNetwork.build(self.num_seeds, problem, config.hidden_dims)
        self.network.reset_parameters(streams.init)
        self.target = copy.deepcopy(self.network).requires_grad_(False)
        self.optimizers = {"network": torch.optim.Adam(self.network.parameters(), lr=config.lr, eps=config.adam_eps)}

    # ---- losses ---------------------------------------------------------------------------------

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + gamma * not_done * Q'(s', a*), a* the online network's filtered argmax at s': (S, B)."""
        cfg = self.config
        q, log_probs, _ = self.network(batch.next_observations)
        next_actions = filtered_argmax(q, log_probs, cfg.threshold)
        target_q = self.target(batch.next_observations)[0].gather(2, next_actions.unsqueeze(2)).squeeze(2)
        rewards = batch.rewards.clamp(-1.0, 1.0) if cfg.clip_rewards else batch.rewards
        return rewards + cfg.discount * batch.not_dones * target_q

    def losses(self, batch: Batch, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-seed Huber(Q(s, a), y), NLL(log G(.|s), a) and mean(logits^2), each (S,); also mean Q(s, a)."""
        q, log_probs, logits = self.network(batch.observations)
        actions = batch.actions.unsqueeze(2)
        q_taken = q.gather(2, actions).squeeze(2)
        return {
            "q_loss": per_seed_mean(F.smooth_l1_loss(q_taken, target, reduction="none")),
            "imitation_loss": per_seed_mean(-log_probs.gather(2, actions).squeeze(2)),
            "logit_l2": per_seed_mean(logits**2),
            "q_mean": per_seed_mean(q_taken).detach(),
        }

    # ---- update and act -------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        losses = self.losses(batch, self.td_target(batch))
        loss = losses["q_loss"] + losses["imitation_loss"] + cfg.logit_penalty * losses["logit_l2"]
        self.optimizer_step("network", loss.sum())
        if cfg.target_update == "polyak":
            polyak_update(self.target, self.network, cfg.tau)
        elif step % cfg.target_update_every == 0:
            hard_update(self.target, self.network)
        return {"loss": loss.detach(), **{name: value.detach() for name, value in losses.items()}}

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        """The filtered argmax, epsilon-greedy with eval_eps (draws (S, N, 2) normals from streams.eval when eval_eps > 0)."""
        q, log_probs, _ = self.network(observations)
        greedy = filtered_argmax(q, log_probs, self.config.threshold)
        if self.config.eval_eps == 0:
            return greedy
        noise = seeded_normal(self.streams.eval, (observations.shape[1], 2))
        return epsilon_greedy(greedy, noise, self.problem.action_space.n, self.config.eval_eps)

    def policy_module(self, index: int) -> nn.Module:
        return DiscreteBCQPolicy(self, index)


class DiscreteBCQPolicy(nn.Module):
    """One seed's `DiscreteBCQ.act` alone: `forward(observations (1, N, *obs_shape), noise (1, N, 2) or None) -> (1, N)`.

    `noise_dim` is 2 when eval_eps > 0 (the normals `act` draws per state), else 0.
    """

    def __init__(self, bcq: DiscreteBCQ, index: int) -> None:
        super().__init__()
        self.network = bcq.network.member(index)
        self.threshold, self.eval_eps, self.num_actions = bcq.config.threshold, bcq.config.eval_eps, bcq.problem.action_space.n
        self.noise_dim = 2 if self.eval_eps > 0 else 0

    def forward(self, observations: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        q, log_probs, _ = self.network(observations)
        greedy = filtered_argmax(q, log_probs, self.threshold)
        return greedy if noise is None else epsilon_greedy(greedy, noise, self.num_actions, self.eval_eps)
