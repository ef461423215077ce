"""NEUBAY speed: world-model training throughput and agent gradient steps/s, with the paper budget's cost.

    python benchmarks/neubay_speed.py [--device cpu|cuda] [--seconds 20] [--members 128 16] [--tape 2048] [--threads N]

World model: the stage-1 trainer (offbench.algos.world_model) on a synthetic hopper-sized dataset
(11-dim states, 3-dim actions), default architecture (4 x 200, LayerNorm); prints member-rows/s (rows x
members per second of training) and the time of one epoch over 1M transitions (hopper-medium size).
Agent: one NEUBAY gradient step (critic, target, actor, alpha) on one tape per seed of `--tape` steps, the
default agent config (baselines/neubay.toml [config]); prints steps/s and the time 2M steps would take.
Rollout collection is not timed here. Prints numbers only; asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from offbench.algos import world_model as wm
from offbench.algos.base import Problem
from offbench.algos.neubay import Neubay
from offbench.config import resolve_config
from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.spaces import Box, ObservationSpace
from offbench.data.tapes import EpisodeBuffer, Tape
from offbench.provenance import cpu_model
from offbench.seeding import SeedStreams

OBS, ACT = 11, 3
PAPER_ROWS, PAPER_STEPS = 1_000_000, 2_000_000


def synthetic_dataset(rows: int) -> OfflineDataset:
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((rows, OBS), dtype=np.float32)
    timeouts = np.zeros(rows, dtype=bool)
    timeouts[999::1000] = True
    metadata = DatasetMetadata("test/synthetic-v0", "test", "Hopper-v5", ObservationSpace((OBS,)), Box((-1.0,) * ACT, (1.0,) * ACT))
    return OfflineDataset.build(metadata, obs, rng.uniform(-1, 1, (rows, ACT)).astype(np.float32), rng.standard_normal(rows).astype(np.float32),
                                obs + 0.1 * rng.standard_normal((rows, OBS), dtype=np.float32), np.zeros(rows, bool), timeouts,
                                np.arange(0, rows, 1000), validate=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def world_model_speed(members: int, seconds: float, device: torch.device) -> None:
    data = wm.WorldData.from_dataset(synthetic_dataset(50_000), device)
    trainer = wm.EnsembleTrainer(data, wm.WorldModelSettings(ensemble_size=members), 0, device)
    trainer.train_rows = trainer.train_rows[:4096]  # time batches, not a whole epoch
    trainer.train_epoch()  # warm-up
    sync(device)
    start, rows = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        trainer.train_epoch()
        rows += trainer.train_rows.numel()
    sync(device)
    elapsed = time.perf_counter() - start
    per_s = rows * members / elapsed
    epoch_s = PAPER_ROWS * members / per_s
    print(f"world model, {members} members: {per_s:,.0f} member-rows/s; one epoch of 1M rows {epoch_s:,.0f} s; "
          f"1200 epochs (hopper-medium cap) {1200 * epoch_s / 3600:,.1f} h")


def agent_speed(tape: int, seconds: float, device: torch.device) -> None:
    config = resolve_config("neubay", Neubay, None, {"tape_length": tape})
    agent = Neubay(config, Problem.vector(OBS, ACT), SeedStreams.for_seeds([0], device)).to(device)
    agent.total_steps.fill_(PAPER_STEPS)
    buffer = EpisodeBuffer(10 * tape, OBS, ACT, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    for _ in range(20):
        steps = int(torch.randint(50, 1000, (1,), generator=g))
        buffer.add({"observations": torch.randn(steps, OBS, generator=g), "actions": torch.rand(steps, ACT, generator=g) * 2 - 1,
                    "rewards": torch.randn(steps, generator=g), "penalties": torch.zeros(steps), "terminals": torch.zeros(steps, dtype=torch.bool),
                    "real": torch.rand(steps, generator=g) < 0.5})
    sample_generator = torch.Generator(device=device).manual_seed(0)

    def batch() -> Tape:
        return Tape.stack([buffer.sample_tape(sample_generator, 1, tape)])

    agent.update(batch(), 1)  # warm-up
    sync(device)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        agent.update(batch(), steps + 2)
        steps += 1
    sync(device)
    rate = steps / (time.perf_counter() - start)
    print(f"agent, tape {tape}: {rate:.2f} gradient steps/s; 2M steps {PAPER_STEPS / rate / 3600:,.0f} h")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--members", type=int, nargs="+", default=[128, 16])
    parser.add_argument("--tape", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"machine: {platform.node()}, {name}, torch {torch.__version__}, {args.threads} thread(s), device {device}")
    for members in args.members:
        world_model_speed(members, args.seconds, device)
    agent_speed(args.tape, args.seconds, device)


if __name__ == "__main__":
    main()
