"""D4RL HDF5 files, read with h5py alone (no `d4rl` or mujoco-py needed).

The conversion to transitions follows `d4rl.qlearning_dataset` (terminate_on_end=False): transition i
is (obs[i], a[i], r[i], obs[i+1], terminal[i]); a transition whose `timeouts[i]` is set is dropped,
because obs[i+1] already belongs to the next episode; the file's last row is dropped too. The kept
transition before each cut is marked as a time-out here, so episodes stay explicit.

A file is untrusted input: every field's shape and dtype is checked against D4RL's layout (`check_layout`)
before its data are read, and a flag that is not 0/1 is refused, each in one line naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from offbench.data.checks import FLAGS, REAL, Shape, Shaped, check_array, check_flags, column, common_rows, regular_file
from offbench.data.dataset import DatasetMetadata, OfflineDataset, episode_starts_from_ends
from offbench.data.spaces import Box, observation_space_of
from offbench.errors import OffbenchError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
FLAG_KEYS = ("terminals", "timeouts")

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


def check_layout(what: str, fields: Mapping[str, Shaped], action_shape: Shape = ("act_dim",)) -> None:
    """Check D4RL's layout, one row per step, before any data are used (`fields`: arrays, h5py datasets or `.npy` headers).

    observations (N, obs_dim) and `next_observations` (when present) of the same shape, actions (N, *action_shape)
    (D4RL: (N, act_dim)), rewards (N,), all real numbers; terminals and timeouts (N,) bool or 0/1 (`columns` checks
    the values). D4RL's own `get_dataset` also takes rewards and terminals of shape (N, 1), reading their one
    column; so does offbench, and for timeouts too. N is at least 2 (s' of a row is the next row), or 1 when the
    file stores `next_observations`. Raises `OffbenchError` naming the field, its shape and its dtype otherwise.
    """
    n, least = common_rows(what, fields), 1 if "next_observations" in fields else 2
    observations = fields["observations"]
    check_array(what, "observations", observations, ("N", "obs_dim"), REAL)
    if n < least:
        why = "no rows" if n == 0 else "one row, and s' of a row is the next row"
        raise OffbenchError(f"{what}: field 'observations' has shape {tuple(observations.shape)}: {why}", "a dataset needs at least one transition")
    expected = {"actions": ((n, *action_shape), REAL), "next_observations": (tuple(observations.shape), REAL),
                **{name: ([(n,), (n, 1)], FLAGS if name in FLAG_KEYS else REAL) for name in ("rewards", *FLAG_KEYS)}}
    for name, (shape, kinds) in expected.items():
        if name in fields:
            check_array(what, name, fields[name], shape, kinds)


def columns(what: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays `check_layout` accepted, with rewards (N,) and terminals and timeouts bool (N,) (raises for a flag not 0/1)."""
    flat = {**raw, "rewards": column(raw["rewards"])}
    return {**flat, **{name: check_flags(what, name, column(raw[name])) for name in FLAG_KEYS}}


def read_hdf5_arrays(path: Path, dataset_id: str, action_shape: Shape = ("act_dim",), optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The standard top-level arrays of a D4RL file (and those of `optional` it has), checked by `check_layout` before they
    are read and flattened by `columns`; one clear error for a missing key, a bad field or a file that is not HDF5."""
    what = f"dataset {dataset_id}"
    regular_file(path, what)
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in REQUIRED_KEYS if key not in f]
            if missing:
                raise OffbenchError(f"{what}: file {path} lacks the key '{missing[0]}'")
            fields = {key: f[key] for key in (*REQUIRED_KEYS, *optional) if key in f}
            group = next((key for key, item in fields.items() if not isinstance(item, h5py.Dataset)), None)
            if group is not None:
                raise OffbenchError(f"{what}: field '{group}' of {path} is an HDF5 group, not an array")
            check_layout(what, fields, action_shape)
            return columns(what, {key: item[()] for key, item in fields.items()})
    except OSError as error:  # truncated or not HDF5 at all
        raise OffbenchError(f"{what}: cannot read {path} as HDF5 ({error})") from None


def qlearning_transitions(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """D4RL's `qlearning_dataset` conversion, vectorised, with explicit episode boundaries.

    `raw`: the arrays of a file, checked by `check_layout` and flattened by `columns` (N >= 2 rows).
    """
    n, terminals, timeouts = raw["rewards"].shape[0], raw["terminals"], raw["timeouts"]
    kept = np.flatnonzero(~timeouts[: n - 1])
    # A kept transition ends its episode when it is terminal, or when the next row was dropped
    # (a time-out row) or is the end of the file.
    follows = np.append(kept[1:] == kept[:-1] + 1, False)
    ends = terminals[kept] | ~follows
    return {
        "observations": raw["observations"][kept],
        "actions": raw["actions"][kept],
        "rewards": raw["rewards"][kept],
        "next_observations": raw["observations"][kept + 1],
        "terminals": terminals[kept],
        "timeouts": ends & ~terminals[kept],
        "episode_starts": episode_starts_from_ends(ends),
    }


def load_d4rl_file(path: Path, name: str) -> OfflineDataset:
    """Load `d4rl/<name>` from an HDF5 file in D4RL's layout."""
    dataset_id = f"d4rl/{name}"
    arrays = qlearning_transitions(read_hdf5_arrays(path, dataset_id))
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
