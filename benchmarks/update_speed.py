"""Update speed of every algorithm in the zoo on the seed axis, beside a plain single-seed TD3+BC step.

    python benchmarks/update_speed.py [--device cpu|cuda] [--seconds 10] [--seeds 1 5 10] [--algos td3bc bcq] [--threads N]

Prints seed-steps/s (gradient steps x seeds per second) for each algorithm and S, and for the baseline:
a plain PyTorch TD3+BC step (nn.Linear networks, one seed, the reference code's structure) written
inline below. Each algorithm runs with its default config from baselines/<algo>.toml. Data: a synthetic
1M-transition hopper-sized dataset on the device, sampled as the protocol does. Discrete-action algorithms
(discrete BCQ, offline DQN) get two rows per S instead: low-dim (a synthetic 1M-transition CartPole-sized
dataset, 4-d observations, 2 actions, the baseline's low-dim config) and Atari (N_FRAMES synthetic 84x84
uint8 frames, 6 actions, stacked by the frame-stack sampler, the baseline's [observations.frames] config).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offbench.algos import ALGORITHMS, get_algorithm
from offbench.algos.base import Problem
from offbench.config import resolve_config
from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.sampling import FrameStack, Sampler, UniformTransitions
from offbench.data.spaces import Box, Discrete, ObservationSpace
from offbench.provenance import cpu_model
from offbench.seeding import SeedStreams

OBS, ACT, N, BATCH = 11, 3, 1_000_000, 256
DISCRETE_OBS, DISCRETE_ACTIONS, ATARI_ACTIONS, N_FRAMES = 4, 2, 6, 20_000


def synthetic_data(device: torch.device) -> UniformTransitions:
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((N, OBS), dtype=np.float32)
    timeouts = np.zeros(N, dtype=bool)
    timeouts[-1] = True
    metadata = DatasetMetadata("test/synthetic-v0", "test", "Hopper-v5", ObservationSpace((OBS,)), Box((-1.0,) * ACT, (1.0,) * ACT))
    dataset = OfflineDataset.build(
        metadata, observations=obs, actions=rng.uniform(-1, 1, (N, ACT)), rewards=rng.standard_normal(N),
        next_observations=np.roll(obs, -1, 0), terminals=np.zeros(N, dtype=bool), timeouts=timeouts,
        episode_starts=np.zeros(1, dtype=np.int64), validate=False,
    )
    return UniformTransitions(dataset, device, normalize_states=False, timeouts_as_terminals=False)


def synthetic_discrete_data(device: torch.device, frames: bool) -> tuple[Sampler, Problem]:
    """Low-dim: 1M CartPole-sized transitions, uniform sampler. Atari: N_FRAMES 84x84 frames in 100-step episodes, frame-stack sampler."""
    rng = np.random.default_rng(0)
    count = N_FRAMES if frames else N
    if frames:
        space, actions = ObservationSpace((84, 84), "uint8"), Discrete(ATARI_ACTIONS)
        obs = rng.integers(0, 256, (count, 84, 84), dtype=np.uint8)
    else:
        space, actions = ObservationSpace((DISCRETE_OBS,)), Discrete(DISCRETE_ACTIONS)
        obs = rng.standard_normal((count, DISCRETE_OBS), dtype=np.float32)
    starts = np.arange(0, count, 100 if frames else count, dtype=np.int64)
    terminals = np.zeros(count, dtype=bool)
    terminals[starts[1:] - 1] = True
    terminals[-1] = True
    metadata = DatasetMetadata("test/synthetic-v0", "test", "CartPole-v1", space, actions)
    dataset = OfflineDataset.build(
        metadata, observations=obs, actions=rng.integers(0, actions.n, count), rewards=rng.standard_normal(count),
        next_observations=None if frames else np.roll(obs, -1, 0), terminals=terminals, timeouts=np.zeros(count, dtype=bool),
        episode_starts=starts, validate=False,
    )
    if frames:
        sampler: Sampler = FrameStack(dataset, device, 4, timeouts_as_terminals=False)
    else:
        sampler = UniformTransitions(dataset, device, normalize_states=False, timeouts_as_terminals=False)
    return sampler, Problem(sampler.observation_space, actions)


def timed(step_fn, seconds: float, device: torch.device, warmup: int = 20) -> float:
    """Steps per second of `step_fn(i)` over about `seconds` of wall time."""
    for i in range(1, warmup + 1):
        step_fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            steps += 1
            step_fn(warmup + steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def offbench_rate(name: str, num_seeds: int, data: Sampler, device: torch.device, seconds: float,
                  problem: Problem = Problem.vector(OBS, ACT, 1.0), kind: str | None = None) -> float:
    algorithm_class = get_algorithm(name)
    config = resolve_config(name, algorithm_class, None if kind else "local/hopper-medium-v5", {}, kind)
    streams = SeedStreams.for_seeds(list(range(num_seeds)), device)
    algo = algorithm_class(config, problem, streams).to(device)
    return timed(lambda i: algo.update(data.sample(streams.sampling, config.batch_size), i), seconds, device) * num_seeds


# ---- the baseline: a plain single-seed TD3+BC step, as in the reference code -----------------------


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, out_dim))


def plain_rate(data: UniformTransitions, device: torch.device, seconds: float) -> float:
    actor, q1, q2 = mlp(OBS, ACT).to(device), mlp(OBS + ACT, 1).to(device), mlp(OBS + ACT, 1).to(device)
    actor_t, q1_t, q2_t = (copy.deepcopy(m) for m in (actor, q1, q2))
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=3e-4)

    def step(i: int) -> None:
        idx = torch.randint(N, (BATCH,), device=device)
        s, a, r, s2, nd = data.observations[idx], data.actions[idx], data.rewards[idx], data.next_observations[idx], data.not_dones[idx]
        with torch.no_grad():
            noise = (torch.randn_like(a) * 0.2).clamp(-0.5, 0.5)
            a2 = (torch.tanh(actor_t(s2)) + noise).clamp(-1, 1)
            sa2 = torch.cat([s2, a2], 1)
            y = r + 0.99 * nd * torch.min(q1_t(sa2), q2_t(sa2)).squeeze(-1)
        sa = torch.cat([s, a], 1)
        critic_loss = F.mse_loss(q1(sa).squeeze(-1), y) + F.mse_loss(q2(sa).squeeze(-1), y)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        if i % 2 == 0:
            pi = torch.tanh(actor(s))
            q = q1(torch.cat([s, pi], 1))
            actor_loss = -2.5 / q.abs().mean().detach() * q.mean() + F.mse_loss(pi, a)
            actor_opt.zero_grad()
            actor_loss.backward()
            actor_opt.step()
            with torch.no_grad():
                for net, target in ((actor, actor_t), (q1, q1_t), (q2, q2_t)):
                    for p, tp in zip(net.parameters(), target.parameters()):
                        tp.lerp_(p, 0.005)

    return timed(step, seconds, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per configuration")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--algos", nargs="+", default=sorted(ALGORITHMS))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = synthetic_data(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(f"machine: {cpu_model()} ({platform.machine()}), torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, gpu {gpu}")
    print(f"{OBS}-d observations, {ACT}-d actions, default configs (batch sizes as configured), ~{args.seconds:.0f} s per row")
    print(f"{'implementation':<36}{'seeds':>6}{'steps/s':>10}{'seed-steps/s':>14}")
    baseline = plain_rate(data, device, args.seconds)
    print(f"{'plain PyTorch TD3+BC (baseline)':<36}{1:>6}{baseline:>10.1f}{baseline:>14.1f}")
    discrete = {kind: synthetic_discrete_data(device, frames=kind == "frames") for kind in ("vector", "frames")}
    for name in args.algos:
        for num_seeds in args.seeds:
            if "discrete" in get_algorithm(name).action_kinds:
                for kind, label in (("vector", "low-dim"), ("frames", "Atari")):
                    sampler, problem = discrete[kind]
                    rate = offbench_rate(name, num_seeds, sampler, device, args.seconds, problem, kind)
                    print(f"{'offbench ' + name + ' (' + label + ')':<36}{num_seeds:>6}{rate / num_seeds:>10.1f}{rate:>14.1f}")
                continue
            rate = offbench_rate(name, num_seeds, data, device, args.seconds)
            print(f"{'offbench ' + name:<36}{num_seeds:>6}{rate / num_seeds:>10.1f}{rate:>14.1f}   x{rate / baseline:.2f} vs baseline TD3+BC")


if __name__ == "__main__":
    main()
