"""Memory of a 1M-transition Atari dataset: read from a DQN Replay checkpoint and put on the device by the frame-stack sampler.

    python benchmarks/atari_memory.py [--rows 1000000] [--device cpu|cuda] [--folder /tmp/atari-memory]

Writes one checkpoint of `--rows` rows in the Dopamine layout with plain numpy and gzip (not offbench's writer),
as `dqn-replay/pong/run1-ckpt0-v0` under `<folder>` (used as OFFBENCH_DATA_DIR; reused when present), then in
this process: loads it through `offbench.data.registry.load_dataset` (the DQN Replay reader), builds the
`FrameStack` sampler on `--device` and draws one batch of 32 stacks for each of 3 seeds. Prints resident memory
(RSS) after each stage, the peak RSS, the CUDA memory allocated when the device is a GPU, and the times.

Synthetic frames: a Pong-like gray field with two paddles and a ball that move with the row (the bytes compress
like a game's, so the file is small); 800-step episodes, each followed by Dopamine's 3 zero padding rows.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

EPISODE, PADDING, BLOCK = 800, 3, 50_000


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def stored_rows(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stored row: whether it is padding, the terminal flag, and the action (the padding at the start included)."""
    period = EPISODE + PADDING
    position = (np.arange(rows) - PADDING) % period  # 0..799 an episode's steps, 800..802 the padding after it
    padding = (np.arange(rows) < PADDING) | (position >= EPISODE)
    terminal = (position == EPISODE - 1) & ~padding
    action = np.where(padding, 0, np.arange(rows) % 6).astype(np.int32)
    return padding, terminal.astype(np.uint8), action


def frames(first: int, count: int, padding: np.ndarray) -> np.ndarray:
    block = np.full((count, 84, 84), 87, np.uint8)
    row = np.arange(first, first + count)
    left, right, ball_y, ball_x = (row * 3) % 70, (row * 5) % 70, (row * 2) % 80, (row * 7) % 76
    for i in range(count):
        block[i, left[i]:left[i] + 14, 8:10] = 147
        block[i, right[i]:right[i] + 14, 74:76] = 92
        block[i, ball_y[i]:ball_y[i] + 2, ball_x[i] + 4:ball_x[i] + 6] = 236
    block[padding[first:first + count]] = 0
    return block


def write_checkpoint(logs: Path, rows: int) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    padding, terminal, action = stored_rows(rows)
    small = {"action": action, "reward": np.where(terminal == 1, -1.0, 0.0).astype(np.float32), "terminal": terminal}
    for field, values in small.items():
        with gzip.open(logs / f"$store$_{field}_ckpt.0.gz", "wb") as stream:
            np.save(stream, values)
    with gzip.open(logs / "add_count_ckpt.0.gz", "wb") as stream:
        np.save(stream, np.array(rows, dtype=np.int64))
    with gzip.open(logs / "$store$_observation_ckpt.0.gz.part", "wb", compresslevel=1) as stream:
        np.lib.format.write_array_header_1_0(stream, {"descr": "|u1", "fortran_order": False, "shape": (rows, 84, 84)})
        for first in range(0, rows, BLOCK):
            stream.write(frames(first, min(BLOCK, rows - first), padding).data)
    os.replace(logs / "$store$_observation_ckpt.0.gz.part", logs / "$store$_observation_ckpt.0.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/atari-memory"))
    args = parser.parse_args()
    logs = args.folder / "dqn-replay" / "Pong" / "1" / "replay_logs"
    if not (logs / "$store$_observation_ckpt.0.gz").is_file():
        start = time.perf_counter()
        write_checkpoint(logs, args.rows)
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - start:.0f} s, "
              f"{(logs / '$store$_observation_ckpt.0.gz').stat().st_size / 2**20:.0f} MiB of gzipped frames")
    os.environ["OFFBENCH_DATA_DIR"] = str(args.folder)
    from offbench.data.registry import load_dataset
    from offbench.data.sampling import FrameStack
    from offbench.provenance import cpu_model

    device = torch.device(args.device)
    print(f"machine: {cpu_model() or platform.processor()}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f}; "
          f"torch {torch.__version__}, device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"RSS at start: {rss_gib():.2f} GiB")
    start = time.perf_counter()
    dataset = load_dataset("dqn-replay/pong/run1-ckpt0-v0")
    print(f"loaded {len(dataset):,} transitions ({dataset.observations.nbytes / 2**30:.2f} GiB of frames) in {time.perf_counter() - start:.0f} s; "
          f"RSS {rss_gib():.2f} GiB, peak {peak_rss_gib():.2f} GiB")
    start = time.perf_counter()
    sampler = FrameStack(dataset, device, 4, timeouts_as_terminals=False)
    generators = [torch.Generator(device).manual_seed(seed) for seed in range(3)]
    batch = sampler.sample(generators, 32)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print(f"frame-stack sampler on {device} and one batch {tuple(batch.observations.shape)} in {time.perf_counter() - start:.1f} s; "
          f"RSS {rss_gib():.2f} GiB, peak {peak_rss_gib():.2f} GiB")
    if device.type == "cuda":
        print(f"CUDA memory allocated {torch.cuda.memory_allocated(device) / 2**30:.2f} GiB, peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
