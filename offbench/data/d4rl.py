"""D4RL HDF5 files, read with h5py alone (no `d4rl` or mujoco-py needed).

Families (`FAMILIES`): locomotion (hopper, halfcheetah, walker2d, ant x random ... medium-expert, v0-v2), antmaze
(umaze, umaze-diverse, medium-play/diverse, large-play/diverse; v0, v2), maze2d (umaze, medium, large, sparse or
dense; v1), Adroit (pen, door, hammer, relocate x human, cloned, expert; v0, v1) and kitchen (complete, partial,
mixed; v0). Each file keeps the name D4RL downloads it to (`file_name`). Every family has D4RL's core keys; files
without `timeouts` (some Adroit v0 and maze2d files) get D4RL's own rule: a time-out every `horizon` steps of an
episode (`qlearning_dataset` with `env._max_episode_steps`), recorded in the metadata. antmaze and maze2d keep
`infos/goal` (N, 2), the goal of each row, as the extra array `goal`. Non-locomotion families are evaluated in
Gymnasium-Robotics substitutes (`offbench.robotics.d4rl_eval_env`, `pip install 'offbench[robotics]'`), named
in the metadata; no convention (AntMaze's reward - 1 of IQL and its successors) is applied when loading.

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

from offbench import robotics
from offbench.data.checks import FLAGS, REAL, Shape, Shaped, check_array, check_flags, column, common_rows, regular_file
from offbench.data.dataset import DatasetMetadata, OfflineDataset, episode_starts_from_ends
from offbench.data.spaces import Box, observation_space_of
from offbench.errors import OffbenchError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
CORE_KEYS = REQUIRED_KEYS[:4]  # what every D4RL family's file holds; `timeouts` is missing from some (see the module docstring)
FLAG_KEYS = ("terminals", "timeouts")
GOAL_KEY = "infos/goal"  # antmaze and maze2d: the goal of each row

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
LOCOMOTION_NAME = re.compile(r"(hopper|halfcheetah|walker2d|ant)-(random|medium|expert|medium-replay|medium-expert|full-replay)-v[0-2]")
# D4RL's non-locomotion datasets (d4rl/infos.py DATASET_URLS), one pattern per family; the kinds a family has
FAMILIES: dict[str, re.Pattern[str]] = {
    "antmaze": re.compile(r"antmaze-(umaze|umaze-diverse|medium-play|medium-diverse|large-play|large-diverse)-v[02]"),
    "maze2d": re.compile(r"maze2d-(umaze|medium|large)(-dense)?-v1"),
    "adroit": re.compile(r"(pen|door|hammer|relocate)-(human|cloned|expert)-v[01]"),
    "kitchen": re.compile(r"kitchen-(complete|partial|mixed)-v0"),
}
# (observation dims, action dims) of each layout: D4RL's envs (antmaze: qpos 15 + qvel 14; maze2d: qpos 2 + qvel 2;
# Adroit: the DAPG hand envs; kitchen: robot and object qpos 30 + goal 30)
DIMS = {"antmaze": (29, 8), "maze2d": (4, 2), "pen": (45, 24), "door": (39, 28), "hammer": (46, 26), "relocate": (39, 30), "kitchen": (60, 9)}
# Episode horizons of D4RL's registrations (max_episode_steps): the rule for files without `timeouts`
HORIZONS = {"antmaze-umaze": 700, "antmaze": 1000, "maze2d-umaze": 300, "maze2d-medium": 600, "maze2d-large": 800, "pen": 100,
            "door": 200, "hammer": 200, "relocate": 200, "kitchen": 280}
_ANTMAZE_FILES = {"umaze": ("u-maze", False, False), "umaze-diverse": ("u-maze", True, True), "medium-play": ("big-maze", True, False),
                  "medium-diverse": ("big-maze", True, True), "large-play": ("hardest-maze", True, False), "large-diverse": ("hardest-maze", True, True)}
_KITCHEN_FILES = {"complete": "mini_kitchen_microwave_kettle_light_slider-v0", "partial": "kitchen_microwave_kettle_light_slider-v0",
                  "mixed": "kitchen_microwave_kettle_bottomburner_light-v0"}
_ADROIT_V0_FILES = {"human": "{task}-v0_demos_clipped", "cloned": "{task}-demos-v0-bc-combined", "expert": "{task}-v0_expert_clipped"}


def family_of(name: str) -> str | None:
    """`antmaze`, `maze2d`, `adroit` or `kitchen` for a D4RL name of those families, `locomotion` for gym-MuJoCo, else None."""
    if LOCOMOTION_NAME.fullmatch(name):
        return "locomotion"
    return next((family for family, pattern in FAMILIES.items() if pattern.fullmatch(name)), None)


def _longest_prefix(table: dict[str, object], name: str) -> str | None:
    """The longest key of `table` that is `name` or starts it as whole "-" words (`maze2d-umaze-dense` before `maze2d-umaze`)."""
    return next((key for key in sorted(table, key=len, reverse=True) if name == key or name.startswith(key + "-")), None)


def download_url(name: str) -> str:
    """Where D4RL's `get_dataset` downloads `name` from (d4rl/infos.py DATASET_URLS): its family's folder and `file_name`."""
    family, version = family_of(name), name.rsplit("-v", 1)[-1]
    folder = {"antmaze": "ant_maze_v2" if version == "2" else "ant_maze_new", "maze2d": "maze2d", "kitchen": "kitchen",
              "adroit": "hand_dapg_v1" if version == "1" else "hand_dapg"}.get(family or "", f"gym_mujoco_v{version}" if version != "0" else "gym_mujoco")
    return f"http://rail.eecs.berkeley.edu/datasets/offline_rl/{folder}/{file_name(name)}"


def reference_scores(name: str) -> tuple[float, float]:
    """D4RL's (min, max) reference return for a dataset name like `hopper-medium-v2`."""
    prefix = _longest_prefix(REFERENCE_SCORES, name)
    if prefix is not None:
        return REFERENCE_SCORES[prefix]
    raise OffbenchError(f"no D4RL reference score for '{name}'", f"known families: {', '.join(REFERENCE_SCORES)}")


def file_name(name: str) -> str:
    """The file name D4RL downloads a dataset to (the last part of its URL in d4rl/infos.py): `hopper-medium-v2` ->
    `hopper_medium-v2.hdf5`, `antmaze-umaze-v2` -> `Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5`,
    `maze2d-umaze-v1` -> `maze2d-umaze-sparse-v1.hdf5`, `pen-human-v1` -> `pen-human-v1.hdf5`, `kitchen-mixed-v0` ->
    `kitchen_microwave_kettle_bottomburner_light-v0.hdf5`."""
    family, parts = family_of(name), name.rsplit("-v", 1)
    if family == "antmaze":
        maze, multistart, multigoal = _ANTMAZE_FILES[parts[0].removeprefix("antmaze-")]
        return f"Ant_maze_{maze}_noisy_multistart_{multistart}_multigoal_{multigoal}_sparse{'_fixed' if parts[1] == '2' else ''}.hdf5"
    if family == "maze2d":
        stem = parts[0] if parts[0].endswith("-dense") else f"{parts[0]}-sparse"
        return f"{stem}-v1.hdf5"
    if family == "adroit" and parts[1] == "0":
        task, kind = parts[0].split("-")
        return f"{_ADROIT_V0_FILES[kind].format(task=task)}.hdf5"
    if family == "adroit":
        return f"{name}.hdf5"
    if family == "kitchen":
        return f"{_KITCHEN_FILES[parts[0].removeprefix('kitchen-')]}.hdf5"
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
    return {**flat, **{name: check_flags(what, name, column(raw[name])) for name in FLAG_KEYS if name in raw}}


def read_hdf5_arrays(path: Path, dataset_id: str, action_shape: Shape = ("act_dim",), optional: tuple[str, ...] = (),
                     required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, np.ndarray]:
    """The `required` top-level arrays of a D4RL file (and those of `optional` it has, `infos/goal` included), checked by
    `check_layout` (`infos/goal`: (N, 2) real numbers) before they are read and flattened by `columns`; one clear error for a
    missing key, a bad field or a file that is not HDF5."""
    what = f"dataset {dataset_id}"
    regular_file(path, what)
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in required if key not in f]
            if missing:
                raise OffbenchError(f"{what}: file {path} lacks the key '{missing[0]}'")
            fields = {key: f[key] for key in (*required, *optional) if key in f}
            group = next((key for key, item in fields.items() if not isinstance(item, h5py.Dataset)), None)
            if group is not None:
                raise OffbenchError(f"{what}: field '{group}' of {path} is an HDF5 group, not an array")
            check_layout(what, {key: item for key, item in fields.items() if key != GOAL_KEY}, action_shape)
            if GOAL_KEY in fields:
                check_array(what, GOAL_KEY, fields[GOAL_KEY], (fields["observations"].shape[0], 2), REAL)
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
        **({"goal": raw[GOAL_KEY][kept]} if GOAL_KEY in raw else {}),
    }


def horizon_timeouts(terminals: np.ndarray, horizon: int) -> np.ndarray:
    """D4RL's time-outs for a file without them (`qlearning_dataset`: `final_timestep = episode_step == max_episode_steps - 1`):
    True where the step count reaches `horizon - 1`. The count restarts at 0 after a time-out (D4RL skips the row) and at 1
    after a terminal (D4RL resets it to 0, then counts the terminal row's successor), as D4RL counts. (N,) bool."""
    timeouts, step = np.zeros(terminals.shape[0], dtype=bool), 0
    for i, terminal in enumerate(terminals):
        timeouts[i] = step == horizon - 1
        step = 0 if timeouts[i] else 1 if terminal else step + 1
    return timeouts


def load_d4rl_file(path: Path, name: str) -> OfflineDataset:
    """Load `d4rl/<name>` from an HDF5 file in D4RL's layout (any family of `FAMILIES` or locomotion).

    Raises `OffbenchError` for a name outside D4RL's datasets, a file that is not its family's layout (observation and
    action dims of `DIMS`), or any field `read_hdf5_arrays` refuses.
    """
    dataset_id, family = f"d4rl/{name}", family_of(name)
    what = f"dataset {dataset_id}"
    if family is None:
        raise OffbenchError(f"'{name}' is not a D4RL dataset offbench reads",
                            f"families: gym-MuJoCo locomotion, {', '.join(FAMILIES)} (e.g. hopper-medium-v2, antmaze-umaze-v2, pen-human-v1)")
    locomotion = family == "locomotion"
    raw = read_hdf5_arrays(path, dataset_id, required=REQUIRED_KEYS if locomotion else CORE_KEYS,
                           optional=() if locomotion else ("timeouts", GOAL_KEY))
    extra: dict[str, object] = {"file": str(path), "conversion": "d4rl.qlearning_dataset (terminate_on_end=False)"}
    if not locomotion:
        _check_dims(what, name, raw)
        if "timeouts" not in raw:
            horizon = HORIZONS[_longest_prefix(HORIZONS, name)]
            raw["timeouts"] = horizon_timeouts(raw["terminals"], horizon)
            extra["timeouts"] = f"none in the file: D4RL's rule, a time-out every {horizon} steps of an episode (qlearning_dataset)"
    arrays = qlearning_transitions(raw)
    goal = arrays.pop("goal", None)
    env_id, env_kwargs, wrappers, note = _evaluation(family, name)
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
        eval_wrappers=wrappers,
        extra={**extra, "family": family, "evaluation": note},
    )
    return OfflineDataset.build(metadata, **arrays, extras=None if goal is None else {"goal": goal})


def layout_dims(name: str) -> tuple[int, int]:
    """(observation dims, action dims) of a non-locomotion D4RL dataset `name` (`DIMS`: by family, Adroit by task)."""
    return DIMS[_longest_prefix(DIMS, name)]


def _check_dims(what: str, name: str, raw: dict[str, np.ndarray]) -> None:
    """The family's (observation, action) dims (`layout_dims`), else one line naming both."""
    observation_dims, action_dims = layout_dims(name)
    found = (raw["observations"].shape[1], raw["actions"].shape[1])
    if found != (observation_dims, action_dims):
        raise OffbenchError(f"{what}: observations of {found[0]} dims and actions of {found[1]}, but D4RL's {name} has {observation_dims} and {action_dims}",
                            "the file is not this dataset; check its name")


def _evaluation(family: str, name: str) -> tuple[str, dict, tuple[str, ...], str]:
    """(env id, kwargs, wrappers, note) of the env that evaluates `name`: gym-MuJoCo v4 for locomotion, else the Gymnasium-Robotics substitute."""
    if family == "locomotion":
        robot = name.split("-")[0]
        env_id, env_kwargs = EVAL_ENVS[robot]
        return env_id, env_kwargs, (), EVAL_NOTES[robot]
    env_id, env_kwargs, wrappers = robotics.d4rl_eval_env(family, name)
    return env_id, env_kwargs, wrappers, robotics.SUBSTITUTES[family]
