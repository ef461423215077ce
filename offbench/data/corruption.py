"""A relabelling stand-in for the degraded-data protocol of DriftQL (Houssaini et al. 2026, Sec. 5.3 and
Fig. 3), as a dataset transform usable with every algorithm and dataset. The paper's own, re-collected
data are recipes: `p_random_action` in `offbench.data.recipes` (MuJoCo behaviour policies) and
`offbench.data.ogbench_recipes` (the OGBench oracles; `local/ogbench-cube-single-randomact<NN>-v0` in the
catalogue). The two differ, and the names say how: this one relabels recorded actions and keeps their s'.

The paper degrades data in one way only: a fraction p in {0.2, 0.3, 0.4} of the collected actions is
replaced with actions drawn uniformly from the action box. No Gaussian action noise, no mixing-in of another
dataset, no subsampling, no reward or observation corruption (spec: shared/specs/driftql.md).

Spec string: `relabel-random-actions:P`, P a fraction in (0, 1], e.g. `relabel-random-actions:0.3`. The transform
- picks exactly round(P * n) of the n transitions, uniformly without replacement, with a generator seeded
  by `seed` (the same seed always picks the same transitions and the same actions);
- replaces the stored action of each picked transition by a uniform sample from the dataset's action space
  (per dimension of a box, or one of the n discrete actions);
- leaves every other field as it was: observations, next_observations, rewards, terminals, time-outs and
  the episode index.
The id gets the suffix `+corrupt-relabel-random-actions-p<P>-seed<k>` (P as the shortest float that reads back
exactly, so 0.30 and 0.3 name the same data) and `metadata.extra["transforms"]` records the corruption, as `subset` does.

Where this departs from the paper (also in baselines/driftql.toml [deviations]):
- The paper re-collects the data: it changes OGBench's data-collection rule so that, at each step, the
  random action is the one executed, and the stored s', reward and the rest of the episode follow from
  it. A transform of recorded data cannot re-simulate, so here s' and r are those that the original action
  produced: a corrupted transition is mislabelled (its action did not cause its s') instead of being an
  off-policy step. The re-collected data are the recipes named above.
- The paper's rule flips a coin per step (about p * n corrupted, varying with the seed); here the count is
  exactly round(p * n).
- The paper corrupts two OGBench tasks only (cube-single-play task2, antmaze-large-navigate task1); this
  transform accepts any dataset.
"""

from __future__ import annotations

import numpy as np

from offbench.data.dataset import OfflineDataset
from offbench.data.transforms import derived_metadata
from offbench.errors import OffbenchError

CORRUPTION_KINDS = ("relabel-random-actions",)
SPEC_HELP = "write KIND:FRACTION with KIND relabel-random-actions and 0 < FRACTION <= 1, e.g. relabel-random-actions:0.3"
CORRUPT_STREAM = 0xC0FFEE  # keeps this transform's random stream apart from other users of the same seed


def parse_corruption(spec: str) -> tuple[str, float]:
    """`relabel-random-actions:0.3` -> ("relabel-random-actions", 0.3)."""
    kind, sep, raw = spec.strip().partition(":")
    if not sep:
        raise OffbenchError(f"bad corruption spec '{spec}'", SPEC_HELP)
    if kind == "random-actions":  # the name before 2026-12-01: say what it does now that re-collected data exist
        raise OffbenchError(
            "'random-actions' is now 'relabel-random-actions' (it relabels recorded actions and keeps their s' and r)",
            "write relabel-random-actions:P (a group started under the old name cannot resume: start it again), "
            "or train on re-collected data: a recipe with p_random_action (e.g. local/ogbench-cube-single-randomact30-v0, datasets/README.md)",
        )
    if kind not in CORRUPTION_KINDS:
        raise OffbenchError(f"unknown corruption '{kind}'", f"choose one of: {', '.join(CORRUPTION_KINDS)}")
    try:
        fraction = float(raw)
    except ValueError:
        raise OffbenchError(f"bad corruption fraction '{raw}' in '{spec}'", SPEC_HELP) from None
    if not 0.0 < fraction <= 1.0:
        raise OffbenchError(f"corruption fraction must be in (0, 1], got {fraction}", SPEC_HELP)
    return kind, fraction


def corrupt(dataset: OfflineDataset, spec: str, seed: int) -> OfflineDataset:
    """`dataset` with a fraction of its actions replaced by uniform random actions (see the module docstring)."""
    kind, fraction = parse_corruption(spec)
    rng = np.random.default_rng([CORRUPT_STREAM, seed])
    count = round(fraction * len(dataset))
    index = np.sort(rng.choice(len(dataset), size=count, replace=False))
    actions = dataset.actions.copy()
    actions[index] = dataset.metadata.action_space.sample_uniform(rng, count)
    record = {"corrupt": {"kind": kind, "fraction": fraction, "seed": seed, "transitions": count,
                          "next_observations": "as recorded (the original action's), not re-simulated"}}
    return OfflineDataset.build(
        derived_metadata(dataset, f"+corrupt-{kind}-p{fraction!r}-seed{seed}", record),
        observations=dataset.observations,
        actions=actions,
        rewards=dataset.rewards,
        next_observations=dataset.next_observations,
        terminals=dataset.terminals,
        timeouts=dataset.timeouts,
        episode_starts=dataset.episode_starts,
        extras=dataset.extras,  # the simulator states of the observations, which the corruption leaves as recorded
    )
