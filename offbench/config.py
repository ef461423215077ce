"""Algorithm configs: `baselines/<algo>.toml` defaults, then per-dataset overrides, then `--set`.

The defaults are `[config]`, then, for an algorithm whose settings depend on what it sees (discrete BCQ:
Atari vs low-dimensional tasks), the table `[observations.<kind>]` of the dataset's observation kind
(`vector`: float32 vectors, `frames`: uint8 images; `observation_kind`).

Every value is checked before anything runs: the key must be a field of the algorithm's config, the
value of the field's type, a float finite, and a number inside the range its field declares with
`Annotated[type, Range(...)]` (the aliases below name the common ones).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import tomllib
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from offbench.data import ids
from offbench.data.spaces import ObservationSpace
from offbench.errors import OffbenchError
from offbench.io import read_toml
from offbench.paths import resource_dir


@dataclass(frozen=True)
class Range:
    """Valid values of a numeric config field (each element, for a list): low <= x <= high, None = unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # x > low instead of x >= low

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        return f"<= {_number(self.high)}"


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1e4 else f"{value:g}"


LearningRate = Annotated[float, Range(0.0)]  # 0 freezes the network: an ablation, not an error
NonNegative = Annotated[float, Range(0.0)]
Positive = Annotated[float, Range(0.0, low_open=True)]
Fraction = Annotated[float, Range(0.0, 1.0)]  # discount, tau, mixing weights
Count = Annotated[int, Range(1)]  # batch sizes, samples, periods
Widths = Annotated[list[int], Range(1, 2**16)]  # hidden layer widths (16x the widest published network's 4096)
Width = Annotated[int, Range(1, 2**16)]  # one hidden width, as Widths
Members = Annotated[int, Range(1, 2**12)]  # ensemble members, critic heads (each a network of its own; the papers use <= 128)
Depth = Annotated[int, Range(1, 64)]  # blocks or layers of a network
Samples = Annotated[int, Range(1, 2**16)]  # candidates drawn per state (BCQ's 10 and 100)
Length = Annotated[int, Range(1, 2**20)]  # sequence lengths and rollouts per collection (steps looped over, or held at once)
MAX_INTEGER = 2**31 - 1  # any integer setting: int32, the narrowest integer a tensor size, index or counter of the stack uses
FLOAT32_MAX = 3.4028234663852886e38  # any number setting: training computes in float32, where a larger one is inf


def baseline_file(algo: str) -> dict[str, Any]:
    path = resource_dir("baselines") / f"{algo}.toml"
    if not path.exists():
        raise OffbenchError(f"no baseline config for '{algo}'", f"expected {path}")
    return read_toml(path)


def dataset_key(dataset_id: str) -> str:
    """The key of a dataset's overrides in `[datasets]`: its alias, transforms ignored (`offbench.data.ids`).

    `local/hopper-medium-v5+first10000` -> `hopper-medium`; raises `OffbenchError` for a text that is not an id.
    """
    return ids.config_key(dataset_id)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings to a dict; values are read as TOML (`1e-3`, `true`, `[256, 256]`), else text."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise OffbenchError(f"bad --set '{pair}'", "write --set key=value")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        overrides[key.strip()] = value
    return overrides


OBSERVATION_KINDS = ("vector", "frames")  # the tables a baseline may have under [observations]


def observation_kind(space: ObservationSpace) -> str:
    """`vector`, `frames` or `other`: the key of a baseline's `[observations.<kind>]` table."""
    return "vector" if space.is_vector else "frames" if space.is_frames else "other"


def resolve_config(algo: str, algorithm_class: Any, dataset_id: str | None, overrides: dict[str, Any], kind: str | None = None) -> Any:
    """Defaults (for observations of `kind`, when known), then the dataset's overrides, then the user's;
    every key and type is checked.

    The config class is `algorithm_class.config_class_for(values)`: an algorithm whose valid keys depend
    on a choice (Sparse-Reg's `base`) refuses the keys of the other choice.
    """
    values = {**baseline_values(algo, dataset_id, kind), **overrides}
    config_class = algorithm_class.config_class_for(values)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    for where, table in [("", values), *((f" in [observations.{k}]", t) for k, t in baseline_file(algo).get("observations", {}).items())]:
        unknown = sorted(set(table) - set(fields))
        if unknown:
            raise OffbenchError(f"unknown config key '{unknown[0]}' for {algo}{where}", f"valid keys: {', '.join(fields)}")
    coerced = {key: _coerce(algo, key, value, hints[key]) for key, value in values.items()}
    check_fields(algo, coerced, config_class)
    return config_class(**coerced)


def check_fields(owner: str, values: Any, config_class: type | None = None) -> None:
    """Raise one line for the first value that is not finite or outside its field's declared `Range`.

    `values` is a config object or a dict of field values for `config_class`; `owner` names it in the error.
    """
    config_class = config_class or type(values)
    items = values.items() if isinstance(values, dict) else ((f.name, getattr(values, f.name)) for f in dataclasses.fields(values))
    ranges = field_ranges(config_class)
    hints = typing.get_type_hints(config_class)
    for key, value in items:
        if typing.get_origin(hints.get(key)) is list and isinstance(value, (list, tuple)):  # built directly: a tuple of widths too
            for item in value:
                _coerce(owner, key, item, typing.get_args(hints[key])[0])
        _check_value(owner, key, value, ranges.get(key))


def field_ranges(config_class: type) -> dict[str, Range]:
    """The `Range` each field of a config dataclass declares, the most derived declaration winning."""
    ranges: dict[str, Range] = {}
    for cls in reversed(config_class.__mro__):
        own = cls.__dict__.get("__annotations__", {})
        if not own:
            continue
        hints = typing.get_type_hints(cls, include_extras=True)
        for name in own:
            declared = [m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Range)]
            if declared:
                ranges[name] = declared[0]
    return ranges


def _check_value(owner: str, key: str, value: Any, valid: Range | None) -> None:
    for number in value if isinstance(value, (list, tuple)) else [value]:
        if not isinstance(number, numbers.Real) or isinstance(number, bool):  # numpy scalars are Real too
            continue
        if not math.isfinite(float(number)):
            raise OffbenchError(f"config key '{key}' for {owner} must be a finite number, got {number!r}")
        if isinstance(number, numbers.Integral) and abs(int(number)) > MAX_INTEGER:
            raise OffbenchError(f"config key '{key}' for {owner} must be at most {MAX_INTEGER:,} in size, got {number!r}"[:200])
        if abs(float(number)) > FLOAT32_MAX:
            raise OffbenchError(f"config key '{key}' for {owner} must fit a float32 tensor (at most {FLOAT32_MAX:.3g} in size), got {number!r}")
        if valid is not None and not valid.contains(float(number)):
            raise OffbenchError(f"config key '{key}' for {owner} must be {valid.describe()}, got {value!r}")


# Keys of a [datasets] row that ask for a transform of the data rather than set a config field: applied by the
# trainer as a recorded transform (`offbench.train.baseline_transforms`: the dataset id gains its suffix), never
# silently, and never part of the resolved config.
TRANSFORM_KEYS = ("reward_shift",)  # AntMaze's r - 1 (IQL, DriftQL, NEUBAY): offbench.data.transforms.shift_rewards


def dataset_transforms(algo: str, dataset_id: str | None) -> dict[str, Any]:
    """The transform keys (`TRANSFORM_KEYS`) baselines/<algo>.toml sets for `dataset_id`'s [datasets] row (keyed as
    `baseline_values` keys them); {} for a user's file. `reward_shift` is checked to be a finite number (one line)."""
    if dataset_id is None:
        return {}
    rows = _dataset_rows(baseline_file(algo), dataset_id)
    found = {key: rows[key] for key in TRANSFORM_KEYS if key in rows}
    shift = found.get("reward_shift", 0.0)
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift):
        raise OffbenchError(f"baselines/{algo}.toml: reward_shift of {dataset_key(dataset_id)} must be a finite number, got {shift!r}"[:200])
    return found


def baseline_values(algo: str, dataset_id: str | None, kind: str | None = None) -> dict[str, Any]:
    """What baselines/<algo>.toml sets for `dataset_id`: its [config], then [observations.<kind>] when `kind`
    is given, then the dataset's [datasets] overrides (keyed by alias, then by canonical id; transforms are
    ignored), less the transform keys (`dataset_transforms`). A user's file (`dataset_id` None) gets no [datasets]
    overrides. Raises `OffbenchError` without a TOML."""
    spec = baseline_file(algo)
    if unknown_kinds := sorted(set(spec.get("observations", {})) - set(OBSERVATION_KINDS)):
        raise OffbenchError(f"baselines/{algo}.toml: unknown table [observations.{unknown_kinds[0]}]", f"kinds: {', '.join(OBSERVATION_KINDS)}")
    defaults = {**spec.get("config", {}), **(spec.get("observations", {}).get(kind, {}) if kind else {})}
    if dataset_id is None:
        return defaults
    return {**defaults, **{key: value for key, value in _dataset_rows(spec, dataset_id).items() if key not in TRANSFORM_KEYS}}


def _dataset_rows(spec: dict[str, Any], dataset_id: str) -> dict[str, Any]:
    """A baseline file's [datasets] values for `dataset_id`: its alias's row, then its canonical id's (transforms ignored)."""
    per_dataset = spec.get("datasets", {})
    return {**per_dataset.get(dataset_key(dataset_id), {}), **per_dataset.get(ids.parse(dataset_id).base, {})}


def protocol_defaults(algo: str) -> dict[str, Any]:
    return dict(baseline_file(algo).get("protocol", {}))


def _coerce(algo: str, key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint) or hint
    ok = {
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, list),
    }.get(origin, True)
    if not ok:
        raise OffbenchError(f"config key '{key}' for {algo} expects {getattr(origin, '__name__', origin)}, got {value!r}"[:200])
    if origin is list:  # each element of its declared type: `[true]` is no width, `[2.5]` no layer
        element = (typing.get_args(hint) or (Any,))[0]
        return [_coerce(algo, key, item, element) for item in value]
    return float(value) if origin is float else value
