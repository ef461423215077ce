"""Datasets by id or alias: the table of sources, loading, making local datasets, listing.

The grammar of ids and aliases is `offbench.data.ids`. The sources are the table `SOURCES`, one
`DataSource` per id prefix, in alias resolution order:

    d4rl/<name>-v<N>          a D4RL HDF5 file (offbench.data.d4rl), e.g. d4rl/hopper-medium-v2
    minari/<minari id>        a Minari dataset on disk (offbench.data.minari_io), e.g. minari/mujoco/hopper/medium-v0
    local/<name>-v<N>         made here by a recipe in datasets/catalogue.toml (offbench.data.recipes),
                              stored in Minari format, e.g. local/hopper-random-v5; local/ogbench-<...>
                              are OGBench recordings (offbench.data.ogbench_recipes) in OGBench's files;
                              Atari recordings (offbench.data.atari_recipes, e.g. local/pong-random-tiny-v5)
                              are in the DQN Replay Dataset's Dopamine layout
    ogbench/<name>-v<N>       an OGBench single-task dataset from OGBench's npz files (offbench.data.ogbench_io),
                              e.g. ogbench/cube-single-play-singletask-task2-v0; never downloaded here
    dqn-replay/<game>/run<r>-ckpt<N>[-<M>]-v0
                              checkpoints of the DQN Replay Dataset (offbench.data.dqn_replay) in Dopamine's
                              layout or d4rl-atari's cache, e.g. dqn-replay/pong/run1-ckpt50-v0; never downloaded here

A local dataset's load compares its content hash with the one its sidecar (`offbench.json`) recorded when
it was made, for every family (Minari-format recipes, OGBench recordings over both files, Atari recordings),
and refuses changed files in one line.

Minari ids take two alias forms, `minari/mujoco/{task}/{kind}-v0` then `minari/atari/{task}/{kind}-v0`
(`pong-expert` -> minari/atari/pong/expert-v0, read by offbench.data.minari_atari).

An alias (`hopper-medium`) resolves to the first of its candidates (one per source, by the source's
alias form, then any catalogued local id of that alias with another version, e.g. `local/cartpole-dqn-v1`)
that is present; if none is, to the first that can be made here (else to a catalogued
one, whose error then says which behaviour policy is missing). Run records keep the resolved id.

Adding a source: a module `offbench/data/<source>.py` that reads one dataset's files into
an `OfflineDataset` (its metadata's id the canonical id, its source the source's name), and one
`DataSource` entry in `SOURCES` naming its alias form and its functions; its place in the table is its
place in alias resolution. The grammar (`offbench.data.ids`) and the rest of this module stay as they are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym

from offbench import atari, robotics
from offbench.data import atari_recipes, d4rl, dqn_replay, goals, ids, maze_recipes, minari_atari, minari_io, ogbench_io, ogbench_recipes
from offbench.data.catalogue import catalogue
from offbench.data.checks import read_sidecar
from offbench.data.dataset import TRANSITION_FIELDS, DatasetMetadata, OfflineDataset
from offbench.data.ids import LOCAL_OGBENCH
from offbench.data.recipes import RECIPES, no_policy_note, recipe_available
from offbench.data.spaces import from_gymnasium
from offbench.errors import OffbenchError
from offbench.io import atomic_write, json_text
from offbench.paths import check_data_dir, data_dir

D4RL_KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")
OGBENCH_CACHE = "~/.ogbench/data"  # ogbench.utils.DEFAULT_DATASET_DIR, where OGBench keeps its downloads


@dataclass(frozen=True)
class DatasetStatus:
    id: str
    state: str  # "present" | "makeable" | "needs policy" | "needs file"
    location: str
    note: str = ""


# ---- making local datasets ------------------------------------------------------------------------


# Classic-control discrete tasks have no published random/expert table like D4RL's. min: the mean return
# of uniform-random actions, measured here (`python benchmarks/classic_references.py --episodes 1000`:
# CartPole-v1 22.66 ± 12.51, Acrobot-v1 -498.95 ± 9.53, standard errors 0.40 and 0.30). max: CartPole-v1's
# largest possible return (+1 per step, 500-step limit); Acrobot-v1's `reward_threshold` in Gymnasium's
# registration (gymnasium/envs/__init__.py: -100, the return at which the task counts as solved; good
# policies reach about -60 to -80, so scores above 100 occur).
CLASSIC_REFERENCES: dict[str, tuple[float, float, str]] = {
    "cartpole": (22.66, 500.0, "min 22.66: uniform-random actions, 1000 episodes (benchmarks/classic_references.py); "
                               "max 500: the largest possible return of CartPole-v1 (500-step limit)"),
    "acrobot": (-498.95, -100.0, "min -498.95: uniform-random actions, 1000 episodes (benchmarks/classic_references.py); "
                                 "max -100: Acrobot-v1's reward_threshold (solved) in Gymnasium's registration"),
}


def reference_for(recipe: dict[str, Any]) -> tuple[float, float, str]:
    """(min, max, source) of the reference returns a recipe names: `d4rl:hopper`, `classic:cartpole`,
    `atari:pong` (random and human returns, `offbench.atari.HUMAN_RANDOM`) or `maze:umaze` (a local maze's random and
    planner returns, `offbench.data.maze_recipes.MAZE_REFERENCES`)."""
    kind, _, family = recipe["reference"].partition(":")
    if kind == "maze" and family in maze_recipes.MAZE_REFERENCES:
        low, high = maze_recipes.MAZE_REFERENCES[family]
        return low, high, (f"maze:{family}: uniform-random actions (min) and the recipe's planner without noise (max), 100 episodes each in "
                           "the evaluation env, as Minari measures its ports' (benchmarks/maze_references.py)")
    if kind == "classic" and family in CLASSIC_REFERENCES:
        return CLASSIC_REFERENCES[family]
    if kind == "atari" and family in atari.HUMAN_RANDOM:
        return atari.human_normalized(family)
    if kind != "d4rl" or family not in d4rl.REFERENCE_SCORES:
        raise OffbenchError(f"unknown reference '{recipe['reference']}' in the dataset catalogue",
                            f"use d4rl:<robot> ({', '.join(d4rl.REFERENCE_SCORES)}), classic:<task> ({', '.join(CLASSIC_REFERENCES)}), "
                            f"atari:<game> or maze:<maze> ({', '.join(maze_recipes.MAZE_REFERENCES)})")
    low, high = d4rl.REFERENCE_SCORES[family]
    return low, high, f"d4rl/infos.py {family} (D4RL's random/expert returns of the same robot)"


def make_dataset(
    dataset_id: str,
    recipe: dict[str, Any] | None = None,
    overwrite: bool = False,
    on_steps: Callable[[int], None] | None = None,
) -> OfflineDataset:
    """Make `local/<name>` by its catalogue recipe (or the `recipe` given) and store it in Minari format.

    A local OGBench id (`local/ogbench-...`, a recording or one of its single-task variants) makes the
    recording's files and returns the single-task dataset the id names (the default task for a recording).
    Raises `OffbenchError` before any work when the data folder cannot take it (`offbench.paths.check_data_dir`).
    """
    recipe = makeable_recipe(dataset_id, recipe)
    check_data_dir(location(dataset_id))  # a data folder that cannot take it: one line before minutes of generation
    if recipe["recipe"] in ogbench_recipes.EPISODE_RECIPES:
        return _make_ogbench_recording(dataset_id, recipe, overwrite, on_steps)
    if recipe["recipe"] in atari_recipes.ATARI_RECIPES:
        return _make_atari_recording(dataset_id, recipe, overwrite, on_steps)
    episodes = RECIPES[recipe["recipe"]](recipe, on_steps)
    ref_min, ref_max, ref_source = reference_for(recipe)
    eval_wrappers = tuple(recipe.get("eval_wrappers", ()))
    eval_kwargs = dict(recipe.get("eval_env_kwargs", {}))
    dataset = _dataset_from_episodes(dataset_id, episodes, recipe["env_id"], ref_min, ref_max, ref_source, eval_wrappers, eval_kwargs)
    sidecar = {
        "env_id": recipe["env_id"],
        **({"env_kwargs": eval_kwargs} if eval_kwargs else {}),
        "eval_wrappers": list(eval_wrappers),
        "ref_source": ref_source,
        "recipe": recipe["recipe"],
        "recipe_config": {k: v for k, v in recipe.items() if k != "sha256"},
        "sha256": dataset.metadata.sha256,
        "requirements": _generator_requirements(),
    }
    description = f"offbench local dataset {dataset_id}: recipe '{recipe['recipe']}' in {recipe['env_id']}."
    path = minari_io.write_minari(data_dir(), dataset_id, episodes, recipe["env_id"], ref_min, ref_max, description, sidecar, overwrite)
    minari_io.write_cache(path, dataset_id, {name: getattr(dataset, name) for name in TRANSITION_FIELDS})
    return dataset


def makeable_recipe(dataset_id: str, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe that makes `dataset_id` (the catalogue's unless `recipe` is given); raises one-line
    `OffbenchError` when it is not a local id, has no recipe, or its behaviour policy is missing."""
    source, _ = split_id(dataset_id)
    if source != "local":
        raise OffbenchError(f"only local/ datasets can be made here, not {dataset_id}", _how_to_get(dataset_id))
    recipe = recipe or catalogue().get(recording_id(dataset_id))
    if recipe is None:
        raise OffbenchError(f"no recipe for {dataset_id}", "see `offbench data list` for makeable datasets")
    if recipe["recipe"] not in (*RECIPES, *ogbench_recipes.EPISODE_RECIPES, *atari_recipes.ATARI_RECIPES):
        raise OffbenchError(f"dataset {dataset_id}: unknown recipe '{recipe['recipe']}'")
    if not recipe_available(recipe):
        raise OffbenchError(f"cannot make {dataset_id}: {no_policy_note(recipe)}")
    return recipe


def recorded_hash_mismatch(dataset: OfflineDataset) -> str | None:
    """A message when a made dataset's hash differs from the one the catalogue recorded, else None.

    For a local OGBench dataset the catalogue records its recording's hash (`ogbench_recipes.recording_hash`).
    """
    recording = recording_id(dataset.metadata.id)
    recorded = catalogue().get(recording, {}).get("sha256")
    measured = dataset.metadata.extra.get("recording_sha256") if recording != dataset.metadata.id else dataset.metadata.sha256
    if recorded and measured and recorded != measured:
        return (
            f"{recording}: content hash {measured[:12]} differs from the catalogue's "
            f"{recorded[:12]} (different simulator/library versions or machine); results are recorded with the new hash"
        )
    return None


def recipe_steps(dataset_id: str) -> int | None:
    """Environment steps the recipe of `dataset_id` takes (a progress bar's total); None when it does not say."""
    recipe = catalogue().get(recording_id(dataset_id), {})
    if recipe.get("recipe") in ogbench_recipes.EPISODE_RECIPES:
        return (recipe["episodes"] + recipe["episodes"] // 10) * recipe["episode_steps"]
    return recipe.get("steps")


def recording_id(dataset_id: str) -> str:
    """The catalogue id that makes `dataset_id`: the recording of a local OGBench single-task id
    (`local/ogbench-pointmaze-medium-navigate-singletask-task2-v0` -> `local/ogbench-pointmaze-medium-navigate-v0`),
    else the id itself."""
    source, name = dataset_id.partition("/")[::2]
    if source != "local" or not name.startswith(LOCAL_OGBENCH):
        return dataset_id
    try:
        parsed = ogbench_io.parse_name(name.removeprefix(LOCAL_OGBENCH))
    except OffbenchError:
        return dataset_id
    return f"local/{LOCAL_OGBENCH}{parsed.dataset}"


def _make_ogbench_recording(dataset_id: str, recipe: dict[str, Any], overwrite: bool, on_steps: Callable[[int], None] | None) -> OfflineDataset:
    """Record `recipe` in OGBench's file layout under the recording's folder, then load the single-task dataset `dataset_id` names."""
    recording = recording_id(dataset_id)
    stem = recording.removeprefix(f"local/{LOCAL_OGBENCH}")
    train, val = ogbench_recipes.record(recipe, on_steps, workers=recipe.get("workers", 1))
    sidecar = {
        "recipe": recipe["recipe"],
        "recipe_config": {k: v for k, v in recipe.items() if k != "sha256"},
        "sha256": ogbench_recipes.recording_hash(train, val),
        "requirements": _generator_requirements(("gymnasium", "mujoco", "numpy", "ogbench")),
    }
    ogbench_recipes.write_recording(_local_path(recording.removeprefix("local/")).parent, stem, train, val, sidecar, overwrite)
    target = dataset_id if dataset_id != recording else f"{recording.removesuffix(stem)}{_default_singletask(stem)}"
    return _load_local_ogbench(target.removeprefix("local/"), _local_path(target.removeprefix("local/")))


def _make_atari_recording(dataset_id: str, recipe: dict[str, Any], overwrite: bool, on_steps: Callable[[int], None] | None) -> OfflineDataset:
    """Record `recipe` in the Dopamine layout under the dataset's folder, read it back, and stamp its content hash into the sidecar."""
    rows = atari_recipes.ATARI_RECIPES[recipe["recipe"]](recipe, on_steps)
    logs = data_dir() / dataset_id / "replay_logs"
    sidecar = {
        "env_id": recipe["env_id"],
        "recipe": recipe["recipe"],
        "recipe_config": {k: v for k, v in recipe.items() if k != "sha256"},
        "requirements": _generator_requirements(("ale-py", "gymnasium", "numpy", "opencv-python-headless")),
        "episodes_left_out_at_cap": rows["capped_episodes"],
    }
    atari_recipes.write_recording(logs.parent, rows, sidecar, overwrite)
    del rows  # the frames: reading the recording back holds its one copy
    dataset = atari_recipes.load_local(dataset_id, logs)
    atomic_write(logs.parent / atari_recipes.SIDECAR,
                 lambda tmp: Path(tmp).write_text(json_text({**sidecar, "sha256": dataset.metadata.sha256})))
    return dataset


def _default_singletask(stem: str) -> str:
    """`pointmaze-medium-navigate-v0` -> `pointmaze-medium-navigate-singletask-v0` (the env's default task)."""
    name, _, version = stem.rpartition("-v")
    return f"{name}-singletask-v{version}"


def _dataset_from_episodes(dataset_id, episodes, env_id, ref_min, ref_max, ref_source, eval_wrappers=(), eval_kwargs=None) -> OfflineDataset:
    """The dataset a recipe's episodes make, as loading its stored Minari files gives it (Dict observations flattened by their layout)."""
    what = f"dataset {dataset_id}"
    robotics.register_if_robotics(env_id)
    env = gym.make(env_id)
    try:
        raw_space, action_space = env.observation_space, from_gymnasium(env.action_space, what)
    finally:
        env.close()
    observation_space, flattening = goals.observation_layout(raw_space, dataset_id, what)
    arrays = minari_io.episodes_to_transitions(episodes, dataset_id, (observation_space, action_space), flattening)
    metadata = DatasetMetadata(
        id=dataset_id,
        source="local",
        env_id=env_id,
        env_kwargs=dict(eval_kwargs or {}),
        observation_space=observation_space,
        action_space=action_space,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        ref_source=ref_source,
        eval_wrappers=tuple(eval_wrappers),
    )
    return OfflineDataset.build(metadata, **arrays)


def _generator_requirements(packages: tuple[str, ...] = ("gymnasium", "mujoco", "minari", "numpy")) -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in packages]


# ---- the table of sources -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSource:
    """One source of datasets, named by the first segment of its ids.

    Its functions take the name after `<source>/` (`hopper-medium-v2`, `mujoco/hopper/medium-v0`).
    """

    name: str
    alias_form: str  # the id an alias stands for here: "d4rl/{alias}-v2" ({alias}, {task}, {kind}: offbench.data.ids)
    location: Callable[[str], Path]  # where a dataset lives, whether or not it is there
    is_present: Callable[[Path], bool]  # whether that location holds it
    load: Callable[[str, Path], OfflineDataset]  # (name, location) -> the dataset
    how_to_get: Callable[[str], str]  # the fix for a missing dataset, one line
    listed: Callable[[], Iterable[str]]  # the ids `offbench data list` shows
    more_alias_forms: tuple[str, ...] = ()  # further alias forms, tried after alias_form


def _d4rl_path(name: str) -> Path:
    """offbench's d4rl folder first, then D4RL's own cache (`$D4RL_DATASET_DIR` or ~/.d4rl/datasets)."""
    file_name = d4rl.file_name(name)
    ours = data_dir() / "d4rl" / file_name
    theirs = Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets")).expanduser() / file_name
    return theirs if theirs.exists() and not ours.exists() else ours


def _d4rl_how_to_get(name: str) -> str:
    needs = "" if d4rl.family_of(name) in ("locomotion", None) else "; evaluating it needs `pip install 'offbench[robotics]'`"
    return f"download {d4rl.download_url(name)} and put it at {_d4rl_path(name)}{needs}"


D4RL_LISTED = (  # the versions papers use: locomotion v2, antmaze v2, maze2d v1, Adroit v1, kitchen v0
    *(f"{task}-{kind}-v2" for task in d4rl.EVAL_ENVS for kind in D4RL_KINDS),
    *(f"antmaze-{kind}-v2" for kind in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")),
    *(f"maze2d-{maze}{dense}-v1" for maze in ("umaze", "medium", "large") for dense in ("", "-dense")),
    *(f"{task}-{kind}-v1" for task in ("pen", "door", "hammer", "relocate") for kind in ("human", "cloned", "expert")),
    *(f"kitchen-{kind}-v0" for kind in ("complete", "partial", "mixed")),
)


def _d4rl_listed() -> list[str]:
    return [f"d4rl/{name}" for name in D4RL_LISTED]


def _minari_path(name: str) -> Path:
    return minari_io.dataset_path(minari_io.minari_root(), name)


def _minari_load(name: str, path: Path) -> OfflineDataset:
    """Minari's `atari/*` datasets through the Atari reader (frames preprocessed as their evaluation env's), the others as they are."""
    if name.startswith("atari/"):
        return minari_atari.load_minari_atari(path, f"minari/{name}")
    return minari_io.load_minari(path, f"minari/{name}")


def _minari_how_to_get(name: str) -> str:
    return f"copy the Minari dataset folder to {_minari_path(name)} (e.g. from a machine where `minari download {name}` works)"


def _local_path(name: str) -> Path:
    """A Minari folder, for a local OGBench id the training npz in its recording's folder, for a local Atari
    recording (catalogued as one, or found on disk) its `replay_logs` folder."""
    logs = data_dir() / "local" / name / "replay_logs"
    if catalogue().get(f"local/{name}", {}).get("recipe") in atari_recipes.ATARI_RECIPES or logs.is_dir():
        return logs
    if not name.startswith(LOCAL_OGBENCH):
        return minari_io.dataset_path(data_dir(), f"local/{name}")
    recording = recording_id(f"local/{name}").removeprefix("local/")
    return data_dir() / "local" / recording / f"{recording.removeprefix(LOCAL_OGBENCH)}.npz"


def _listed_local_id(dataset_id: str) -> str:
    """A catalogue id as `offbench data list` shows it: an OGBench recording as its default-task single-task id."""
    if dataset_id.startswith(f"local/{LOCAL_OGBENCH}") and recording_id(dataset_id) == dataset_id:
        return _default_singletask(dataset_id)
    return dataset_id


def _local_is_present(path: Path) -> bool:
    if path.name == "replay_logs":
        return atari_recipes.is_present(path)
    return path.is_file() if path.suffix == ".npz" else _has_minari_files(path)


def _local_load(name: str, path: Path) -> OfflineDataset:
    if path.name == "replay_logs":
        return atari_recipes.load_local(f"local/{name}", path)
    if name.startswith(LOCAL_OGBENCH):
        return _load_local_ogbench(name, path)
    return minari_io.load_minari(path, f"local/{name}")


def _load_local_ogbench(name: str, path: Path) -> OfflineDataset:
    """The single-task dataset `local/<name>` from its recording's files (`_recording_rows`), with the recipe and recording hash in its metadata."""
    dataset_id = f"local/{name}"
    train, _, sidecar = _recording_rows(dataset_id, path)
    dataset = ogbench_io.dataset_from_rows(train, path, dataset_id, name.removeprefix(LOCAL_OGBENCH))
    extra = {**dataset.metadata.extra, "recipe": sidecar.get("recipe_config"), "recording_sha256": sidecar.get("sha256")}
    return replace(dataset, metadata=replace(dataset.metadata, extra=extra))


def _recording_rows(dataset_id: str, path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(training rows, validation rows, sidecar) of the local OGBench recording whose training file is `path`.

    Raises `OffbenchError` when the files' content hash (`ogbench_recipes.recording_hash`, over both files) differs from the
    one its sidecar recorded when it was made, as a Minari-format or Atari local dataset's load does.
    """
    sidecar_path = path.parent / ogbench_recipes.SIDECAR
    sidecar = read_sidecar(sidecar_path, dataset_id) if sidecar_path.exists() else {}
    train = ogbench_io.read_npz(path, dataset_id)
    val = ogbench_io.read_npz(path.with_name(f"{path.stem}-val.npz"), f"{dataset_id}+val")
    recorded, measured = sidecar.get("sha256"), ogbench_recipes.recording_hash(train, val)
    if recorded and recorded != measured:
        raise OffbenchError(f"dataset {dataset_id}: content hash {measured[:12]} differs from the recorded {recorded[:12]}",
                            f"the files in {path.parent} changed since they were made; remake with `offbench data make {recording_id(dataset_id)} --force`")
    return train, val, sidecar


def _local_how_to_get(name: str) -> str:
    dataset_id = f"local/{name}"
    if is_makeable(dataset_id):
        recipe = catalogue().get(recording_id(dataset_id), {})
        if recipe.get("recipe") in atari_recipes.ATARI_RECIPES:  # frames dominate: 84 x 84 bytes per step
            size = recipe["steps"] * atari.SCREEN_SIZE**2 / 1e9
            return f"make it with `offbench data make {dataset_id}` (about {size:.2g} GB of frames, held in memory while made and loaded)"
        return f"make it with `offbench data make {dataset_id}`"
    if recording_id(dataset_id) in catalogue():
        return no_policy_note(catalogue()[recording_id(dataset_id)])
    return "no recipe makes it; see `offbench data list`"


def _ogbench_path(name: str) -> Path:
    """offbench's ogbench folder first, then OGBench's own download folder (~/.ogbench/data): the training npz."""
    try:
        file_name = ogbench_io.parse_name(name).file_name
    except OffbenchError:  # not a single-task name: loading it says so
        file_name = f"{name}.npz"
    ours = data_dir() / "ogbench" / file_name
    theirs = Path(OGBENCH_CACHE).expanduser() / file_name
    return theirs if theirs.exists() and not ours.exists() else ours


def _ogbench_how_to_get(name: str) -> str:
    path = _ogbench_path(name)
    return (f"offbench never downloads OGBench data: put {path.name} and {path.stem}-val.npz in {data_dir() / 'ogbench'} "
            f"or {OGBENCH_CACHE} (e.g. from a machine where ogbench.download_datasets works)")


def _ogbench_listed() -> list[str]:
    """The default-task single-task id of every OGBench training file in offbench's folder and OGBench's."""
    found = set()
    for folder in (data_dir() / "ogbench", Path(OGBENCH_CACHE).expanduser()):
        for path in folder.glob("*.npz"):
            if not path.stem.endswith("-val") and ids.is_id(f"ogbench/{_default_singletask(path.stem)}"):
                found.add(f"ogbench/{_default_singletask(path.stem)}")
    return sorted(found)


def _has_minari_files(path: Path) -> bool:
    return (path / "data" / "metadata.json").exists()


def _minari_ids(source: str, root: Path) -> list[str]:
    """The ids of the Minari-format datasets under `root` (`<root>/<name>/data/metadata.json`)."""
    found = (f"{source}/{p.parent.parent.relative_to(root).as_posix()}" for p in root.glob("**/data/metadata.json"))
    return [dataset_id for dataset_id in found if ids.is_id(dataset_id)]


SOURCES: dict[str, DataSource] = {
    source.name: source
    for source in (
        DataSource(
            name="d4rl",
            alias_form="d4rl/{alias}-v2",
            location=_d4rl_path,
            more_alias_forms=("d4rl/{alias}-v1", "d4rl/{alias}-v0"),  # Adroit and maze2d are v1, kitchen v0
            is_present=Path.is_file,
            load=lambda name, path: d4rl.load_d4rl_file(path, name),
            how_to_get=_d4rl_how_to_get,
            listed=_d4rl_listed,
        ),
        DataSource(
            name="minari",
            alias_form="minari/mujoco/{task}/{kind}-v0",
            location=_minari_path,
            is_present=_has_minari_files,
            load=_minari_load,
            how_to_get=_minari_how_to_get,
            listed=lambda: _minari_ids("minari", minari_io.minari_root()),
            more_alias_forms=("minari/atari/{task}/{kind}-v0", "minari/D4RL/{task}/{kind}-v2", "minari/D4RL/{task}/{kind}-v1"),
        ),
        DataSource(
            name="local",
            alias_form="local/{alias}-v5",
            location=_local_path,
            is_present=_local_is_present,
            load=_local_load,
            how_to_get=_local_how_to_get,
            listed=lambda: [*map(_listed_local_id, catalogue()), *_minari_ids("local", data_dir() / "local")],
        ),
        DataSource(
            name="ogbench",
            alias_form="ogbench/{alias}-v0",
            location=_ogbench_path,
            is_present=Path.is_file,
            load=lambda name, path: ogbench_io.load_ogbench(path, f"ogbench/{name}", name),
            how_to_get=_ogbench_how_to_get,
            listed=_ogbench_listed,
        ),
        DataSource(
            name="dqn-replay",
            alias_form="dqn-replay/{task}/{kind}-v0",
            location=dqn_replay.location,
            is_present=Path.is_file,
            load=lambda name, path: dqn_replay.load_dqn_replay(name, f"dqn-replay/{name}"),
            how_to_get=dqn_replay.how_to_get,
            listed=dqn_replay.listed,
        ),
    )
}


# ---- ids, resolution and loading ------------------------------------------------------------------


def split_id(dataset_id: str) -> tuple[str, str]:
    """(source, name) of the id of a stored dataset: `d4rl/hopper-medium-v2` -> ("d4rl", "hopper-medium-v2").

    Raises `OffbenchError` for a text the grammar refuses (`offbench.data.ids`), an unknown source, or
    transformed data (`+first10000`), which `offbench run` derives and never stores.
    """
    source = ids.stored(dataset_id).source
    if source not in SOURCES:
        raise OffbenchError(
            f"'{dataset_id}' is not a dataset id: unknown source '{source}'",
            f"sources: {', '.join(s + '/' for s in SOURCES)}; or an alias like hopper-medium",
        )
    return source, dataset_id.partition("/")[2]


def location(dataset_id: str) -> Path:
    """Where a canonical dataset id lives on disk (whether or not it is there)."""
    source, name = split_id(dataset_id)
    return SOURCES[source].location(name)


def is_present(dataset_id: str) -> bool:
    source, name = split_id(dataset_id)
    return SOURCES[source].is_present(SOURCES[source].location(name))


def is_makeable(dataset_id: str) -> bool:
    """In the catalogue (a local OGBench single-task id through its recording), with every behaviour-policy file its recipe needs committed."""
    recipe = catalogue().get(recording_id(dataset_id))
    return recipe is not None and recipe_available(recipe)


def alias_candidates(alias: str) -> list[str]:
    """The ids an alias like `hopper-medium` stands for: one per source by its alias form, in the table's
    order, except that an OGBench name stands first for its single-task data, real then recorded here
    (`cube-single-play` and `cube-single-play-singletask` -> `ogbench/cube-single-play-singletask-v0`,
    `local/ogbench-cube-single-play-singletask-v0`: the default task, as OGBench names it), never for its
    goal-conditioned data (no rewards to train on); then the
    catalogue's local ids of that alias that the form does not name (`cartpole-dqn` -> `local/cartpole-dqn-v1`,
    whose version is its env's, not v5), in catalogue order."""
    single_task = _ogbench_single_task_candidates(alias)
    forms = [(form, form == source.alias_form) for source in SOURCES.values() for form in (source.alias_form, *source.more_alias_forms)]
    expanded = [candidate for candidate, primary in ((ids.expand_alias(form, alias), primary) for form, primary in forms)
                if candidate and (primary or _named_by_its_family(candidate))]
    # an OGBench name's goal-conditioned id reads the same file as its single-task one but has no rewards
    candidates = [*single_task, *(c for c in expanded if not (single_task and c.startswith("ogbench/")))]
    for candidate in catalogue():
        if candidate not in candidates and ids.parse(candidate).alias in (alias, f"{alias}-singletask"):
            candidates.append(candidate)
    return candidates


MINARI_D4RL_TASKS = ("pointmaze", "antmaze", "pen", "door", "hammer", "relocate", "kitchen")  # Minari's D4RL/<task>/<kind> ports


def _named_by_its_family(candidate: str) -> bool:
    """Whether a further alias form's id is one its family has: a D4RL antmaze/maze2d/Adroit/kitchen name at one of its versions
    (`d4rl/pen-human-v1`), or a Minari D4RL port of one of `MINARI_D4RL_TASKS` (`minari/D4RL/pen/human-v2`)."""
    source, _, name = candidate.partition("/")
    if source == "d4rl":
        return d4rl.family_of(name) not in (None, "locomotion")
    if name.startswith("D4RL/"):
        return name.split("/")[1] in MINARI_D4RL_TASKS
    return True


def _ogbench_single_task_candidates(alias: str) -> list[str]:
    """`cube-single-play[-singletask[-taskN]]` -> its `ogbench/` and `local/ogbench-` single-task ids; [] for other aliases."""
    name = alias if "-singletask" in alias else f"{alias}-singletask"
    if alias.split("-", 1)[0] not in ogbench_io.FAMILIES or not ogbench_io.SINGLETASK_NAME.fullmatch(f"{name}-v0"):
        return []
    return [f"ogbench/{name}-v0", f"local/{LOCAL_OGBENCH}{name}-v0"]


def resolve(name: str) -> str:
    """The canonical id for an id or alias; raises `OffbenchError` with the fix when nothing fits."""
    if "/" in name:
        split_id(name)
        return name
    candidates = alias_candidates(name)
    for candidate in candidates:
        if is_present(candidate):
            return candidate
    for candidate in candidates:
        if is_makeable(candidate):
            return candidate
    for candidate in candidates:
        if candidate in catalogue():  # listed but not makeable: loading it says what is missing
            return candidate
    for candidate in candidates:
        # absent, but its files are known: loading says how to get them
        if candidate.startswith("d4rl/") and d4rl.family_of(candidate.removeprefix("d4rl/")) is not None:
            return candidate
        if candidate.startswith("dqn-replay/") and dqn_replay.is_replay_name(candidate.removeprefix("dqn-replay/")):
            return candidate
    tried = ", ".join(candidates) if candidates else "no candidates"
    raise OffbenchError(f"unknown dataset '{name}' (tried {tried})", "see `offbench data list`")


def load_dataset(
    name: str,
    make_missing: bool = True,
    on_make: Callable[[str], Callable[[int], None] | None] | None = None,
) -> OfflineDataset:
    """Load a dataset by id or alias; a makeable local dataset that is absent is made first.

    `on_make(dataset_id)` is called before making; it may return a progress callback.
    """
    dataset_id = resolve(name)
    source, rest = split_id(dataset_id)
    if not is_present(dataset_id):
        if source == "local" and recording_id(dataset_id) in catalogue() and not is_makeable(dataset_id):
            raise OffbenchError(f"dataset {dataset_id} is not made and cannot be made here: {no_policy_note(catalogue()[recording_id(dataset_id)])}")
        if not (make_missing and is_makeable(dataset_id)):
            raise OffbenchError(f"dataset {dataset_id} is missing: expected {location(dataset_id)}", _how_to_get(dataset_id))
        progress = on_make(dataset_id) if on_make else None
        return make_dataset(dataset_id, on_steps=progress)
    return SOURCES[source].load(rest, location(dataset_id))


def load_validation(name: str) -> OfflineDataset:
    """The validation split of an OGBench dataset (`ogbench/...` or `local/ogbench-...`), id `<id>+val`.

    It is the recording's `<dataset>-val.npz`, read and relabelled exactly as the training file. Raises
    `OffbenchError` for another source (none has a validation split) or a missing file.
    """
    dataset_id = resolve(name)
    source, rest = split_id(dataset_id)
    if source != "ogbench" and not (source == "local" and rest.startswith(LOCAL_OGBENCH)):
        raise OffbenchError(f"{dataset_id} has no validation split", "only OGBench datasets (ogbench/, local/ogbench-) ship one")
    path = location(dataset_id)
    val_path = path.with_name(f"{path.stem}-val.npz")
    if not val_path.is_file():
        raise OffbenchError(f"the validation split of {dataset_id} is missing: expected {val_path}", _how_to_get(dataset_id))
    if source == "ogbench":
        return ogbench_io.load_ogbench(val_path, f"{dataset_id}+val", rest)
    _, val, _ = _recording_rows(dataset_id, path)  # a local recording's hash covers both files
    return ogbench_io.dataset_from_rows(val, val_path, f"{dataset_id}+val", rest.removeprefix(LOCAL_OGBENCH))


def _how_to_get(dataset_id: str) -> str:
    source, name = split_id(dataset_id)
    return SOURCES[source].how_to_get(name)


def list_datasets() -> list[DatasetStatus]:
    """Every known dataset: present on disk, makeable here, or needing a file."""
    listed = {dataset_id for source in SOURCES.values() for dataset_id in source.listed()}
    rows = []
    for dataset_id in sorted(listed):
        state = _state(dataset_id)
        note = "" if state == "present" else _how_to_get(dataset_id)
        rows.append(DatasetStatus(dataset_id, state, str(location(dataset_id)), note))
    return rows


def _state(dataset_id: str) -> str:
    if is_present(dataset_id):
        return "present"
    if is_makeable(dataset_id):
        return "makeable"
    return "needs policy" if recording_id(dataset_id) in catalogue() else "needs file"


def describe(dataset: OfflineDataset) -> dict[str, Any]:
    """Episode, transition and return statistics of a dataset (raw and normalised), and its score.

    A success-rate dataset (OGBench) adds its task, its recording's episode count, the share of them
    in which the behaviour reaches the task (`behaviour_success`, %) and its reward semantics; a local Atari
    recording, the episodes its recipe left out at the 27,000-step cap (`episodes_left_out_at_cap`) when recorded; a D4RL
    file, the env that evaluates it (`evaluation`) and, without time-outs in the file, the rule that placed them.
    """
    returns = dataset.episode_returns()
    info: dict[str, Any] = {
        "id": dataset.metadata.id,
        "source": dataset.metadata.source,
        "env_id": dataset.metadata.env_id,
        "sha256": dataset.metadata.sha256,
        "transitions": len(dataset),
        "episodes": dataset.num_episodes,
        "terminals": int(dataset.terminals.sum()),
        "timeouts": int(dataset.timeouts.sum()),
        "episode_length_mean": float(dataset.episode_lengths().mean()),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "observation_space": dataset.metadata.observation_space.describe(),
        "action_space": dataset.metadata.action_space.describe(),
        "ref_min_score": dataset.metadata.ref_min_score,
        "ref_max_score": dataset.metadata.ref_max_score,
        "ref_source": dataset.metadata.ref_source,
        "score": dataset.metadata.score,
    }
    extra = dataset.metadata.extra
    if dataset.metadata.score == "success-rate":  # OGBench: the recording's episodes, and how many reach the task
        info.update(task=extra["task"], recorded_episodes=extra["recorded_episodes"], behaviour_success=100.0 * extra["behaviour_success"],
                    reward_of=extra["reward_of"], ogbench_version=extra["ogbench_version"])
        if extra.get("recording_sha256"):
            info["recording_sha256"] = extra["recording_sha256"]
    if extra.get("evaluation"):  # a D4RL file: the env that stands in for D4RL's own, and how it differs
        info["evaluation"] = extra["evaluation"]
    if extra.get("timeouts"):  # a D4RL file without time-outs: the rule that placed them
        info["timeouts_rule"] = extra["timeouts"]
    if "episodes_left_out_at_cap" in extra:  # a local Atari recording: episodes the Dopamine layout could not hold
        info["episodes_left_out_at_cap"] = extra["episodes_left_out_at_cap"]
    if dataset.metadata.ref_min_score is not None:
        normalized = dataset.normalized_score(returns)
        info.update(normalized_mean=float(normalized.mean()), normalized_std=float(normalized.std()),
                    normalized_min=float(normalized.min()), normalized_max=float(normalized.max()))
    return info

