"""The run record's schema: `config.json` and `summary.json` of a run, written and read by this code only.

    RunConfig    what was trained: run and group ids, algorithm, seed, dataset identity, the training
                 protocol (offbench.protocol), resolved hyperparameters, the user's overrides, device
    RunSummary   how it ended: final, last-k mean and best score (x100: normalised return or success rate,
                 as the dataset record's `score` says), timings, speed

`to_dict()` writes a record and `from_dict()` reads it back; reading accepts records written before a
field existed (a missing field takes its documented default; `last10_score` reads as last_k = 10).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from offbench.protocol import TrainingProtocol

DEFAULT_LAST_K = 10  # the TD3+BC paper's metric: mean over the final 10 evaluations


@dataclass(frozen=True)
class DatasetRecord:
    """The dataset a run trained on: canonical id, what the user asked for, content hash, scoring references."""

    id: str
    sha256: str
    requested: str = ""
    source: str = ""
    env_id: str = ""
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    ref_source: str | None = None
    transitions: int | None = None
    transforms: list[dict[str, Any]] = field(default_factory=list)
    parent_sha256: str | None = None
    observation_space: dict[str, Any] | None = None
    action_space: dict[str, Any] | None = None
    score: str = "normalized-return"  # what an evaluation scores: offbench.data.dataset.SCORES (records before it: normalised return)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetRecord:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class RunConfig:
    """One seed's `config.json`."""

    run_id: str
    group_id: str
    algo: str
    seed: int
    dataset: DatasetRecord
    protocol: TrainingProtocol
    seeds_in_group: list[int] = field(default_factory=list)
    algo_config: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**data, "dataset": self.dataset.to_dict(), "protocol": self.protocol.to_dict()}

    @property
    def evaluation(self) -> dict[str, Any]:
        """What turns a policy into a score: the eval env, its kwargs and wrappers, the reference returns and the score."""
        return evaluation_settings(self.protocol.eval_env, self.protocol.eval_env_kwargs, self.protocol.eval_wrappers,
                                   self.dataset.ref_min_score, self.dataset.ref_max_score, self.dataset.score)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        values = _known(cls, data)
        values["dataset"] = DatasetRecord.from_dict(data["dataset"])
        values["protocol"] = TrainingProtocol.from_dict(_known(TrainingProtocol, data["protocol"]))
        return cls(**values)


@dataclass(frozen=True)
class RunSummary:
    """One seed's `summary.json`, written last: its presence makes the run over. Scores are x100.

    A run whose evaluation returned NaN or inf is `status = "diverged"` with no score (None), never a number.
    """

    final_score: float | None
    best_score: float | None = None
    last_k_score: float | None = None
    last_k: int = DEFAULT_LAST_K
    final_return: float | None = None
    evaluations: int | None = None
    steps: int | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    stage_time_s: dict[str, float] = field(default_factory=dict)
    wall_time_s: float | None = None
    steps_per_s: float | None = None
    seed_steps_per_s: float | None = None
    finished_at: float | None = None
    diverged_at_step: int | None = None  # the first evaluation with a non-finite return; no score is kept then
    status: str = "finished"  # or "diverged"
    final_success_rate: float | None = None  # x100: the final evaluation's share of episodes ending in success, where the env reports it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        values = dict(data)
        if "last10_score" in values and "last_k_score" not in values:  # records written before last_k existed
            values["last_k_score"], values["last_k"] = values["last10_score"], 10
        return cls(**_known(cls, values))


def evaluation_count(steps: int, eval_every: int) -> int:
    """Evaluations a run of `steps` steps makes: one every `eval_every` steps and one at the last step (offbench.train)."""
    return steps // eval_every + (steps % eval_every != 0)


def evaluation_settings(env: str, env_kwargs: Mapping[str, Any], wrappers: Sequence[str], ref_min: float | None, ref_max: float | None,
                        score: str = "normalized-return") -> dict[str, Any]:
    """The evaluation settings of a run with their `key`: 12 hex digits of the sha256 of the rest as canonical JSON.

    Runs with different keys were scored differently (another env, kwargs, wrappers, references or score),
    so analysis never pools or compares them (offbench.analysis.scores.PROTOCOL_COLUMNS). The score enters
    the settings only when it is not the normalised return, so the keys of runs recorded before it existed
    stay what they were.
    """
    settings = {"env": env, "env_kwargs": dict(env_kwargs), "wrappers": list(wrappers), "ref_min_score": ref_min, "ref_max_score": ref_max}
    if score != "normalized-return":
        settings["score"] = score
    canonical = json.dumps(settings, sort_keys=True, default=list)
    return {**settings, "key": hashlib.sha256(canonical.encode()).hexdigest()[:12]}


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `cls` in `data`, each checked against its annotation (a record file is untrusted input: a seed of
    10**23 or a score of "x" must not reach the index or a table); raises TypeError naming the first that is not."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} is {type(data).__name__}, not an object")
    hints = typing.get_type_hints(cls)
    known = {k: v for k, v in data.items() if k in hints}
    for key, value in known.items():
        if not _fits(value, hints[key]):
            raise TypeError(f"{key} = {value!r} is not {hints[key]}"[:200])
    return known


INT64 = 2**63 - 1  # SQLite's INTEGER: the index column every integer field of a record may reach
FLOAT_MAX = sys.float_info.max


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value matches a record field's annotation (str, int, float, bool, None, list[...], dict[...],
    unions; a dataclass field is checked by its own `from_dict`). Floats must be finite, ints fit int64."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or dataclasses.is_dataclass(hint):
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= INT64
    if hint is float:  # an int too large for a float (10**400) is no number a table can hold
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= FLOAT_MAX and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value) if args else isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(item, args[1]) for item in value.values()) if args else isinstance(value, dict)
    return True
