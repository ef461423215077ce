"""Config values: every numeric field declares its valid range; bad values are one line before anything runs."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from offbench.algos import ALGORITHMS, get_algorithm
from offbench.algos.sparse_reg import BASES
from offbench.config import field_ranges, resolve_config
from offbench.errors import OffbenchError

DATASET = "local/hopper-medium-v5"


@pytest.mark.parametrize("algo, overrides, message", [
    ("td3bc", {"alpha": float("nan")}, r"config key 'alpha' for td3bc must be a finite number, got nan"),
    ("td3bc", {"alpha": float("inf")}, r"must be a finite number, got inf"),
    ("td3bc", {"alpha": -3.0}, r"config key 'alpha' for td3bc must be >= 0, got -3.0"),
    ("td3bc", {"batch_size": 0}, r"config key 'batch_size' for td3bc must be >= 1, got 0"),
    ("td3bc", {"discount": 1.5}, r"config key 'discount' for td3bc must be in \[0, 1\], got 1.5"),
    ("td3bc", {"hidden_dims": [256, 0]}, r"config key 'hidden_dims' for td3bc must be in \[1, 65,536\], got \[256, 0\]"),
    ("td3bc", {"policy_freq": 0}, r"'policy_freq' for td3bc must be >= 1"),
    ("bcq", {"latent_clip": 0.0}, r"'latent_clip' for bcq must be > 0, got 0.0"),
    ("driftql", {"drift_ngen": 1}, r"'drift_ngen' for driftql must be >= 2, got 1"),
    ("sparse-reg", {"keep_ratio": 0.0}, r"'keep_ratio' for sparse-reg must be in \(0, 1\], got 0.0"),
    ("sparse-reg", {"base": "bc", "actor_lr": -1e-3}, r"'actor_lr' for sparse-reg must be >= 0"),
])
def test_values_outside_their_declared_range_are_refused(algo: str, overrides: dict, message: str) -> None:
    with pytest.raises(OffbenchError, match=message):
        resolve_config(algo, get_algorithm(algo), DATASET, overrides)


def test_a_learning_rate_of_zero_is_an_ablation_not_an_error() -> None:
    assert resolve_config("td3bc", get_algorithm("td3bc"), DATASET, {"actor_lr": 0.0}).actor_lr == 0.0  # the ci check's injected regression


def config_classes() -> list[type]:
    classes = [get_algorithm(name).config_class for name in ALGORITHMS]
    return list(dict.fromkeys([*classes, *(config for _, config in BASES.values())]))


@pytest.mark.parametrize("config_class", config_classes(), ids=lambda c: c.__name__)
def test_every_numeric_field_declares_its_range(config_class: type) -> None:
    hints = typing.get_type_hints(config_class)
    numeric = [f.name for f in dataclasses.fields(config_class) if hints[f.name] in (int, float, list[int], list[float])]
    assert numeric and set(numeric) <= set(field_ranges(config_class)), set(numeric) - set(field_ranges(config_class))
    config_class()  # the defaults themselves are valid


@pytest.mark.parametrize("fields, message", [
    ({"tau": 2.0}, r"config key 'tau' for TD3BCConfig must be in \[0, 1\], got 2.0"),
    ({"batch_size": np.int64(0)}, r"'batch_size' for TD3BCConfig must be >= 1"),
    ({"alpha": np.float32("nan")}, r"'alpha' for TD3BCConfig must be a finite number"),
    ({"hidden_dims": (256, 0)}, r"'hidden_dims' for TD3BCConfig must be in \[1, 65,536\]"),
    ({"hidden_dims": [True]}, r"'hidden_dims' for TD3BCConfig expects int, got True"),
    ({"hidden_dims": [2.5]}, r"'hidden_dims' for TD3BCConfig expects int, got 2.5"),
    ({"batch_size": 2**40}, r"'batch_size' for TD3BCConfig must be at most 2,147,483,647"),
])
def test_a_config_built_directly_is_held_to_the_same_ranges(fields: dict, message: str) -> None:
    from offbench.algos.td3bc import TD3BCConfig

    with pytest.raises(OffbenchError, match=message):
        TD3BCConfig(**fields)
