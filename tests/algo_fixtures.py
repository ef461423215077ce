"""Shared pieces of the algorithm tests: random per-seed batches, seed slices, one ensemble member as a plain MLP."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from offbench.algos.base import Batch, OfflineAlgorithm
from offbench.algos.nets import EnsembleMLP


def random_batch(num_seeds: int, seed: int = 0, *, batch_size: int, obs_dim: int, act_dim: int, action_scale: float = 1.0) -> Batch:
    """A (num_seeds, batch_size) batch of Gaussian states and rewards, uniform actions in +-action_scale, ~20% terminals."""
    g = torch.Generator().manual_seed(1000 + seed)
    return Batch(
        observations=torch.randn(num_seeds, batch_size, obs_dim, generator=g),
        actions=(torch.rand(num_seeds, batch_size, act_dim, generator=g) * 2 - 1) * action_scale,
        rewards=torch.randn(num_seeds, batch_size, generator=g),
        next_observations=torch.randn(num_seeds, batch_size, obs_dim, generator=g),
        not_dones=(torch.rand(num_seeds, batch_size, generator=g) > 0.2).float(),
    )


def seed_slice(batch: Batch, seeds: slice) -> Batch:
    """The rows of `batch` that belong to the seeds in `seeds`."""
    fields = {field.name: getattr(batch, field.name) for field in dataclasses.fields(batch)}
    return Batch(**{name: None if value is None else value[seeds] for name, value in fields.items()})


def first_steps(observations: torch.Tensor) -> torch.Tensor:
    """An episode-start mask (S, N) that marks every observation as the first of its episode."""
    return torch.ones(observations.shape[:2], dtype=torch.bool)


def with_first_steps(observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`act`'s arguments for observations that all start an episode."""
    return observations, first_steps(observations)


def member_forward(
    net: EnsembleMLP, member: int, x: torch.Tensor,
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu, layer_norm: bool = False,
) -> torch.Tensor:
    """One member of an ensemble MLP as a plain MLP on a (B, in) input: Linear -> activation [-> LayerNorm]."""
    for i, layer in enumerate(net.layers):
        x = x @ layer.weight[member] + layer.bias[member, 0]
        if i < len(net.layers) - 1:
            x = activation(x)
            if layer_norm:
                norm = net.norms[i]
                x = F.layer_norm(x, (x.shape[-1],), norm.weight[member, 0], norm.bias[member, 0], eps=1e-6)
    return x


def assert_member_equals_alone(
    group_net: torch.nn.Module, alone_net: torch.nn.Module, seed: int, num_seeds: int,
    twins: bool = False, rtol: float = 1e-5, atol: float = 1e-6,
) -> None:
    """Seed `seed` of a group network equals the same network trained alone; twins hold member q * S + s."""
    members = [seed, num_seeds + seed] if twins else [seed]
    for group_param, alone_param in zip(group_net.parameters(), alone_net.parameters(), strict=True):
        torch.testing.assert_close(group_param[members], alone_param, rtol=rtol, atol=atol)


def train_beside_and_alone(pair: OfflineAlgorithm, alone: OfflineAlgorithm, make_batch: Callable[..., Batch], steps: int, seed: int) -> None:
    """Update a two-seed group and a one-seed copy of its member `seed` on the same batches."""
    for step in range(1, steps + 1):
        batch = make_batch(2, seed=step)
        pair.update(batch, step)
        alone.update(seed_slice(batch, slice(seed, seed + 1)), step)
