"""Dataset transforms usable with every algorithm. Each returns a new `OfflineDataset` whose id records
the transform, so a transformed dataset never mixes with the full one in a report or a check.

- `subset(..., mode="first")`: the first N transitions, as Sparse-Reg's code takes its small datasets;
  the cut episode ends in a time-out, and episodes of 10 or fewer transitions are dropped as that code
  does. Id suffix `+first<N>`.
- `subset(..., mode="episodes")`: whole episodes drawn at random (seeded) until N transitions; the
  last one is cut to fit. Id suffix `+episodes<N>-seed<k>`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.errors import OffbenchError

SUBSET_MODES = ("first", "episodes")
MIN_EPISODE_TRANSITIONS = 11  # Sparse-Reg's code drops trajectories with 10 or fewer transitions


def subset(dataset: OfflineDataset, size: int, mode: str = "first", seed: int = 0) -> OfflineDataset:
    """A small-data version of `dataset` with at most `size` transitions."""
    if mode not in SUBSET_MODES:
        raise OffbenchError(f"unknown subset mode '{mode}'", f"choose one of: {', '.join(SUBSET_MODES)}")
    if not 0 < size <= len(dataset):
        raise OffbenchError(f"--subset must be between 1 and the dataset's {len(dataset)} transitions, got {size}")
    if mode == "first":
        spans = _first_spans(dataset, size)
        spans = [(a, b) for a, b in spans if b - a >= MIN_EPISODE_TRANSITIONS]
        suffix = f"+first{size}"
    else:
        spans = _random_episode_spans(dataset, size, seed)
        suffix = f"+episodes{size}-seed{seed}"
    if not spans:
        raise OffbenchError(f"--subset {size} of {dataset.metadata.id} keeps no episode of {MIN_EPISODE_TRANSITIONS} or more transitions")
    return _select(dataset, spans, suffix, {"subset": {"mode": mode, "size": size, "seed": seed if mode == "episodes" else None}})


def _first_spans(dataset: OfflineDataset, size: int) -> list[tuple[int, int]]:
    return [(int(a), int(min(b, size))) for a, b in zip(dataset.episode_starts, dataset.episode_ends) if a < size]


def _random_episode_spans(dataset: OfflineDataset, size: int, seed: int) -> list[tuple[int, int]]:
    order = np.random.default_rng(seed).permutation(dataset.num_episodes)
    spans, total = [], 0
    for episode in order:
        start, end = int(dataset.episode_starts[episode]), int(dataset.episode_ends[episode])
        end = min(end, start + size - total)
        spans.append((start, end))
        total += end - start
        if total == size:
            break
    return spans


def _select(dataset: OfflineDataset, spans: list[tuple[int, int]], suffix: str, record: dict) -> OfflineDataset:
    index = np.concatenate([np.arange(a, b) for a, b in spans])
    lengths = np.array([b - a for a, b in spans])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    terminals = dataset.terminals[index].copy()
    timeouts = dataset.timeouts[index].copy()
    last = starts + lengths - 1
    timeouts[last] = ~terminals[last]  # an episode cut short ends in a time-out, never a terminal
    return OfflineDataset.build(
        derived_metadata(dataset, suffix, record),
        observations=dataset.observations[index],
        actions=dataset.actions[index],
        rewards=dataset.rewards[index],
        next_observations=None if dataset.next_observations is None else dataset.next_observations[index],
        terminals=terminals,
        timeouts=timeouts,
        episode_starts=starts,
        extras={name: array[index] for name, array in dataset.extras.items()},
    )


def derived_metadata(dataset: OfflineDataset, suffix: str, record: dict) -> DatasetMetadata:
    """Metadata of a transformed dataset: the id gains `suffix`, the transform and parent hash are recorded."""
    extra = {**dataset.metadata.extra, "transforms": [*dataset.metadata.extra.get("transforms", []), record], "parent_sha256": dataset.metadata.sha256}
    return dataclasses.replace(dataset.metadata, id=dataset.metadata.id + suffix, extra=extra)


def shift_rewards(dataset: OfflineDataset, shift: float) -> OfflineDataset:
    """Every reward plus `shift` (float32), all else as stored: AntMaze's r - 1 of IQL, DriftQL and NEUBAY (`shift` -1),
    applied where a baseline config asks for it (`reward_shift` in a [datasets] row, `offbench.config.dataset_transforms`).

    Id suffix `+reward<shift>` (`+reward-1`, `+reward0.5`); the record keeps the shift. A shift of 0 or one that is
    not a finite number is refused (one line): a transform that changes nothing would still split the runs' cells.
    """
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not np.isfinite(shift) or shift == 0:
        raise OffbenchError(f"reward_shift must be a finite non-zero number, got {shift!r}"[:200], "AntMaze's papers train on r - 1: reward_shift = -1.0")
    metadata = derived_metadata(dataset, f"+reward{float(shift):g}", {"reward_shift": float(shift)})
    return OfflineDataset.build(
        metadata,
        observations=dataset.observations,
        actions=dataset.actions,
        rewards=(dataset.rewards.astype(np.float64) + float(shift)).astype(np.float32),
        next_observations=dataset.next_observations,
        terminals=dataset.terminals,
        timeouts=dataset.timeouts,
        episode_starts=dataset.episode_starts,
        extras=dict(dataset.extras),
    )
