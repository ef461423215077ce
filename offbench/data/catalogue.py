"""The catalogue of datasets offbench can make: `datasets/catalogue.toml`, one recipe per local/ id.

Its own module so that the recipes (a union names other entries) and the registry (which makes and
lists them) both read it without importing each other.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from offbench.io import read_toml
from offbench.paths import resource_dir


@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, Any]]:
    """The recipes of datasets offbench can make, by canonical id (`datasets/catalogue.toml`)."""
    return read_toml(resource_dir("datasets") / "catalogue.toml")["datasets"]
