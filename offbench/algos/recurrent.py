"""Recurrent building blocks on the member (seed) axis: the linear recurrent unit (LRU) and its stacked encoder.

LRU: Orvieto et al., "Resurrecting Recurrent Neural Networks for Long Sequences" (ICML 2023), as NEUBAY
uses it (spec shared/specs/neubay.md, "Recurrent agent"; twni2016/neubay memory/lru.py, itself after
NicolasZucchet/minimal-LRU). Per member, with model width H and state size N:

    lambda = exp(-exp(nu_log) + i exp(theta_log))                      (N,) complex, |lambda| in [r_min, r_max]
    h_t    = lambda * h_{t-1} * (1 - start_t) + exp(gamma_log) * (B x_t)   h complex (N,), reset at episode starts
    y_t    = Re(C h_t) + D * x_t

Init: u1, u2 ~ U(0, 1); nu_log = log(-0.5 log(u1 (r_max^2 - r_min^2) + r_min^2)); theta_log = log(max_phase u2);
gamma_log = log(sqrt(1 - |lambda|^2)); B = (N(0,1) + i N(0,1)) / sqrt(2H); C = (N(0,1) + i N(0,1)) / sqrt(N); D ~ N(0,1).

Tensors are (members, *batch, T, features): the leading axis is the member, the one before the features is
time. `parallel_scan` evaluates the recurrence in log2(T) vectorised steps (Hillis-Steele over the
associative operator (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)); `sequential_scan` is the plain loop
(tests compare them). Acting runs T = 1 steps with the carried state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from offbench.algos.nets import EnsembleLayerNorm, EnsembleLinear, member_rand, member_randn

LAYER_NORM_EPS = 1e-5  # equinox.nn.LayerNorm's default (the reference's blocks and LRU layers)


def parallel_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t with h_{-1} = 0, along dim -2: (..., T, N) -> (..., T, N), log2(T) steps."""
    offset, length = 1, a.shape[-2]
    while offset < length:
        b = torch.cat([b[..., :offset, :], a[..., offset:, :] * b[..., :-offset, :] + b[..., offset:, :]], dim=-2)
        a = torch.cat([a[..., :offset, :], a[..., offset:, :] * a[..., :-offset, :]], dim=-2)
        offset *= 2
    return b


def sequential_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same recurrence as `parallel_scan`, one step at a time (the reference for tests)."""
    h, states = torch.zeros_like(b[..., 0, :]), []
    for t in range(a.shape[-2]):
        h = a[..., t, :] * h + b[..., t, :]
        states.append(h)
    return torch.stack(states, dim=-2)


def _members(tensor: torch.Tensor, members: slice | None) -> torch.Tensor:
    return tensor if members is None else tensor[members]


def _expand(param: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(M, F) -> (M, 1, ..., 1, F) broadcastable against `like` (M, *batch, T, F)."""
    return param.view(param.shape[0], *([1] * (like.dim() - 2)), param.shape[-1])


class EnsembleLRU(nn.Module):
    """`members` independent LRUs: x (M, *batch, T, H), start (M, *batch, T) bool, state (M, *batch, N) complex or None."""

    def __init__(self, members: int, d_model: int, d_hidden: int, r_min: float, r_max: float, max_phase: float) -> None:
        super().__init__()
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        self.nu_log = nn.Parameter(torch.zeros(members, d_hidden))
        self.theta_log = nn.Parameter(torch.zeros(members, d_hidden))
        self.gamma_log = nn.Parameter(torch.zeros(members, d_hidden))
        self.B_re = nn.Parameter(torch.zeros(members, d_hidden, d_model))
        self.B_im = nn.Parameter(torch.zeros(members, d_hidden, d_model))
        self.C_re = nn.Parameter(torch.zeros(members, d_model, d_hidden))
        self.C_im = nn.Parameter(torch.zeros(members, d_model, d_hidden))
        self.D = nn.Parameter(torch.zeros(members, d_model))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """The LRU paper's init (module docstring), member m from generator m."""
        n, h = self.nu_log.shape[1], self.D.shape[1]
        with torch.no_grad():
            for m, g in enumerate(generators):
                def rand(*shape: int, g: torch.Generator = g) -> torch.Tensor:
                    return member_rand(shape, g, self.D)

                def randn(*shape: int, g: torch.Generator = g) -> torch.Tensor:
                    return member_randn(shape, g, self.D)

                self.theta_log[m] = torch.log(self.max_phase * rand(n))
                self.nu_log[m] = torch.log(-0.5 * torch.log(rand(n) * (self.r_max**2 - self.r_min**2) + self.r_min**2))
                modulus = torch.exp(-torch.exp(self.nu_log[m]))
                self.gamma_log[m] = torch.log(torch.sqrt(1 - modulus**2))
                self.B_re[m], self.B_im[m] = randn(n, h) / math.sqrt(2 * h), randn(n, h) / math.sqrt(2 * h)
                self.C_re[m], self.C_im[m] = randn(h, n) / math.sqrt(n), randn(h, n) / math.sqrt(n)
                self.D[m] = randn(h)

    def forward(self, x: torch.Tensor, start: torch.Tensor, state: torch.Tensor | None = None,
                members: slice | None = None, parallel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs y (M, *batch, T, H) and every hidden state h (M, *batch, T, N) complex."""
        lam = torch.exp(torch.complex(-torch.exp(_members(self.nu_log, members)), torch.exp(_members(self.theta_log, members))))
        gamma = torch.exp(_members(self.gamma_log, members)).unsqueeze(-1)
        B = torch.complex(_members(self.B_re, members), _members(self.B_im, members)) * gamma  # (M, N, H)
        C = torch.complex(_members(self.C_re, members), _members(self.C_im, members))  # (M, H, N)
        flat = x.reshape(x.shape[0], -1, x.shape[-1]).to(B.dtype)
        bu = torch.bmm(flat, B.transpose(1, 2)).view(*x.shape[:-1], B.shape[1])
        a = _expand(lam, bu) * (~start).unsqueeze(-1)
        if state is not None:  # the carried state enters as the first step's input
            bu = torch.cat([bu[..., :1, :] + a[..., :1, :] * state.unsqueeze(-2), bu[..., 1:, :]], dim=-2)
        h = (parallel_scan if parallel else sequential_scan)(a, bu)
        y = torch.bmm(h.reshape(h.shape[0], -1, h.shape[-1]), C.transpose(1, 2)).real.view(*x.shape)
        return y + _expand(_members(self.D, members), x) * x, h


class SequenceLayer(nn.Module):
    """x + GLU(GELU(LRU(LayerNorm(x)))), GLU(z) = Linear(z) * sigmoid(Linear(z)) (reference SequenceLayer).

    GELU is the tanh approximation: the reference's `jax.nn.gelu` defaults to approximate=True.
    """

    def __init__(self, members: int, d_model: int, d_hidden: int, r_min: float, r_max: float, max_phase: float) -> None:
        super().__init__()
        self.norm = EnsembleLayerNorm(members, d_model, eps=LAYER_NORM_EPS)
        self.lru = EnsembleLRU(members, d_model, d_hidden, r_min, r_max, max_phase)
        self.out1 = EnsembleLinear(members, d_model, d_model)
        self.out2 = EnsembleLinear(members, d_model, d_model)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.lru.reset_parameters(generators)
        self.out1.reset_parameters(generators)
        self.out2.reset_parameters(generators)

    def forward(self, x: torch.Tensor, start: torch.Tensor, state: torch.Tensor | None, members: slice | None,
                parallel: bool) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        y, h = self.lru(self.norm(flat, members).view(x.shape), start, state, members, parallel)
        z = F.gelu(y, approximate="tanh").reshape(flat.shape)
        return x + (self.out1(z, members) * torch.sigmoid(self.out2(z, members))).view(x.shape), h


class RecurrentEncoder(nn.Module):
    """Block(in -> d_model) then `layers` stacked LRU sequence layers; Block = Linear -> LayerNorm -> LeakyReLU.

    `forward(x (M, *batch, T, in), start (M, *batch, T), states)` -> (features (M, *batch, T, d_model), hidden
    states per layer (M, *batch, T, N) complex). `states`: one carried state per layer (M, *batch, N), or
    None for a zero state.
    """

    def __init__(self, members: int, in_dim: int, d_model: int, d_hidden: int, layers: int,
                 r_min: float, r_max: float, max_phase: float) -> None:
        super().__init__()
        self.linear = EnsembleLinear(members, in_dim, d_model)
        self.norm = EnsembleLayerNorm(members, d_model, eps=LAYER_NORM_EPS)
        self.layers = nn.ModuleList(SequenceLayer(members, d_model, d_hidden, r_min, r_max, max_phase) for _ in range(layers))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.linear.reset_parameters(generators)
        for layer in self.layers:
            layer.reset_parameters(generators)

    def forward(self, x: torch.Tensor, start: torch.Tensor, states: Sequence[torch.Tensor] | None = None,
                members: slice | None = None, parallel: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        z = F.leaky_relu(self.norm(self.linear(flat, members), members)).view(*x.shape[:-1], -1)
        hidden = []
        for i, layer in enumerate(self.layers):
            z, h = layer(z, start, None if states is None else states[i], members, parallel)
            hidden.append(h)
        return z, hidden
