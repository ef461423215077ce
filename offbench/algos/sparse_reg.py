"""Sparse-Reg — Arnob, Fujimoto & Precup, "Sparse-Reg: Improving Sample Complexity in Offline Reinforcement
Learning using Sparsity" (arXiv 2506.17155, 2025).

Spec: shared/specs/sparse_reg.md; reference code: SaminYeasar/sparse_reg. A base algorithm (TD3+BC or
BC, `base` in the config) whose networks are trained sparse: every weight matrix of every network is
multiplied by a binary mask M, kept for the top `keep_ratio` (5%) of its SNIP connection sensitivity
|W * dL/dW|, ranked jointly over all layers of a network (twin critics ranked together), separately for
each seed. Biases are dense. The base's losses and update are unchanged: this module only scores,
applies and schedules masks around `base.update`.

- Masks are weight parametrisations W -> W * M, so the forward, the target networks and the gradient
  (dL/dW = M * dL/d(W * M)) see only kept weights. Target networks carry the masks of their online
  networks; both are rewritten together.
- Scoring follows the code: the masks are set to 1 (the stored weights, pruned ones included, score
  densely), the base's full set of losses runs once on one minibatch (TD3+BC: critic and actor losses,
  no policy delay, so the actor's -Q term reaches the critic's scores) and only gradients are taken.
- Schedule ("iterative"): the first mask before the first gradient step, then a new one before step
  t + 1 for every t that is a multiple of `mask_every` and smaller than `mask_until`; frozen afterwards.
  `mask_until = 0` is the single-shot variant.
- Pruned weights keep their stored values (the code's `fixed_weight = -1`): one that is selected again
  comes back with its old value. `zero_pruned_weights = true` is the labelled ablation that zeroes them
  after every update (Adam's moments cannot revive them); a zeroed weight scores 0, so under it the
  iterative schedule cannot bring pruned weights back.

Deviations (also in baselines/sparse-reg.toml [deviations]): the scoring minibatch is the step's own
training batch (the algorithm sees data only through `update`); scores are not divided by their sum
(the ranking is unchanged); where the k-th largest score is 0 only positive scores are kept (the code
reuses an earlier threshold); the `bc` base is offbench's deterministic MSE BC, not the code's Gaussian
NLL with a cosine learning rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from offbench.algos.base import AlgorithmConfig, Batch, OfflineAlgorithm, Problem
from offbench.algos.bc import BC, BCConfig
from offbench.algos.nets import EnsembleMLP
from offbench.algos.td3bc import TD3BC, TD3BCConfig
from offbench.config import Count, LearningRate, Range
from offbench.errors import OffbenchError
from offbench.seeding import SeedStreams


@dataclass
class SparsityConfig:
    """The sparsity knobs, common to every base."""

    base: str = "td3bc"
    keep_ratio: Annotated[float, Range(0.0, 1.0, low_open=True)] = 0.05  # fraction of each network's weights kept (95% sparse)
    mask_every: Count = 1000  # gradient steps between mask recomputations
    mask_until: Annotated[int, Range(0)] = 200_000  # masks are frozen from this step on; 0 = single-shot
    zero_pruned_weights: bool = False  # ablation: zero pruned weights instead of keeping their stale values


@dataclass
class SparseRegTD3BCConfig(TD3BCConfig, SparsityConfig):
    """TD3+BC's fields at the Sparse-Reg code's defaults (lr 1e-3) plus the sparsity knobs."""

    actor_lr: LearningRate = 1e-3
    critic_lr: LearningRate = 1e-3
    timeouts_as_terminals: bool = True  # the Sparse-Reg code sets done = 1 at time limits (applied by the sampler)


@dataclass
class SparseRegBCConfig(BCConfig, SparsityConfig):
    """BC's fields at the Sparse-Reg code's learning rate plus the sparsity knobs (no TD3+BC keys: `alpha` is refused)."""

    base: str = "bc"
    actor_lr: LearningRate = 1e-3
    timeouts_as_terminals: bool = True


SparseRegConfig = SparseRegTD3BCConfig  # the default base
BASES: dict[str, tuple[type[OfflineAlgorithm], type[AlgorithmConfig]]] = {
    "td3bc": (TD3BC, SparseRegTD3BCConfig),
    "bc": (BC, SparseRegBCConfig),
}


class WeightMask(nn.Module):
    """Parametrisation W -> W * M with a binary mask M of W's shape."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class SparseReg(OfflineAlgorithm):
    config_class = SparseRegConfig

    @classmethod
    def config_class_for(cls, values: Mapping[str, Any]) -> type[AlgorithmConfig]:
        base = values.get("base", "td3bc")
        if base not in BASES:
            raise OffbenchError(f"unknown Sparse-Reg base '{base}'", f"set base to one of: {', '.join(sorted(BASES))}")
        return BASES[base][1]

    def __init__(self, config: SparseRegTD3BCConfig | SparseRegBCConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        base_class, config_class = BASES[config.base]
        if not isinstance(config, config_class):
            raise OffbenchError(f"Sparse-Reg with base '{config.base}' needs a {config_class.__name__}, got a {type(config).__name__}")
        self.base = base_class(config, problem, streams)
        self.optimizers = self.base.optimizers
        for name in self.base.trained_networks():  # every trained network, and its target when it has one
            for net in self.copies(name):
                for layer in net.layers:
                    parametrize.register_parametrization(layer, "weight", WeightMask(torch.ones_like(layer.weight)))

    # ---- masks ----------------------------------------------------------------------------------

    def online(self, name: str) -> EnsembleMLP:
        return self.base.trained_networks()[name][0]

    def copies(self, name: str) -> list[EnsembleMLP]:
        """The online network `name` and, when the base has one, its target: they share one mask."""
        online, target = self.base.trained_networks()[name]
        return [online] + ([target] if target is not None else [])

    def masks(self, name: str) -> list[torch.Tensor]:
        """The masks of network `name`, one per layer, each of the layer's weight shape."""
        return [layer.parametrizations.weight[0].mask for layer in self.online(name).layers]

    @torch.no_grad()
    def set_masks(self, name: str, masks: list[torch.Tensor]) -> None:
        for net in self.copies(name):
            for layer, mask in zip(net.layers, masks):
                layer.parametrizations.weight[0].mask.copy_(mask)

    def compute_masks(self, batch: Batch) -> None:
        """SNIP on `batch`: score |W * dL/dW| with dense masks, keep the top keep_ratio per network and seed."""
        names = list(self.base.trained_networks())
        for name in names:
            self.set_masks(name, [torch.ones_like(mask) for mask in self.masks(name)])
        weights = {name: [layer.parametrizations.weight.original for layer in self.online(name).layers] for name in names}
        flat = [w for name in names for w in weights[name]]
        grads = iter(torch.autograd.grad(self.base.all_losses(batch), flat))
        for name in names:
            scores = [(w * next(grads)).abs().detach() for w in weights[name]]
            self.set_masks(name, keep_masks(scores, self.num_seeds, self.config.keep_ratio))

    def remasks_before(self, step: int) -> bool:
        """Whether a new mask is computed before gradient step `step` (counted from 1)."""
        done = step - 1
        return done == 0 or (done % self.config.mask_every == 0 and done < self.config.mask_until)

    @torch.no_grad()
    def zero_pruned(self) -> None:
        for name in self.base.trained_networks():
            for net in self.copies(name):
                for layer in net.layers:
                    layer.parametrizations.weight.original.mul_(layer.parametrizations.weight[0].mask)

    # ---- update and act -------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if self.remasks_before(step):
            self.compute_masks(batch)
        metrics = self.base.update(batch, step)
        if self.config.zero_pruned_weights:
            self.zero_pruned()
        return metrics

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        return self.base.act(observations, episode_start)

    def policy_module(self, index: int) -> nn.Module:
        """The base's policy with the masked weights (the masks are applied; a standalone policy holds no mask)."""
        return self.base.policy_module(index)


def keep_masks(scores: list[torch.Tensor], num_seeds: int, keep_ratio: float) -> list[torch.Tensor]:
    """Binary masks keeping, per seed, the weights scoring at least the network's k-th largest score.

    `scores` are one network's layers, each (G * S, in, out) with member g * S + s (G = 2 for twins). A
    seed's network is all its members over all layers: one ranking, k = floor(keep_ratio * its weights).
    """
    S = num_seeds
    per_seed = torch.cat([score.reshape(-1, S, score[0].numel()).transpose(0, 1).reshape(S, -1) for score in scores], dim=1)
    k = max(1, int(keep_ratio * per_seed.shape[1]))
    threshold = per_seed.topk(k, dim=1).values[:, -1]
    masks = []
    for score in scores:
        grouped = score.reshape(-1, S, *score.shape[1:])
        keep = (grouped >= threshold.view(1, S, 1, 1)) & (grouped > 0)
        masks.append(keep.reshape(score.shape).to(score.dtype))
    return masks
