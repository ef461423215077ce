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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from offbench.errors import OffbenchError

BUDGET_KEYS = ("steps", "eval_every", "eval_episodes")
SCORE = "normalised return x100 under the dataset's reference min/max"


def check_budget(budget: Mapping[str, Any]) -> None:
    """Raise one line (`--steps must be positive, got 0`) unless every budget value is a positive integer."""
    for key in BUDGET_KEYS:
        value = budget[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise OffbenchError(f"--{key.replace('_', '-')} must be positive, got {value!r}")


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
