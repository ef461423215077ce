"""The training protocol of a run: one typed object for training, the results store, analysis and check.

A run's protocol says how it was trained and scored: the budget (gradient steps, evaluation period,
episodes per evaluation), how minibatches are drawn, how states are normalised, whether time-outs stop
bootstrapping, the evaluation environment and its wrappers, and the score. It is written into each run
record (`config.json` "protocol"), read back by `TrainingProtocol.from_dict`, and a resumed group must
resolve to the same one. The budget keys (`BUDGET_KEYS`) are the store's index columns and the keys on
which report, leaderboard and check refuse to pool or compare runs (with the dataset hash); the other
fields follow from the dataset and the resolved hyperparameters, which the record keeps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offbench.errors import OffbenchError

BUDGET_KEYS = ("steps", "eval_every", "eval_episodes")
SCORE = "normalised return x100 under the dataset's reference min/max"

# Where numbers enter (command line, protocol files, the Python API) they are checked against the smallest
# destination they reach, before anything is written or allocated: a value the index (SQLite INTEGER), a tensor
# size or a generator cannot hold is refused in one line instead of poisoning the store half-way.
MAX_COUNT = 2**31 - 1  # steps, periods, subset sizes: int32, the narrowest integer an index or counter of the stack uses
MAX_SEED = 2**31 - 1  # a training or data seed; episode seeds (s + 100) * 1000 + j stay far inside int64 (offbench.evaluate)
MAX_EVAL_EPISODES = 1000  # episode j of seed s is seeded (s + 100) * 1000 + j (offbench.evaluate): j >= 1000 is seed s + 1's episode
MAX_SEEDS = 1000  # seeds in one group or command: each is a set of networks on the seed axis of one process
BUDGET_LIMITS = {"steps": MAX_COUNT, "eval_every": MAX_COUNT, "eval_episodes": MAX_EVAL_EPISODES}


def check_integer(name: str, value: Any, low: int = 1, high: int = MAX_COUNT) -> int:
    """`value` if it is an integer (not a bool) in [low, high]; else one-line `OffbenchError` naming `name` (`--steps`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise OffbenchError(f"{name} must be an integer, got {value!r}"[:200])
    if not low <= value <= high:
        bound = {0: "non-negative", 1: "positive"}.get(low, f"at least {low:,}") if value < low else f"at most {high:,}"
        raise OffbenchError(f"{name} must be {bound}, got {value:,}"[:200])
    return value


def seed_list(seeds: Any) -> list[int]:
    """Seeds as a list of Python ints; raises one-line `OffbenchError` for a value that is not a sequence of integers."""
    if isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, Iterable):
        raise OffbenchError(f"seeds must be a sequence of integers, got {type(seeds).__name__} {seeds!r}"[:200])
    if isinstance(seeds, Sized) and _length(seeds) > MAX_SEEDS:  # before a huge range is listed
        raise OffbenchError(f"the number of seeds must be at most {MAX_SEEDS:,}, got {_length(seeds):,}")
    values = list(seeds)
    if bad := [v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]:
        raise OffbenchError(f"seeds must be integers, got {bad[0]!r} ({type(bad[0]).__name__})"[:200])
    return [int(v) for v in values]


def _length(sized: Sized) -> float:
    try:
        return len(sized)
    except OverflowError:  # a range longer than sys.maxsize
        return math.inf


def check_budget(budget: Mapping[str, Any], where: str | None = None) -> None:
    """Raise one line (`--steps must be positive, got 0`; `FILE: steps ...` with `where`) unless every budget value is
    an integer within `BUDGET_LIMITS`."""
    for key in BUDGET_KEYS:
        check_integer(f"{where}: {key}" if where else f"--{key.replace('_', '-')}", budget[key], 1, BUDGET_LIMITS[key])


@dataclass(frozen=True)
class TrainingProtocol:
    """How one seed group was trained and evaluated (see the module docstring)."""

    steps: int
    eval_every: int
    eval_episodes: int
    sampler: str = "uniform"
    normalize_states: bool = False
    timeouts_as_terminals: bool = False
    eval_env: str = ""
    eval_env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_wrappers: list[str] = field(default_factory=list)
    batch_sampling: str = ""  # the sampler's description, in words
    score: str = SCORE

    def __post_init__(self) -> None:
        check_budget(self.budget)

    @property
    def budget(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in BUDGET_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingProtocol:
        """Read a recorded protocol; a field missing from an older record takes its default (`sampler`: uniform)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
