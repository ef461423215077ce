"""NEUBAY — Ni et al., "Long-Horizon Model-Based Offline Reinforcement Learning Without Conservatism" (arXiv 2512.04341).

Spec: shared/specs/neubay.md; reference code twni2016/neubay (JAX). Two parts:

Stage 1, `world_model` (offbench.algos.world_model): an ensemble of Gaussian dynamics models, trained once
per (dataset, world-model seed, world-model training config) and reused from its file; seed s uses world-model
seed s mod `world_model_seeds`. At load, the `selected_size` members of lowest validation MSE give the
uncertainty u(s, a) and the truncation threshold U(zeta).

Stage 2, the loop (Algorithms 1 and 2 as implemented). When a seed's update budget is spent it collects
`rollouts` imagined trajectories: each starts at a (trajectory, t) drawn uniformly over every position
t = 0 .. L of the real trajectories (trajectories cut at the env's time limit T; t = L is a finished history:
nothing imagined), the recurrent actor reads the real prefix o_0 .. o_t (zero previous action and reward at
t = 0), then acts stochastically in ONE ensemble member (rollout k uses member k mod M for the whole
rollout) until termination_fn, t + 1 >= T, or u(s, a) > U(zeta). The agent observes the model's reward; the
TD target uses it minus penalty_coef * u / mean u over the data (0 by default), stored apart as the step's
penalty (reference LearnedContEnv.step). The real prefix plus the imagined continuation is
stored as one episode (offbench.data.tapes, FIFO); the budget grows by ceil(utd * D), D the transitions
stored. Each gradient step samples one 2048-step tape per seed and updates, in order: critic (10 heads,
target = r + gamma (1 - term) [min of 2 random target heads - alpha log pi], Huber), target (Polyak),
actor (alpha log pi - mean of the 10 heads), alpha. Every loss averages real and imagined valid steps
separately: L = kappa L_real + (1 - kappa) L_imag. The agent sees concat(o_t, a_{t-1}, r_t) (zeros at an
episode's start) in training and evaluation; its recurrent state is carried through an evaluation episode.

Optimisers (per part: actor encoder, actor head, critic encoder, critic heads): NaN gradients zeroed,
gradients clipped to a global norm per seed and part, Adam (eps 1e-8, no weight decay), cosine schedule
over the run's gradient steps (critic constant, actor to 0). Alpha: Adam 1e-4 on log alpha, or fixed
at init_alpha on the tasks of `fixed_alpha_tasks` (Hopper: spec "for hopper tasks alpha is fixed").

Deviations (baselines/neubay.toml [deviations]): the update budget counts every stored transition
(real prefix + imagined), as the reference's `data_size`; the GRU alternative and the Markov agent
ablation are not provided. AntMaze's reward r - 1 is the data's recorded transform (`reward_shift` in
baselines/neubay.toml, id `+reward-1`), and the agent reads evaluation rewards shifted alike; termination
functions are keyed by the data's layout (offbench.termination), AntMaze's goal termination in D4RL's frame.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offbench.algos import world_model as wm
from offbench.algos.base import AlgorithmConfig, OfflineAlgorithm, Problem, StageContext
from offbench.algos.nets import EnsembleLayerNorm, EnsembleLinear, member_rand, polyak_update, seeded_normal
from offbench.algos.recurrent import LAYER_NORM_EPS, RecurrentEncoder
from offbench.config import Count, Depth, Fraction, LearningRate, Length, Members, NonNegative, Positive, Range, Width, Widths
from offbench.data.sampling import Sampler
from offbench.data.spaces import Box
from offbench.data.tapes import EpisodeBuffer, Tape
from offbench.errors import OffbenchError
from offbench.seeding import SeedStreams
from offbench.termination import task_name, termination_fn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # spec: actor log-std clip
ADAM_EPS = 1e-8
ROLLOUT_STATS = ("horizon_median", "horizon_q75", "horizon_q90", "horizon_max", "truncated_by_uncertainty", "terminated",
                 "truncated_by_time_limit", "model_reward", "real_reward", "rollout_uncertainty", "buffer_steps")


@dataclass
class NeubayConfig(AlgorithmConfig):
    # stage 1: the world model (spec "Stage 1"; offbench.algos.world_model)
    ensemble_size: Members = 128
    selected_size: Members = 100  # members kept (and used in rollouts): the reference's collect.ensemble_size
    world_hidden: Width = 200  # Adroit 400
    world_blocks: Depth = 4
    world_layer_norm: bool = True  # false: the paper's no-LayerNorm ablation
    world_lr: LearningRate = 1e-3  # Adroit 3e-4
    world_weight_decay: NonNegative = 5e-5
    world_batch_size: Count = 256
    world_max_epochs: Annotated[int, Range(0)] = 0  # 0: no cap; per-dataset caps in baselines/neubay.toml
    world_patience: Count = 5
    world_improvement: Fraction = 0.01
    world_val_fraction: Fraction = 0.2
    world_val_max: Count = 1000
    world_model_seeds: Count = 6  # released world-model checkpoints per dataset; seed s uses s mod this
    world_checkpoint_every: Count = 10  # stage-1 epochs between checkpoints of the group
    unc_quantile: Fraction = 1.0  # zeta
    penalty_coef: NonNegative = 0.0  # ablation: r - c * u / mean u
    # stage 2: rollouts and buffer
    rollouts: Length = 100  # K trajectories per collection
    utd: Positive = 0.05
    buffer_size: Count = 40_000_000  # steps (AntMaze 60M)
    # the recurrent agent
    encoder_dim: Width = 256
    lru_hidden: Width = 128
    lru_layers: Depth = 2
    lru_r_min: Fraction = 0.0
    lru_r_max: Fraction = 0.9
    lru_max_phase: Positive = 2 * math.pi
    head_dims: Widths = field(default_factory=lambda: [256, 256])  # Adroit 3 blocks
    critic_heads: Members = 10
    target_heads: Members = 2
    batch_size: Count = 1  # tapes per seed and gradient step
    tape_length: Length = 2048  # Adroit 1024
    discount: Fraction = 0.99
    tau: Fraction = 0.005
    encoder_lr: LearningRate = 1e-5  # per task in baselines/neubay.toml
    head_lr: LearningRate = 1e-4
    alpha_lr: LearningRate = 1e-4
    actor_lr_end_ratio: Fraction = 0.0
    critic_lr_end_ratio: Fraction = 1.0
    clip_norm: Positive = 1000.0  # gradient_scale: Adroit 10000, AntMaze 1
    init_alpha: Positive = 0.2  # Adroit 0.1, AntMaze 1e-5
    tune_alpha: bool = True  # false: alpha fixed at init_alpha everywhere
    fixed_alpha_tasks: list[str] = field(default_factory=lambda: ["Hopper"])  # tasks (env names, any version) whose alpha stays fixed
    target_alpha_ratio: Positive = 1.0  # AntMaze 10
    real_weight: Fraction = 0.05  # kappa; per task in baselines/neubay.toml
    huber_delta: Positive = 1.0
    normalize_states: bool = False  # must stay false: NEUBAY's inputs are raw (its world model normalises its own)

    def __post_init__(self) -> None:
        """Refuse the data sampler's switches NEUBAY cannot honour: `normalize_states = true` would normalise
        evaluation observations only; `timeouts_as_terminals = true` would change nothing (its tapes and
        rollouts bootstrap through time-outs and stop only on the termination functions)."""
        super().__post_init__()
        if self.normalize_states:
            raise OffbenchError("NEUBAY does not take normalize_states = true: its agent reads raw observations in training and evaluation",
                                "drop --set normalize_states=true")
        if self.timeouts_as_terminals:
            raise OffbenchError("NEUBAY does not take timeouts_as_terminals = true: its tapes and imagined rollouts bootstrap through time-outs",
                                "drop --set timeouts_as_terminals=true")


# ---- networks ------------------------------------------------------------------------------------


class Blocks(nn.Module):
    """[Linear -> LayerNorm -> LeakyReLU] per width, then Linear(out): (M, B, in) -> (M, B, out)."""

    def __init__(self, members: int, in_dim: int, widths: list[int], out_dim: int) -> None:
        super().__init__()
        dims = [in_dim, *widths]
        self.linears = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(members, w, eps=LAYER_NORM_EPS) for w in widths)
        self.out = EnsembleLinear(members, dims[-1], out_dim)

    def reset_parameters(self, generators: list[torch.Generator], out_scale: float | None = None) -> None:
        """Default init; the output layer U(+-sqrt(out_scale / fan_in)) with zero bias when `out_scale` is given."""
        for linear in [*self.linears, self.out]:
            linear.reset_parameters(generators)
        if out_scale is not None:
            bound = math.sqrt(out_scale / self.out.weight.shape[1])
            with torch.no_grad():
                for member, g in enumerate(generators):
                    self.out.weight[member].copy_(member_rand(self.out.weight.shape[1:], g, self.out.weight) * 2 * bound - bound)
                self.out.bias.zero_()

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):
            x = F.leaky_relu(norm(linear(x, members), members))
        return self.out(x, members)


def squash(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tanh-Gaussian action and its log-probability: u = mean + std * noise, a = tanh(u); shapes (..., A) -> (..., A), (...)."""
    u = mean + log_std.exp() * noise
    log_prob = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # log(1 - tanh(u)^2), stable
    return torch.tanh(u), log_prob


def kappa_mean(values: torch.Tensor, tape: Tape, kappa: float) -> torch.Tensor:
    """kappa * mean over real valid steps + (1 - kappa) * mean over imagined valid steps: (S, B, T) -> (S,).

    A tape without real (or imagined) valid steps contributes 0 for that part (spec "Losses").
    """
    real, imagined = tape.mask * tape.real, tape.mask * (1 - tape.real)
    def part(weights: torch.Tensor) -> torch.Tensor:
        return (values * weights).sum((1, 2)) / weights.sum((1, 2)).clamp(min=1)
    return kappa * part(real) + (1 - kappa) * part(imagined)


def agent_inputs(observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """concat(o_t, a_{t-1}, r_{t-1}) along a tape (zeros at episode starts): (..., T, obs + act + 1)."""
    previous = torch.cat([actions, rewards.unsqueeze(-1)], dim=-1)
    previous = torch.cat([torch.zeros_like(previous[..., :1, :]), previous[..., :-1, :]], dim=-2)
    return torch.cat([observations, previous * (~starts).unsqueeze(-1)], dim=-1)


# ---- the algorithm -------------------------------------------------------------------------------


class Neubay(OfflineAlgorithm):
    config_class = NeubayConfig
    stages = ("world_model",)
    observes_rewards = True
    crash_after_epochs: int | None = None  # set by a test to kill stage 1 part-way

    def __init__(self, config: NeubayConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        c, S = config, self.num_seeds
        obs_dim, act_dim = problem.observation_dim, problem.action_dim
        in_dim = obs_dim + act_dim + 1
        if c.target_heads > c.critic_heads:
            raise OffbenchError(f"target_heads ({c.target_heads}) must be at most critic_heads ({c.critic_heads})")
        if c.selected_size > c.ensemble_size:
            raise OffbenchError(f"selected_size ({c.selected_size}) must be at most ensemble_size ({c.ensemble_size})")

        def encoder() -> RecurrentEncoder:
            return RecurrentEncoder(S, in_dim, c.encoder_dim, c.lru_hidden, c.lru_layers, c.lru_r_min, c.lru_r_max, c.lru_max_phase)

        H = c.critic_heads
        self.actor_encoder, self.critic_encoder = encoder(), encoder()
        self.actor_head = Blocks(S, c.encoder_dim, c.head_dims, 2 * act_dim)
        self.critic_heads = Blocks(H * S, c.encoder_dim + act_dim, c.head_dims, 1)  # head-major: member h * S + s
        self.actor_encoder.reset_parameters(streams.init)
        self.actor_head.reset_parameters(streams.init)
        self.critic_encoder.reset_parameters(streams.init)
        self.critic_heads.reset_parameters(streams.init * H, out_scale=0.01)
        self.critic_encoder_target = copy.deepcopy(self.critic_encoder).requires_grad_(False)
        self.critic_heads_target = copy.deepcopy(self.critic_heads).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.full((S,), math.log(c.init_alpha)))
        self.target_entropy = -act_dim * c.target_alpha_ratio
        self.world = wm.Ensemble(S * c.selected_size, obs_dim, act_dim, c.world_hidden, c.world_blocks, c.world_layer_norm).requires_grad_(False)
        for name, width in (("input_mean", obs_dim + act_dim), ("input_std", obs_dim + act_dim), ("output_mean", obs_dim + 1), ("output_std", obs_dim + 1)):
            self.register_buffer(f"world_{name}", torch.zeros(S, width) if name.endswith("mean") else torch.ones(S, width))  # per seed
        self.register_buffer("threshold", torch.zeros(S))
        self.register_buffer("mean_uncertainty", torch.ones(S))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("budget", torch.zeros(S, dtype=torch.int64))
        self.register_buffer("rollout_stats", torch.zeros(S, len(ROLLOUT_STATS)))
        self.optimizers = {
            "actor_encoder": self._adam(self.actor_encoder, c.encoder_lr),
            "actor_head": self._adam(self.actor_head, c.head_lr),
            "critic_encoder": self._adam(self.critic_encoder, c.encoder_lr),
            "critic_heads": self._adam(self.critic_heads, c.head_lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=c.alpha_lr, eps=ADAM_EPS),
        }
        self.buffers_: list[EpisodeBuffer] | None = None  # per seed, made when the data is known (stage / resume)
        self.history: dict[str, torch.Tensor] | None = None
        self.world_progress: dict[str, Any] = {}
        self.eval_state: dict[str, Any] | None = None
        self.reward_shift = 0.0  # the data's reward shift, set by `prepare` from the dataset's recorded transforms
        self.tune_alpha = c.tune_alpha  # and not on a task of fixed_alpha_tasks: set by `prepare`, which knows the env

    @classmethod
    def check_problem(cls, name: str, problem: Problem, dataset_id: str) -> None:
        """Also refuse an action box other than [-1, 1]^A: rollouts act in tanh's range while the tapes and the
        world model hold the dataset's actions as stored (the reference asserts low == -1, high == 1)."""
        super().check_problem(name, problem, dataset_id)
        action = problem.action_space
        if isinstance(action, Box) and not (np.all(np.asarray(action.low) == -1.0) and np.all(np.asarray(action.high) == 1.0)):
            raise OffbenchError(f"{name} needs actions in [-1, 1]; {dataset_id} has {action.describe()}", "rescale the dataset's actions to [-1, 1]")

    @staticmethod
    def _adam(module: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(module.parameters(), lr=lr, eps=ADAM_EPS, weight_decay=0.0)

    # ---- stage 1: the world model ---------------------------------------------------------------

    def world_settings(self) -> wm.WorldModelSettings:
        c = self.config
        return wm.WorldModelSettings(c.ensemble_size, c.world_hidden, c.world_blocks, c.world_layer_norm, c.world_lr, c.world_weight_decay,
                                     c.world_batch_size, c.world_max_epochs, c.world_patience, c.world_improvement, c.world_val_fraction,
                                     c.world_val_max)

    def world_seed(self, index: int) -> int:
        return self.streams.seeds[index] % self.config.world_model_seeds

    def run_stage(self, name: str, context: StageContext) -> None:
        """Train (or load) each seed's world model, then load the selected members into the rollout ensemble."""
        assert name == "world_model"
        settings, sha = self.world_settings(), context.dataset.metadata.sha256
        data = wm.WorldData.from_dataset(context.dataset, context.device)
        for world_seed in sorted({self.world_seed(s) for s in range(self.num_seeds)}):
            path = wm.world_model_path(sha, world_seed, settings)
            if path.exists():
                context.message(f"world model seed {world_seed}: reusing {path}")
                continue
            trainer = wm.EnsembleTrainer(data, settings, world_seed, context.device)
            if str(world_seed) in self.world_progress:
                trainer.load_state_dict(self.world_progress[str(world_seed)])
                context.message(f"world model seed {world_seed}: resuming at epoch {trainer.epoch}")

            def checkpoint(trainer: wm.EnsembleTrainer = trainer, key: str = str(world_seed)) -> None:
                self.world_progress[key] = trainer.state_dict()
                context.save()
                if self.crash_after_epochs is not None and trainer.epoch >= self.crash_after_epochs:
                    raise KeyboardInterrupt

            seconds = wm.train_world_model(trainer, self.config.world_checkpoint_every, checkpoint, context.message)
            wm.save_world_model(path, trainer, sha, seconds)
            context.message(f"world model seed {world_seed}: {trainer.epoch} epochs in {seconds:.0f} s; written to {path}")
            self.world_progress.pop(str(world_seed), None)
        self.load_world_models(sha, data, context)

    def load_world_models(self, sha: str, data: wm.WorldData, context: StageContext) -> None:
        """Select each seed's members (lowest validation MSE) and copy them, the normaliser, U(zeta) and the mean u in.

        Member parameters are the ensemble's parameters, the normaliser its `wm.NORMALIZER` buffers: by name.
        """
        c, M = self.config, self.config.selected_size
        members = dict(self.world.named_parameters())
        for world_seed in sorted({self.world_seed(s) for s in range(self.num_seeds)}):
            chosen = wm.select_members(wm.world_model_path(sha, world_seed, self.world_settings()), data, M, context.device)
            context.message(f"world model seed {world_seed}: {M} members of validation MSE {float(chosen.val_mse[0]):.5f}"
                            f"-{float(chosen.val_mse[-1]):.5f}, U(zeta={c.unc_quantile}) = {chosen.threshold(c.unc_quantile):.4f}")
            for s in (s for s in range(self.num_seeds) if self.world_seed(s) == world_seed):
                with torch.no_grad():
                    for name, param in members.items():
                        param[s * M : (s + 1) * M] = chosen.state[name].to(param.device)
                    for name in wm.NORMALIZER:
                        getattr(self, f"world_{name}")[s] = chosen.state[name].to(self.threshold.device)
                self.threshold[s] = chosen.threshold(c.unc_quantile)
                self.mean_uncertainty[s] = chosen.mean_uncertainty

    # ---- stage 2: imagined rollouts -------------------------------------------------------------

    def prepare_history(self) -> None:
        """The real trajectories cut at the env's time limit, indexed by every start (trajectory, t), t = 0 .. L
        (spec Stage 2 step 1; reference HistorySampler: uniform over the sum of L + 1); one empty buffer per seed."""
        if self.history is not None:
            return
        dataset = self.dataset
        device = self.threshold.device
        lengths = np.minimum(dataset.episode_lengths(), self.time_limit)
        position = np.concatenate([np.arange(n + 1) for n in lengths])  # t: real transitions before o_t
        first = np.repeat(dataset.episode_starts, lengths + 1)
        finished = position == np.repeat(lengths, lengths + 1)  # t = L: the history already ended, nothing to imagine
        def to(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), device=device)
        self.history = {"position": to(position), "first": to(first), "finished": to(finished),
                        "observations": to(dataset.observations), "actions": to(dataset.actions), "rewards": to(dataset.rewards),
                        "next_observations": to(dataset.next_observations), "terminals": to(dataset.terminals)}
        obs_dim, act_dim = self.problem.observation_dim, self.problem.action_dim
        if self.buffers_ is None:
            self.buffers_ = [EpisodeBuffer(self.config.buffer_size, obs_dim, act_dim, device) for _ in range(self.num_seeds)]

    def real_observation(self, first: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """o_t of the trajectory starting at row `first`: its first observation at t = 0, else row first + t - 1's next: (K, obs)."""
        hist = self.history
        return torch.where((t > 0).unsqueeze(-1), hist["next_observations"][(first + t - 1).clamp(min=0)], hist["observations"][first])

    def actor_step(self, inputs: torch.Tensor, starts: torch.Tensor, states: list[torch.Tensor] | None, members: slice | None,
                   noise: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step of the actor: inputs (M, N, in), starts (M, N) -> actions (M, N, A) and the new states.

        `noise` (M, N, A) samples the tanh-Gaussian; None gives the deterministic action tanh(mean).
        """
        z, hidden = self.actor_encoder(inputs.unsqueeze(-2), starts.unsqueeze(-1), states, members)
        mean, log_std = self.actor_head(z.squeeze(-2), members).chunk(2, dim=-1)
        if noise is None:
            return torch.tanh(mean), [h.squeeze(-2) for h in hidden]
        return squash(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX), noise)[0], [h.squeeze(-2) for h in hidden]

    @torch.no_grad()
    def collect(self, s: int) -> int:
        """Seed s's K imagined rollouts, stored as episodes; returns D, the transitions stored."""
        c, hist, M = self.config, self.history, self.config.selected_size
        K, device = c.rollouts, self.threshold.device
        seeds, world_members = slice(s, s + 1), slice(s * M, (s + 1) * M)
        sampling, noise = self.streams.sampling[s], self.streams.noise[s]
        picks = torch.randint(hist["position"].numel(), (K,), generator=sampling, device=sampling.device).to(device)
        firsts, prefix = hist["first"][picks], hist["position"][picks]  # prefix: t, the real transitions before o_t
        start = self.real_observation(firsts, prefix)  # o_t
        # 1. read each real prefix o_0 .. o_t through the actor, as one tape (resets between prefixes)
        steps = prefix + 1
        offsets = torch.cumsum(steps, 0) - steps
        position = torch.arange(int(steps.sum()), device=device) - torch.repeat_interleave(offsets, steps)
        rollout = torch.repeat_interleave(torch.arange(K, device=device), steps)
        row = firsts[rollout] + position
        prev_row = (row - 1).clamp(min=0)
        inside = row.clamp(max=len(hist["observations"]) - 1)
        observations = torch.where((position == prefix[rollout]).unsqueeze(-1), start[rollout], hist["observations"][inside])
        previous = torch.cat([hist["actions"][prev_row], hist["rewards"][prev_row].unsqueeze(-1)], dim=-1) * (position > 0).unsqueeze(-1)
        inputs = torch.cat([observations, previous], dim=-1)
        z, hidden = self.actor_encoder(inputs[None, None], (position == 0)[None, None], None, seeds)
        last_index = offsets + prefix
        states = [h[0, 0, last_index].unsqueeze(0) for h in hidden]
        mean, log_std = self.actor_head(z[0, :, last_index], seeds).chunk(2, dim=-1)
        action = squash(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX), seeded_normal([noise], mean.shape[1:])[0])[0][0]
        # 2. imagine: rollout k in member k mod M until termination, the time limit or u > U
        state = start
        time_step = prefix.clone()  # env time of the next transition
        alive = ~hist["finished"][picks]
        member = torch.arange(K, device=device) % M
        imagined: list[dict[str, torch.Tensor]] = []
        horizon = torch.zeros(K, dtype=torch.int64, device=device)
        cause_unc, cause_term, cause_time = (torch.zeros(K, dtype=torch.bool, device=device) for _ in range(3))
        uncertainties = []
        while bool(alive.any()):
            x = (torch.cat([state, action], -1) - self.world_input_mean[s]) / self.world_input_std[s]
            means, log_stds = self.world(x.expand(M, *x.shape), world_members)  # (M, K, obs + 1)
            u = wm.uncertainty(means)
            own = torch.arange(K, device=device)
            sample = means[member, own] + log_stds[member, own].exp() * seeded_normal([noise], means.shape[1:])[0]
            raw = sample * self.world_output_std[s] + self.world_output_mean[s]
            next_state, reward = raw[:, :-1], raw[:, -1]  # the model's reward: what the agent observes (reference LearnedContEnv.step)
            penalty = c.penalty_coef * u / self.mean_uncertainty[s]  # subtracted in the TD target only
            terminated = termination_fn(self.env_id, self.problem.observation_dim)(state, action, next_state)
            out_of_time = time_step + 1 >= self.time_limit
            too_uncertain = u > self.threshold[s]
            imagined.append({"observations": state, "actions": action, "rewards": reward, "penalties": penalty, "terminals": terminated,
                             "alive": alive.clone(), "final": next_state})
            uncertainties.append(u[alive])
            horizon += alive
            cause_term |= alive & terminated
            cause_time |= alive & ~terminated & out_of_time
            cause_unc |= alive & ~terminated & ~out_of_time & too_uncertain
            alive = alive & ~(terminated | out_of_time | too_uncertain)
            state, time_step = next_state, time_step + 1
            prev = torch.cat([action, reward.unsqueeze(-1)], -1)
            action, states = self.actor_step(torch.cat([next_state, prev], -1)[None], torch.zeros(1, K, dtype=torch.bool, device=device),
                                             states, seeds, seeded_normal([noise], action.shape)[0][None])
            action = action[0]
        # 3. store real prefix + imagined continuation + last observation as one episode per rollout
        stored = 0
        for k in range(K):
            a, n, h = int(firsts[k]), int(prefix[k]), int(horizon[k])
            rows = slice(a, a + n)
            parts = {"observations": [hist["observations"][rows]], "actions": [hist["actions"][rows]], "rewards": [hist["rewards"][rows]],
                     "penalties": [torch.zeros(n, device=device)], "terminals": [hist["terminals"][rows]],
                     "real": [torch.ones(n, dtype=torch.bool, device=device)]}
            for step in imagined[:h]:
                for name in ("observations", "actions", "rewards", "penalties", "terminals"):
                    parts[name].append(step[name][k : k + 1])
            parts["real"].append(torch.zeros(h, dtype=torch.bool, device=device))
            parts["observations"].append(imagined[h - 1]["final"][k : k + 1] if h else start[k : k + 1])
            parts["actions"].append(torch.zeros(1, self.problem.action_dim, device=device))
            for name in ("rewards", "penalties", "terminals", "real"):
                parts[name].append(torch.zeros(1, dtype=parts[name][0].dtype, device=device))
            self.buffers_[s].add({name: torch.cat(values) for name, values in parts.items()})
            stored += n + h
        model_rewards = torch.cat([step["rewards"][step["alive"]] for step in imagined]) if imagined else torch.zeros(0, device=device)
        real_rewards = hist["rewards"][torch.cat([torch.arange(int(f), int(f + n), device=device) for f, n in zip(firsts, prefix)])]
        horizons = horizon.double()
        self.rollout_stats[s] = torch.tensor([
            horizons.median(), horizons.quantile(0.75), horizons.quantile(0.9), horizons.max(), cause_unc.double().mean(),
            cause_term.double().mean(), cause_time.double().mean(),
            model_rewards.double().mean() if model_rewards.numel() else float("nan"), real_rewards.double().mean(),
            torch.cat(uncertainties).double().mean() if uncertainties else float("nan"), float(self.buffers_[s].used),
        ])
        return stored

    # ---- what the trainer calls -----------------------------------------------------------------

    def sample(self, sampler: Sampler, generators: list[torch.Generator], batch_size: int) -> Tape:
        """Collect for every seed whose update budget is spent (ceil(utd * D) steps each), then one tape per seed."""
        del sampler  # NEUBAY learns from its own episode buffers, not the dataset's sampler
        self.prepare_history()
        for s in range(self.num_seeds):
            while int(self.budget[s]) <= 0:
                self.budget[s] += math.ceil(self.config.utd * self.collect(s))
        self.budget -= 1
        return Tape.stack([buffer.sample_tape(g, batch_size, self.config.tape_length) for buffer, g in zip(self.buffers_, generators)])

    def prepare(self, context: StageContext) -> None:
        """Keep what the rollouts need from the run: the dataset (histories), the env's termination and time limit T."""
        self.dataset, self.env_id = context.dataset, context.env_id
        self.time_limit = int(context.env_kwargs.get("max_episode_steps") or gym.spec(context.env_id).max_episode_steps or 0)
        if self.time_limit <= 0:
            raise OffbenchError(f"NEUBAY needs the episode time limit of {context.env_id}, which names none", "evaluate in an env with a TimeLimit")
        termination_fn(context.env_id, self.problem.observation_dim)  # refuse an env or layout without one before any training
        # The data's reward shift (AntMaze's r - 1, a recorded transform: offbench.data.transforms.shift_rewards): the agent
        # reads evaluation rewards shifted alike, as the reference's wrapped env; scores stay the env's own returns.
        self.reward_shift = sum(t.get("reward_shift", 0.0) for t in context.dataset.metadata.extra.get("transforms", []))
        self.tune_alpha = self.config.tune_alpha and task_name(context.env_id) not in self.config.fixed_alpha_tasks
        self.total_steps.fill_(context.steps)

    # ---- losses ---------------------------------------------------------------------------------

    def schedule(self, name: str, step: int) -> None:
        """Cosine decay over the run's gradient steps: lr * (r + (1 - r) (1 + cos(pi t / total)) / 2) (optax cosine_decay_schedule)."""
        c = self.config
        base = {"actor_encoder": c.encoder_lr, "actor_head": c.head_lr, "critic_encoder": c.encoder_lr, "critic_heads": c.head_lr}[name]
        ratio = c.actor_lr_end_ratio if name.startswith("actor") else c.critic_lr_end_ratio
        total = max(int(self.total_steps), 1)
        factor = ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(step - 1, total) / total))
        for group in self.optimizers[name].param_groups:
            group["lr"] = base * factor

    def clipped_step(self, names: tuple[str, ...], loss: torch.Tensor, step: int) -> None:
        """Backward, then per part: NaN gradients -> 0, clip each seed's gradient to `clip_norm` (global over the part), Adam."""
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        S = self.num_seeds
        for name in names:
            grads = [p.grad for group in self.optimizers[name].param_groups for p in group["params"] if p.grad is not None]
            for g in grads:
                torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
            if name != "alpha":
                norms = torch.zeros(S, device=loss.device)
                for g in grads:
                    norms += _seed_sq_norm(g, S)
                scale = (self.config.clip_norm / norms.sqrt().clamp(min=1e-12)).clamp(max=1.0)
                for g in grads:
                    g.mul_(scale.repeat(g.shape[0] // S).view(-1, *([1] * (g.dim() - 1))))
                self.schedule(name, step)
            self.optimizers[name].step()

    def encode(self, encoder: RecurrentEncoder, tape: Tape) -> torch.Tensor:
        inputs = agent_inputs(tape.observations, tape.actions, tape.rewards, tape.starts)
        return encoder(inputs, tape.starts)[0]

    def q_heads(self, heads: Blocks, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Every head: z (S, B, T, d), actions (S, B, T, A) -> (H, S, B, T)."""
        S, H = self.num_seeds, self.config.critic_heads
        x = torch.cat([z, actions], -1).reshape(S, -1, z.shape[-1] + actions.shape[-1]).repeat(H, 1, 1)
        return heads(x).view(H, S, *z.shape[1:-1])

    def policy(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian actions and log-probabilities at every tape position."""
        S = self.num_seeds
        mean, log_std = self.actor_head(z.reshape(S, -1, z.shape[-1])).view(*z.shape[:-1], -1).chunk(2, -1)
        return squash(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX), seeded_normal(self.streams.noise, mean.shape[1:]))

    @torch.no_grad()
    def td_target(self, tape: Tape) -> torch.Tensor:
        """y_t = r_t - penalty_t + gamma (1 - term_t) [min over 2 random target heads Qbar(h_{t+1}, a') - alpha log pi(a'|h_{t+1})]: (S, B, T)."""
        c, S = self.config, self.num_seeds
        next_actions, next_log_prob = self.policy(self.encode(self.actor_encoder, tape))
        q = self.q_heads(self.critic_heads_target, self.encode(self.critic_encoder_target, tape), next_actions)  # (H, S, B, T)
        picks = torch.stack([torch.randperm(c.critic_heads, generator=g, device=g.device)[: c.target_heads] for g in self.streams.noise]).to(q.device)
        chosen = q.permute(1, 0, 2, 3)[torch.arange(S, device=q.device).unsqueeze(1), picks].min(dim=1).values  # (S, B, T)
        alpha = self.log_alpha.exp().view(S, 1, 1)
        value = chosen - alpha * next_log_prob
        value = torch.cat([value[..., 1:], torch.zeros_like(value[..., :1])], dim=-1)  # h_{t+1}; the last position is masked
        return tape.rewards - tape.penalties + c.discount * (1 - tape.terminals) * value

    def critic_loss(self, tape: Tape, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-seed kappa-weighted Huber(Q_i - y), averaged over the heads: (S,); also the kappa-weighted mean Q."""
        q = self.q_heads(self.critic_heads, self.encode(self.critic_encoder, tape), tape.actions)
        per_step = F.huber_loss(q, target.expand_as(q), reduction="none", delta=self.config.huber_delta).mean(0)
        return kappa_mean(per_step, tape, self.config.real_weight), kappa_mean(q.mean(0).detach(), tape, self.config.real_weight)

    def actor_loss(self, tape: Tape) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-seed kappa-weighted alpha log pi(a|h_t) - mean_i Q_i(h_t, a): (S,); also the per-step log pi (detached)."""
        S = self.num_seeds
        actions, log_prob = self.policy(self.encode(self.actor_encoder, tape))
        with torch.no_grad():
            z = self.encode(self.critic_encoder, tape)
        q = self.q_heads(self.critic_heads, z, actions).mean(0)
        alpha = self.log_alpha.exp().detach().view(S, 1, 1)
        return kappa_mean(alpha * log_prob - q, tape, self.config.real_weight), log_prob.detach()

    def alpha_loss(self, log_prob: torch.Tensor, tape: Tape) -> torch.Tensor:
        """Per-seed kappa-weighted alpha (-log pi - target entropy): log_prob (S, B, T) -> (S,).

        alpha multiplies each step's term inside the kappa mean, as the reference's loss: a tape without real
        (or imagined) valid steps weighs the other part by its kappa share, not the whole temperature.
        """
        alpha = self.log_alpha.exp().view(-1, 1, 1)
        return kappa_mean(alpha * (-log_prob - self.target_entropy), tape, self.config.real_weight)

    def update(self, batch: Tape, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        critic_loss, q_mean = self.critic_loss(batch, self.td_target(batch))
        self.clipped_step(("critic_encoder", "critic_heads"), critic_loss.sum(), step)
        polyak_update(self.critic_encoder_target, self.critic_encoder, c.tau)
        polyak_update(self.critic_heads_target, self.critic_heads, c.tau)
        actor_loss, log_prob = self.actor_loss(batch)
        self.clipped_step(("actor_encoder", "actor_head"), actor_loss.sum(), step)
        if self.tune_alpha:
            self.optimizer_step("alpha", self.alpha_loss(log_prob, batch).sum())
        entropy = kappa_mean(-log_prob, batch, c.real_weight)
        metrics = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "q_mean": q_mean, "entropy": entropy,
                   "alpha": self.log_alpha.exp().detach(), "real_fraction": (batch.mask * batch.real).sum((1, 2)) / batch.mask.sum((1, 2)).clamp(min=1)}
        return {**metrics, **{name: self.rollout_stats[:, i] for i, name in enumerate(ROLLOUT_STATS)}}

    # ---- acting ---------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor, rewards: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic tanh(mean) on concat(o_t, a_{t-1}, r_t), the recurrent state carried per env and reset at episode starts."""
        S, N = observations.shape[:2]
        A = self.problem.action_dim
        if self.eval_state is None or self.eval_state["previous"].shape[1] != N or bool(episode_start.all()):
            self.eval_state = {"previous": torch.zeros(S, N, A + 1, device=observations.device), "states": None}
        rewards = torch.zeros(S, N, device=observations.device) if rewards is None else rewards.to(observations.dtype) + self.reward_shift
        previous = torch.cat([self.eval_state["previous"][..., :A], rewards.unsqueeze(-1)], -1) * (~episode_start).unsqueeze(-1)
        states = self.eval_state["states"]
        if states is not None:
            states = [h * (~episode_start).unsqueeze(-1) for h in states]
        actions, states = self.actor_step(torch.cat([observations, previous], -1), episode_start, states, None, None)
        self.eval_state = {"previous": torch.cat([actions, rewards.unsqueeze(-1)], -1), "states": states}
        return actions * self.problem.max_action

    # ---- checkpoints ----------------------------------------------------------------------------

    def training_state(self) -> dict[str, Any]:
        """Modules and optimisers, stage-1 progress, and every seed's rollout buffer (resumes exactly)."""
        return {**super().training_state(), "world_progress": self.world_progress,
                "buffers": None if self.buffers_ is None else [b.state_dict() for b in self.buffers_]}

    def load_training_state(self, state: dict[str, Any]) -> None:
        super().load_training_state(state)
        self.world_progress = state["world_progress"]
        if state["buffers"] is not None:
            device = self.threshold.device
            c, obs_dim, act_dim = self.config, self.problem.observation_dim, self.problem.action_dim
            self.buffers_ = [EpisodeBuffer(c.buffer_size, obs_dim, act_dim, device) for _ in range(self.num_seeds)]
            for buffer, buffer_state in zip(self.buffers_, state["buffers"]):
                buffer.load_state_dict(buffer_state)


def _seed_sq_norm(grad: torch.Tensor, seeds: int) -> torch.Tensor:
    """Squared gradient norm per seed of a parameter whose member m belongs to seed m mod S: (S,)."""
    return grad.reshape(grad.shape[0] // seeds, seeds, -1).pow(2).sum((0, 2))


