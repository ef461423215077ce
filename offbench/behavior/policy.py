"""A saved SAC actor as a batched numpy policy: `(n, obs_dim) -> (n, act_dim)`.

The snapshot file (written by `offbench.behavior.sac`) is a `torch.save` dict:

    format        "offbench-sac-actor-v1"
    env_id        the Gymnasium id it was trained in
    env_steps     environment steps the learner had taken when it was saved
    action_low, action_high   the action box (actions are tanh-squashed into it)
    actor         float32 tensors, named as in D4RL's policy metadata: fc0, fc1 (ReLU hidden layers),
                  last_fc (mean) and last_fc_log_std (log standard deviation, clipped to [-20, 2])
    eval          {"return_mean", "return_std", "episodes", "seed"} of the deterministic (mean-action)
                  policy, when it was evaluated

Exporting a training run into committed policies (`python -m offbench.behavior.policy export ...`)
picks the expert (the best snapshot) and the medium policy (up to the best, closest to a third of the expert's return,
as in D4RL), copies them with the snapshot sequence up to medium, and writes a JSON card for each. It writes into a
`--dest` folder that is new, empty or an earlier export's (its medium.json names this trainer), otherwise only with
`--force`, and refuses, before any snapshot is evaluated, one whose files are folders, devices or fifos.

The forward pass runs in float64 numpy and every action is rounded to a grid of 10^-ACTION_DECIMALS before
it is cast to float32 and enters the simulator. CPU generations differ in their float32 kernels (SIMD
widths, fused multiply-adds, numpy's exp/tanh paths), which made float32 rollouts, and so the datasets'
hashes, differ between machines; in float64 those differences are ~1e-16, far below the grid, so the
rounded actions (and the rollouts that follow) are the same bits on every CPU, except when a value falls
within ~1e-16 of a grid boundary (about one chance in 10^10 per action component).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from offbench.errors import OffbenchError
from offbench.io import atomic_write, check_output_folder, check_output_path, read_tensors, replace_folder, staging_folder

SNAPSHOT_FORMAT = "offbench-sac-actor-v1"
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's TanhGaussianPolicy bounds, as in D4RL's behaviour policies
LAYERS = ("fc0", "fc1", "last_fc", "last_fc_log_std")
ACTION_DECIMALS = 6  # actions are rounded to 1e-6 before they are cast to float32 (see the module docstring)
def _inside(run_dir: Path, name: Any) -> Path:
    """The snapshot file a run's log names, refused unless it is a regular file inside the run's folder (a log is
    untrusted: `/etc/passwd` or `../x` would otherwise be copied into the export)."""
    path = (run_dir / str(name)).resolve()
    if not isinstance(name, str) or not path.is_relative_to(run_dir.resolve()) or not path.is_file():
        raise OffbenchError(f"{run_dir / 'log.json'} names snapshot {name!r}, which is not a file inside the run", "restore the run's log.json")
    return path


TRAINER = "offbench/behavior/sac.py"  # how an export's card starts its "trainer"
EXPORT_FILES = [f"{name}.{suffix}" for name in ("expert", "expert-so-far", "medium") for suffix in ("pt", "json")] + ["replay.json"]

Policy = Callable[[np.ndarray], np.ndarray]


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """Read a snapshot file; raises OffbenchError if it is missing or not an offbench actor."""
    path = Path(path)
    snapshot = read_tensors(path, "behaviour policy", "see datasets/README.md for how to train it")
    if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
        raise OffbenchError(f"{path} is not an {SNAPSHOT_FORMAT} snapshot")
    return snapshot


class TanhGaussianActor:
    """The numpy forward pass of a 2-hidden-layer tanh-Gaussian actor, in float64; actions are float32 on a 1e-6 grid."""

    def __init__(self, actor: dict[str, Any], action_low: np.ndarray, action_high: np.ndarray) -> None:
        def array(name: str) -> np.ndarray:
            value = actor[name]
            return (value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)).astype(np.float64)

        # Weights are stored as (out, in) like torch.nn.Linear; keep them transposed for obs @ W.
        self.layers = [(array(f"{n}.weight").T.copy(), array(f"{n}.bias")) for n in LAYERS]
        self.scale = (np.asarray(action_high, dtype=np.float64) - np.asarray(action_low, dtype=np.float64)) / 2
        self.bias = (np.asarray(action_high, dtype=np.float64) + np.asarray(action_low, dtype=np.float64)) / 2

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> TanhGaussianActor:
        return cls(snapshot["actor"], np.asarray(snapshot["action_low"]), np.asarray(snapshot["action_high"]))

    def mean_and_log_std(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (w0, b0), (w1, b1), (wm, bm), (ws, bs) = self.layers
        h = np.maximum(np.asarray(observations, dtype=np.float64) @ w0 + b0, 0)
        h = np.maximum(h @ w1 + b1, 0)
        return h @ wm + bm, np.clip(h @ ws + bs, LOG_STD_MIN, LOG_STD_MAX)

    def mean_action(self, observations: np.ndarray) -> np.ndarray:
        mean, _ = self.mean_and_log_std(observations)
        return self.squash(mean)

    def sample(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean, log_std = self.mean_and_log_std(observations)
        return self.squash(mean + np.exp(log_std) * rng.standard_normal(mean.shape))

    def squash(self, pre_tanh: np.ndarray) -> np.ndarray:
        """tanh into the action box, rounded to the 1e-6 grid, as float32 (the action stored is the one executed)."""
        return np.round(np.tanh(pre_tanh) * self.scale + self.bias, ACTION_DECIMALS).astype(np.float32)


def make_policy(path: str | Path, sampled: bool, seed: int = 0) -> Policy:
    """A batched policy from a snapshot file: tanh-Gaussian samples (seeded) or the mean action."""
    actor = TanhGaussianActor.from_snapshot(load_snapshot(path))
    if not sampled:
        return actor.mean_action
    rng = np.random.default_rng(seed)
    return lambda observations: actor.sample(observations, rng)


def evaluate_policy(policy: Policy, env_id: str, episodes: int, seed: int, max_episode_steps: int = 1000) -> np.ndarray:
    """Returns of `episodes` episodes run in lockstep envs (env i reset with `seed + i`)."""
    envs = [gym.make(env_id, max_episode_steps=max_episode_steps) for _ in range(episodes)]
    try:
        observations = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            index = np.flatnonzero(running)
            actions = policy(observations[index])
            for i, action in zip(index, actions):
                observations[i], reward, terminated, truncated, _ = envs[i].step(action)
                returns[i] += reward
                running[i] = not (terminated or truncated)
        return returns
    finally:
        for env in envs:
            env.close()


# ---- exporting a training run into committed policies ----------------------------------------------


def select_medium(snapshots: Sequence[tuple[int, float]], expert_return: float, expert_step: int) -> int:
    """The env step of the snapshot, at or before `expert_step`, whose return is closest to a third of
    `expert_return` (earliest on ties).

    D4RL's medium policy is a learner stopped early at about a third of the expert's return; a dip of a
    trained policy after its best snapshot (a bimodal policy that falls in some episodes) is not one.
    """
    on_the_way_up = [s for s in snapshots if s[0] <= expert_step]
    if not on_the_way_up:
        raise OffbenchError("no snapshots to choose a medium policy from")
    target = expert_return / 3.0
    return min(on_the_way_up, key=lambda s: (abs(s[1] - target), s[0]))[0]


def export_run(run_dir: Path, dest: Path, expert_target: float, note: str = "", eval_episodes: int = 10,
               force: bool = False) -> dict[str, Any]:
    """Copy a SAC run's expert (or best-so-far), medium and replay snapshots to `dest`, with cards.

    The expert is the best snapshot by evaluation return. It is written as `expert.pt` only if it
    reaches `expert_target`, else as `expert-so-far.pt`; the medium policy is then chosen against a
    third of the target rather than of the best return, and its card says so. Raises one-line `OffbenchError`,
    before anything is read, for a `dest` `check_export_folder` refuses.
    """
    check_export_folder(dest, force)
    log = json.loads((run_dir / "log.json").read_text())
    records = {r["step"]: r for r in log["snapshots"]}
    for record in records.values():
        _inside(run_dir, record["path"])
    best = max(records.values(), key=lambda r: (r["return_mean"], -r["step"]))
    reached = best["return_mean"] >= expert_target
    reference_return = best["return_mean"] if reached else expert_target
    medium_step = select_medium([(r["step"], r["return_mean"]) for r in records.values()], reference_return, best["step"])
    basis = "the expert's return" if reached else f"the expert target {expert_target:g} (not reached by this run)"
    common = {
        "env_id": log["config"]["env"],
        "trained_by": log["command"],
        "trainer": f"{TRAINER} (online SAC, 2x256 MLPs, tanh-Gaussian actor, learned temperature)",
        "git_commit": log["git_commit"],
        "run_steps_reached": max(records),
        "run_wall_s": max(r["wall_s"] for r in records.values()),
        **({"note": note} if note else {}),
    }
    dest.mkdir(parents=True, exist_ok=True)
    cards = {}
    expert_name = "expert" if reached else "expert-so-far"
    for stale in {"expert", "expert-so-far"} - {expert_name}:  # from an earlier export of the same run
        for suffix in (".pt", ".json"):
            (dest / f"{stale}{suffix}").unlink(missing_ok=True)
    roles = {
        expert_name: (best, f"best snapshot of the run ({'reaches' if reached else 'below'} the expert target {expert_target:g})"),
        "medium": (records[medium_step], f"snapshot, up to the best one, whose return is closest to a third of {basis}"),
    }
    for name, (record, role) in roles.items():
        atomic_write(dest / f"{name}.pt", lambda tmp, source=run_dir / record["path"]: shutil.copyfile(source, tmp))
        cards[name] = _card(dest / f"{name}.pt", record, role, common, eval_episodes)
    staged = staging_folder(dest / "replay")  # the snapshot-sequence recipe never sees a partial sequence
    sequence = [records[step] for step in sorted(records) if step < medium_step]
    for record in sequence:
        shutil.copyfile(run_dir / record["path"], staged / Path(record["path"]).name)
    replace_folder(staged, dest / "replay")
    cards["replay"] = {
        **common,
        "role": f"the learner's snapshots before medium (env step {medium_step}), for the snapshot-sequence recipe",
        "snapshots": [
            {"file": Path(r["path"]).name, "env_steps": r["step"], "return_mean": round(r["return_mean"], 1), "return_std": round(r["return_std"], 1)}
            for r in sequence
        ],
    }
    for name, card in cards.items():
        atomic_write(dest / f"{name}.json", lambda tmp, card=card: tmp.write_text(json.dumps(card, indent=2, allow_nan=False) + "\n"))
    return cards


def check_export_folder(dest: Path, force: bool = False) -> Path:
    """`dest`, when `export_run` may write there: new, empty or an earlier export (`is_export_folder`), or any
    folder with `force`. Raises one-line `OffbenchError` for a path that is not a writable folder, a folder of
    other files without `force`, or an export file (or `replay/`) that is a folder, device, fifo or socket."""
    check_output_folder(dest, "--dest", force, is_export_folder)
    for name in EXPORT_FILES:
        check_output_path(dest / name, "--dest", force=True, make_parents=True)
    check_output_folder(dest / "replay", "--dest", force=True)
    return dest


def is_export_folder(dest: Path) -> bool:
    """Whether `dest` holds an earlier `export_run`: its medium.json is a card naming this trainer."""
    card = dest / "medium.json"
    try:
        return card.is_file() and str(json.loads(card.read_text()).get("trainer", "")).startswith(TRAINER)
    except (OSError, ValueError, AttributeError):  # AttributeError: JSON that is not an object
        return False


def _card(path: Path, record: dict[str, Any], role: str, common: dict[str, Any], episodes: int) -> dict[str, Any]:
    snapshot = load_snapshot(path)
    actor = TanhGaussianActor.from_snapshot(snapshot)
    seed = int(record["seed"])
    rng = np.random.default_rng(seed)
    sampled = evaluate_policy(lambda obs: actor.sample(obs, rng), common["env_id"], episodes, seed)
    return {
        **common,
        "role": role,
        "env_steps": int(snapshot["env_steps"]),
        "eval_deterministic": {
            "return_mean": round(record["return_mean"], 1), "return_std": round(record["return_std"], 1),
            "episodes": record["episodes"], "seed": seed, "actions": "tanh(mean)",
        },
        "eval_sampled": {
            "return_mean": round(float(sampled.mean()), 1), "return_std": round(float(sampled.std()), 1),
            "episodes": episodes, "seed": seed, "actions": "tanh-Gaussian samples, as in the datasets",
        },
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a SAC run's snapshots as committed behaviour policies.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="copy expert, medium and replay snapshots with cards")
    export.add_argument("--run", type=Path, required=True, help="the SAC run's --out folder")
    export.add_argument("--dest", type=Path, required=True, help="e.g. datasets/policies/hopper")
    export.add_argument("--expert-target", type=float, required=True, help="raw return an expert must reach")
    export.add_argument("--note", default="", help="free text added to every card")
    export.add_argument("--force", action="store_true", help="write into a --dest folder that holds other files")
    args = parser.parse_args(argv)
    try:
        cards = export_run(args.run, args.dest, args.expert_target, args.note, force=args.force)
    except OffbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for name, card in cards.items():
        summary = card.get("eval_deterministic", {}).get("return_mean", f"{len(card.get('snapshots', []))} snapshots")
        print(f"{name}: {summary}")


if __name__ == "__main__":
    main()
