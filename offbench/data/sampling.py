"""Samplers: the dataset on the training device, and the minibatches an algorithm learns from.

A sampler holds the dataset as device tensors (each field in its own dtype, frames stored once) and
draws one minibatch per seed from that seed's sampling stream: `sample(generators, batch_size)` returns
a `Batch` whose tensors have shape (S, B, ...). `state_dict()`/`load_state_dict()` carry whatever a
sampler must remember between steps (none of the samplers here keeps any: their draws depend only on
the generators, which the trainer checkpoints). `prepare_observations` maps what the environment
returns to what the algorithm was trained on (state normalisation), for acting.

Samplers are chosen by name in the algorithm's config (`sampler = "uniform"`), from `SAMPLERS`:

    uniform       transitions uniformly with replacement, independent indices per seed (TD3+BC's code)
    frame-stack   the same over frames stored once: observation i is the stack of frames i-k+1 .. i,
                  zero-padded before its episode's start (DQN-replay / Dopamine semantics)

The interface is meant to take, without a redesign, a sampler that also returns the next action
(`Batch.next_actions`) and one that cuts whole episodes into fixed-length tapes for recurrent agents
(`Batch.episode_starts`, shapes (S, B, T, ...)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from offbench.data.dataset import OfflineDataset
from offbench.data.spaces import ObservationSpace
from offbench.errors import OffbenchError

NORMALIZER_EPS = 1e-3  # TD3+BC: std + 1e-3 (sfujim/TD3_BC utils.normalize_states)


@dataclass(frozen=True)
class Batch:
    """One minibatch per seed: every tensor has shape (S, B, ...).

    observations/next_observations: (S, B, *obs_shape) in the sampler's observation dtype; actions:
    (S, B, dims) float32 or (S, B) int64; rewards: (S, B) float32; not_dones: (S, B) float32, 0 where the
    transition is terminal (never for a time-out unless the config asks). `next_actions` and
    `episode_starts` are filled only by samplers that provide them.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    not_dones: torch.Tensor
    next_actions: torch.Tensor | None = None
    episode_starts: torch.Tensor | None = None


@dataclass
class StateNormalizer:
    """Per-dimension (s - mean) / std with std + 1e-3 over the dataset's states (TD3+BC); identity when off."""

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @classmethod
    def fit(cls, observations: np.ndarray, device: torch.device) -> StateNormalizer:
        mean, std = state_normalizer(observations)
        return cls(torch.as_tensor(mean, device=device), torch.as_tensor(std, device=device))

    def __call__(self, observations: torch.Tensor) -> torch.Tensor:
        return observations if self.mean is None else (observations - self.mean) / self.std


def state_normalizer(observations: np.ndarray, eps: float = NORMALIZER_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std + eps over the dataset's states, float32 (computed in float64)."""
    mean = observations.mean(axis=0, dtype=np.float64)
    std = observations.std(axis=0, dtype=np.float64) + eps
    return mean.astype(np.float32), std.astype(np.float32)


def not_dones(dataset: OfflineDataset, timeouts_as_terminals: bool) -> np.ndarray:
    """1 - terminal as float32 (N,); `timeouts_as_terminals` reproduces codebases that stop at time limits."""
    return (1.0 - (dataset.terminals | (dataset.timeouts & timeouts_as_terminals))).astype(np.float32)


class Sampler:
    """What the trainer needs from a sampler; see the module docstring."""

    description: ClassVar[str]  # recorded in the run's protocol
    observation_space: ObservationSpace  # what the algorithm sees

    @classmethod
    def from_config(cls, dataset: OfflineDataset, device: torch.device, config: Any) -> Sampler:
        """Build over `dataset` on `device`, reading the algorithm config's fields this sampler needs."""
        raise NotImplementedError

    def sample(self, generators: list[torch.Generator], batch_size: int) -> Batch:
        raise NotImplementedError

    def prepare_observations(self, observations: torch.Tensor) -> torch.Tensor:
        """Environment observations (S, N, *obs_shape) on the device -> the algorithm's input."""
        return observations

    def observation_normalizer(self) -> StateNormalizer:
        """The state normalisation `prepare_observations` applies (identity when none): a run's policy keeps it."""
        return StateNormalizer()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def per_seed_indices(generators: list[torch.Generator], high: int, batch_size: int) -> torch.Tensor:
    """Uniform indices in [0, high) with replacement, row s from generator s: (S, B) int64."""
    return torch.stack([torch.randint(high, (batch_size,), generator=g, device=g.device) for g in generators])


class UniformTransitions(Sampler):
    """Transitions (s, a, r, s', not_done) uniformly with replacement; states normalised when asked."""

    description = "uniform with replacement, independent indices per seed"

    @classmethod
    def from_config(cls, dataset: OfflineDataset, device: torch.device, config: Any) -> UniformTransitions:
        return cls(dataset, device, config.normalize_states, config.timeouts_as_terminals)

    def __init__(self, dataset: OfflineDataset, device: torch.device, normalize_states: bool, timeouts_as_terminals: bool) -> None:
        if dataset.next_observations is None:
            raise OffbenchError(f"dataset {dataset.metadata.id} stores each frame once", "use an algorithm whose sampler is frame-stack")
        space = dataset.metadata.observation_space
        if normalize_states and not space.is_vector:
            raise OffbenchError(f"state normalisation needs float32 vector observations; {dataset.metadata.id} has {space.describe()}",
                                "set normalize_states=false")
        self.observation_space = space
        self.normalizer = StateNormalizer.fit(dataset.observations, device) if normalize_states else StateNormalizer()

        def to(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array, device=device)

        self.observations = self.normalizer(to(dataset.observations))
        self.actions = to(dataset.actions)
        self.rewards = to(dataset.rewards)
        self.next_observations = self.normalizer(to(dataset.next_observations))
        self.not_dones = to(not_dones(dataset, timeouts_as_terminals))

    def sample(self, generators: list[torch.Generator], batch_size: int) -> Batch:
        idx = per_seed_indices(generators, self.rewards.shape[0], batch_size)
        return Batch(self.observations[idx], self.actions[idx], self.rewards[idx], self.next_observations[idx], self.not_dones[idx])

    def prepare_observations(self, observations: torch.Tensor) -> torch.Tensor:
        return self.normalizer(observations.to(self.observations.dtype))

    def observation_normalizer(self) -> StateNormalizer:
        return self.normalizer


class FrameStack(Sampler):
    """Stacks of the last k frames, built by index from frames stored once (Dopamine's replay semantics).

    Observation i is frames (i-k+1, ..., i), oldest first, with every frame before the start of i's
    episode replaced by zeros: no frame of a previous episode leaks into a stack. The next observation
    is the stack at i + 1 of the same episode: frames are read from `observations` only, and a stored
    `next_observations` is not used. So a row that ends its episode has no successor: a terminal one is
    sampled with not_done = 0 (its next stack is its own, and never used); one cut by a time-out is not
    sampled (there is no s' to bootstrap from; one transition per cut episode), unless
    `timeouts_as_terminals`. An evaluation env must stack frames the same way (zeros before the
    episode's first frame, oldest first).
    Device memory: the frames once (N x frame bytes), one int64 per row (its episode start) and the
    sampleable row indices.
    """

    description = "uniform with replacement over frame stacks built by index, independent indices per seed"

    @classmethod
    def from_config(cls, dataset: OfflineDataset, device: torch.device, config: Any) -> FrameStack:
        if config.normalize_states:
            raise OffbenchError("the frame-stack sampler keeps uint8 frames and cannot normalise states", "set normalize_states=false")
        if not hasattr(config, "frame_stack"):
            raise OffbenchError(f"sampler '{config.sampler}' needs the config key 'frame_stack', which this algorithm does not declare")
        return cls(dataset, device, config.frame_stack, config.timeouts_as_terminals)

    def __init__(self, dataset: OfflineDataset, device: torch.device, frame_stack: int, timeouts_as_terminals: bool) -> None:
        if frame_stack < 1:
            raise OffbenchError(f"frame_stack must be at least 1, got {frame_stack}")
        frames = dataset.metadata.observation_space
        self.observation_space = ObservationSpace((frame_stack, *frames.shape), frames.dtype)
        self.frame_stack = frame_stack
        lengths = dataset.episode_lengths()
        episode_start = np.repeat(dataset.episode_starts, lengths)
        last = np.zeros(len(dataset), dtype=bool)
        last[dataset.episode_ends - 1] = True
        done = not_dones(dataset, timeouts_as_terminals) == 0
        sampleable = np.flatnonzero(~last | done)
        if sampleable.size == 0:
            raise OffbenchError(f"dataset {dataset.metadata.id} has no transition with a successor to sample")
        self.frames = torch.as_tensor(dataset.observations, device=device)
        self.actions = torch.as_tensor(dataset.actions, device=device)
        self.rewards = torch.as_tensor(dataset.rewards, device=device)
        self.not_dones = torch.as_tensor((~done).astype(np.float32), device=device)
        self.episode_start = torch.as_tensor(episode_start, device=device)
        self.next_row = torch.as_tensor(np.where(last, np.arange(len(dataset)), np.arange(len(dataset)) + 1), device=device)
        self.sampleable = torch.as_tensor(sampleable, device=device)

    def stack(self, rows: torch.Tensor) -> torch.Tensor:
        """Frame stacks of `rows` (any shape R): (*R, k, *frame_shape), zeros before each row's episode start."""
        offsets = torch.arange(1 - self.frame_stack, 1, device=rows.device)
        index = rows.unsqueeze(-1) + offsets
        inside = index >= self.episode_start[rows].unsqueeze(-1)
        stacked = self.frames[index.clamp(min=0)]
        return stacked * inside.view(*inside.shape, *([1] * (stacked.dim() - inside.dim()))).to(stacked.dtype)

    def sample(self, generators: list[torch.Generator], batch_size: int) -> Batch:
        rows = self.sampleable[per_seed_indices(generators, self.sampleable.shape[0], batch_size)]
        return Batch(self.stack(rows), self.actions[rows], self.rewards[rows], self.stack(self.next_row[rows]), self.not_dones[rows])


SAMPLERS: dict[str, type[Sampler]] = {"uniform": UniformTransitions, "frame-stack": FrameStack}


def sampler_class(name: str) -> type[Sampler]:
    """The sampler registered as `name`; an unknown name is one error line."""
    if name not in SAMPLERS:
        raise OffbenchError(f"unknown sampler '{name}'", f"choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def make_sampler(dataset: OfflineDataset, device: torch.device, config: Any) -> Sampler:
    """The sampler the algorithm's config names (`config.sampler`), built over `dataset` on `device`."""
    return sampler_class(config.sampler).from_config(dataset, device, config)
