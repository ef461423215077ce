"""The data layer: one `OfflineDataset` whatever the source (D4RL HDF5, Minari, locally made).

The names below are imported on first use, so that importing a light module of this package (the id
grammar, used by the analysis commands) does not load gymnasium, MuJoCo and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetMetadata": "offbench.data.dataset",
    "OfflineDataset": "offbench.data.dataset",
    "describe": "offbench.data.registry",
    "list_datasets": "offbench.data.registry",
    "load_dataset": "offbench.data.registry",
    "make_dataset": "offbench.data.registry",
    "resolve": "offbench.data.registry",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'offbench.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
