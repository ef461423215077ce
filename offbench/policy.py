"""A run's trained policy: kept with the run, exported as a file that needs torch alone, re-evaluated.

What a run keeps. At the end of training, before its summary (so every finished run has one), the
trainer writes `runs/<run_id>/policy.pt` atomically: that seed's acting networks only (the algorithm's
`policy_module`, no critics it does not act with, no optimiser), the sampler's state normaliser (mean and
std, or none) and what rebuilds them: algorithm name, resolved config, observation and action spaces.
It holds tensors and plain values only (`torch.load(..., weights_only=True)` reads it) and is rebuilt
by the algorithm's own code. A run finished before policies were kept has none; an algorithm without a
`policy_module` writes none.

`export_policy` writes a torch.export program (`torch.export.load(path).module()`), with the normaliser
as its first operation and a JSON description (`offbench.json`: run, dataset, env, spaces, normaliser,
the run's last evaluation with its env seeds and noise seed) among its extra files:

    policy(observations)         (N, *obs_shape) -> (N, *action_shape)   deterministic policies (noise_dim 0)
    policy(observations, noise)  noise (N, noise_dim) ~ N(0, I)          stochastic ones (BCQ, DriftQL)

A stochastic policy takes its noise as an input, so it is deterministic given its inputs; the protocol's
evaluation drew it, each step, for all N environments of a seed from one generator seeded with
`stream_seed(seed, "eval", step)` (offbench.seeding), recorded as `noise_seed`.

`evaluate_policy` runs a kept policy in the run's recorded evaluation env (env kwargs and wrappers) with
`offbench.evaluate.evaluate`, the function training evaluates with; with the run's seed and episode count
it repeats the run's last evaluation, return for return (for a run trained on the CPU). It never changes
the run's records: it writes its result to `runs/<run_id>/evaluations/<time>-seed<S>-<N>ep.json`. An episode
whose return is NaN or inf makes the result `"diverged": true` with null return mean, std and score (each
non-finite return and score null), as a diverged evaluation during training is recorded.

Both check their output path before any work (`offbench.io.check_output_path`): an existing file is replaced
only with `force`, except that an export replaces an earlier export of the same run (the file's `offbench.json`
says so), which holds the same policy.
"""

from __future__ import annotations

import dataclasses
import json
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import offbench
from offbench.algos import get_algorithm
from offbench.algos.base import OfflineAlgorithm, Problem
from offbench.data.dataset import SCORES, episode_scores
from offbench.data.sampling import StateNormalizer
from offbench.data.spaces import ObservationSpace, action_space_from_dict
from offbench.errors import OffbenchError
from offbench.evaluate import Episodes, check_env_spaces, episode_seeds, evaluate_episodes
from offbench.io import ARCHIVE_ERRORS, atomic_write, check_output_path, json_number, json_text, read_tensors, write_json
from offbench.protocol import MAX_EVAL_EPISODES, MAX_SEED, check_integer
from offbench.seeding import SeedStreams, stream_seed
from offbench.store import ResultsStore, RunRecord

POLICY_FILE = "policy.pt"
POLICY_FORMAT = "offbench-policy"
POLICY_VERSION = 1
EXPORT_FORMAT = "offbench-exported-policy"
EXPORT_VERSION = 1
EXPORT_METADATA = "offbench.json"  # the extra file of an exported program that describes it
EVALUATIONS_DIR = "evaluations"


class StandalonePolicy(nn.Module):
    """A seed's policy with its state normaliser first: observations (N, *obs_shape) as the env returns them.

    `forward(observations, noise=None) -> actions (N, *action_shape)`; `noise` (N, noise_dim) only for a
    stochastic policy. The same operations as the protocol's acting path (sampler normalisation, then the
    algorithm's act on a member axis of one), so the same actions bit for bit.
    """

    def __init__(self, module: nn.Module, normalizer: StateNormalizer) -> None:
        super().__init__()
        self.module = module
        self.noise_dim: int = int(module.noise_dim)
        self.normalize = normalizer.mean is not None
        if self.normalize:
            self.register_buffer("mean", normalizer.mean.detach().cpu().clone())
            self.register_buffer("std", normalizer.std.detach().cpu().clone())

    def forward(self, observations: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.normalize:
            observations = (observations - self.mean) / self.std
        return self.module(observations.unsqueeze(0), None if noise is None else noise.unsqueeze(0)).squeeze(0)


# ---- kept per run, by the trainer ---------------------------------------------------------------


def save_run_policies(store: ResultsStore, algo: str, algorithm: OfflineAlgorithm, normalizer: StateNormalizer,
                      run_ids: list[str], seeds: list[int], step: int) -> None:
    """Write each seed's `policy.pt` (atomically); nothing when the algorithm defines no `policy_module`. A finished
    run's policy is never rewritten (a group killed while writing its summaries, then resumed)."""
    for index, (run_id, seed) in enumerate(zip(run_ids, seeds)):
        if store.is_finished(run_id):
            continue
        try:
            module = algorithm.policy_module(index)
        except NotImplementedError:
            return
        state = {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "run_id": run_id,
            "algo": algo,
            "seed": seed,
            "step": step,
            "algo_config": dataclasses.asdict(algorithm.config),
            "observation_space": algorithm.problem.observation_space.to_dict(),
            "action_space": algorithm.problem.action_space.to_dict(),
            "noise_dim": int(module.noise_dim),
            "module": {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()},
            "normalizer": None if normalizer.mean is None else {"mean": normalizer.mean.cpu(), "std": normalizer.std.cpu()},
        }
        atomic_write(store.run_dir(run_id) / POLICY_FILE, lambda tmp, state=state: torch.save(state, tmp))


# ---- reading a kept policy ----------------------------------------------------------------------


@dataclass
class RunPolicy:
    """A finished run's record and its rebuilt policy (on the CPU, without gradients)."""

    record: RunRecord
    policy: StandalonePolicy
    state: dict[str, Any]  # the policy file's contents

    @property
    def observation_dtype(self) -> torch.dtype:
        return torch.uint8 if self.state["observation_space"]["dtype"] == "uint8" else torch.float32


def load_run_policy(store: ResultsStore, run_id: str) -> RunPolicy:
    """The finished run `run_id`'s policy, rebuilt by its algorithm's code; one `OffbenchError` line when it cannot be."""
    record = store.load(run_id)
    if record.summary is None:
        raise OffbenchError(f"run {run_id} has not finished (it is running or was interrupted): it has no final policy",
                            "wait for it, or resume its group with `offbench run --resume GROUP_ID`")
    if not record.finished:
        raise OffbenchError(f"run {run_id} diverged (an evaluation returned NaN or inf at step {record.summary.diverged_at_step})",
                            "a diverged run has no policy worth exporting or evaluating")
    path = store.run_dir(run_id) / POLICY_FILE
    if not path.exists():
        algorithm_class = get_algorithm(record.config.algo)
        if algorithm_class.policy_module is OfflineAlgorithm.policy_module:
            recurrent = " (its policy is recurrent: it carries a state and reads the previous action and reward)" if algorithm_class.observes_rewards else ""
            raise OffbenchError(f"run {run_id} has no saved policy: algorithm {record.config.algo} defines no standalone policy "
                                f"(policy_module){recurrent}", "offbench export and eval take stateless policies only")
        raise OffbenchError(f"run {run_id} has no saved policy ({path} is missing): it finished before offbench kept each run's policy",
                            "train it again; runs finished from now on keep runs/<run_id>/policy.pt")
    state = read_tensors(path, "policy file", "train the run again")
    if not isinstance(state, dict) or state.get("format") != POLICY_FORMAT or state.get("version") != POLICY_VERSION:
        raise OffbenchError(f"{path} is not an offbench v{POLICY_VERSION} policy file")
    _check_belongs(state, record, path)
    return RunPolicy(record, rebuild_policy(state, path), state)


def _check_belongs(state: dict[str, Any], record: RunRecord, path: Path) -> None:
    """The policy file is the run's own: its run id, algorithm, seed, resolved config and spaces are the record's (a
    file copied from another run, or crafted, would be evaluated and exported under this run's name)."""
    dataset = record.config.dataset
    own = {"run_id": record.run_id, "algo": record.config.algo, "seed": record.config.seed, "algo_config": record.config.algo_config,
           **({} if dataset.observation_space is None else {"observation_space": dataset.observation_space}),
           **({} if dataset.action_space is None else {"action_space": dataset.action_space})}
    if differs := [key for key, value in own.items() if state.get(key) != value]:
        raise OffbenchError(f"policy file {path} is not run {record.run_id}'s: its {differs[0]} differs from the run's record",
                            "restore the run's own policy.pt, or train the run again")


def rebuild_policy(state: dict[str, Any], path: Path) -> StandalonePolicy:
    """A one-seed algorithm of the recorded config gives the module's shape; the file gives its tensors, and the
    normaliser's mean and std (one value per observation dimension). Raises one-line `OffbenchError` when they do not fit."""
    algorithm_class = get_algorithm(state["algo"])
    values = state["algo_config"]
    try:
        config = algorithm_class.config_class_for(values)(**values)
        problem = Problem(ObservationSpace(**state["observation_space"]), action_space_from_dict(state["action_space"]))
        module = algorithm_class(config, problem, SeedStreams.for_seeds([state["seed"]])).policy_module(0)
        module.load_state_dict(state["module"])
        normalizer = _normalizer(state["normalizer"], problem.observation_space.shape)
    except (TypeError, KeyError, RuntimeError, ValueError, AttributeError) as error:
        raise OffbenchError(f"policy file {path} does not fit this offbench's {state['algo']} ({type(error).__name__}: {str(error).splitlines()[0]})",
                            "use the offbench version that trained the run") from None
    return StandalonePolicy(module.requires_grad_(False), normalizer).eval()


def _normalizer(stored: dict[str, torch.Tensor] | None, obs_shape: tuple[int, ...]) -> StateNormalizer:
    if stored is None:
        return StateNormalizer()
    mean, std = stored["mean"], stored["std"]
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() and tuple(t.shape) == tuple(obs_shape) for t in (mean, std)):
        raise ValueError(f"its normaliser is not a float mean and std of shape {tuple(obs_shape)}")
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise ValueError("its normaliser's mean and std are not finite with std > 0")
    return StateNormalizer(mean, std)


def last_evaluation(record: RunRecord, noise_dim: int) -> dict[str, Any]:
    """The run's last recorded evaluation and how to repeat it: env seeds, and the noise seed of a stochastic policy."""
    entry, protocol = record.curve[-1], record.config.protocol
    return {
        "step": entry["step"],
        "episodes": protocol.eval_episodes,
        "env_seeds": episode_seeds([record.config.seed], protocol.eval_episodes),
        "noise_seed": stream_seed(record.config.seed, "eval", entry["step"]) if noise_dim else None,
        "returns": entry["returns"],
        "normalized_scores": entry["normalized_scores"],
    }


# ---- export ------------------------------------------------------------------------------------


@dataclass
class ExportedPolicy:
    path: Path
    metadata: dict[str, Any]

    def snippet(self) -> str:
        """Three lines that load and run it with torch alone."""
        obs, act = self.metadata["observation_space"], self.metadata["action_space"]
        dtype = "uint8" if obs["dtype"] == "uint8" else "float32"
        shapes = f"(N, {', '.join(map(str, obs['shape']))}) -> (N, {len(act['low'])})" if act.get("kind") == "box" else "(N, ...) -> (N,)"
        load = f'policy = torch.export.load("{self.path}").module()'
        observations = f"torch.as_tensor(observations, dtype=torch.{dtype})"
        if self.metadata["noise_dim"] == 0:
            return f"import torch\n{load}\nactions = policy({observations})  # {shapes}"
        noise = f"torch.randn(len(observations), {self.metadata['noise_dim']}, generator=generator)"
        return (f"import torch\n{load}; generator = torch.Generator().manual_seed(0)\n"
                f"actions = policy({observations}, {noise})  # {shapes}")


def default_export_path(run_id: str) -> Path:
    return Path("exports") / f"{run_id}.pt2"


def export_policy(store: ResultsStore, run_id: str, out: Path | None = None, force: bool = False) -> ExportedPolicy:
    """Write run `run_id`'s policy as a torch.export program at `out` (default `exports/<run_id>.pt2`, folder made).

    Raises one-line `OffbenchError`, before anything is computed, for an output path `check_output_path` refuses
    (an existing file other than an export of this run is replaced only with `force`), and for a run without a
    usable policy (`load_run_policy`) or one torch.export cannot trace.
    """
    path = out or default_export_path(run_id)
    out = check_output_path(path, "--out", force, lambda file: exported_run(file) == run_id, make_parents=out is None)
    loaded = load_run_policy(store, run_id)
    metadata = export_metadata(loaded)
    policy, inputs, dynamic = loaded.policy, example_inputs(loaded, 2), torch.export.Dim("batch")
    try:
        with torch.no_grad():
            program = torch.export.export(policy, inputs, dynamic_shapes=tuple({0: dynamic} for _ in inputs))
    except Exception as error:  # torch.export refuses code it cannot trace (data-dependent control flow ...)
        raise OffbenchError(f"the {metadata['algo']} policy of run {run_id} cannot be traced by torch.export ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''})", "its policy_module must be traceable; see docs/extending.md") from None
    text = json_text(metadata)
    atomic_write(out, lambda tmp: torch.export.save(program, tmp, extra_files={EXPORT_METADATA: text}), suffix=".pt2")
    _check_export(out, policy, example_inputs(loaded, 3, random=True))
    return ExportedPolicy(path, metadata)


def exported_run(path: Path) -> str | None:
    """The run id whose export the file at `path` is (its `offbench.json` says so); None for any other file."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"/extra/{EXPORT_METADATA}")), None)
            metadata = json.loads(archive.read(name)) if name else None
    except ARCHIVE_ERRORS:
        return None
    return metadata.get("run_id") if isinstance(metadata, dict) and metadata.get("format") == EXPORT_FORMAT else None


def example_inputs(loaded: RunPolicy, batch: int, random: bool = False) -> tuple[torch.Tensor, ...]:
    shape = (batch, *loaded.state["observation_space"]["shape"])
    generator = torch.Generator().manual_seed(0)
    if loaded.observation_dtype == torch.uint8:
        observations = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator) if random else torch.zeros(shape, dtype=torch.uint8)
    else:
        observations = torch.randn(shape, generator=generator) if random else torch.zeros(shape)
    noise_dim = loaded.policy.noise_dim
    return (observations,) if noise_dim == 0 else (observations, torch.randn((batch, noise_dim), generator=generator))


def _check_export(path: Path, policy: StandalonePolicy, inputs: tuple[torch.Tensor, ...]) -> None:
    """The written file loads and computes what the policy computes (a bug, not a user error, if not)."""
    with torch.no_grad():
        if not torch.equal(torch.export.load(path).module()(*inputs), policy(*inputs)):
            raise RuntimeError(f"the exported policy {path} does not reproduce the run's policy")


def export_metadata(loaded: RunPolicy) -> dict[str, Any]:
    record, state = loaded.record, loaded.state
    config, dataset, protocol = record.config, record.config.dataset, record.config.protocol
    normalizer = state["normalizer"]
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "run_id": record.run_id,
        "group_id": config.group_id,
        "algo": config.algo,
        "seed": config.seed,
        "steps": state["step"],
        "trained_on": config.device,
        "dataset": {"id": dataset.id, "sha256": dataset.sha256, "ref_min_score": dataset.ref_min_score, "ref_max_score": dataset.ref_max_score},
        "env": {"id": protocol.eval_env, "kwargs": protocol.eval_env_kwargs, "wrappers": protocol.eval_wrappers},
        "observation_space": state["observation_space"],
        "action_space": state["action_space"],
        "noise_dim": state["noise_dim"],
        "normalizer": None if normalizer is None else {"mean": normalizer["mean"].tolist(), "std": normalizer["std"].tolist(),
                                                       "applied": "inside the program: (observations - mean) / std"},
        "inputs": ("policy(observations): observations (N, *observation_space.shape) as the env returns them" if state["noise_dim"] == 0 else
                   "policy(observations, noise): observations (N, *observation_space.shape) as the env returns them, "
                   "noise (N, noise_dim) of standard normals; evaluations draw it each step for all N envs from "
                   "torch.Generator().manual_seed(last_evaluation.noise_seed)"),
        "last_evaluation": last_evaluation(record, state["noise_dim"]),
        "offbench": offbench.__version__,
        "torch": str(torch.__version__),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# ---- re-evaluation -----------------------------------------------------------------------------


@dataclass
class PolicyEvaluation:
    run_id: str
    seed: int
    episodes: int
    returns: np.ndarray
    normalized_scores: np.ndarray
    matches_last_evaluation: bool | None  # None: not the run's own seed and episode count
    last_step: int
    record_path: Path
    video: Path | None
    score: str = "normalized-return"  # what `normalized_scores` hold: offbench.data.dataset.SCORES

    @property
    def diverged(self) -> bool:
        """An episode's return (or score) is NaN or inf: the policy has no return mean, std or score."""
        return not bool(np.isfinite(self.returns).all() and np.isfinite(self.normalized_scores).all())

    @property
    def return_mean(self) -> float | None:
        return None if self.diverged else float(self.returns.mean())

    @property
    def return_std(self) -> float | None:
        return None if self.diverged else float(self.returns.std())

    @property
    def normalized_score(self) -> float | None:
        return None if self.diverged else float(self.normalized_scores.mean())


def evaluate_policy(store: ResultsStore, run_id: str, episodes: int | None = None, seed: int | None = None,
                    video: Path | None = None, force: bool = False) -> PolicyEvaluation:
    """Evaluate run `run_id`'s policy for `episodes` (default: the run's) with evaluation seed `seed` (default: the run's).

    Env seeds and the noise generator are those the protocol gives training seed `seed` at the run's last
    evaluation step. `video`: an mp4 of the first episode, rendered headless (offbench.video); an existing file
    there is replaced only with `force`. Raises one-line `OffbenchError`, before any episode runs, for a bad
    count or seed, a video path `check_video_path` refuses, a run without a usable policy, or a run folder the
    result cannot be written to.
    """
    if episodes is not None:
        check_integer("--episodes", episodes, 1, MAX_EVAL_EPISODES)
    if seed is not None:
        check_integer("--seed", seed, 0, MAX_SEED)
    video_file = None
    if video is not None:
        from offbench.video import check_video_path

        video_file = check_video_path(video, force)
    loaded = load_run_policy(store, run_id)
    record, protocol = loaded.record, loaded.record.config.protocol
    seed = record.config.seed if seed is None else seed
    episodes = protocol.eval_episodes if episodes is None else episodes
    step = record.curve[-1]["step"]
    _check_writable(store.run_dir(run_id) / EVALUATIONS_DIR)
    problem = Problem(ObservationSpace(**loaded.state["observation_space"]), action_space_from_dict(loaded.state["action_space"]))
    check_env_spaces(protocol.eval_env, protocol.eval_env_kwargs, protocol.eval_wrappers, problem.observation_space, problem.action_space, run_id)
    generator = torch.Generator().manual_seed(stream_seed(seed, "eval", step))
    policy, dtype = loaded.policy, loaded.observation_dtype

    @torch.no_grad()
    def act(observations: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        batch = torch.as_tensor(observations[0], dtype=dtype)  # (N, *obs_shape): the one seed's episodes
        noise = (torch.randn((batch.shape[0], policy.noise_dim), generator=generator),) if policy.noise_dim else ()
        return policy(batch, *noise).numpy()[None]

    def run_episodes(watch_first: Any = None) -> Episodes:
        return evaluate_episodes(act, protocol.eval_env, [seed], episodes, protocol.eval_env_kwargs, protocol.eval_wrappers, watch_first)

    result = run_episodes() if video_file is None else _with_video(video_file, run_episodes)
    returns, successes = result.returns[0], None if result.successes is None else result.successes[0]
    dataset = record.config.dataset
    scores = episode_scores(dataset.score, returns, successes, dataset.ref_min_score, dataset.ref_max_score)
    own = seed == record.config.seed and episodes == protocol.eval_episodes
    matches = bool(np.array_equal(returns, np.asarray(record.curve[-1]["returns"], dtype=np.float64))) if own else None
    path = store.run_dir(run_id) / EVALUATIONS_DIR / f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S-%f')}-seed{seed}-{episodes}ep.json"
    evaluation = PolicyEvaluation(run_id, seed, episodes, returns, scores, matches, step, path, video, dataset.score)
    write_json(path, {
        "run_id": run_id, "seed": seed, "episodes": episodes, "env_seeds": episode_seeds([seed], episodes),
        "noise_seed": stream_seed(seed, "eval", step) if policy.noise_dim else None, "policy_step": step,
        "returns": [json_number(r) for r in returns], **({} if successes is None else {"successes": successes.tolist()}),
        "score": SCORES[dataset.score], "normalized_scores": [json_number(v) for v in scores], "diverged": evaluation.diverged,
        "return_mean": evaluation.return_mean, "return_std": evaluation.return_std,
        "normalized_score": evaluation.normalized_score, "matches_last_evaluation": matches,
        "video": None if video is None else str(video), "evaluated_at": time.time(),
        "offbench": offbench.__version__, "torch": str(torch.__version__),
    })
    return evaluation


def _with_video(path: Path, run_episodes: Any) -> Episodes:
    from offbench.video import EpisodeVideo, use_headless_rendering

    use_headless_rendering()
    result: dict[str, Episodes] = {}

    def record(tmp: Path) -> None:
        recorder = EpisodeVideo(tmp)
        try:
            result["episodes"] = run_episodes(recorder)
        finally:
            recorder.close()

    atomic_write(path, record, suffix=".mp4")  # the container ffmpeg writes, whatever a symlink's target is named
    return result["episodes"]


def _check_writable(folder: Path) -> None:
    """Refuse, before the episodes run, a run folder the result cannot be written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{time.time_ns()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OffbenchError(f"cannot write the evaluation into {folder} ({error.strerror})", "pass a writable --results-dir") from None
