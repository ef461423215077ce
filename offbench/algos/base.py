"""What the protocol needs from an algorithm, and the batch it hands over."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class Batch:
    """One minibatch per seed: every tensor has shape (S, B, ...)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor  # (S, B)
    next_observations: torch.Tensor
    not_dones: torch.Tensor  # (S, B) float: 0 where the transition is terminal (never for a time-out)


@dataclass(frozen=True)
class Problem:
    """The shapes an algorithm is built for."""

    observation_dim: int
    action_dim: int
    max_action: float


class OfflineAlgorithm(nn.Module):
    """An algorithm's networks and optimisers, vectorised over S seeds.

    Subclasses define `config_class`, build networks in `__init__` (initialised from `generators`, one
    per seed, in a fixed order) and implement `update` and `act`. The protocol owns everything else.
    """

    config_class: ClassVar[type]
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, config: Any, problem: Problem, generators: list[torch.Generator]) -> None:
        super().__init__()
        self.config = config
        self.problem = problem
        self.generators = generators
        self.num_seeds = len(generators)

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """One gradient step (`step` counts from 1); returns per-seed metrics of shape (S,)."""
        raise NotImplementedError

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        """Evaluation actions as the paper acts (deterministic for most): (S, N, obs_dim) -> (S, N, action_dim)."""
        raise NotImplementedError

    def training_state(self) -> dict[str, Any]:
        return {"modules": self.state_dict(), "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["modules"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
