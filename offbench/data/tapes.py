"""Whole-episode storage and tape sampling for recurrent agents (the data layer's tape sampler).

An `EpisodeBuffer` holds whole episodes, step by step, for one seed on the training device. Step t of an
episode of L transitions (t = 0 .. L) holds the observation o_t and, for t < L, the action a_t taken there,
the reward r_t the agent observes, `penalties` (a reward penalty the TD target subtracts: NEUBAY's
c u / mean u, 0 by default) and `terminal` (a_t ended the episode by a true termination); step L holds the
last observation with a zero action and reward. `real` marks steps whose transition comes from the dataset
(NEUBAY: the real prefix) rather than from a model. Flags are stored as bool.

The storage is a ring of `capacity` steps; each episode occupies contiguous rows. An episode that does not
fit before the ring's end is written at row 0 (the rows left at the end wait for the next lap: less than
one episode). Writing evicts the oldest whole episodes whose rows it needs (FIFO), so an `add` copies the
new episode's steps only. Storage grows by doubling up to `capacity` steps, so a large capacity costs
nothing until used.

A tape (`sample_tape`) concatenates episodes chosen uniformly at random (with replacement) until the
total reaches `length` steps, then cuts it to exactly `length`: the layout of NEUBAY's batches (spec
shared/specs/neubay.md, "Losses"). `Tape.mask` marks valid positions, mask_t = 1 - start_{t+1} (the last
position of the tape invalid): a position is a learnable transition exactly when its successor on the
tape is the next step of the same episode.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from typing import Any

import torch

from offbench.errors import OffbenchError

STEP_FIELDS = ("observations", "actions", "rewards", "penalties", "terminals", "real")
FLAGS = ("terminals", "real")  # stored as bool, float32 0/1 on tapes


@dataclass(frozen=True)
class Tape:
    """Tapes for S seeds, B per seed, T steps: observations (S, B, T, obs), actions (S, B, T, act), rewards,
    penalties, terminals, real (S, B, T) float32 (flags 0/1), starts (S, B, T) bool (True on each episode's first step)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    penalties: torch.Tensor
    terminals: torch.Tensor
    real: torch.Tensor
    starts: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """1 where position t is a transition: its successor is on the tape and is not an episode start: (S, B, T)."""
        successor_starts = torch.cat([self.starts[..., 1:], torch.ones_like(self.starts[..., :1])], dim=-1)
        return (~successor_starts).float()

    @staticmethod
    def stack(tapes: list[Tape]) -> Tape:
        """Stack per-seed tapes (B, T, ...) on a new leading seed axis."""
        return Tape(**{f.name: torch.stack([getattr(t, f.name) for t in tapes]) for f in fields(Tape)})


class EpisodeBuffer:
    """Whole episodes of one seed in a ring of `capacity` steps, FIFO-evicted (module docstring).

    `episodes` holds (first row, steps) per episode, oldest first; `head` is the next row written. Invariant:
    the episodes at rows >= head (the previous lap's) are older than those below it, each group in row order.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.capacity, self.obs_dim, self.act_dim, self.device = capacity, obs_dim, act_dim, device
        self.storage: dict[str, torch.Tensor] = self._allocate(min(capacity, 1024))
        self.episodes: deque[tuple[int, int]] = deque()
        self.head = 0
        self.used = 0  # steps held

    def _allocate(self, rows: int) -> dict[str, torch.Tensor]:
        shapes = {"observations": (rows, self.obs_dim), "actions": (rows, self.act_dim), "rewards": (rows,), "penalties": (rows,),
                  "terminals": (rows,), "real": (rows,)}
        return {name: torch.zeros(shape, device=self.device, dtype=torch.bool if name in FLAGS else torch.float32)
                for name, shape in shapes.items()}

    @property
    def allocated(self) -> int:
        return int(self.storage["rewards"].shape[0])

    def _evict_oldest(self) -> None:
        self.used -= self.episodes.popleft()[1]

    def add(self, episode: dict[str, torch.Tensor]) -> None:
        """Append one episode (each field (steps, ...), fields `STEP_FIELDS`), evicting the oldest ones whose rows it needs."""
        steps = int(episode["rewards"].shape[0])
        if steps > self.capacity:
            raise OffbenchError(f"an episode of {steps} steps does not fit a buffer of {self.capacity} steps", "raise buffer_size")
        if self.head + steps > self.capacity:  # wrap: the previous lap's episodes past head are the oldest; drop them
            while self.episodes and self.episodes[0][0] >= self.head:
                self._evict_oldest()
            self.head = 0
        while self.episodes and self.head <= self.episodes[0][0] < self.head + steps:
            self._evict_oldest()
        if self.head + steps > self.allocated:
            grown = self._allocate(min(self.capacity, max(2 * self.allocated, self.head + steps)))
            for name, tensor in self.storage.items():
                grown[name][: tensor.shape[0]] = tensor
            self.storage = grown
        for name in STEP_FIELDS:
            self.storage[name][self.head : self.head + steps] = episode[name].to(self.storage[name].dtype)
        self.episodes.append((self.head, steps))
        self.head += steps
        self.used += steps

    def __len__(self) -> int:
        return len(self.episodes)

    def episode(self, index: int) -> dict[str, torch.Tensor]:
        """The `index`-th held episode, oldest first: every field (steps, ...), views of the storage."""
        first, steps = self.episodes[index]
        return {name: tensor[first : first + steps] for name, tensor in self.storage.items()}

    def sample_tape(self, generator: torch.Generator, batch: int, length: int) -> Tape:
        """`batch` tapes of exactly `length` steps (B, T, ...), episodes drawn uniformly with replacement."""
        if not self.episodes:
            raise RuntimeError("sampling a tape from an empty episode buffer")
        firsts, lengths = (torch.tensor(column) for column in zip(*self.episodes))
        rows, starts = [], []
        for _ in range(batch):
            chosen: list[int] = []
            while int(lengths[chosen].sum()) < length:
                chosen.extend(torch.randint(len(lengths), (8,), generator=generator, device=generator.device).tolist())
            picked = torch.tensor(chosen)[: int(torch.searchsorted(torch.cumsum(lengths[chosen], 0), length)) + 1]
            index = torch.cat([torch.arange(int(firsts[e]), int(firsts[e] + lengths[e])) for e in picked.tolist()])
            start = torch.cat([torch.arange(int(lengths[e])) == 0 for e in picked.tolist()])
            rows.append(index[:length])
            starts.append(start[:length])
        index = torch.stack(rows).to(self.device)
        steps = {name: self.storage[name][index] for name in STEP_FIELDS}
        return Tape(**{name: t.float() if name in FLAGS else t for name, t in steps.items()}, starts=torch.stack(starts).to(self.device))

    def runs(self) -> list[tuple[int, int]]:
        """The held rows as maximal contiguous (start, end) ranges, oldest first (at most a few: the ring's laps)."""
        runs: list[tuple[int, int]] = []
        for first, steps in self.episodes:
            if runs and runs[-1][1] == first:
                runs[-1] = (runs[-1][0], first + steps)
            else:
                runs.append((first, first + steps))
        return runs

    def state_dict(self) -> dict[str, Any]:
        """The held steps (one copy, gathered run by run, on the CPU), the episodes' rows, head and allocation."""
        runs = self.runs()
        def held(tensor: torch.Tensor) -> torch.Tensor:
            return torch.cat([tensor[a:b] for a, b in runs]).cpu() if runs else tensor[:0].cpu().clone()
        return {"storage": {name: held(t) for name, t in self.storage.items()}, "episodes": [list(e) for e in self.episodes],
                "head": self.head, "allocated": self.allocated}

    def _check_state(self, state: dict[str, Any]) -> None:
        """Raise ValueError unless a stored layout fits this buffer: allocation within capacity, head and every episode's
        rows inside it, and each field's held steps of this buffer's widths (a checkpoint is untrusted input)."""
        allocated, head, episodes = state["allocated"], state["head"], state["episodes"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (allocated, head)) or not 0 <= head <= allocated <= self.capacity:
            raise ValueError(f"rollout buffer: head {head!r} and allocation {allocated!r} do not fit a capacity of {self.capacity}")
        pairs = [tuple(e) for e in episodes if isinstance(e, (list, tuple)) and len(e) == 2 and all(isinstance(v, int) for v in e)]
        if len(pairs) != len(episodes) or not all(0 <= first and steps >= 1 and first + steps <= allocated for first, steps in pairs):
            raise ValueError(f"rollout buffer: an episode's rows are outside its {allocated} allocated rows")
        held = sum(steps for _, steps in pairs)
        widths = {"observations": (self.obs_dim,), "actions": (self.act_dim,)}
        if set(state["storage"]) != set(STEP_FIELDS) or not all(
            isinstance(t, torch.Tensor) and tuple(t.shape) == (held, *widths.get(name, ())) for name, t in state["storage"].items()
        ):
            raise ValueError(f"rollout buffer: stored fields are not {held} steps of this buffer's fields and widths")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the exact layout (rows, head, allocation), so eviction continues as it would have; raises ValueError
        for a layout that does not fit this buffer."""
        if "episodes" not in state:
            raise OffbenchError("this checkpoint's rollout buffer has an older layout", "start the run again")
        self._check_state(state)
        self.episodes = deque((int(first), int(steps)) for first, steps in state["episodes"])
        self.head, self.used = int(state["head"]), sum(steps for _, steps in self.episodes)
        self.storage = self._allocate(int(state["allocated"]))
        for name, tensor in state["storage"].items():
            offset = 0
            for a, b in self.runs():
                self.storage[name][a:b] = tensor[offset : offset + b - a].to(self.device)
                offset += b - a
