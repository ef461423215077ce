"""Building blocks shared by every algorithm: networks with a leading member axis, seeded noise, Polyak.

A member is one independent network. Training S seeds at once gives S members; twin critics for S
seeds give 2S members (twin-major: member q * S + s). Inputs and outputs carry the member axis first:
(members, batch, features). Each member is initialised from its own generator, in a fixed order, so a
seed's networks do not depend on how many other seeds share the process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from offbench.data.spaces import ObservationSpace
from offbench.errors import OffbenchError


def member_rand(shape: Sequence[int], generator: torch.Generator, target: torch.Tensor) -> torch.Tensor:
    """U[0, 1) values of `shape` from one member's `generator`, for initialising `target`. On the meta device (a network built
    only to be sized, offbench.train.check_fits) none are drawn: the generator lives on a real device and would allocate them."""
    if target.is_meta:
        return torch.empty(tuple(shape), device="meta")
    return torch.rand(tuple(shape), generator=generator, device=generator.device)


def member_randn(shape: Sequence[int], generator: torch.Generator, target: torch.Tensor) -> torch.Tensor:
    """N(0, 1) values as `member_rand`."""
    if target.is_meta:
        return torch.empty(tuple(shape), device="meta")
    return torch.randn(tuple(shape), generator=generator, device=generator.device)

class EnsembleLinear(nn.Module):
    """`members` independent linear layers applied with one batched matmul."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        # Like nn.Linear, a new layer is usable at once (global RNG); `reset_parameters` seeds each member.
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features).uniform_(-bound, bound))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """PyTorch's default `nn.Linear` init (uniform in ±1/sqrt(fan_in)), one generator per member."""
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        with torch.no_grad():
            for member, generator in enumerate(generators):
                for tensor in (self.weight[member], self.bias[member]):
                    values = member_rand(tensor.shape, generator, tensor)
                    tensor.copy_(values.mul_(2 * bound).sub_(bound))

    def reset_parameters_glorot(self, generators: Sequence[torch.Generator]) -> None:
        """Glorot/Xavier uniform weights (Flax's `variance_scaling(1, "fan_avg", "uniform")`), zero biases."""
        bound = math.sqrt(6.0 / (self.weight.shape[1] + self.weight.shape[2]))
        with torch.no_grad():
            for member, generator in enumerate(generators):
                values = member_rand(self.weight.shape[1:], generator, self.weight)
                self.weight[member].copy_(values.mul_(2 * bound).sub_(bound))
            self.bias.zero_()

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the feature axis with its own scale and shift per member: (members, batch, features).

    `eps` defaults to Flax's 1e-6 (PyTorch's `nn.LayerNorm` uses 1e-5). Scale starts at 1, shift at 0.
    """

    def __init__(self, members: int, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, features))
        self.bias = nn.Parameter(torch.zeros(members, 1, features))
        self.eps = eps

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        normalized = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        if members is None:
            return torch.addcmul(self.bias, normalized, self.weight)
        return torch.addcmul(self.bias[members], normalized, self.weight[members])


class EnsembleMLP(nn.Module):
    """MLP of `EnsembleLinear` layers: (members, batch, in) -> (members, batch, out).

    Each hidden layer is Linear -> `activation` (ReLU by default) -> optional per-member LayerNorm (the
    order of FQL-style codebases); the output layer is linear. `glorot_init` replaces PyTorch's default
    init with Glorot-uniform weights and zero biases.
    """

    def __init__(
        self,
        members: int,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
        layer_norm: bool = False,
        glorot_init: bool = False,
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(members, h) for h in hidden) if layer_norm else None
        self.members = members
        self.activation = activation
        self.glorot_init = glorot_init

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        for layer in self.layers:
            if self.glorot_init:
                layer.reset_parameters_glorot(generators)
            else:
                layer.reset_parameters(generators)

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """Apply all members, or only `members` (a slice of the member axis) to an input of that size."""
        for i, layer in enumerate(self.layers[:-1]):
            x = self.activation(layer(x, members))
            if self.norms is not None:
                x = self.norms[i](x, members)
        return self.layers[-1](x, members)

    @torch.no_grad()
    def member(self, index: int) -> EnsembleMLP:
        """Member `index` alone: a one-member copy on the CPU, without gradients, for a seed's standalone policy.

        It holds the member's effective weights (a weight parametrisation such as a sparsity mask is applied)
        and computes the same operations, so it gives that member's outputs bit for bit.
        """
        widths = [layer.weight.shape[2] for layer in self.layers]
        alone = EnsembleMLP(1, self.layers[0].weight.shape[1], widths[:-1], widths[-1], self.activation, self.norms is not None)
        for mine, theirs in zip([*alone.layers, *(alone.norms or [])], [*self.layers, *(self.norms or [])]):
            mine.weight.copy_(theirs.weight[index : index + 1])
            mine.bias.copy_(theirs.bias[index : index + 1])
        return alone.requires_grad_(False)


class EnsembleConv2d(nn.Module):
    """`members` independent 2-D convolutions applied as one grouped convolution (group m = member m).

    Works on the grouped layout (batch, members * channels, H, W): member m's channels are the m-th block
    of `in_channels`. Weight (members * out, in, kh, kw), bias (members * out,).
    """

    def __init__(self, members: int, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.members, self.stride = members, stride
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)  # as nn.Conv2d, until reset_parameters
        self.weight = nn.Parameter(torch.empty(members * out_channels, in_channels, kernel_size, kernel_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members * out_channels).uniform_(-bound, bound))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """PyTorch's default `nn.Conv2d` init (uniform in ±1/sqrt(in * kh * kw) for weight and bias), one generator per member."""
        bound = 1.0 / math.sqrt(self.weight[0].numel())
        weights, biases = self.weight.view(self.members, -1), self.bias.view(self.members, -1)
        with torch.no_grad():
            for member, generator in enumerate(generators):
                for tensor in (weights[member], biases[member]):
                    values = member_rand(tensor.shape, generator, tensor)
                    tensor.copy_(values.mul_(2 * bound).sub_(bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, groups=self.members)


class EnsembleConvTrunk(nn.Module):
    """The DQN (Nature) conv trunk for `members` networks: (members, B, k, 84, 84) -> (members, B, 3136).

    conv 32 8x8/4 -> ReLU -> conv 64 4x4/2 -> ReLU -> conv 64 3x3/1 -> ReLU -> flatten (channel-major, as
    `tensor.reshape(-1, 3136)` in sfujim/BCQ discrete_BCQ Conv_Q). Inputs are cast to float32 as they are
    (frames stay in 0..255: the reference code does not divide by 255). Members never mix: each conv is
    grouped by member.
    """

    def __init__(self, members: int, in_channels: int) -> None:
        super().__init__()
        self.members, self.in_channels = members, in_channels
        self.convs = nn.ModuleList([
            EnsembleConv2d(members, in_channels, 32, 8, 4),
            EnsembleConv2d(members, 32, 64, 4, 2),
            EnsembleConv2d(members, 64, 64, 3, 1),
        ])

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        for conv in self.convs:
            conv.reset_parameters(generators)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        members, batch = frames.shape[:2]
        x = frames.float().transpose(0, 1).reshape(batch, members * frames.shape[2], *frames.shape[3:])
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x.reshape(batch, members, -1).transpose(0, 1)

    @torch.no_grad()
    def member(self, index: int) -> EnsembleConvTrunk:
        """Member `index` alone: a one-member copy on the CPU, without gradients (see `EnsembleMLP.member`)."""
        alone = EnsembleConvTrunk(1, self.in_channels)
        for mine, theirs in zip(alone.convs, self.convs):
            rows = slice(index * mine.weight.shape[0], (index + 1) * mine.weight.shape[0])
            mine.weight.copy_(theirs.weight[rows])
            mine.bias.copy_(theirs.bias[rows])
        return alone.requires_grad_(False)


class TanhPolicy(nn.Module):
    """max_action * tanh(actor(s)): one seed's deterministic actor (TD3+BC, BC) as a standalone policy.

    `forward(observations (1, N, obs_dim)) -> actions (1, N, action_dim)`; `noise_dim = 0` (no noise input).
    """

    noise_dim = 0

    def __init__(self, actor: EnsembleMLP, max_action: float) -> None:
        super().__init__()
        self.actor = actor
        self.max_action = max_action

    def forward(self, observations: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.max_action * torch.tanh(self.actor(observations))


class VectorTrunk(nn.Module):
    """The identity trunk of a low-dimensional Q network (FC_Q): (members, B, obs_dim) float32 passes through."""

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """Nothing to initialise (the same interface as `EnsembleConvTrunk`)."""
        del generators

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return observations

    def member(self, index: int) -> VectorTrunk:
        del index
        return VectorTrunk()


def q_trunk(members: int, observation_space: ObservationSpace) -> tuple[nn.Module, int]:
    """The trunk of a discrete-action Q network and its output width, chosen by the observations (sfujim/BCQ discrete_BCQ).

    uint8 frame stacks (k, 84, 84) get the DQN conv trunk (`EnsembleConvTrunk`, 3136 features: Conv_Q);
    float32 vectors (obs_dim,) go straight to the heads (FC_Q). Raises `OffbenchError` for frames of another size.
    """
    if observation_space.is_vector:
        return VectorTrunk(), observation_space.shape[0]
    if observation_space.shape[-2:] != (84, 84) or len(observation_space.shape) != 3:
        raise OffbenchError(f"the DQN conv trunk takes stacks of 84x84 frames (k, 84, 84), got {observation_space.describe()}")
    return EnsembleConvTrunk(members, observation_space.shape[0]), CONV_FEATURES


CONV_FEATURES = 3136  # 64 channels x 7 x 7 after the DQN trunk on 84x84 frames


def epsilon_greedy(greedy: torch.Tensor, noise: torch.Tensor, num_actions: int, epsilon: float) -> torch.Tensor:
    """Epsilon-greedy actions from standard normal noise: (S, N) greedy actions, (S, N, 2) noise -> (S, N) int64.

    With u = Phi(noise[..., 0]) and v = Phi(noise[..., 1]) (uniform on (0, 1)), the action is uniform,
    min(floor(v * n), n - 1), where u < epsilon, else the greedy one: the evaluation policy of DQN and
    discrete BCQ (sfujim/BCQ discrete_BCQ `select_action`). Normals, not uniforms, because a standalone
    policy takes its noise as N(0, I) (`OfflineAlgorithm.policy_module`).
    """
    uniform = torch.special.ndtr(noise)
    random_actions = (uniform[..., 1] * num_actions).long().clamp(max=num_actions - 1)
    return torch.where(uniform[..., 0] < epsilon, random_actions, greedy)


def seeded_normal(generators: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    """Standard normal noise of shape (S, *shape), seed s drawn from generator s."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=g.device) for g in generators])


@torch.no_grad()
def hard_update(target: nn.Module, source: nn.Module) -> None:
    """target <- source, for every parameter (a hard copy, as `load_state_dict`)."""
    torch._foreach_copy_(list(target.parameters()), list(source.parameters()))


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, for every parameter."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def per_seed_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the leading seed axis: (S, ...) -> (S,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)
