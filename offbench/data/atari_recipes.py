"""Local Atari datasets: recorded here under the pixel protocol and stored in the DQN Replay Dataset's Dopamine layout.

A recipe plays `ALE/<Game>-v5` under the pixel protocol (`offbench.atari`) and records each agent step
as Dopamine's replay buffer adds it: (newest 84x84 frame the action was taken at, action, unclipped
reward, terminal), with Dopamine's 3 zero padding rows at the start and after every terminal row. The
rows are written as one checkpoint (`$store$_<field>_ckpt.0.gz` and `add_count_ckpt.0.gz`, add_count =
rows, so the buffer reads in file order) under `<data dir>/local/<name>/replay_logs/`, with an
`offbench.json` sidecar (recipe, content hash, library versions), and read back by the DQN Replay
reader (`offbench.data.dqn_replay.read_stream`): what a run trains on went through the same code path
as real DQN Replay checkpoints.

    atari-random   uniform-random actions from numpy's generator seeded with `seed` (the env is reset
                   with `seed` once, then continues its own generator); `steps` agent steps.
    atari-dqn      a partially trained DQN snapshot (`policy`, under datasets/policies/, made by
                   `offbench.behavior.dqn`) with discrete BCQ's buffer noise (spec "Dataset generation";
                   sfujim/BCQ main.py --generate_buffer): each episode is low-noise with probability
                   `low_noise_p` (epsilon-greedy with `eval_eps`), otherwise a uniform action is taken with
                   probability `rand_action_p - eval_eps`; `steps` kept agent steps.

The layout cannot mark an episode cut by the 27,000-step cap (Dopamine's cannot either: its next row would
read as the cut episode's successor). `atari-random` stops with an error if it meets one (uniform-random
play never does in the catalogued games: a random Pong episode lasts about 800 steps); `atari-dqn` leaves
such an episode out whole, as a behaviour policy that stalls (Breakout without FIRE) can reach the cap, and
stops with an error when more of its episodes reach the cap than end (at least two).

A recording holds its frames once, in blocks (`Frames`), and streams them into the gzip file: about 7 GB
at 1M steps.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offbench import atari
from offbench.data import dqn_replay
from offbench.data.checks import read_sidecar
from offbench.data.dataset import OfflineDataset
from offbench.errors import OffbenchError
from offbench.io import atomic_write, json_text, replace_folder, staging_folder

SIDECAR = "offbench.json"
Rows = dict[str, Any]  # "observation": Frames, the other Dopamine fields np.ndarray; "capped_episodes": int, the episodes left out
Chooser = Callable[[np.ndarray, bool], int]  # (stacked observation (4, 84, 84) uint8, whether it starts an episode) -> action


def record_random(entry: dict[str, Any], on_steps: Callable[[int], None] | None = None) -> Rows:
    """`entry["steps"]` agent steps of uniform-random actions in `entry["game"]`, as Dopamine's add order (see the module docstring).

    Returns `observation` (`Frames`, rows x 84 x 84 uint8), `action` int32, `reward` float32 and `terminal` uint8, padding included,
    and `capped_episodes` (0: an episode that reaches the 27,000-step cap is an error here).
    """
    rng = np.random.default_rng(entry["seed"])
    return _record(entry, lambda env: lambda observation, episode_start: int(rng.integers(env.action_space.n)), on_steps, drop_capped=False)


def record_dqn(entry: dict[str, Any], on_steps: Callable[[int], None] | None = None) -> Rows:
    """`entry["steps"]` agent steps of the DQN snapshot `entry["policy"]` with discrete BCQ's buffer noise
    (`offbench.behavior.dqn.NoisyGreedyPolicy`: `low_noise_p`, `rand_action_p`, `eval_eps`, seeded with `seed`).

    The greedy action is the snapshot's argmax on the 4 stacked frames the env gives (float64 forward pass).
    An episode that reaches the 27,000-step cap is left out whole (the layout cannot mark the cut; see the
    module docstring), and the recording goes on until `steps` agent steps are kept. Returns the rows as
    `record_random`, `capped_episodes` counting the episodes left out; raises `OffbenchError` for a missing or foreign snapshot, one trained on another game or
    with another action count, and when more episodes reach the cap than end (at least two).
    """
    from offbench.behavior.dqn import GreedyQPolicy, NoisyGreedyPolicy, load_snapshot
    from offbench.data.recipes import policies_dir

    snapshot = load_snapshot(policies_dir() / entry["policy"])
    if snapshot.get("env_id") != entry["env_id"]:
        raise OffbenchError(f"behaviour policy {entry['policy']} was trained on {snapshot.get('env_id')}, not {entry['env_id']}")
    policy = NoisyGreedyPolicy(GreedyQPolicy(snapshot), 1, entry["seed"], entry["low_noise_p"], entry["rand_action_p"], entry["eval_eps"])
    only_env = np.zeros(1, dtype=np.int64)

    def chooser(env: gym.Env) -> Chooser:
        if env.action_space.n != policy.greedy.num_actions:
            raise OffbenchError(f"behaviour policy {entry['policy']} has {policy.greedy.num_actions} actions, "
                                f"{entry['env_id']} under the pixel protocol has {env.action_space.n}")
        return lambda observation, episode_start: int(policy(observation[None], only_env, np.array([episode_start]))[0])

    return _record(entry, chooser, on_steps, drop_capped=True)


def _record(entry: dict[str, Any], chooser: Callable[[gym.Env], Chooser], on_steps: Callable[[int], None] | None, drop_capped: bool) -> Rows:
    """Play until `entry["steps"]` agent steps are kept, acting with `chooser(env)`."""
    env = atari.make_pixel_env(entry["game"])
    rows: dict[str, Any] = {field: [] for field in dqn_replay.FIELDS}
    rows["observation"] = Frames()
    kept, reported, ended, capped = 0, 0, 0, 0
    try:
        choose = chooser(env)
        observation, _ = env.reset(seed=entry["seed"])
        _pad(rows)
        episode_first_row, episode_start = len(rows["action"]), True
        while kept < entry["steps"]:
            action = choose(observation, episode_start)
            next_observation, reward, terminated, truncated, _ = env.step(action)
            _add(rows, observation[-1], action, float(reward), terminated)
            kept, episode_start = kept + 1, False
            if truncated and not terminated:
                if not drop_capped:
                    raise OffbenchError(f"recipe for {entry['game']}: an episode reached the {atari.MAX_EPISODE_STEPS}-step cap, "
                                        "which the Dopamine layout cannot mark", "use a behaviour whose episodes end by termination")
                kept, capped = kept - (len(rows["action"]) - episode_first_row), capped + 1
                for values in rows.values():
                    del values[episode_first_row:]  # the padding before it stays: it starts the next episode
                if capped > max(ended, 1):
                    raise OffbenchError(f"recipe for {entry['game']}: {capped} of the behaviour policy's {capped + ended} episodes "
                                        f"reached the {atari.MAX_EPISODE_STEPS}-step cap", "use a policy that finishes its episodes (e.g. one trained longer)")
            ended += terminated
            if terminated or truncated:
                if terminated:
                    _pad(rows)
                next_observation, _ = env.reset()
                episode_first_row, episode_start = len(rows["action"]), True
            observation = next_observation
            if on_steps is not None and kept >= reported + 1000:
                on_steps(kept - reported)
                reported = kept
        if on_steps is not None and kept > reported:
            on_steps(kept - reported)
    finally:
        env.close()
    return {**{field: values if field == "observation" else np.asarray(values, dtype=DTYPES[field]) for field, values in rows.items()},
            "capped_episodes": capped}


DTYPES = {"observation": np.uint8, "action": np.int32, "reward": np.float32, "terminal": np.uint8}  # Dopamine's store dtypes


class Frames:
    """A recording's 84x84 uint8 frames, appended one at a time into blocks of `BLOCK` frames, so that neither a
    list of 1M small arrays nor a second full copy is ever held; `del frames[n:]` drops the newest ones."""

    BLOCK = 4096

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.count = 0

    def append(self, frame: np.ndarray) -> None:
        if self.count == len(self.blocks) * self.BLOCK:
            self.blocks.append(np.empty((self.BLOCK, atari.SCREEN_SIZE, atari.SCREEN_SIZE), np.uint8))
        self.blocks[-1][self.count % self.BLOCK] = frame
        self.count += 1

    def __delitem__(self, cut: slice) -> None:
        if cut.stop is not None or cut.step is not None or not 0 <= (cut.start or 0) <= self.count:
            raise ValueError("Frames can only drop its newest frames: del frames[n:]")
        self.count = cut.start or 0
        del self.blocks[-(-self.count // self.BLOCK):]

    def __len__(self) -> int:
        return self.count

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.count, atari.SCREEN_SIZE, atari.SCREEN_SIZE)

    def chunks(self) -> Iterator[np.ndarray]:
        """The frames in order, as views of the filled part of each block."""
        for index, block in enumerate(self.blocks):
            yield block[: min(self.BLOCK, self.count - index * self.BLOCK)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        frames = np.concatenate([*self.chunks(), np.empty((0, *self.shape[1:]), np.uint8)])
        return frames if dtype is None else frames.astype(dtype)


def _add(rows: dict[str, Any], frame: np.ndarray, action: int, reward: float, terminal: bool) -> None:
    rows["observation"].append(frame)
    rows["action"].append(action)
    rows["reward"].append(reward)
    rows["terminal"].append(int(terminal))


def _pad(rows: dict[str, Any]) -> None:
    """Dopamine's padding before an episode: stack size - 1 rows of zeros."""
    for _ in range(dqn_replay.STACK_PADDING):
        _add(rows, np.zeros((atari.SCREEN_SIZE, atari.SCREEN_SIZE), np.uint8), 0, 0.0, False)


ATARI_RECIPES: dict[str, Callable[[dict[str, Any], Callable[[int], None] | None], Rows]] = {"atari-random": record_random, "atari-dqn": record_dqn}


def write_checkpoint(folder: Path, checkpoint: int, rows: Rows, add_count: int) -> None:
    """Write `rows` as Dopamine's files of `checkpoint` in `folder` (a `replay_logs` folder): one gzipped `.npy` per field, and the add counter."""
    folder.mkdir(parents=True, exist_ok=True)
    for field, path in dqn_replay.dopamine_files(folder, checkpoint).items():
        _save(path, rows[field])
    _save(folder / f"add_count_ckpt.{checkpoint}.gz", np.array(add_count, dtype=np.int64))


def _save(path: Path, array: np.ndarray | Frames) -> None:
    """`array` as one `.npy` file in a gzip stream; `Frames` are streamed block by block (the bytes `np.save` would write)."""
    with gzip.open(path, "wb", compresslevel=1) as stream:
        if isinstance(array, np.ndarray):
            np.save(stream, array, allow_pickle=False)
            return
        np.lib.format.write_array_header_1_0(stream, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                                                      "shape": array.shape})
        for chunk in array.chunks():
            stream.write(chunk.data)


def write_recording(folder: Path, rows: Rows, sidecar: dict[str, Any], overwrite: bool = False) -> None:
    """Write `rows` as checkpoint 0 of `<folder>/replay_logs` and the sidecar, staged beside `folder` and renamed into place when complete."""
    if folder.exists() and not overwrite:
        raise OffbenchError(f"{folder} already exists", "pass --force to make it again")
    staging = staging_folder(folder)
    write_checkpoint(staging / "replay_logs", 0, rows, add_count=len(rows["action"]))
    atomic_write(staging / SIDECAR, lambda tmp: Path(tmp).write_text(json_text(sidecar)))
    replace_folder(staging, folder)


def checkpoint_of(logs: Path) -> dqn_replay.Checkpoint:
    """Checkpoint 0 of a local recording's `replay_logs` folder."""
    return dqn_replay.Checkpoint(0, dqn_replay.dopamine_files(logs, 0), logs / "add_count_ckpt.0.gz")


def is_present(logs: Path) -> bool:
    """Whether a local recording's files are all in its `replay_logs` folder (and its sidecar beside it)."""
    checkpoint = checkpoint_of(logs)
    return (logs.parent / SIDECAR).is_file() and all(path.is_file() for path in [*checkpoint.files.values(), checkpoint.add_count])


def load_local(dataset_id: str, logs: Path) -> OfflineDataset:
    """A local Atari recording through the DQN Replay reader; raises `OffbenchError` for a damaged sidecar (`checks.read_sidecar`; its
    recipe must name a game of the reference table) and when the content hash differs from the recorded one."""
    sidecar = read_sidecar(logs.parent / SIDECAR, dataset_id)
    recipe = sidecar.get("recipe_config", {})
    if recipe.get("game") not in atari.HUMAN_RANDOM:
        raise OffbenchError(f"dataset {dataset_id}: {logs.parent / SIDECAR} names no known game (recipe_config.game: {recipe.get('game')!r})",
                            f"remake it with `offbench data make {dataset_id} --force`, or restore the file")
    stream = dqn_replay.read_stream([checkpoint_of(logs)], dataset_id, atari.action_space(recipe["game"]).n)
    extra = {"path": str(logs), "recipe": recipe}
    if "episodes_left_out_at_cap" in sidecar:  # recorded since 2026-12-01; recordings made before do not say
        extra["episodes_left_out_at_cap"] = sidecar["episodes_left_out_at_cap"]
    dataset = dqn_replay.replay_dataset(dataset_id, "local", recipe["game"], stream, extra)
    recorded = sidecar.get("sha256")
    if recorded and recorded != dataset.metadata.sha256:
        raise OffbenchError(f"dataset {dataset_id}: content hash {dataset.metadata.sha256[:12]} differs from the recorded {recorded[:12]}",
                            f"the files in {logs} changed since they were made; remake with `offbench data make {dataset_id} --force`")
    return dataset
