"""Named random streams per seed: initialisation, sampling, algorithm noise and evaluation.

Each training seed s owns one `torch.Generator` per purpose, seeded from
`numpy.random.SeedSequence(s, spawn_key=(key,))` with a fixed key per purpose (NumPy's documented way
to derive independent streams from one seed). The evaluation stream is re-seeded at the start of every
evaluation from `SeedSequence(s, spawn_key=(key, step))`, so the draws of a stochastic policy during an
evaluation depend only on the seed and the step: not on earlier evaluations, nor on how long the other
seeds' episodes ran. Streams never feed each other: a sampler that draws more indices does not shift an
algorithm's noise, and evaluating does not change training. A seed's streams do not depend on the other
seeds of its group, so seed s in a group trains and evaluates as seed s alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

STREAM_KEYS = {"init": 0, "sampling": 1, "noise": 2, "eval": 3}


def stream_seed(seed: int, purpose: str, *key: int) -> int:
    """A 64-bit seed for `purpose`'s stream of training seed `seed` (and `key`, e.g. the evaluation step).

    CUDA generators use all 64 bits; CPU generators (Mersenne Twister) use the low 32.
    """
    state = np.random.SeedSequence(seed, spawn_key=(STREAM_KEYS[purpose], *key)).generate_state(1, np.uint64)
    return int(state[0])


@dataclass
class SeedStreams:
    """One generator per (purpose, seed) on the training device; `init[s]` is seed s's init stream, etc."""

    seeds: list[int]
    init: list[torch.Generator]
    sampling: list[torch.Generator]
    noise: list[torch.Generator]
    eval: list[torch.Generator]

    @classmethod
    def for_seeds(cls, seeds: list[int], device: torch.device | str = "cpu") -> SeedStreams:
        def generators(purpose: str) -> list[torch.Generator]:
            return [torch.Generator(device=device).manual_seed(stream_seed(seed, purpose)) for seed in seeds]

        return cls(list(seeds), **{purpose: generators(purpose) for purpose in STREAM_KEYS})

    def start_evaluation(self, step: int) -> None:
        """Re-seed every evaluation stream for the evaluation after gradient step `step`."""
        for seed, generator in zip(self.seeds, self.eval):
            generator.manual_seed(stream_seed(seed, "eval", step))

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        return {purpose: [g.get_state() for g in getattr(self, purpose)] for purpose in STREAM_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for purpose in STREAM_KEYS:
            for generator, generator_state in zip(getattr(self, purpose), state[purpose], strict=True):
                generator.set_state(generator_state)
