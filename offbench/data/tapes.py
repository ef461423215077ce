"""Whole-episode storage and tape sampling for recurrent agents (the data layer's tape sampler).

An `EpisodeBuffer` holds whole episodes, step by step, for one seed on the training device. Step t of an
episode of L transitions (t = 0 .. L) holds the observation o_t and, for t < L, the action a_t taken there,
the reward r_t and `terminal` (a_t ended the episode by a true termination); step L holds the last
observation with a zero action and reward. `real` marks steps whose transition comes from the dataset
(NEUBAY: the real prefix) rather than from a model. When full, whole episodes are evicted oldest first
(FIFO); storage grows by doubling up to `capacity` steps, so a large capacity costs nothing until used.

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

STEP_FIELDS = ("observations", "actions", "rewards", "terminals", "real")


@dataclass(frozen=True)
class Tape:
    """Tapes for S seeds, B per seed, T steps: observations (S, B, T, obs), actions (S, B, T, act), rewards,
    terminals, real (S, B, T) float32 0/1, starts (S, B, T) bool (True on each episode's first step)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
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
    """Whole episodes of one seed, oldest first in rows [0, used), FIFO-evicted at `capacity` steps.

    Eviction drops the oldest whole episodes and moves the rest to the front (one copy of the held steps per
    eviction, which happens at most once per `add`).
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.capacity, self.obs_dim, self.act_dim, self.device = capacity, obs_dim, act_dim, device
        self.storage: dict[str, torch.Tensor] = self._allocate(min(capacity, 1024))
        self.lengths: deque[int] = deque()  # steps of each held episode, oldest first
        self.used = 0  # steps held

    def _allocate(self, rows: int) -> dict[str, torch.Tensor]:
        shapes = {"observations": (rows, self.obs_dim), "actions": (rows, self.act_dim), "rewards": (rows,), "terminals": (rows,), "real": (rows,)}
        return {name: torch.zeros(shape, device=self.device) for name, shape in shapes.items()}

    def add(self, episode: dict[str, torch.Tensor]) -> None:
        """Append one episode (each field (steps, ...), fields `STEP_FIELDS`), evicting the oldest ones to make room."""
        steps = int(episode["rewards"].shape[0])
        if steps > self.capacity:
            raise OffbenchError(f"an episode of {steps} steps does not fit a buffer of {self.capacity} steps", "raise buffer_size")
        evicted = 0
        while self.used - evicted + steps > self.capacity:
            evicted += self.lengths.popleft()
        if evicted:
            for tensor in self.storage.values():
                tensor[: self.used - evicted] = tensor[evicted : self.used].clone()
            self.used -= evicted
        allocated = int(self.storage["rewards"].shape[0])
        if self.used + steps > allocated:
            grown = self._allocate(min(self.capacity, max(2 * allocated, self.used + steps)))
            for name, tensor in self.storage.items():
                grown[name][: self.used] = tensor[: self.used]
            self.storage = grown
        for name in STEP_FIELDS:
            self.storage[name][self.used : self.used + steps] = episode[name].to(self.storage[name].dtype)
        self.lengths.append(steps)
        self.used += steps

    def __len__(self) -> int:
        return len(self.lengths)

    def sample_tape(self, generator: torch.Generator, batch: int, length: int) -> Tape:
        """`batch` tapes of exactly `length` steps (B, T, ...), episodes drawn uniformly with replacement."""
        if not self.lengths:
            raise RuntimeError("sampling a tape from an empty episode buffer")
        lengths = torch.tensor(list(self.lengths))
        firsts = torch.cumsum(lengths, 0) - lengths
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
        return Tape(**{name: self.storage[name][index] for name in STEP_FIELDS}, starts=torch.stack(starts).to(self.device))

    def state_dict(self) -> dict[str, Any]:
        """The held steps and the episode lengths (storage beyond what is held is not saved)."""
        return {"storage": {name: t[: self.used].cpu().clone() for name, t in self.storage.items()}, "lengths": list(self.lengths), "used": self.used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.used, self.lengths = int(state["used"]), deque(int(n) for n in state["lengths"])
        self.storage = self._allocate(max(min(self.capacity, 1024), self.used))
        for name, tensor in state["storage"].items():
            self.storage[name][: self.used] = tensor.to(self.device)
