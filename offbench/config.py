"""Algorithm configs: `baselines/<algo>.toml` defaults, then per-dataset overrides, then `--set`."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from typing import Any

from offbench.data import ids
from offbench.errors import OffbenchError
from offbench.paths import resource_dir


def baseline_file(algo: str) -> dict[str, Any]:
    path = resource_dir("baselines") / f"{algo}.toml"
    if not path.exists():
        raise OffbenchError(f"no baseline config for '{algo}'", f"expected {path}")
    with open(path, "rb") as f:
        return tomllib.load(f)


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


def resolve_config(algo: str, algorithm_class: Any, dataset_id: str, overrides: dict[str, Any]) -> Any:
    """Defaults, then the dataset's overrides, then the user's; every key and type is checked.

    The config class is `algorithm_class.config_class_for(values)`: an algorithm whose valid keys depend
    on a choice (Sparse-Reg's `base`) refuses the keys of the other choice.
    """
    spec = baseline_file(algo)
    values = dict(spec.get("config", {}))
    per_dataset = spec.get("datasets", {})
    values.update(per_dataset.get(dataset_key(dataset_id), {}))
    values.update(per_dataset.get(ids.parse(dataset_id).base, {}))  # keyed by canonical id; transforms ignored
    values.update(overrides)
    config_class = algorithm_class.config_class_for(values)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise OffbenchError(f"unknown config key '{unknown[0]}' for {algo}", f"valid keys: {', '.join(fields)}")
    return config_class(**{key: _coerce(algo, key, value, hints[key]) for key, value in values.items()})


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
        raise OffbenchError(f"config key '{key}' for {algo} expects {getattr(origin, '__name__', origin)}, got {value!r}")
    return float(value) if origin is float else value
