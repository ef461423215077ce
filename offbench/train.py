"""The unified protocol: one training loop for every algorithm.

One process trains a *seed group*: S independent runs batched on the seed axis. The trainer holds the
loop and the records only: the algorithm's sampler (data layer) draws each seed's minibatch from that
seed's sampling stream, the algorithm's stages (if any) run once before the loop, `algorithm.update(batch,
step)` runs every step, evaluation runs every `eval_every` steps (and at the end), each seed's curve is
written, and the whole group is checkpointed atomically, so a killed group resumes (`offbench run
--resume GROUP_ID`) and ends exactly as an uninterrupted run would on CPU. At the end, each seed's policy is
kept with its run (`runs/<run_id>/policy.pt`, offbench.policy) before its summary is written. Every
`log_every` steps and at each evaluation, each seed's logs get a row (offbench.logs: metrics.csv and
evaluations.csv in its run folder, TensorBoard and wandb as options); the device's metric tensors are
read only at those steps.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offbench import logs, provenance
from offbench.algos import get_algorithm
from offbench.algos.base import OfflineAlgorithm, Problem, StageContext
from offbench.config import dataset_transforms, observation_kind, protocol_defaults, resolve_config
from offbench.data import DatasetMetadata, OfflineDataset, corruption, load_dataset, resolve, transforms, user_files
from offbench.data.dataset import episode_scores
from offbench.data.registry import recorded_hash_mismatch
from offbench.data.sampling import (
    Sampler,
    make_sampler,
    sampler_class,
    state_normalizer,  # noqa: F401  (its public home before samplers moved to the data layer)
)
from offbench.errors import OffbenchError
from offbench.evaluate import EvalEnvs, check_env_spaces, evaluate_episodes
from offbench.io import atomic_write, json_number, read_tensors
from offbench.policy import save_run_policies
from offbench.protocol import BUDGET_KEYS, MAX_SEED, MAX_SEEDS, TrainingProtocol, check_budget, check_integer, seed_list
from offbench.records import DEFAULT_LAST_K, DatasetRecord, RunConfig, RunSummary
from offbench.seeding import SeedStreams
from offbench.store import HEARTBEAT_EVERY_S, ResultsStore, is_evaluation

CHECKPOINT_VERSION = 2  # 2: named random streams, sampler state, stages


@dataclass(frozen=True)
class RunPlan:
    """What to train: one algorithm on one dataset for a group of seeds, under one budget."""

    algo: str
    dataset: str  # as requested (id or alias)
    seeds: list[int]
    steps: int | None = None  # None: the algorithm's protocol default
    eval_every: int | None = None
    eval_episodes: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    subset: int | None = None  # small-data protocol: keep N transitions (see offbench.data.transforms)
    subset_mode: str = "first"
    corrupt: str | None = None  # degraded-data protocol, e.g. "relabel-random-actions:0.3" (offbench.data.corruption)
    data_seed: int = 0  # seeds data transforms; the same for every training seed of a comparison
    env: str | None = None  # a user's file (dataset given by path): the evaluation env
    ref: str | None = None  # ... and its reference returns, "d4rl:hopper" or "MIN,MAX" (offbench.data.user_files)
    clip_actions: bool = False  # ... and whether actions outside the env's box are clipped (+clip-actions)
    log_every: int = logs.DEFAULT_LOG_EVERY  # a row of training metrics every K steps (offbench.logs)
    loggers: list[str] = field(default_factory=list)  # optional loggers beside the CSV files: "tensorboard", "wandb"

    def __post_init__(self) -> None:
        """`seeds` as a list of ints from any sequence of integers (a range, a tuple, a numpy array); raises
        `OffbenchError` for anything else, before anything is written."""
        object.__setattr__(self, "seeds", seed_list(self.seeds))


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT, SIGTERM or SIGHUP; the message names the group and how to go on."""


class Reporter:
    """What the loop tells the user; the CLI supplies a rich progress bar, tests a silent one."""

    def message(self, text: str) -> None: ...
    def start(self, total: int, completed: int) -> None: ...
    def advance(self, step: int, steps_per_s: float, score: float | None) -> None: ...
    def making(self, dataset_id: str) -> Callable[[int], None] | None:
        return None
    def stop(self) -> None: ...


# ---- the seed group ------------------------------------------------------------------------------


@dataclass
class SeedGroup:
    """Everything one training process holds; `checkpoint()` captures all of it."""

    group_id: str
    run_ids: list[str]
    plan: RunPlan
    protocol: TrainingProtocol
    dataset: OfflineDataset
    sampler: Sampler
    algorithm: OfflineAlgorithm
    streams: SeedStreams
    device: torch.device
    step: int = 0
    curves: list[list[dict[str, Any]]] = field(default_factory=list)
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    stages_done: list[str] = field(default_factory=list)
    stage_time_s: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # the latest value of each training metric

    def act(self, observations: np.ndarray, episode_start: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        """Environment observations (S, N, *obs_shape) -> actions (S, N, *action_shape), on the device.

        `rewards` (S, N) reach the algorithm only when it `observes_rewards`."""
        dtype = torch.uint8 if self.sampler.observation_space.dtype == "uint8" else torch.float32
        obs = self.sampler.prepare_observations(torch.as_tensor(observations, dtype=dtype, device=self.device))
        starts = torch.as_tensor(episode_start, dtype=torch.bool, device=self.device)
        if self.algorithm.observes_rewards:
            return self.algorithm.act(obs, starts, torch.as_tensor(rewards, dtype=torch.float32, device=self.device)).cpu().numpy()
        return self.algorithm.act(obs, starts).cpu().numpy()

    def checkpoint(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "group_id": self.group_id,
            "run_ids": self.run_ids,
            "plan": dataclasses.asdict(self.plan),
            "protocol": self.protocol.to_dict(),
            "algo_config": dataclasses.asdict(self.algorithm.config),
            "dataset_sha256": self.dataset.metadata.sha256,
            "step": self.step,
            "algorithm": self.algorithm.training_state(),
            "streams": self.streams.state_dict(),
            "sampler": self.sampler.state_dict(),
            "stages_done": self.stages_done,
            "stage_time_s": self.stage_time_s,
            "metrics": {name: value.cpu() for name, value in self.metrics.items()},
            "curves": self.curves,
            "train_time_s": self.train_time_s,
            "eval_time_s": self.eval_time_s,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a `checkpoint()` into this freshly built group."""
        self.algorithm.load_training_state(state["algorithm"])
        self.streams.load_state_dict(state["streams"])
        self.sampler.load_state_dict(state["sampler"])
        self.stages_done, self.stage_time_s = list(state["stages_done"]), dict(state["stage_time_s"])
        self.metrics = {name: value.to(self.device) for name, value in state["metrics"].items()}
        self.step, self.curves = state["step"], state["curves"]
        self.train_time_s, self.eval_time_s = state["train_time_s"], state["eval_time_s"]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OffbenchError(f"unknown device '{name}'", "use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OffbenchError(f"device '{name}' requested but CUDA is not available", "use --device cpu")
    return device


def build_group(plan: RunPlan, reporter: Reporter, group_id: str | None = None) -> SeedGroup:
    """Load the data, resolve the config and build the seeded networks for a plan."""
    algorithm_class, user_file, dataset_id = check_before_loading(plan)
    device = pick_device(plan.device)
    loaded = user_file.load() if user_file else load_dataset(dataset_id, on_make=lambda d: _announce_make(reporter, d))
    dataset = baseline_transforms(transformed(loaded, plan), plan.algo, dataset_id)
    meta = dataset.metadata
    _check_references(meta)
    algorithm_class.check_problem(plan.algo, Problem(meta.observation_space, meta.action_space), meta.id)
    config = resolve_config(plan.algo, algorithm_class, dataset_id, plan.overrides, observation_kind(meta.observation_space))
    protocol = _protocol(plan, dataset, config)
    with _allocating(plan, device):
        sampler = make_sampler(dataset, device, config)
        problem = Problem(sampler.observation_space, meta.action_space)
        check_env_spaces(protocol.eval_env, protocol.eval_env_kwargs, protocol.eval_wrappers, problem.observation_space, problem.action_space, meta.id)
        check_fits(algorithm_class, config, problem, plan.seeds, device)
        streams = SeedStreams.for_seeds(plan.seeds, device)
        algorithm = algorithm_class(config, problem, streams).to(device)
    group_id = group_id or _new_group_id(plan.algo, dataset.metadata.id)
    return SeedGroup(
        group_id=group_id,
        run_ids=[f"{group_id}-s{seed}" for seed in plan.seeds],
        plan=plan,
        protocol=protocol,
        dataset=dataset,
        sampler=sampler,
        algorithm=algorithm,
        streams=streams,
        device=device,
        curves=[[] for _ in plan.seeds],
    )


def check_fits(algorithm_class: type[OfflineAlgorithm], config: Any, problem: Problem, seeds: list[int], device: torch.device) -> None:
    """Refuse in one line, before anything is allocated or written, a group whose networks (with their gradients and
    Adam's two moments: 4x the parameters, counted on the meta device) or whose batch of transitions (S x B x (s, a, r,
    s', flags)) alone exceed the device's memory: `--set` widths, ensemble or batch sizes, or `--seeds`, that no
    machine of this kind can hold (a width of 65,536 would otherwise fill the memory while it is initialised)."""
    try:
        with torch.device("meta"):
            shapes = algorithm_class(config, problem, SeedStreams.for_seeds(seeds, "cpu"))
    except RuntimeError as error:  # a size torch cannot even describe (its storage size overflows)
        raise OffbenchError(f"{algorithm_class.__name__} does not fit on {device}: {str(error).splitlines()[0][:160]}",
                            "use smaller networks (--set) or fewer seeds per group") from None
    parameters, count = sum(p.numel() * p.element_size() for p in shapes.parameters()), sum(p.numel() for p in shapes.parameters())
    buffers = sum(b.numel() * b.element_size() for b in shapes.buffers())
    per_transition = 2 * problem.observation_space.nbytes + 4 * max(1, math.prod(problem.action_space.shape)) + 12
    available = device_memory(device)
    for what, needed, fix in (
        (f"its networks ({count:,} parameters, with gradients and optimiser states)", 4 * parameters + buffers, "smaller networks"),
        (f"a batch of {config.batch_size:,} transitions x {len(seeds)} seeds", len(seeds) * config.batch_size * per_transition, "a smaller batch_size"),
    ):
        if needed > available:
            raise OffbenchError(f"{algorithm_class.__name__} does not fit on {device}: {what} need {needed / 2**30:,.1f} GiB, more than its "
                                f"{available / 2**30:,.1f} GiB", f"use {fix} (--set) or fewer seeds per group")


def device_memory(device: torch.device) -> int:
    """Bytes of memory of `device`: the GPU's, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@contextmanager
def _allocating(plan: RunPlan, device: torch.device) -> Iterator[None]:
    """An allocation the device refuses while the group is built (networks of `--set` widths, the dataset on the device)
    is one line, before any record is written."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        raise OffbenchError(f"{plan.algo} with this config does not fit on {device}: {str(error).strip().splitlines()[0][:160]}",
                            "use smaller networks or batches (--set), or fewer seeds per group") from None


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation the device refused (torch's CPU allocator or CUDA)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(text in str(error) for text in ("can't allocate memory", "out of memory")))


def check_before_loading(plan: RunPlan) -> tuple[type[OfflineAlgorithm], user_files.UserFile | None, str | None]:
    """The plan's flags and `--set` values, checked before its dataset is loaded or made and before the store is touched;
    returns the algorithm's class, the checked user file (a dataset given by path) or None, and the resolved dataset id
    (None for a user file). Raises `OffbenchError`."""
    algorithm_class = get_algorithm(plan.algo)
    user_file = check_plan(plan)
    dataset_id = None if user_file else resolve(plan.dataset)
    # Transforms never change the config (overrides are keyed by alias or base id), so bad --set values
    # are refused here; the defaults for the dataset's kind of observations ([observations.<kind>] of the
    # baseline) are applied once it is loaded.
    resolve_config(plan.algo, algorithm_class, dataset_id, plan.overrides)
    dataset_transforms(plan.algo, dataset_id)
    pick_device(plan.device)
    return algorithm_class, user_file, dataset_id


def check_plan(plan: RunPlan) -> user_files.UserFile | None:
    """Everything about a plan that can be checked before its dataset is loaded or made; raises `OffbenchError`.

    Returns the checked user file when the plan's dataset is a path, else None.
    """
    if not plan.seeds or len(set(plan.seeds)) != len(plan.seeds) or min(plan.seeds) < 0:
        raise OffbenchError(f"seeds must be distinct non-negative integers, got {plan.seeds}"[:200])
    check_integer("the number of seeds", len(plan.seeds), 1, MAX_SEEDS)
    check_integer("a seed", max(plan.seeds), 0, MAX_SEED)
    check_integer("--data-seed", plan.data_seed, 0, MAX_SEED)
    plan_budget(plan)
    check_integer("--log-every", plan.log_every)
    logs.check_loggers(plan.loggers, plan.log_every)
    if plan.subset is not None:
        check_integer("--subset", plan.subset)
    if plan.subset_mode not in transforms.SUBSET_MODES:
        raise OffbenchError(f"unknown subset mode '{plan.subset_mode}'", f"choose one of: {', '.join(transforms.SUBSET_MODES)}")
    if plan.corrupt is not None:
        corruption.parse_corruption(plan.corrupt)
    if user_files.is_user_path(plan.dataset):
        return user_files.UserFile.check(plan.dataset, plan.env, plan.ref, plan.clip_actions)
    given = [flag for flag, value in (("--env", plan.env), ("--ref", plan.ref), ("--clip-actions", plan.clip_actions)) if value]
    if given:
        raise OffbenchError(f"{', '.join(given)} apply to a dataset file given by path, not to {plan.dataset}",
                            "a catalogued dataset names its own env and references (see `offbench data info`)")
    return None


def transformed(dataset: OfflineDataset, plan: RunPlan) -> OfflineDataset:
    """The plan's dataset transforms, applied in a fixed order; each one extends the dataset id."""
    if plan.subset is not None:
        dataset = transforms.subset(dataset, plan.subset, plan.subset_mode, plan.data_seed)
    if plan.corrupt is not None:
        dataset = corruption.corrupt(dataset, plan.corrupt, plan.data_seed)
    return dataset


def baseline_transforms(dataset: OfflineDataset, algo: str, dataset_id: str | None) -> OfflineDataset:
    """The transforms baselines/<algo>.toml asks for on this dataset (`offbench.config.dataset_transforms`), after the
    plan's: AntMaze's `reward_shift = -1.0` gives rewards r - 1 and the id `+reward-1`, recorded in the run record's
    dataset (id and transforms) as --subset/--corrupt are. A user's file (`dataset_id` None) gets none."""
    shift = dataset_transforms(algo, dataset_id).get("reward_shift", 0.0)
    return transforms.shift_rewards(dataset, shift) if shift else dataset


def _announce_make(reporter: Reporter, dataset_id: str) -> Callable[[int], None] | None:
    reporter.message(f"{dataset_id} is not on this machine: making it by its recipe first")
    return reporter.making(dataset_id)


def plan_budget(plan: RunPlan) -> dict[str, int]:
    """Steps, eval_every and eval_episodes: the plan's, else the algorithm's protocol defaults; checked positive."""
    defaults = {"steps": 1_000_000, "eval_every": 5000, "eval_episodes": 10, **protocol_defaults(plan.algo)}
    budget = {key: defaults[key] if getattr(plan, key) is None else getattr(plan, key) for key in BUDGET_KEYS}
    check_budget(budget)
    return budget


def _check_references(meta: DatasetMetadata) -> None:
    """Normalised-return scores are 100 (R - min) / (max - min): refuse, before training, references that would make
    them inf or NaN. A success-rate dataset needs none."""
    if meta.score == "success-rate":
        return
    low, high = meta.ref_min_score, meta.ref_max_score
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high) and high > low and math.isfinite(high - low)):
        raise OffbenchError(f"dataset {meta.id} has no usable reference returns to normalise scores with (min {low}, max {high})",
                            "use a dataset whose metadata carries finite ref_min_score < ref_max_score")


def _protocol(plan: RunPlan, dataset: OfflineDataset, config: Any) -> TrainingProtocol:
    protocol = TrainingProtocol(
        **plan_budget(plan),
        sampler=config.sampler,
        batch_sampling=sampler_class(config.sampler).description,
        normalize_states=config.normalize_states,
        timeouts_as_terminals=config.timeouts_as_terminals,
        eval_env=dataset.metadata.env_id,
        eval_env_kwargs=dataset.metadata.env_kwargs,
        eval_wrappers=list(dataset.metadata.eval_wrappers),
    )
    if not dataset.metadata.env_id:
        raise OffbenchError(f"dataset {dataset.metadata.id} names no environment to evaluate in")
    return protocol


def _new_group_id(algo: str, dataset_id: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{algo}__{dataset_id.replace('/', '-')}__{stamp}-{secrets.token_hex(2)}"


# ---- running -------------------------------------------------------------------------------------


def run(plan: RunPlan, store: ResultsStore, reporter: Reporter | None = None, group_id: str | None = None) -> list[str]:
    """Train a new seed group; returns its run ids (one finished record per seed).

    `group_id`: the group's id (a sweep gives each job a stable one, offbench.execution); default a new timestamped id.
    """
    reporter = reporter or Reporter()
    check_before_loading(plan)  # before the store's folder is made
    store.ensure_writable()
    group = build_group(plan, reporter, group_id=group_id)
    reporter.message(budget_line(group))
    for mismatch in _hash_warnings(group.dataset):
        reporter.message(f"warning: {mismatch}")
    with store.training(group.group_id):
        _start_records(group, store, resumed=False)
        return _train(group, store, reporter)


def resume(group_id: str, store: ResultsStore, reporter: Reporter | None = None, plan: RunPlan | None = None) -> list[str]:
    """Continue a killed seed group from its last checkpoint; returns its run ids.

    A group whose runs are all finished is left as it is (said in one line, nothing loaded or written). `plan`: the
    plan the caller expects the checkpoint to hold (a sweep's job); a checkpoint of another plan is refused. Raises
    `OffbenchError` for a missing, damaged or foreign checkpoint (see `load_checkpoint`).
    """
    reporter = reporter or Reporter()
    read_as = _file_version(store.checkpoint_path(group_id))
    state = load_checkpoint(store, group_id)  # before the lock, which creates the store's folders
    if all(store.is_finished(run_id) for run_id in state["run_ids"]):
        reporter.message(f"group {group_id} is finished: nothing to resume; its {len(state['run_ids'])} runs are in {store.root / 'runs'}")
        return list(state["run_ids"])
    if plan is not None and dataclasses.asdict(plan) != state["plan"]:
        raise OffbenchError(f"checkpoint {store.checkpoint_path(group_id)} holds another plan than the job of group {group_id}",
                            "remove the group (`offbench runs rm GROUP_ID`) or the checkpoint, then run again")
    with store.training(group_id):
        # Read again only when another process replaced it meanwhile: a checkpoint can hold gigabytes of rollouts.
        if _file_version(store.checkpoint_path(group_id)) != read_as:
            state = load_checkpoint(store, group_id)
        group = build_group(RunPlan(**state["plan"]), reporter, group_id=group_id)
        if group.dataset.metadata.sha256 != state["dataset_sha256"]:
            raise OffbenchError(f"dataset {group.dataset.metadata.id} changed since group {group_id} started (hash differs)", "start a new run")
        _ensure_unchanged(group_id, "config", state["algo_config"], dataclasses.asdict(group.algorithm.config))
        _ensure_unchanged(group_id, "protocol", state["protocol"], group.protocol.to_dict())
        _restore(group, state, store.checkpoint_path(group_id))
        _start_records(group, store, resumed=True)
        reporter.message(f"resuming {group_id} at step {group.step}")
        return _train(group, store, reporter)


def _file_version(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced (atomic writes rename a new inode over it): inode, size, modification time."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def budget_line(group: SeedGroup) -> str:
    """What a run is about to do, said before it starts: a bare `offbench run` trains the paper's full budget."""
    plan, protocol = group.plan, group.protocol
    default = f" (the protocol default of baselines/{plan.algo}.toml; --steps for fewer)" if plan.steps is None else ""
    seeds = f"{len(plan.seeds)} seed{'s' if len(plan.seeds) > 1 else ''}"
    return (f"{plan.algo} on {group.dataset.metadata.id}: {protocol.steps:,} steps{default}, {seeds}, "
            f"an evaluation of {protocol.eval_episodes} episode{'s' * (protocol.eval_episodes != 1)} every {protocol.eval_every:,} steps")


def _ensure_unchanged(group_id: str, what: str, started: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to resume under a config or protocol that resolves differently from the one the group started with."""
    for key in sorted(set(started) | set(now)):
        if started.get(key) != now.get(key):
            raise OffbenchError(
                f"group {group_id} started with {what} {key}={started.get(key)!r}, which now resolves to {now.get(key)!r}",
                "restore the baseline TOML or offbench version it started with, or start a new run",
            )


def load_checkpoint(store: ResultsStore, group_id: str) -> dict[str, Any]:
    """Group `group_id`'s checkpoint, read without executing code and checked against itself before any use.

    A store is shared (a cluster filesystem, an archive from a colleague), so the file is untrusted: it is read
    with `torch.load(weights_only=True)` (tensors and plain values only), then its version, group, plan, seeds, step
    (within [0, steps]), curves (one per seed, an entry at each evaluation up to the step), times and metrics are
    checked (`check_checkpoint`). Whether its tensors fit the group's networks is checked when it is restored.
    Raises one-line `OffbenchError` when it is missing, unreadable, damaged or foreign.
    """
    path = store.checkpoint_path(group_id)
    if not path.exists():
        raise OffbenchError(f"no checkpoint for group {group_id} at {path}", "list groups with `offbench runs --all`")
    state = read_tensors(path, "checkpoint", CHECKPOINT_ADVICE)
    check_checkpoint(state, group_id, path)
    return state


CHECKPOINT_ADVICE = "remove the group (`offbench runs rm GROUP_ID`) and train it again; the stored records are untouched"
CHECKPOINT_TYPES = {
    "version": int, "group_id": str, "run_ids": list, "plan": dict, "protocol": dict, "algo_config": dict, "dataset_sha256": str,
    "step": int, "algorithm": dict, "streams": dict, "sampler": dict, "stages_done": list, "stage_time_s": dict, "metrics": dict,
    "curves": list, "train_time_s": float, "eval_time_s": float,
}  # fmt: skip


def check_checkpoint(state: Any, group_id: str, path: Path) -> None:
    """Raise one-line `OffbenchError` unless `state` is a v`CHECKPOINT_VERSION` checkpoint of `group_id` whose plan,
    run ids, step, curves, times and metrics agree with each other (see `load_checkpoint`)."""
    def damaged(what: str) -> OffbenchError:
        return OffbenchError(f"checkpoint {path} is damaged or foreign: {what}", CHECKPOINT_ADVICE)

    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise OffbenchError(f"checkpoint {path} is not an offbench v{CHECKPOINT_VERSION} checkpoint", CHECKPOINT_ADVICE)
    for key, kind in CHECKPOINT_TYPES.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise damaged(f"{key} is {type(value).__name__}, not {kind.__name__}")
    if state["group_id"] != group_id:
        raise damaged(f"it is the checkpoint of group {state['group_id']!r}")
    try:
        plan = RunPlan(**state["plan"])
        check_plan(plan)
        protocol = TrainingProtocol.from_dict(state["protocol"])
    except (TypeError, ValueError, OffbenchError) as error:
        raise damaged(f"its plan or protocol does not read ({str(error).splitlines()[0]})") from None
    if state["run_ids"] != [f"{group_id}-s{seed}" for seed in plan.seeds]:
        raise damaged("its run ids are not its group's seeds")
    step = state["step"]
    if not 0 <= step <= protocol.steps:
        raise damaged(f"step {step} is outside [0, {protocol.steps}]")
    _check_curves(state["curves"], evaluation_steps(step, protocol.steps, protocol.eval_every), len(plan.seeds), damaged)
    times = [state["train_time_s"], state["eval_time_s"], *state["stage_time_s"].values()]
    if not all(isinstance(t, float) and math.isfinite(t) and t >= 0 for t in times) or not all(isinstance(s, str) for s in state["stages_done"]):
        raise damaged("its times or stages are not finite non-negative seconds and stage names")
    if not all(isinstance(m, torch.Tensor) and tuple(m.shape) == (len(plan.seeds),) and not m.is_complex() for m in state["metrics"].values()):
        raise damaged(f"a training metric is not one value per seed ({len(plan.seeds)})")


def evaluation_steps(step: int, steps: int, eval_every: int) -> list[int]:
    """The steps at which a group of `steps` steps has evaluated once it reached `step` (`_train`'s schedule)."""
    done = list(range(eval_every, step + 1, eval_every))
    return done + [steps] if step == steps and steps % eval_every else done


def _check_curves(curves: list[Any], expected_steps: list[int], seeds: int, damaged: Callable[[str], OffbenchError]) -> None:
    if len(curves) != seeds or not all(isinstance(curve, list) and all(isinstance(e, dict) for e in curve) for curve in curves):
        raise damaged(f"its curves are not {seeds} lists of evaluations")
    for curve in curves:
        if [entry.get("step") for entry in curve] != expected_steps:
            raise damaged(f"a curve's evaluation steps are not those of its step ({expected_steps[-3:]} at the end)")
        if not all(map(is_evaluation, curve)):
            raise damaged("a curve's entry is not an evaluation (numbers or nulls as scores, returns and metrics)")


def _restore(group: SeedGroup, state: dict[str, Any], path: Path) -> None:
    """`group.restore(state)`, refusing in one line a checkpoint whose tensors do not fit the group (shapes, stages)."""
    if unknown := [name for name in state["stages_done"] if name not in group.algorithm.stages]:
        raise OffbenchError(f"checkpoint {path} is damaged or foreign: {group.plan.algo} has no stage {unknown[0]!r}", CHECKPOINT_ADVICE)
    try:
        group.restore(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OffbenchError(f"checkpoint {path} does not fit group {group.group_id}: {reason[:200]}", CHECKPOINT_ADVICE) from None


def _start_records(group: SeedGroup, store: ResultsStore, resumed: bool) -> None:
    info = {**provenance.collect(group.device), "logs": logs.described(group.plan.loggers, group.plan.log_every)}
    for seed, run_id, curve in zip(group.plan.seeds, group.run_ids, group.curves):
        if store.is_finished(run_id):  # a group killed while writing its summaries: those written stay as they are
            continue
        segment = {**info, "started_at": time.time()}
        earlier = _earlier_provenance(store, run_id) if resumed else None
        store.start_run(run_id, _record_config(group, seed, run_id), segment if earlier is None else _after_earlier_segments(earlier, segment))
        store.write_curve(run_id, curve)


def _earlier_provenance(store: ResultsStore, run_id: str) -> dict[str, Any] | None:
    """A resumed run's provenance so far; None when its folder was removed (`runs prune`) or is unreadable."""
    try:
        return store.load(run_id).provenance
    except OffbenchError:  # DamagedRecord included: the resume rewrites the record from the checkpoint
        return None


SEGMENT_KEYS = ("git_commit", "git_dirty", "git_checkout_now", "packages", "hostname", "device", "cpu", "gpu", "command")


def _after_earlier_segments(earlier: dict[str, Any], segment: dict[str, Any]) -> dict[str, Any]:
    """A resumed run's provenance: the new segment's, keeping the run's first start (`started_at`) and each earlier
    segment's start, code and machine (`earlier_segments`; a resume may run other code or on another machine)."""
    last = {"started_at": earlier.get("segment_started_at", earlier.get("started_at")), **{key: earlier[key] for key in SEGMENT_KEYS if key in earlier}}
    return {**segment, "started_at": earlier.get("started_at", segment["started_at"]), "segment_started_at": segment["started_at"],
            "earlier_segments": [*earlier.get("earlier_segments", []), last]}


def _record_config(group: SeedGroup, seed: int, run_id: str) -> RunConfig:
    meta = group.dataset.metadata
    dataset = DatasetRecord(
        id=meta.id,
        sha256=meta.sha256,
        requested=group.plan.dataset,
        source=meta.source,
        env_id=meta.env_id,
        ref_min_score=meta.ref_min_score,
        ref_max_score=meta.ref_max_score,
        ref_source=meta.ref_source,
        transitions=len(group.dataset),
        transforms=meta.extra.get("transforms", []),
        parent_sha256=meta.extra.get("parent_sha256"),
        observation_space=meta.observation_space.to_dict(),
        action_space=meta.action_space.to_dict(),
        score=meta.score,
    )
    return RunConfig(
        run_id=run_id,
        group_id=group.group_id,
        algo=group.plan.algo,
        seed=seed,
        dataset=dataset,
        protocol=group.protocol,
        seeds_in_group=group.plan.seeds,
        algo_config=dataclasses.asdict(group.algorithm.config),
        overrides=group.plan.overrides,
        device=str(group.device),
    )


def _train(group: SeedGroup, store: ResultsStore, reporter: Reporter) -> list[str]:
    steps, eval_every = group.protocol.steps, group.protocol.eval_every
    batch_size = group.algorithm.config.batch_size
    run_logs: logs.GroupLogs | None = None
    eval_envs = EvalEnvs()  # built at the first evaluation, kept until the group stops
    try:
        run_logs = _open_logs(group, store)
        _run_stages(group, store, reporter)
        reporter.start(steps, group.step)
        segment_start, segment_steps = time.perf_counter(), 0
        last_heartbeat = time.monotonic()
        estimate_at = group.step + ESTIMATE_AFTER_STEPS if steps - group.step >= LONG_RUN_STEPS else None
        first_step, first_train_time_s = group.step, group.train_time_s
        while group.step < steps:
            group.step += 1
            group.metrics.update(group.algorithm.update(group.algorithm.sample(group.sampler, group.streams.sampling, batch_size), group.step))
            segment_steps += 1
            if run_logs.due(group.step):
                metrics = _seed_metrics(group)  # waits for the device: only at log steps
                run_logs.training(group.step, metrics, group.train_time_s + time.perf_counter() - segment_start)
            if group.step % eval_every == 0 or group.step == steps:
                group.train_time_s += _elapsed(segment_start, group.device)
                _evaluate_and_record(group, store, eval_envs)
                run_logs.evaluation(group.step, [curve[-1] for curve in group.curves])
                run_logs.flush()  # durable before the checkpoint that a resume cuts the logs back to
                _save_checkpoint(store, group)
                latest = [curve[-1]["normalized_score"] for curve in group.curves if curve[-1]["normalized_score"] is not None]
                reporter.advance(group.step, group.step / max(group.train_time_s, 1e-9), float(np.mean(latest)) if latest else None)
                segment_start, segment_steps = time.perf_counter(), 0
            elif segment_steps % 100 == 0:
                reporter.advance(group.step, group.step / max(group.train_time_s + time.perf_counter() - segment_start, 1e-9), None)
            if group.step == estimate_at:  # over every step trained so far: an evaluation may just have ended the segment
                seconds = group.train_time_s - first_train_time_s + time.perf_counter() - segment_start
                rate = (group.step - first_step) / max(seconds, 1e-9)
                reporter.message(f"about {timedelta(seconds=round((steps - group.step) / rate))} of training left at {rate:.0f} steps/s "
                                 f"on {group.device} (evaluations extra); --steps sets a smaller budget")
            if time.monotonic() - last_heartbeat > HEARTBEAT_EVERY_S:
                store.heartbeat(group.run_ids)
                last_heartbeat = time.monotonic()
    except KeyboardInterrupt as stop:
        why = f"at step {group.step} ({stop.args[0] if stop.args else 'SIGINT'})"
        advice = store.resume_advice(group.group_id)
        _mark_ended(group, store.mark_interrupted, f"{why}; {advice}")
        raise Interrupted(f"interrupted {why}: group {group.group_id}; {advice}") from None
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            _mark_ended(group, store.mark_failed, f"at step {group.step}: {type(error).__name__}: {error}")
            raise
        advice = store.resume_advice(group.group_id)
        _mark_ended(group, store.mark_failed, f"at step {group.step}: {error.strerror}; {advice}")
        raise OffbenchError(f"cannot write {error.filename or 'the results store'} ({error.strerror}): group {group.group_id} "
                            f"stopped at step {group.step}; its records are as of its last evaluation", f"free space, then {advice}") from None
    except (torch.OutOfMemoryError, RuntimeError) as error:
        _mark_ended(group, store.mark_failed, f"at step {group.step}: {type(error).__name__}: {error}; {store.resume_advice(group.group_id)}")
        if not out_of_memory(error):
            raise
        raise OffbenchError(f"{group.plan.algo} ran out of memory on {group.device} at step {group.step} of group {group.group_id} "
                            f"({str(error).strip().splitlines()[0][:120]})", "use smaller batches or networks (--set), or fewer seeds per group") from None
    except BaseException as error:
        _mark_ended(group, store.mark_failed, f"at step {group.step}: {type(error).__name__}: {error}; {store.resume_advice(group.group_id)}")
        raise
    finally:
        eval_envs.close()
        reporter.stop()
        if run_logs is not None:
            run_logs.close(exit_code=0 if sys.exc_info()[0] is None else 1)
    _finish_records(group, store)
    return group.run_ids


LONG_RUN_STEPS = 100_000  # a run this long states its estimated training time once it has measured its speed
ESTIMATE_AFTER_STEPS = 300
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)  # the store cannot take writes: one line, not a traceback


def _mark_ended(group: SeedGroup, mark: Callable[[str, str], None], reason: str) -> None:
    """Record how a group ended, as far as the store can still be written (a full disk may refuse this too:
    the runs then stay `running` in the index and read as interrupted once the process is gone)."""
    try:
        for run_id in group.run_ids:
            mark(run_id, reason)
    except (OSError, sqlite3.Error):
        pass


def _open_logs(group: SeedGroup, store: ResultsStore) -> logs.GroupLogs:
    """Each seed's loggers, cut back to the group's step (a resumed group's checkpoint)."""
    configs = [_record_config(group, seed, run_id) for seed, run_id in zip(group.plan.seeds, group.run_ids)]
    return logs.open_group_logs(configs, [store.run_dir(run_id) for run_id in group.run_ids], group.plan.loggers,
                                group.plan.log_every, group.protocol.steps, group.step, group.train_time_s)


def _seed_metrics(group: SeedGroup) -> dict[str, np.ndarray]:
    """The latest value of each training metric per seed, (S,) each, copied from the device."""
    return {name: value.float().cpu().numpy() for name, value in group.metrics.items()}


def _run_stages(group: SeedGroup, store: ResultsStore, reporter: Reporter) -> None:
    """`prepare`, then the algorithm's stages not done yet, in order; each is timed on its own and checkpointed when done."""
    context = StageContext(group.dataset, group.sampler, group.streams, group.device, save=lambda: _save_checkpoint(store, group),
                           message=reporter.message, steps=group.protocol.steps, env_id=group.protocol.eval_env,
                           env_kwargs=dict(group.protocol.eval_env_kwargs or {}))
    group.algorithm.prepare(context)
    for name in group.algorithm.stages:
        if name in group.stages_done:
            continue
        reporter.message(f"stage {name} of {group.plan.algo}")
        start = time.perf_counter()
        group.algorithm.run_stage(name, context)
        group.stage_time_s[name] = group.stage_time_s.get(name, 0.0) + _elapsed(start, group.device)
        group.stages_done.append(name)
        _save_checkpoint(store, group)


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _evaluate_and_record(group: SeedGroup, store: ResultsStore, eval_envs: EvalEnvs) -> None:
    start = time.perf_counter()
    group.streams.start_evaluation(group.step)
    protocol = group.protocol
    episodes = evaluate_episodes(group.act, protocol.eval_env, group.plan.seeds, protocol.eval_episodes, protocol.eval_env_kwargs,
                                 protocol.eval_wrappers, envs=eval_envs)
    group.eval_time_s += time.perf_counter() - start
    meta = group.dataset.metadata
    returns, successes = episodes.returns, episodes.successes
    scores = episode_scores(meta.score, returns, successes, meta.ref_min_score, meta.ref_max_score)
    per_seed_metrics = _seed_metrics(group)
    for s, (run_id, curve) in enumerate(zip(group.run_ids, group.curves)):
        curve.append(evaluation_entry(group.step, returns[s], scores[s], group.train_time_s + group.eval_time_s,
                                      {name: value[s] for name, value in per_seed_metrics.items()},
                                      None if successes is None else successes[s]))
        store.write_curve(run_id, curve)


def evaluation_entry(step: int, returns: np.ndarray, scores: np.ndarray, time_s: float, metrics: dict[str, float],
                     successes: np.ndarray | None = None) -> dict[str, Any]:
    """One seed's curve entry. A non-finite return (a diverged policy) is never stored as a number.

    `returns`/`scores`: (episodes,) raw returns and scores x100 (`offbench.data.dataset.episode_scores`);
    `successes`: (episodes,) bool when the env reports them, stored per episode beside the returns
    (`"successes"`, absent otherwise). `normalized_score` keeps its name whatever the dataset's score is,
    so analysis reads every curve alike; the run's dataset record says what it holds. When any return is NaN or
    inf, the entry is marked `"diverged": true` and its score, return mean and std are null; every
    non-finite value (returns, scores, training metrics) is written as null, never as a NaN token.
    """
    finite = bool(np.isfinite(returns).all() and np.isfinite(scores).all())
    entry = {
        "step": step,
        "normalized_score": float(scores.mean()) if finite else None,
        "return_mean": float(returns.mean()) if finite else None,
        "return_std": float(returns.std()) if finite else None,
        "returns": [json_number(r) for r in returns],
        "normalized_scores": [json_number(v) for v in scores],
        **({} if successes is None else {"successes": [bool(v) for v in successes]}),
        "time_s": time_s,
        **{name: json_number(value) for name, value in metrics.items()},
    }
    return entry if finite else {**entry, "diverged": True}


def _save_checkpoint(store: ResultsStore, group: SeedGroup) -> None:
    state = group.checkpoint()
    atomic_write(store.checkpoint_path(group.group_id), lambda tmp: torch.save(state, tmp))


def _finish_records(group: SeedGroup, store: ResultsStore) -> None:
    """Each seed's policy (runs/<run_id>/policy.pt, offbench.policy), then its summary, written last."""
    save_run_policies(store, group.plan.algo, group.algorithm, group.sampler.observation_normalizer(), group.run_ids, group.plan.seeds, group.step)
    info = provenance.collect(group.device)
    steps_per_s = group.step / max(group.train_time_s, 1e-9)
    wall = group.train_time_s + group.eval_time_s + sum(group.stage_time_s.values())
    for run_id, curve in zip(group.run_ids, group.curves):
        if store.is_finished(run_id):  # finished before the group was killed and resumed: never written twice
            continue
        scores = [entry["normalized_score"] for entry in curve]
        diverged_at = next((entry["step"] for entry in curve if entry.get("diverged")), None)
        summary = RunSummary(
            final_score=scores[-1] if diverged_at is None else None,
            best_score=float(np.max(scores)) if diverged_at is None else None,
            last_k_score=float(np.mean(scores[-DEFAULT_LAST_K:])) if diverged_at is None else None,
            last_k=DEFAULT_LAST_K,
            final_return=curve[-1]["return_mean"],
            evaluations=len(curve),
            diverged_at_step=diverged_at,
            status="finished" if diverged_at is None else "diverged",
            steps=group.step,
            train_time_s=group.train_time_s,
            eval_time_s=group.eval_time_s,
            stage_time_s=group.stage_time_s,
            wall_time_s=wall,
            steps_per_s=steps_per_s,
            seed_steps_per_s=steps_per_s * len(group.run_ids),
            finished_at=time.time(),
            final_success_rate=100.0 * float(np.mean(curve[-1]["successes"])) if curve[-1].get("successes") else None,
        )
        store.finish_run(run_id, summary, {**store.load(run_id).provenance, **info, "wall_time_s": wall, "steps_per_s": steps_per_s})


def _hash_warnings(dataset: OfflineDataset) -> list[str]:
    mismatch = recorded_hash_mismatch(dataset)
    return [mismatch] if mismatch else []
