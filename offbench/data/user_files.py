"""A researcher's own dataset, given by path: `offbench run --dataset ./my_data.hdf5 --env Hopper-v5 --ref d4rl:hopper`.

Formats, told apart by what the path is:

    ./my_data.hdf5 (or .h5)   D4RL's layout: top-level `observations`, `actions`, `rewards`, `terminals`,
                              `timeouts`, one row per step (offbench.data.d4rl)
    ./my_data.npz             the same flat arrays in a numpy archive
    ./my_minari_dataset/      a Minari dataset folder (the one holding `data/metadata.json`)

Every array is checked against that layout before its data are read (`offbench.data.d4rl.check_layout`), its actions
against the env's action space: (N, dims) numbers for a box, (N,) integers for discrete actions. Anything else (another
shape, object, string or complex dtypes, flags that are not 0/1, no transition at all) is one line naming the field.

Rows become transitions as D4RL's `qlearning_dataset` makes them (s' is the next row; a time-out row
is dropped), unless the file also stores `next_observations`: then every row is a transition, an
episode ends at its terminal or time-out, and the last row ends one.

Identity: `file/<stem>-<hash12>-v0`, where hash12 starts the content hash of the arrays as read
(`OfflineDataset.content_hash`) and `<stem>` is the file name with every character outside letters,
digits and "_" replaced by "_" (`my_data`). The id never claims the data is D4RL's or Minari's, so a
user file named `hopper_medium-v2.hdf5` is not scored as D4RL's hopper-medium, and two different files
of one name are two datasets. The stem and hash make no per-dataset config key, so baselines' dataset
overrides never apply to a user file: its hyperparameters are the TOML's defaults and `--set`.

Evaluation is in the env `--env` names (a Minari folder's own env spec when omitted); the action space
is that env's. `--ref` gives the reference returns that normalise scores: `d4rl:<robot>` (D4RL's
random/expert returns, offbench.data.d4rl.REFERENCE_SCORES) or `MIN,MAX` (a Minari folder's own when
omitted). Both go into the run record: `ref_source` says where the numbers came from.

Actions outside the env's action box are counted and refused: a simulator clamps them, so the data says
the policy did what it did not. `--clip-actions` clips them into the box instead, a transform recorded
in the id (`+clip-actions`) with the parent hash, like every other transform (offbench.data.transforms).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import gymnasium as gym
import numpy as np

from offbench.data import d4rl, minari_io
from offbench.data.checks import npz_headers, regular_file
from offbench.data.dataset import DatasetMetadata, OfflineDataset, episode_starts_from_ends
from offbench.data.spaces import ActionSpace, Box, from_gymnasium, observation_space_of
from offbench.data.transforms import derived_metadata
from offbench.errors import OffbenchError
from offbench.io import ARCHIVE_ERRORS

SOURCE = "file"
FILE_SUFFIXES = (".hdf5", ".h5", ".npz")
CLIP_SUFFIX = "+clip-actions"
REF_EXAMPLES = "--ref d4rl:hopper (D4RL's references for a robot) or --ref -20.3,3234.3 (MIN,MAX)"


def is_user_path(text: str) -> bool:
    """Whether `--dataset` names a path rather than an id or alias: an existing file or folder, a name
    ending in .hdf5/.h5/.npz, or a path starting with ./, ../, / or ~."""
    return (
        text.lower().endswith(FILE_SUFFIXES)
        or text.startswith(("./", "../", "/", "~", ".\\"))
        or Path(text).expanduser().exists()
    )


@dataclass(frozen=True)
class References:
    """Reference returns for the normalised score 100 (R - min) / (max - min), and where they come from."""

    low: float
    high: float
    source: str


def parse_references(text: str) -> References:
    """`d4rl:hopper` or `MIN,MAX` -> References; raises one-line `OffbenchError` for anything else."""
    kind, colon, family = text.partition(":")
    if colon:
        if kind != "d4rl":
            raise OffbenchError(f"--ref {text!r}: unknown reference table '{kind}'", REF_EXAMPLES)
        if family not in d4rl.REFERENCE_SCORES:
            raise OffbenchError(f"--ref {text!r}: D4RL has no references for '{family}'", f"known: {', '.join(d4rl.REFERENCE_SCORES)}")
        low, high = d4rl.REFERENCE_SCORES[family]
        return References(low, high, f"d4rl/infos.py {family} (given by --ref {text})")
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise OffbenchError(f"--ref {text!r} is neither d4rl:<robot> nor MIN,MAX", REF_EXAMPLES) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise OffbenchError(f"--ref {text!r}: MIN and MAX must be finite with MIN < MAX")
    return References(low, high, f"given by --ref {text}")


@dataclass(frozen=True)
class UserFile:
    """A dataset file named by path, with the evaluation env and references the user gave (checked, not yet read)."""

    path: Path
    env_id: str | None
    references: References | None
    clip_actions: bool = False

    @classmethod
    def check(cls, path: str, env_id: str | None, ref: str | None, clip_actions: bool = False) -> UserFile:
        """Everything knowable before reading the data: the path exists, is a folder or a regular file of a known format, the env
        exists, the references parse, and a file that is not a Minari folder names both. Raises `OffbenchError`."""
        where = Path(path).expanduser().resolve()
        if not where.exists():
            raise OffbenchError(f"dataset file {path} does not exist", "--dataset takes an id, an alias, or the path of your own file")
        if not where.is_dir():
            regular_file(where, f"dataset file {path}")  # a named pipe or device would be read forever
        minari = _minari_folder(where)
        if minari is None and where.suffix.lower() not in FILE_SUFFIXES:
            raise OffbenchError(f"dataset file {path}: unknown format",
                                "a D4RL-layout .hdf5/.h5, an .npz of the same arrays, or a Minari dataset folder")
        names = _minari_names(minari) if minari is not None else {}
        if env_id is None and not names.get("env") or ref is None and not names.get("ref"):
            missing = " and ".join(flag for flag, value, own in (("--env", env_id, "env"), ("--ref", ref, "ref")) if value is None and not names.get(own))
            raise OffbenchError(f"dataset {path} names no evaluation env or reference returns: give {missing}",
                                f"e.g. --env Hopper-v5 --ref d4rl:hopper; {REF_EXAMPLES}")
        if env_id is not None and env_id not in gym.registry:
            raise OffbenchError(f"--env {env_id}: no such Gymnasium environment", "e.g. Hopper-v5, HalfCheetah-v5, Walker2d-v5, Ant-v5")
        references = parse_references(ref) if ref is not None else None
        return cls(minari or where, env_id, references, clip_actions)

    @property
    def stem(self) -> str:
        name = self.path.name if self.path.is_dir() else self.path.stem
        return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", name)).strip("_") or "data"

    def load(self) -> OfflineDataset:
        """Read the file and build the dataset, its id `file/<stem>-<hash12>-v0` (`+clip-actions` when clipped)."""
        provisional = f"{SOURCE}/{self.stem}-v0"
        if self.path.is_dir():
            dataset = self._load_minari(provisional)
        else:
            dataset = self._load_arrays(provisional)
        dataset_id = f"{SOURCE}/{self.stem}-{dataset.metadata.sha256[:12]}-v0"
        dataset = replace(dataset, metadata=replace(dataset.metadata, id=dataset_id))
        return clip_actions(dataset) if self.clip_actions else _refuse_outside_actions(dataset)

    def _load_arrays(self, provisional: str) -> OfflineDataset:
        env_actions = _env_action_space(self.env_id)
        raw = _read_arrays(self.path, provisional, env_actions.shape)
        arrays = _rows_as_transitions(raw) if "next_observations" in raw else d4rl.qlearning_transitions(raw)
        metadata = DatasetMetadata(
            id=provisional,
            source=SOURCE,
            env_id=self.env_id,
            observation_space=observation_space_of(arrays["observations"]),
            action_space=env_actions,
            ref_min_score=self.references.low,
            ref_max_score=self.references.high,
            ref_source=self.references.source,
            extra={"path": str(self.path), "format": "npz" if self.path.suffix.lower() == ".npz" else "hdf5 (D4RL layout)"},
        )
        return OfflineDataset.build(metadata, **arrays, validate=False)

    def _load_minari(self, provisional: str) -> OfflineDataset:
        dataset = minari_io.load_minari(self.path, provisional, validate=False)
        meta = dataset.metadata
        env_id = self.env_id or meta.env_id
        if not env_id:
            raise OffbenchError(f"Minari dataset {self.path} names no environment", "give one with --env")
        refs = self.references or (References(meta.ref_min_score, meta.ref_max_score, meta.ref_source or "the Minari metadata")
                                   if meta.ref_min_score is not None and meta.ref_max_score is not None else None)
        if refs is None:
            raise OffbenchError(f"Minari dataset {self.path} has no reference returns", REF_EXAMPLES)
        metadata = replace(meta, source=SOURCE, env_id=env_id, ref_min_score=refs.low, ref_max_score=refs.high, ref_source=refs.source,
                           action_space=_env_action_space(env_id) if self.env_id else meta.action_space,
                           extra={**meta.extra, "path": str(self.path), "format": "minari"})
        return replace(dataset, metadata=metadata)


def clip_actions(dataset: OfflineDataset) -> OfflineDataset:
    """Actions clipped into the box of the dataset's action space; id suffix `+clip-actions`, clipped rows recorded.

    `dataset` may be unvalidated (as read); the result is validated. Raises `OffbenchError` for discrete actions.
    """
    space = dataset.metadata.action_space
    if not isinstance(space, Box):
        raise OffbenchError(f"--clip-actions: {dataset.metadata.id} has {space.describe()}; only box actions can be clipped")
    if not _actions_fit(dataset):
        dataset.validate()  # raises the shape error
    low, high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
    clipped = np.clip(dataset.actions, low, high)
    rows = int((clipped != dataset.actions).any(axis=1).sum())
    record = {"clip_actions": {"low": list(space.low), "high": list(space.high), "rows_clipped": rows}}
    fields = {name: getattr(dataset, name) for name in ("observations", "rewards", "next_observations", "terminals", "timeouts", "episode_starts")}
    return OfflineDataset.build(derived_metadata(dataset, CLIP_SUFFIX, record), actions=clipped, **fields)


def _refuse_outside_actions(dataset: OfflineDataset) -> OfflineDataset:
    space = dataset.metadata.action_space
    outside = space.outside_rows(dataset.actions) if isinstance(space, Box) and _actions_fit(dataset) else None
    if outside is not None and outside.any():
        raise OffbenchError(
            f"dataset {dataset.metadata.id}: {int(outside.sum())} of {len(dataset)} rows have an action outside "
            f"the env's {space.describe()} (largest |action| {float(np.abs(dataset.actions).max()):.3g}); the simulator clamps them",
            f"pass --clip-actions to train on the clipped actions (recorded in the id as {CLIP_SUFFIX})",
        )
    dataset.validate()
    return dataset


def _actions_fit(dataset: OfflineDataset) -> bool:
    """Whether the actions have the action space's shape (else validation names the problem)."""
    return len(dataset) > 0 and dataset.actions.shape == (len(dataset), *dataset.metadata.action_space.shape)


def _minari_folder(path: Path) -> Path | None:
    """The Minari dataset folder `path` names (itself, or the parent of its `data/`), else None."""
    if not path.is_dir():
        return None
    for candidate in (path, path.parent):
        if (candidate / "data" / "metadata.json").is_file():
            return candidate
    raise OffbenchError(f"dataset folder {path} is not a Minari dataset (no data/metadata.json)",
                        "give a Minari dataset folder, a D4RL-layout .hdf5 or an .npz file")


def _minari_names(folder: Path) -> dict[str, bool]:
    """Whether a Minari folder's metadata (checked by `minari_io.read_metadata`) names an env (`env`) and reference returns (`ref`)."""
    meta = minari_io.read_metadata(folder, str(folder))
    return {"env": bool(meta.get("env_spec")), "ref": meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None}


def _env_action_space(env_id: str) -> ActionSpace:
    env = gym.make(env_id)
    try:
        return from_gymnasium(env.action_space, f"evaluation env {env_id}")
    finally:
        env.close()


def _read_arrays(path: Path, dataset_id: str, action_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The arrays of a D4RL-layout .hdf5 or .npz, checked by `d4rl.check_layout` (actions of the env's `action_shape`) before
    their data are read, and flattened by `d4rl.columns`; raises one-line `OffbenchError` for a bad file or field."""
    if path.suffix.lower() != ".npz":
        return d4rl.read_hdf5_arrays(path, dataset_id, action_shape, optional=("next_observations",))
    what = f"dataset {dataset_id}"
    regular_file(path, what)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in d4rl.REQUIRED_KEYS if key not in archive.files]
            if missing:
                raise OffbenchError(f"{what}: file {path} lacks the array '{missing[0]}'",
                                    f"an .npz needs {', '.join(d4rl.REQUIRED_KEYS)} (next_observations optional)")
            keys = [key for key in (*d4rl.REQUIRED_KEYS, "next_observations") if key in archive.files]
            headers = npz_headers(archive, what)
            d4rl.check_layout(what, {key: headers[key] for key in keys}, action_shape)
            return d4rl.columns(what, {key: archive[key] for key in keys})
    except ARCHIVE_ERRORS as error:  # not a zip archive, truncated, a member's CRC wrong
        raise OffbenchError(f"{what}: cannot read {path} as .npz ({error})".splitlines()[0]) from None


def _rows_as_transitions(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every row a transition (s, a, r, s', terminal); an episode ends at a terminal or time-out, and at the last row.

    `raw`: checked by `d4rl.check_layout` and flattened by `d4rl.columns` (N >= 1 rows).
    """
    terminals = raw["terminals"]
    timeouts = raw["timeouts"] & ~terminals
    timeouts[-1] = timeouts[-1] or not terminals[-1]
    return {
        "observations": raw["observations"],
        "actions": raw["actions"],
        "rewards": raw["rewards"],
        "next_observations": raw["next_observations"],
        "terminals": terminals,
        "timeouts": timeouts,
        "episode_starts": episode_starts_from_ends(terminals | timeouts),
    }
