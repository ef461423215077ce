"""D4RL HDF5 files, read with h5py alone (no `d4rl` or mujoco-py needed).

The conversion to transitions follows `d4rl.qlearning_dataset` (terminate_on_end=False): transition i
is (obs[i], a[i], r[i], obs[i+1], terminal[i]); a transition whose `timeouts[i]` is set is dropped,
because obs[i+1] already belongs to the next episode; the file's last row is dropped too. The kept
transition before each cut is marked as a time-out here, so episodes stay explicit.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from offbench.data.dataset import DatasetMetadata, OfflineDataset, episode_starts_from_ends
from offbench.data.spaces import Box, observation_space_of
from offbench.errors import OffbenchError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")

# `d4rl/infos.py` (d4rl 1.1): REF_MIN_SCORE / REF_MAX_SCORE; v0, v1 and v2 share each env's values.
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "kitchen": (0.0, 4.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
    "maze2d-umaze-dense": (68.537689, 193.66285642381482),
    "maze2d-medium-dense": (44.264742, 297.4552547777125),
    "maze2d-large-dense": (30.569041, 303.4857382709002),
}

# The env each D4RL locomotion family is evaluated in, configured to produce the observations and reward
# terms the files were recorded with (gym v2 envs under mujoco-py 2.0). D4RL's ant files keep the 84
# contact-force dims (27:111) but mujoco-py 2.0 never filled cfrc_ext, so they are all zero there and no
# contact cost entered the rewards: Ant-v4 with the contact forces clipped to [0, 0] reproduces both
# (111 dims, zeros at 27:, contact cost 0), where plain `use_contact_forces=True` feeds forces the data
# never had (normalised inputs near +-1000).
EVAL_ENVS: dict[str, tuple[str, dict]] = {
    "hopper": ("Hopper-v4", {}),
    "halfcheetah": ("HalfCheetah-v4", {}),
    "walker2d": ("Walker2d-v4", {}),
    "ant": ("Ant-v4", {"use_contact_forces": True, "contact_force_range": (0.0, 0.0)}),
}
EVAL_NOTES = {
    "hopper": "Hopper-v4: the observation layout and reward terms of gym's Hopper-v2",
    "halfcheetah": "HalfCheetah-v4: the observation layout and reward terms of gym's HalfCheetah-v2",
    "walker2d": "Walker2d-v4: the observation layout and reward terms of gym's Walker2d-v2",
    "ant": "Ant-v4 with contact forces clipped to [0, 0]: 111 dims with zeros at 27:111 and no contact cost, as the files were recorded",
}

D4RL_NAME = re.compile(r"^(?P<task>[a-z0-9]+(?:-[a-z]+)*?)-(?P<kind>random|medium|expert|medium-replay|medium-expert|full-replay)-v(?P<version>\d+)$")


def reference_scores(name: str) -> tuple[float, float]:
    """D4RL's (min, max) reference return for a dataset name like `hopper-medium-v2`."""
    for prefix in sorted(REFERENCE_SCORES, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "-"):
            return REFERENCE_SCORES[prefix]
    raise OffbenchError(f"no D4RL reference score for '{name}'", f"known families: {', '.join(REFERENCE_SCORES)}")


def file_name(name: str) -> str:
    """The file name D4RL downloads a dataset to: `hopper-medium-v2` -> `hopper_medium-v2.hdf5`."""
    match = D4RL_NAME.match(name)
    if not match:
        return f"{name}.hdf5"
    kind = match["kind"].replace("-", "_")
    return f"{match['task']}_{kind}-v{match['version']}.hdf5"


def read_hdf5_arrays(path: Path, dataset_id: str, optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The standard top-level arrays of a D4RL file (and those of `optional` it has); one clear error for a missing key or bad file."""
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in REQUIRED_KEYS if key not in f]
            if missing:
                raise OffbenchError(f"dataset {dataset_id}: file {path} lacks the key '{missing[0]}'")
            return {key: f[key][()] for key in (*REQUIRED_KEYS, *optional) if key in f}
    except OSError as error:  # truncated or not HDF5 at all
        raise OffbenchError(f"dataset {dataset_id}: cannot read {path} as HDF5 ({error})") from None


def qlearning_transitions(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """D4RL's `qlearning_dataset` conversion, vectorised, with explicit episode boundaries."""
    n = raw["rewards"].shape[0]
    lengths = {key: raw[key].shape[0] for key in REQUIRED_KEYS}
    if len(set(lengths.values())) != 1:
        key = next(k for k, v in lengths.items() if v != n)
        raise OffbenchError(f"field '{key}' has {lengths[key]} rows but 'rewards' has {n}")
    for key, ndim in (("observations", 2), ("actions", 2)):
        if raw[key].ndim < ndim:
            raise OffbenchError(f"field '{key}' has shape {raw[key].shape}, expected (N, dims)")
    terminals = raw["terminals"].astype(bool).reshape(-1)
    timeouts = raw["timeouts"].astype(bool).reshape(-1)
    kept = np.flatnonzero(~timeouts[: n - 1])
    # A kept transition ends its episode when it is terminal, or when the next row was dropped
    # (a time-out row) or is the end of the file.
    follows = np.append(kept[1:] == kept[:-1] + 1, False)
    ends = terminals[kept] | ~follows
    return {
        "observations": raw["observations"][kept],
        "actions": raw["actions"][kept],
        "rewards": raw["rewards"].reshape(-1)[kept],
        "next_observations": raw["observations"][kept + 1],
        "terminals": terminals[kept],
        "timeouts": ends & ~terminals[kept],
        "episode_starts": episode_starts_from_ends(ends),
    }


def load_d4rl_file(path: Path, name: str) -> OfflineDataset:
    """Load `d4rl/<name>` from an HDF5 file in D4RL's layout."""
    dataset_id = f"d4rl/{name}"
    try:
        arrays = qlearning_transitions(read_hdf5_arrays(path, dataset_id))
    except OffbenchError as error:
        if error.message.startswith("dataset "):
            raise
        raise OffbenchError(f"dataset {dataset_id}: {error.message}") from None
    robot = name.split("-")[0]
    env_id, env_kwargs = EVAL_ENVS.get(robot, ("", {}))
    ref_min, ref_max = reference_scores(name)
    act_dim = arrays["actions"].shape[1]
    metadata = DatasetMetadata(
        id=dataset_id,
        source="d4rl",
        env_id=env_id,
        env_kwargs=env_kwargs,
        observation_space=observation_space_of(arrays["observations"]),
        action_space=Box((-1.0,) * act_dim, (1.0,) * act_dim),
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        ref_source="d4rl/infos.py (d4rl 1.1)",
        extra={"file": str(path), "conversion": "d4rl.qlearning_dataset (terminate_on_end=False)", "evaluation": EVAL_NOTES.get(robot, "")},
    )
    return OfflineDataset.build(metadata, **arrays)
