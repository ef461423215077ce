"""Observation and action spaces: what a dataset holds and what an algorithm is built for.

Observations are arrays of a fixed shape and dtype: float32 vectors (MuJoCo, OGBench states) or uint8
frames (Atari, pixel tasks), kept in their own dtype in memory and on the device. Actions are either a
`Box` (float32 vectors, per-dimension bounds, not necessarily symmetric) or `Discrete` (n actions,
int64 scalars). Spaces serialise to plain dicts for metadata, records and checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from offbench.errors import OffbenchError

OBSERVATION_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class ObservationSpace:
    """Observations of one `shape` (without the batch axis) and one `dtype` ("float32" or "uint8")."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in OBSERVATION_DTYPES:
            raise OffbenchError(f"observation dtype must be one of {', '.join(OBSERVATION_DTYPES)}, got {self.dtype}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def is_vector(self) -> bool:
        return len(self.shape) == 1 and self.dtype == "float32"

    @property
    def nbytes(self) -> int:
        """Bytes of one observation."""
        return math.prod(self.shape) * (1 if self.dtype == "uint8" else 4)

    @property
    def is_frames(self) -> bool:
        """uint8 images: (H, W), (C, H, W) or a stack of them."""
        return len(self.shape) >= 2 and self.dtype == "uint8"

    def describe(self) -> str:
        return f"{self.dtype} observations of shape {self.shape}"

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Box:
    """Continuous actions in [low, high] per dimension (float32 vectors of shape (dims,))."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    kind: ClassVar[str] = "box"
    dtype: ClassVar[str] = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", tuple(float(x) for x in self.low))
        object.__setattr__(self, "high", tuple(float(x) for x in self.high))
        if len(self.low) != len(self.high) or not self.low:
            raise OffbenchError(f"a box needs bounds of one non-zero length, got low={self.low}, high={self.high}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.low),)

    @property
    def symmetric_bound(self) -> float | None:
        """m when the box is [-m, m] in every dimension, else None."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        return float(high[0]) if np.allclose(low, -high) and np.allclose(high, high[0]) and high[0] > 0 else None

    def outside_rows(self, actions: np.ndarray) -> np.ndarray:
        """Bool mask (N,) of the actions (N, dims) outside the box, with a tolerance of 1e-5 x max(1, width)."""
        low, high = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)
        tolerance = 1e-5 * np.maximum(1.0, np.abs(high - low))
        return ((actions < low - tolerance) | (actions > high + tolerance)).reshape(len(actions), -1).any(axis=1)

    def first_outside(self, actions: np.ndarray) -> int | None:
        """Row index of the first action outside the box (see `outside_rows`), else None."""
        return first_true(self.outside_rows(actions))

    def sample_uniform(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` actions uniform in the box: (count, dims) float64."""
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        return rng.uniform(low, high, size=(count, low.size))

    def describe(self) -> str:
        bound = self.symmetric_bound
        where = f"[-{bound:g}, {bound:g}]" if bound is not None else f"[{list(self.low)}, {list(self.high)}]"
        return f"a {len(self.low)}-dimensional box action space in {where}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": list(self.low), "high": list(self.high)}


@dataclass(frozen=True)
class Discrete:
    """n discrete actions 0 .. n-1 (int64 scalars, shape ())."""

    n: int
    kind: ClassVar[str] = "discrete"
    dtype: ClassVar[str] = "int64"

    def __post_init__(self) -> None:
        if int(self.n) < 1:
            raise OffbenchError(f"a discrete action space needs at least one action, got n={self.n}")
        object.__setattr__(self, "n", int(self.n))

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    def first_outside(self, actions: np.ndarray) -> int | None:
        return first_true((actions < 0) | (actions >= self.n))

    def sample_uniform(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` actions uniform over 0 .. n-1: (count,) int64."""
        return rng.integers(self.n, size=count, dtype=np.int64)

    def describe(self) -> str:
        return f"{self.n} discrete actions"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n}


ActionSpace = Box | Discrete


def action_space_from_dict(data: dict[str, Any]) -> ActionSpace:
    if data.get("kind") == "discrete":
        return Discrete(int(data["n"]))
    if data.get("kind") == "box":
        return Box(tuple(data["low"]), tuple(data["high"]))
    raise OffbenchError(f"unknown action space {data!r}")


def observation_space_from_gymnasium(space: gym.Space, what: str) -> ObservationSpace:
    """A Gymnasium `Box` observation space as offbench's (uint8 stays uint8, other dtypes are float32).

    Raises `OffbenchError` for anything else (a `Dict` of observation and goals, a `Tuple`, `Discrete`
    states): offbench's datasets hold one array of observations.
    """
    if isinstance(space, gym.spaces.Box):
        return ObservationSpace(space.shape, "uint8" if space.dtype == np.uint8 else "float32")
    if isinstance(space, gym.spaces.Dict):
        found = f"a Dict observation space ({', '.join(space.spaces)})"
    else:
        found = f"a {type(space).__name__} observation space"
    raise OffbenchError(f"{what}: only array (Box) observations are supported, it has {found}")


def from_gymnasium(space: gym.Space, what: str) -> ActionSpace:
    """A Gymnasium `Box` or `Discrete` action space as offbench's; `what` names the dataset in the error."""
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return Box(tuple(space.low), tuple(space.high))
    if isinstance(space, gym.spaces.Discrete):
        if int(space.start) != 0:
            raise OffbenchError(f"{what}: discrete actions must start at 0, got start={space.start}")
        return Discrete(int(space.n))
    raise OffbenchError(f"{what}: only 1-D Box and Discrete action spaces are supported, got {space}")


def observation_space_of(observations: np.ndarray) -> ObservationSpace:
    """The space of an (N, ...) observation array: uint8 stays uint8, anything else is float32."""
    return ObservationSpace(tuple(observations.shape[1:]), "uint8" if observations.dtype == np.uint8 else "float32")


def first_true(mask: np.ndarray) -> int | None:
    """Index of the first True of a 1-D mask, else None (validation reports the first bad row)."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None
