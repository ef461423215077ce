"""Minari datasets, read and written through the `minari` package, offline.

Reading never downloads: a dataset is opened from its directory (`<root>/<id>/data`). Writing uses
`minari.create_dataset_from_buffers` (no jax needed), into a chosen root directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offbench.data import d4rl, goals
from offbench.data.checks import FLAGS, INTEGER, REAL, check_array, check_flags, common_rows, read_sidecar, regular_file
from offbench.data.dataset import TRANSITION_FIELDS, DatasetMetadata, OfflineDataset
from offbench.data.spaces import ActionSpace, ObservationSpace, from_gymnasium
from offbench.errors import OffbenchError
from offbench.io import ARCHIVE_ERRORS, atomic_write, json_text, remove_dead_staging, staging_tag
from offbench.paths import data_dir
from offbench.robotics import ROBOTICS_PREFIXES, register_if_robotics

OFFBENCH_METADATA = "offbench.json"  # our sidecar beside Minari's data/ folder
CACHE_VERSION = 1


def minari_root() -> Path:
    """The user's Minari root: `$MINARI_DATASETS_PATH`, else `~/.minari/datasets` (Minari's default)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets")).expanduser()


def dataset_path(root: Path, minari_id: str) -> Path:
    return root / minari_id


def exists(root: Path, minari_id: str) -> bool:
    return (dataset_path(root, minari_id) / "data" / "metadata.json").exists()


@contextlib.contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    """Minari reads its root from the environment at call time; point it at `root` for one call."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def write_minari(
    root: Path,
    minari_id: str,
    episodes: Sequence[dict[str, np.ndarray]],
    env_id: str,
    ref_min_score: float | None,
    ref_max_score: float | None,
    description: str,
    offbench_metadata: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write episodes (`observations` T+1 rows; `actions`, `rewards`, `terminations`, `truncations` T rows).

    The dataset is written under `<root>/.making/<host>-<pid>/` and renamed into place when complete, so a
    killed write never leaves a folder that looks present; staging folders of this host's dead processes
    are removed (`offbench.io.remove_dead_staging`).
    """
    path = dataset_path(root, minari_id)
    if path.exists() and not overwrite:
        raise OffbenchError(f"dataset {minari_id} already exists at {path}")
    remove_dead_staging(root / STAGING, "")
    staging_root = root / STAGING / staging_tag()
    shutil.rmtree(staging_root, ignore_errors=True)
    try:
        staged = _write_minari_files(staging_root, minari_id, episodes, env_id, ref_min_score, ref_max_score, description, offbench_metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            retired = staging_root / "retired"
            os.replace(path, retired)  # out of the way in one step: readers see the old dataset or none
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return path


STAGING = ".making"


def _write_minari_files(root, minari_id, episodes, env_id, ref_min_score, ref_max_score, description, offbench_metadata) -> Path:
    import minari
    from minari.data_collector import EpisodeBuffer

    path = dataset_path(root, minari_id)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=episode["observations"],
            actions=episode["actions"],
            rewards=list(episode["rewards"]),
            terminations=list(episode["terminations"]),
            truncations=list(episode["truncations"]),
            infos={},
        )
        for i, episode in enumerate(episodes)
    ]
    register_if_robotics(env_id)
    env = gym.make(env_id)
    try:
        with _datasets_root(root):
            minari.create_dataset_from_buffers(
                minari_id,
                buffers,
                env=env_id,
                eval_env=env_id,
                observation_space=env.observation_space,
                action_space=env.action_space,
                ref_min_score=ref_min_score,
                ref_max_score=ref_max_score,
                algorithm_name=offbench_metadata.get("recipe", "offbench"),
                author="offbench",
                author_email="offbench@users.noreply.github.com",
                code_permalink="https://github.com/offbench/offbench",
                description=description,
                requirements=offbench_metadata.get("requirements"),
            )
    finally:
        env.close()
    (path / OFFBENCH_METADATA).write_text(json_text(offbench_metadata))
    return path


# What `minari` raises inside for files it cannot make sense of (its own asserts included): said in one line, never a traceback.
MINARI_ERRORS = (OSError, KeyError, ValueError, TypeError, AttributeError, AssertionError, NotImplementedError, ImportError, gym.error.Error)
DATA_FORMATS = ("hdf5", "arrow")  # Minari's storages (arrow needs pyarrow, minari[arrow])
# Minari's data/metadata.json: the keys offbench needs and their JSON types (a bool is never a count or a score)
METADATA_KEYS: dict[str, tuple[type, ...]] = {"data_format": (str,), "total_episodes": (int,), "total_steps": (int,),
                                              "observation_space": (str,), "action_space": (str,)}
OPTIONAL_METADATA_KEYS: dict[str, tuple[type, ...]] = {"env_spec": (str, type(None)), "jpeg_encoding": (bool,), "dataset_id": (str,),
                                                       "ref_min_score": (int, float, type(None)), "ref_max_score": (int, float, type(None))}


def read_metadata(path: Path, dataset_id: str) -> dict[str, Any]:
    """The JSON object in `<path>/data/metadata.json`, checked before `minari` reads it: a regular file holding an object with
    `METADATA_KEYS` (and any of `OPTIONAL_METADATA_KEYS`) of their types, a data format of `DATA_FORMATS`, non-negative counts,
    and (hdf5) its data file a regular file.

    Raises one-line `OffbenchError` naming the key for anything else (`minari` would raise an assertion or KeyError).
    """
    what = f"dataset {dataset_id}"
    file = regular_file(path / "data" / "metadata.json", what)
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise OffbenchError(f"{what}: {file} is not readable JSON ({error})".splitlines()[0]) from None
    if not isinstance(meta, dict):
        raise OffbenchError(f"{what}: {file} holds a JSON {type(meta).__name__}, expected an object (Minari's metadata)")
    for key, types in (*METADATA_KEYS.items(), *OPTIONAL_METADATA_KEYS.items()):
        if key not in meta and key in METADATA_KEYS:
            raise OffbenchError(f"{what}: {file} lacks the key '{key}'", "a Minari dataset's metadata (minari >= 0.4) has it")
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool) and bool not in types):
            raise OffbenchError(f"{what}: key '{key}' of {file} is {json.dumps(meta[key])[:60]}, expected {' or '.join(_JSON_TYPES[t] for t in types)}")
    if meta["data_format"] not in DATA_FORMATS:
        raise OffbenchError(f"{what}: {file} names the data format {meta['data_format']!r}; Minari's are {', '.join(DATA_FORMATS)}")
    if meta["total_episodes"] < 0 or meta["total_steps"] < 0:
        raise OffbenchError(f"{what}: {file} counts {meta['total_episodes']} episodes and {meta['total_steps']} steps; counts are never negative")
    if meta["data_format"] == "hdf5":
        regular_file(path / "data" / "main_data.hdf5", what)
    return meta


_JSON_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def open_minari(path: Path, dataset_id: str) -> Any:
    """The `minari.MinariDataset` at `path` (reads only its metadata, checked first by `read_metadata`)."""
    import minari

    read_metadata(path, dataset_id)
    try:
        return minari.MinariDataset(path / "data")
    except MINARI_ERRORS as error:
        raise OffbenchError(f"dataset {dataset_id}: cannot read the Minari files in {path} ({type(error).__name__}: {error})".splitlines()[0]) from None


def read_episodes(dataset: Any, dataset_id: str) -> list[dict[str, np.ndarray]]:
    """All episodes of an open Minari dataset."""
    try:
        return list(dataset.storage.get_episodes(range(dataset.total_episodes)))
    except MINARI_ERRORS as error:
        raise OffbenchError(f"dataset {dataset_id}: cannot read the Minari episodes ({type(error).__name__}: {error})".splitlines()[0]) from None


def read_episode(dataset: Any, dataset_id: str, index: int) -> dict[str, np.ndarray]:
    """Episode `index` of an open Minari dataset (one at a time: Atari screens are large)."""
    try:
        return next(iter(dataset.storage.get_episodes([index])))
    except MINARI_ERRORS as error:
        raise OffbenchError(f"dataset {dataset_id}: cannot read Minari episode {index} ({type(error).__name__}: {error})".splitlines()[0]) from None


def transitions(path: Path, dataset: Any, dataset_id: str, spaces: tuple[ObservationSpace, ActionSpace],
                flattening: tuple[str, gym.spaces.Dict] | None = None) -> dict[str, np.ndarray]:
    """Flat transition arrays of a Minari dataset of (observation, action) `spaces`, from a cache beside offbench's data when it is current.

    `flattening`: (layout, Dict space) for Dict observations, flattened by `offbench.data.goals.flatten`.

    Minari keeps one HDF5 group per episode, so a 1M-step random dataset (45k episodes) takes about a
    minute to read; the flat copy loads in about a second. The cache is keyed by the size and mtime of
    the Minari file and is rebuilt whenever that file changes, or when its arrays are not the layout
    `episodes_to_transitions` makes.
    """
    cache, key = _cache_location(path, dataset_id)
    if key is not None and cache.is_file():
        cached = _read_cache(cache, key)
        if cached is not None and _cache_fits(cached, spaces):
            return cached
    arrays = episodes_to_transitions(read_episodes(dataset, dataset_id), dataset_id, spaces, flattening)
    write_cache(path, dataset_id, arrays)
    return arrays


def _read_cache(cache: Path, key: np.ndarray) -> dict[str, np.ndarray] | None:
    """The cached arrays when the cache is current and intact; None (rebuild it) when stale or damaged."""
    try:
        with np.load(cache, allow_pickle=False) as stored:
            if not np.array_equal(stored["cache_key"], key):
                return None
            return {name: stored[name] for name in stored.files if name != "cache_key"}
    except (*ARCHIVE_ERRORS, KeyError):  # truncated, garbage, empty, a key missing: derived data, rebuilt
        return None


def _cache_fits(cached: dict[str, np.ndarray], spaces: tuple[ObservationSpace, ActionSpace]) -> bool:
    """Whether cached arrays are exactly the transition fields in the layout `episodes_to_transitions` makes for `spaces`."""
    if set(cached) != set(TRANSITION_FIELDS):
        return False
    try:
        _check_transitions("cache", cached, spaces)
    except OffbenchError:
        return False
    return True


def _check_transitions(what: str, arrays: dict[str, np.ndarray], spaces: tuple[ObservationSpace, ActionSpace]) -> None:
    """Raise `OffbenchError` unless `arrays` have the shapes and dtypes of `episodes_to_transitions`' output for `spaces`."""
    observation_space, action_space = spaces
    check_array(what, "rewards", arrays["rewards"], ("N",), REAL)
    n = arrays["rewards"].shape[0]
    expected = {"observations": ((n, *observation_space.shape), REAL), "next_observations": ((n, *observation_space.shape), REAL),
                "actions": ((n, *action_space.shape), REAL), "terminals": ((n,), FLAGS), "timeouts": ((n,), FLAGS),
                "episode_starts": (("episodes",), INTEGER)}
    for name, (shape, kinds) in expected.items():
        check_array(what, name, arrays[name], shape, kinds)


def write_cache(path: Path, dataset_id: str, arrays: dict[str, np.ndarray]) -> None:
    """Store the flat transitions of the Minari dataset at `path` (float32 is enough: loading casts to it)."""
    cache, key = _cache_location(path, dataset_id)
    if key is not None:
        atomic_write(cache, lambda tmp: _save_npz(tmp, cache_key=key, **arrays))


def _cache_location(path: Path, dataset_id: str) -> tuple[Path, np.ndarray | None]:
    main = path / "data" / "main_data.hdf5"
    name = dataset_id.replace("/", "__")
    if dataset_id.startswith("file/"):  # a user's folder, named by path: two folders of one name never share a cache
        name += "-" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    cache = data_dir() / "cache" / f"{name}.npz"
    if not main.exists():
        return cache, None
    stat = main.stat()
    return cache, np.array([CACHE_VERSION, stat.st_size, stat.st_mtime_ns], dtype=np.int64)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def episodes_to_transitions(episodes: Sequence[dict[str, Any]], dataset_id: str, spaces: tuple[ObservationSpace, ActionSpace],
                            flattening: tuple[str, gym.spaces.Dict] | None = None) -> dict[str, np.ndarray]:
    """Flatten episodes of (observation, action) `spaces` to transition arrays. An episode that ends unterminated counts as a time-out.

    Each episode's fields are checked before they are used (`check_episode`); raises `OffbenchError` naming the episode and field.
    `flattening`: (layout, Dict space) when the episodes' observations are Dicts (`offbench.data.goals`).
    """
    if not episodes:
        raise OffbenchError(f"dataset {dataset_id}: it holds no episodes")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    starts, offset = [], 0
    for index, episode in enumerate(episodes):
        what = f"dataset {dataset_id}: episode {index}"
        if flattening is not None:
            rows = len(np.asarray(episode["actions"])) + 1
            episode = {**episode, "observations": goals.flatten(episode["observations"], flattening[0], rows, flattening[1], what)}
        fields = check_episode(what, episode, spaces)
        length = fields["actions"].shape[0]
        terminals = fields["terminations"]
        timeouts = fields["truncations"] & ~terminals
        if length and not (terminals[-1] or timeouts[-1]):
            timeouts[-1] = True
        parts["observations"].append(fields["observations"][:-1])
        parts["next_observations"].append(fields["observations"][1:])
        parts["actions"].append(fields["actions"])
        parts["rewards"].append(fields["rewards"])
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
        starts.append(offset)
        offset += length
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    arrays["episode_starts"] = np.asarray(starts, dtype=np.int64)
    return arrays


def check_episode(what: str, episode: dict[str, Any], spaces: tuple[ObservationSpace, ActionSpace],
                  observation_kinds: str | np.dtype = REAL) -> dict[str, np.ndarray]:
    """One Minari episode's fields as arrays, checked: observations (T+1, *observation shape) of `observation_kinds`, actions
    (T, *action shape) and rewards (T,) real numbers, terminations and truncations (T,) bool or 0/1 (returned as bool).

    Raises `OffbenchError` "<what>: field ..." naming the field, its shape and dtype otherwise.
    """
    observation_space, action_space = spaces
    fields = {key: np.asarray(episode[key]) for key in ("observations", "actions", "rewards", "terminations", "truncations")}
    length = common_rows(what, {key: fields[key] for key in ("actions", "rewards", "terminations", "truncations")})
    check_array(what, "actions", fields["actions"], (length, *action_space.shape), REAL)
    check_array(what, "observations", fields["observations"], (length + 1, *observation_space.shape), observation_kinds)
    check_array(what, "rewards", fields["rewards"], (length,), REAL)
    for key in ("terminations", "truncations"):
        check_array(what, key, fields[key], (length,), FLAGS)
        fields[key] = check_flags(what, key, fields[key])
    return fields


def _reference(dataset_id: str, minari_meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The reference returns that normalise scores: Minari's own, else D4RL's for the same MuJoCo robot.

    Minari's `mujoco/<robot>/...` datasets may carry no ref_min_score/ref_max_score; their scores are then
    normalised with D4RL's random/expert returns of the same robot (d4rl/infos.py), as offbench's local
    datasets are, and `ref_source` says so: hopper, halfcheetah and walker2d only (D4RL's ant returns were
    recorded without the contact cost that Ant-v5's rewards include, so they are not comparable). Any other dataset without references keeps None (a run on it
    is refused before training).
    """
    low, high = minari_meta.get("ref_min_score"), minari_meta.get("ref_max_score")
    if low is not None and high is not None:
        return {"ref_min_score": low, "ref_max_score": high, "ref_source": source}
    parts = dataset_id.split("/")
    robot = parts[2] if len(parts) > 3 and parts[:2] == ["minari", "mujoco"] else None
    if robot in ("hopper", "halfcheetah", "walker2d"):  # not ant: D4RL's ant returns have no contact cost, Ant-v5's do
        low, high = d4rl.REFERENCE_SCORES[robot]
        return {"ref_min_score": low, "ref_max_score": high,
                "ref_source": f"d4rl/infos.py {robot} (the Minari dataset has no reference scores; D4RL's random/expert returns of the same robot)"}
    return {"ref_min_score": None, "ref_max_score": None, "ref_source": None}


def load_minari(path: Path, dataset_id: str, env_id: str | None = None, ref_source: str | None = None, validate: bool = True) -> OfflineDataset:
    """Load the Minari dataset at `path` (the folder holding `data/`) as an `OfflineDataset` (validated unless `validate` is False).

    Dict observations (Minari's D4RL/pointmaze, antmaze and kitchen ports, local maze recordings) are flattened by their
    family's layout (`offbench.data.goals`) and evaluated through the wrapper of the same name. The evaluation env is the
    sidecar's (local datasets), else Minari's `eval_env_spec` (id, kwargs, horizon: how the D4RL ports' envs were set up),
    else its `env_spec`.
    """
    what = f"dataset {dataset_id}"
    minari_dataset = open_minari(path, dataset_id)
    minari_meta = dict(minari_dataset.storage.metadata)
    sidecar_path = path / OFFBENCH_METADATA
    sidecar = read_sidecar(sidecar_path, dataset_id) if sidecar_path.exists() else {}
    wrappers = tuple(sidecar.get("eval_wrappers", ()))
    observation_space, flattening = goals.observation_layout(minari_meta["observation_space"], dataset_id, what)
    if flattening is not None:
        layout = flattening[0]
        wrappers = wrappers or (layout,)
        if wrappers != (layout,):
            raise OffbenchError(f"{what}: its sidecar names the evaluation wrappers {list(wrappers)}, but its observations are the {layout} layout")
    action_space = from_gymnasium(minari_meta["action_space"], what)
    arrays = transitions(path, minari_dataset, dataset_id, (observation_space, action_space), flattening)
    spec_id, spec_kwargs = _evaluation_spec(minari_meta, what)
    metadata = DatasetMetadata(
        id=dataset_id,
        source=dataset_id.split("/")[0],
        env_id=env_id or sidecar.get("env_id") or spec_id,
        env_kwargs=sidecar.get("env_kwargs", {} if sidecar.get("env_id") else spec_kwargs),
        observation_space=observation_space,
        action_space=action_space,
        **_reference(dataset_id, minari_meta, sidecar.get("ref_source", ref_source or "minari metadata")),
        eval_wrappers=wrappers,
        extra={"path": str(path), **({"observation_layout": flattening[0]} if flattening else {}),
               **{k: v for k, v in sidecar.items() if k not in ("env_id", "env_kwargs", "ref_source", "eval_wrappers")}},
    )
    dataset = OfflineDataset.build(metadata, **arrays, validate=validate)
    recorded = sidecar.get("sha256")
    if recorded and recorded != dataset.metadata.sha256:
        raise OffbenchError(
            f"dataset {dataset_id}: content hash {dataset.metadata.sha256[:12]} differs from the recorded {recorded[:12]}",
            f"the files in {path} changed since they were made; remake with `offbench data make {dataset_id} --force`",
        )
    return dataset


MAX_HORIZON = 10_000  # steps of an evaluation episode a port's spec may ask for (D4RL's longest is 1,000)
MAX_MAZE_CELLS = 64  # rows or columns of a maze map (D4RL's largest: 9 x 12)
MAZE_CELLS = (0, 1, "g", "r", "c")  # Gymnasium-Robotics' maze map entries: free, wall, goal, reset, either


def _evaluation_spec(minari_meta: dict[str, Any], what: str) -> tuple[str, dict[str, Any]]:
    """(env id, kwargs) of Minari's `eval_env_spec`, else of its `env_spec`; kwargs are kept only for Gymnasium-Robotics' envs (the D4RL
    ports: their maze map, reset and goal settings), with the spec's episode horizon as `max_episode_steps`.

    The spec is untrusted: the horizon must be an integer in [1, MAX_HORIZON] (a missing one leaves the env's registered one; -1 would
    drop the time limit and a continuing maze would never end), a maze map at most MAX_MAZE_CELLS square of `MAZE_CELLS`, tasks a short
    list of names, any other setting true/false, a number within +-1000 or a short text; raises one-line `OffbenchError` otherwise.
    """
    for key in ("eval_env_spec", "env_spec"):
        text = minari_meta.get(key)
        if not isinstance(text, str):
            continue
        try:
            spec = json.loads(text)
        except ValueError:
            raise OffbenchError(f"{what}: Minari's {key} is not JSON") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
            raise OffbenchError(f"{what}: Minari's {key} names no env id")
        kwargs = spec.get("kwargs") or {}
        if not spec["id"].startswith(ROBOTICS_PREFIXES):
            return spec["id"], {}
        if not isinstance(kwargs, dict):
            raise OffbenchError(f"{what}: the kwargs of Minari's {key} are not an object")
        kwargs = {name: _checked_setting(what, key, name, value) for name, value in kwargs.items() if name != "render_mode"}
        horizon = spec.get("max_episode_steps")
        if horizon is None:
            return spec["id"], kwargs
        if not isinstance(horizon, int) or isinstance(horizon, bool) or not 1 <= horizon <= MAX_HORIZON:
            raise OffbenchError(f"{what}: Minari's {key} sets max_episode_steps {json.dumps(horizon)[:40]}; offbench evaluates 1 to {MAX_HORIZON:,} steps")
        return spec["id"], {**kwargs, "max_episode_steps": horizon}
    return "", {}


def _checked_setting(what: str, key: str, name: str, value: Any) -> Any:
    """One setting of a port's env spec, checked (see `_evaluation_spec`)."""
    bad = f"{what}: Minari's {key} sets {name} to {json.dumps(value)[:60]}"
    if name == "maze_map":
        if not (isinstance(value, list) and 0 < len(value) <= MAX_MAZE_CELLS and all(isinstance(row, list) for row in value)
                and len({len(row) for row in value}) == 1 and 0 < len(value[0]) <= MAX_MAZE_CELLS
                and all(cell in MAZE_CELLS and not isinstance(cell, bool) for row in value for cell in row)):
            raise OffbenchError(bad, f"a maze map is at most {MAX_MAZE_CELLS} x {MAX_MAZE_CELLS} equal rows of 0, 1, 'g', 'r', 'c'")
        return value
    if name == "tasks_to_complete":
        if not (isinstance(value, list) and len(value) <= 16 and all(isinstance(task, str) and len(task) <= 64 for task in value)):
            raise OffbenchError(bad, "tasks are a short list of task names")
        return value
    if isinstance(value, bool) or isinstance(value, str) and len(value) <= 64:
        return value
    if isinstance(value, (int, float)) and abs(value) <= 1000:
        return value
    raise OffbenchError(bad, "an env setting there is true/false, a number within +-1000 or a short text")
