"""The baseline zoo: CLI name -> algorithm class (imported on demand)."""

from __future__ import annotations

import importlib

from offbench.algos.base import OfflineAlgorithm
from offbench.errors import OffbenchError

ALGORITHMS: dict[str, str] = {
    "td3bc": "offbench.algos.td3bc:TD3BC",
    "bc": "offbench.algos.bc:BC",
    "bcq": "offbench.algos.bcq:BCQ",
    "sparse-reg": "offbench.algos.sparse_reg:SparseReg",
    "driftql": "offbench.algos.driftql:DriftQL",
    "discrete-bcq": "offbench.algos.discrete_bcq:DiscreteBCQ",
    "offline-dqn": "offbench.algos.offline_dqn:OfflineDQN",
    "neubay": "offbench.algos.neubay:Neubay",
}


def get_algorithm(name: str) -> type[OfflineAlgorithm]:
    if name not in ALGORITHMS:
        raise OffbenchError(f"unknown algorithm '{name}'", f"choose one of: {', '.join(sorted(ALGORITHMS))}")
    module_name, class_name = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
