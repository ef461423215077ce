"""OGBench dataset files read into `OfflineDataset`: the single-task variants, rewards relabelled from the env.

Files (DATA_SOURCES.md §4; OGBench's `data_gen_scripts` write them, `ogbench.load_dataset` reads them):
`<dataset>.npz` and `<dataset>-val.npz` (the validation split, 10% more episodes), one row per time step,
each episode's last state included, N rows in all:

    observations    (N, *obs) float32 (states) or uint8 (visual-* and powderworld frames)
    actions         (N, A) float32, in [-1, 1]
    terminals       (N,) bool: True on each episode's last row (the end of the recording, not of a task)
    qpos, qvel      (N, nq), (N, nv) float32: the simulator state the row's observation was taken in
    button_states   (N, B) int64: puzzle and scene only

A file is untrusted input: each field's shape and dtype is checked against this layout before its data are read
(`check_layout`), and qpos, qvel and button_states against the widths of the env's state (`check_state_widths`)
before the relabelling reads them by column.

The files hold no rewards. offbench reads OGBench's single-task ids, `ogbench/<dataset>-singletask-v0`
(the env's default task) and `ogbench/<dataset>-singletask-task<k>-v0` (k = 1..5), e.g.
`ogbench/cube-single-play-singletask-task2-v0` reads `cube-single-play-v0.npz` and is evaluated in the
Gymnasium env `cube-single-singletask-task2-v0` (`ogbench.make_env_and_datasets` takes names apart the
same way: the word before `singletask` is the dataset type, dropped from the env name).

Transitions, as `ogbench.load_dataset` builds them (its comments draw the layouts):
- `regular` (`compact_dataset=False`): (s_t, a_t, s_{t+1}) for every row t that is not an episode's last;
  the last row (s_T, a_T) has no successor and is dropped. An episode of T + 1 rows gives T transitions,
  and no s' is ever taken across an episode end.
- `compact` (`compact_dataset=True`): every row is kept and `next_observations` is None (s' of row t is
  row t + 1, each frame stored once); an episode's last row has no successor, marked a time-out, so no
  sampler draws it as a transition with an s' (OGBench's `valids` = 0). The registry uses it for uint8
  frames, which the regular layout would store twice.

Single-task rewards (ogbench/relabel_utils.py `relabel_dataset`, called with the env of the task on each
row's `qpos` and `button_states`): reward = (task conditions met) - (task conditions): 0 when the task is
done, negative before; the transition is terminal (OGBench's mask 0) when every condition is met. Since
ogbench 1.2.0 (its CHANGELOG: "compute rewards based on s instead of s' for an (s, a, s') tuple") both
are those of s, as the env's own `step` computes them (`success_timing='pre'`); offbench requires that
version (`REWARD_OF_S_SINCE`) and records the semantics in `metadata.extra["reward_of"]`.

Episodes: OGBench's navigate and play data go on after the task is done, so a terminal can fall inside a
recorded episode; an offbench episode ends at every terminal (as D4RL AntMaze's, offbench.data.d4rl), so
it is a piece of a recorded one. `metadata.extra` keeps the recorded episodes' count and the share of them
that reach the task (`behaviour_success`). Scores are success rates (`metadata.score = "success-rate"`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offbench.data.checks import FLAGS, INTEGER, REAL, Shaped, any_per_row, check_array, check_flags, common_rows, npz_headers, regular_file
from offbench.data.dataset import DatasetMetadata, OfflineDataset, episode_starts_from_ends
from offbench.data.spaces import from_gymnasium, observation_space_of
from offbench.errors import OffbenchError
from offbench.io import ARCHIVE_ERRORS

REQUIRED_KEYS = ("observations", "actions", "terminals")
EXTRA_KEYS = ("qpos", "qvel", "button_states")
LAYOUTS = ("regular", "compact")
REWARD_OF_S_SINCE = (1, 2, 0)  # ogbench CHANGELOG 1.2.0: single-task rewards of (s, a, s') computed from s, not s'
INSTALL_HINT = "pip install 'offbench[ogbench]' (the ogbench package, >= 1.2.0)"
# The first word of every OGBench env (the envs `import ogbench` registers, ogbench 1.2.x): an alias that
# starts with one of them is an OGBench name.
FAMILIES = frozenset({"pointmaze", "antmaze", "humanoidmaze", "antsoccer", "cube", "scene", "puzzle", "visual"})
SINGLETASK_NAME = re.compile(r"(?P<stem>(?P<env>[a-z0-9]+(?:-[a-z0-9]+)*)-(?P<type>[a-z0-9]+))-singletask(?:-task(?P<task>[1-5]))?-v(?P<version>\d+)")


@dataclass(frozen=True)
class SingleTaskName:
    """An OGBench single-task dataset name taken apart: `cube-single-play-singletask-task2-v0`."""

    name: str  # cube-single-play-singletask-task2-v0
    dataset: str  # cube-single-play-v0: the stem of the npz files
    env_name: str  # cube-single-singletask-task2-v0: the Gymnasium env (registered by `import ogbench`)
    task: int | None  # 2; None: the env's default task

    @property
    def file_name(self) -> str:
        return f"{self.dataset}.npz"

    @property
    def val_file_name(self) -> str:
        return f"{self.dataset}-val.npz"


def parse_name(name: str) -> SingleTaskName:
    """Take a single-task name apart; a goal-conditioned name (no `-singletask`) or any other text raises `OffbenchError`."""
    match = SINGLETASK_NAME.fullmatch(name)
    if match is None:
        raise OffbenchError(
            f"'{name}' is not an OGBench single-task dataset name; the goal-conditioned datasets have no rewards to train on",
            "use <dataset>-singletask-v0 (the default task) or <dataset>-singletask-task1-v0 .. -task5-v0, "
            "e.g. cube-single-play-singletask-task2-v0",
        )
    task = None if match["task"] is None else int(match["task"])
    suffix = "" if task is None else f"-task{task}"
    return SingleTaskName(name, f"{match['stem']}-v{match['version']}", f"{match['env']}-singletask{suffix}-v{match['version']}", task)


def require_ogbench() -> str:
    """The installed ogbench version after importing it (which registers its envs); one-line `OffbenchError` when missing or older than 1.2.0."""
    try:
        installed = version("ogbench")
        import ogbench  # noqa: F401  (registers the envs with Gymnasium)
    except (PackageNotFoundError, ImportError):
        raise OffbenchError("OGBench datasets need the ogbench package, which is not installed", INSTALL_HINT) from None
    if tuple(int(part) for part in re.findall(r"\d+", installed)[:3]) < REWARD_OF_S_SINCE:
        raise OffbenchError(f"ogbench {installed} computes single-task rewards from s', offbench follows >= 1.2.0 (from s)", INSTALL_HINT)
    return installed


def read_npz(path: Path, dataset_id: str) -> dict[str, np.ndarray]:
    """The arrays of one OGBench file (`REQUIRED_KEYS` and those of `EXTRA_KEYS` it has), `terminals` as bool (N,).

    Each field's shape and dtype is checked (`check_layout`) before its data are read. Raises `OffbenchError` naming
    the dataset and field for: a path that is not a regular file, an unreadable file, a missing key, a field not in
    OGBench's layout, a terminal that is not 0/1, a file whose last row does not end an episode, non-finite
    observations or actions.
    """
    what = f"dataset {dataset_id} ({path.name})"
    regular_file(path, what)
    try:
        with np.load(path, allow_pickle=False) as file:
            missing = [key for key in REQUIRED_KEYS if key not in file.files]
            if missing:
                raise OffbenchError(f"dataset {dataset_id}: file {path} lacks the key '{missing[0]}' (OGBench files hold {', '.join(REQUIRED_KEYS)})")
            keys = [key for key in (*REQUIRED_KEYS, *EXTRA_KEYS) if key in file.files]
            headers = npz_headers(file, what)
            check_layout(what, {key: headers[key] for key in keys})
            raw = {key: file[key] for key in keys}
    except ARCHIVE_ERRORS as error:  # not a zip / npz, truncated, a member's CRC wrong
        raise OffbenchError(f"dataset {dataset_id}: cannot read {path} as an npz file ({error})") from None
    raw["terminals"] = check_flags(what, "terminals", raw["terminals"])
    if not raw["terminals"][-1]:
        raise OffbenchError(f"dataset {dataset_id}: field 'terminals' of {path.name}: the last row must end an episode (True)")
    for key in ("observations", "actions"):
        if np.issubdtype(raw[key].dtype, np.floating):
            bad = np.flatnonzero(any_per_row(~np.isfinite(raw[key])))
            if bad.size:
                raise OffbenchError(f"dataset {dataset_id}: field '{key}' of {path.name} at row {bad[0]}: value is not finite (NaN or inf)")
    return raw


def check_layout(what: str, fields: Mapping[str, Shaped]) -> None:
    """OGBench's file layout (module docstring), on the arrays' headers: observations (N, dims) or frames (N, H, W, C),
    actions (N, A) (or (N,) for discrete actions), qpos (N, nq), qvel (N, nv), all real numbers; terminals (N,) bool
    or 0/1; button_states (N, B) integers; N >= 1. Raises `OffbenchError` naming the field, its shape and its dtype."""
    n = common_rows(what, fields)
    observations = fields["observations"]
    check_array(what, "observations", observations, [("N", "dims"), ("N", "height", "width", "channels")], REAL)
    if n == 0:
        raise OffbenchError(f"{what}: field 'observations' has shape {tuple(observations.shape)}: the file holds no rows")
    expected = {"actions": ([(n, "act_dim"), (n,)], REAL), "terminals": ((n,), FLAGS), "qpos": ((n, "nq"), REAL), "qvel": ((n, "nv"), REAL),
                "button_states": ((n, "buttons"), INTEGER)}
    for name, (shape, kinds) in expected.items():
        if name in fields:
            check_array(what, name, fields[name], shape, kinds)


def check_state_widths(what: str, raw: dict[str, np.ndarray], env: gym.Env) -> None:
    """The rows' qpos, qvel and button_states have the widths of `env`'s simulator state (nq, nv, its buttons), as the
    relabelling reads them by column; raises `OffbenchError` naming the field and its shape otherwise."""
    unwrapped = env.unwrapped
    data = getattr(unwrapped, "data", None)  # the MuJoCo state of OGBench's maze and manipulation envs
    widths = {} if data is None else {"qpos": (data.qpos.size, REAL), "qvel": (data.qvel.size, REAL)}
    if getattr(unwrapped, "_num_buttons", None) is not None:
        widths["button_states"] = (int(unwrapped._num_buttons), INTEGER)
    for name, (width, kinds) in widths.items():
        if name in raw:
            check_array(what, name, raw[name], (raw[name].shape[0], width), kinds)


def task_labels(env: gym.Env, env_name: str, raw: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(reward, success) of every row's state for the env's task: float32 (N,) and bool (N,).

    Computed by `ogbench.relabel_utils.relabel_dataset` from the rows' `qpos` (and `button_states`):
    reward = conditions met - conditions, success = all met (OGBench's mask 0). Resets `env`.
    """
    from ogbench.relabel_utils import relabel_dataset

    needed = ("qpos", "button_states") if env_name.startswith(("scene", "puzzle")) else ("qpos",)
    if missing := [key for key in needed if key not in raw]:
        raise OffbenchError(f"OGBench single-task rewards for {env_name} are computed from '{missing[0]}', which the file lacks")
    rows = {key: raw[key] for key in needed}
    relabel_dataset(env_name, env, rows)
    return rows["rewards"].astype(np.float32), rows["masks"] == 0.0


def transitions(raw: dict[str, np.ndarray], rewards: np.ndarray, success: np.ndarray, layout: str) -> dict[str, Any]:
    """The `OfflineDataset.build` arrays of one file's rows with their per-row (reward, success) of s.

    See the module docstring for the two layouts; `extras` are the rows' qpos/qvel/button_states.
    """
    if layout not in LAYOUTS:
        raise OffbenchError(f"unknown OGBench layout '{layout}'", f"choose one of: {', '.join(LAYOUTS)}")
    recorded_last = raw["terminals"]
    if layout == "regular":
        rows = np.flatnonzero(~recorded_last)
        last = recorded_last[rows + 1]  # the transition into an episode's last row ends it
        next_observations = raw["observations"][rows + 1]
    else:
        rows = np.arange(recorded_last.shape[0])
        last = recorded_last
        next_observations = None
    terminals = success[rows]
    return {
        "observations": raw["observations"][rows],
        "actions": raw["actions"][rows],
        "rewards": rewards[rows],
        "next_observations": next_observations,
        "terminals": terminals,
        "timeouts": last & ~terminals,
        "episode_starts": episode_starts_from_ends(last | terminals),
        "extras": {key: raw[key][rows] for key in EXTRA_KEYS if key in raw},
    }


def behaviour_success(raw: dict[str, np.ndarray], success: np.ndarray) -> float:
    """Share of the file's recorded episodes in which some state completes the task, in [0, 1]."""
    starts = episode_starts_from_ends(raw["terminals"])
    return float(np.maximum.reduceat(success.astype(np.int64), starts).mean())


def load_ogbench(path: Path, dataset_id: str, name: str, layout: str | None = None) -> OfflineDataset:
    """Load the single-task dataset `name` (see `parse_name`) from the OGBench file at `path`.

    `dataset_id` is the id it is known by (`ogbench/<name>` or `local/ogbench-<name>`); `layout` is
    "regular" or "compact", by default compact for uint8 observations and regular otherwise.
    Raises `OffbenchError` for a missing ogbench package, a bad name, or a malformed file.
    """
    require_ogbench()
    parse_name(name)
    return dataset_from_rows(read_npz(path, dataset_id), path, dataset_id, name, layout)


def dataset_from_rows(raw: dict[str, np.ndarray], path: Path, dataset_id: str, name: str, layout: str | None = None) -> OfflineDataset:
    """`load_ogbench` of the rows `read_npz` read from `path`; raises `OffbenchError` when their state widths are not the env's."""
    installed = require_ogbench()
    parsed = parse_name(name)
    if layout is None:
        layout = "compact" if raw["observations"].dtype == np.uint8 else "regular"
    try:
        env = gym.make(parsed.env_name)
    except gym.error.Error as error:  # e.g. an env OGBench has no single-task variant of
        raise OffbenchError(f"dataset {dataset_id}: ogbench {installed} has no env {parsed.env_name} ({type(error).__name__})") from None
    try:
        check_state_widths(f"dataset {dataset_id} ({path.name})", raw, env)
        rewards, success = task_labels(env, parsed.env_name, raw)
        action_space = from_gymnasium(env.action_space, f"dataset {dataset_id}")
        task = int(env.unwrapped._reward_task_id)  # the default task resolved by the env itself when parsed.task is None
    finally:
        env.close()
    arrays = transitions(raw, rewards, success, layout)
    metadata = DatasetMetadata(
        id=dataset_id,
        source=dataset_id.split("/", 1)[0],
        env_id=f"ogbench:{parsed.env_name}",
        observation_space=observation_space_of(raw["observations"]),
        action_space=action_space,
        score="success-rate",
        extra={
            "file": str(path),
            "validation_file": str(path.with_name(parsed.val_file_name)),
            "ogbench_version": installed,
            "task": task,
            "reward_of": "s: the reward and termination of (s, a, s') are those of s (ogbench >= 1.2.0, relabel_utils.relabel_dataset)",
            "layout": layout,
            "recorded_episodes": int(raw["terminals"].sum()),
            "behaviour_success": behaviour_success(raw, success),
        },
    )
    return OfflineDataset.build(metadata, **arrays)
