"""Minari's `atari/*` datasets (e.g. `minari/atari/pong/expert-v0`), read through `minari`.

What Minari stores (its dataset pages; minari-dataset-generation-scripts): episodes recorded in
`ALE/<Game>-v5` with ale-py's own frame skip (frameskip=4, no max pooling), no sticky actions
(repeat_action_probability=0), the minimal action set and a 108,000-frame cap; observations are the raw
RGB screens, uint8 (T+1, 210, 160, 3) per episode, which Minari >= 0.5 writes as JPEG (its storage's
`jpeg_encoding`, read back decoded by `minari`); actions int; rewards unclipped.

offbench stores each frame once as 84x84 grayscale (`offbench.atari.minari_frame`: OpenCV's
RGB-to-gray, INTER_AREA resize), the episode's final observation dropped (a terminal row has no valid
successor; a truncated episode's last row is a time-out and is not sampled); the frame-stack sampler
stacks 4 frames at sample time. The evaluation env is the dataset's own env spec with the
`atari-minari` wrapper (`atari-minari-jpeg` when the dataset stores JPEG: the same JPEG round trip
first), which applies the same `minari_frame` and stacks frames as the sampler does, so
the policy sees at evaluation what it learned from. Scores are human-normalised with dqn_zoo's
random/human returns of the game; Minari's protocol (no sticky actions, no max pooling) is not the
DQN Replay pixel protocol, so scores on these datasets are not comparable with scores on DQN Replay or
local Atari data, and the dataset's metadata says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offbench import atari
from offbench.data import minari_io
from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.spaces import ActionSpace, ObservationSpace, from_gymnasium
from offbench.errors import OffbenchError

SCREEN = (210, 160, 3)  # a raw ALE screen, RGB
PROTOCOL_NOTE = ("Minari's Atari protocol: ale-py frameskip 4 without max pooling, no sticky actions, frames converted to 84x84 "
                 "gray by offbench; not the DQN Replay pixel protocol, so scores are not comparable with it")


def env_spec(minari_meta: dict[str, Any], dataset_id: str) -> tuple[str, dict[str, Any]]:
    """(env id, kwargs) of the env the dataset was recorded in; raises `OffbenchError` when it is not an `ALE/` env."""
    try:
        spec = json.loads(minari_meta.get("env_spec") or "{}")  # a JSON string or null (`minari_io.read_metadata`)
    except ValueError:
        spec = None
    if not isinstance(spec, dict) or not str(spec.get("id")).startswith("ALE/") or not isinstance(spec.get("kwargs") or {}, dict):
        found = spec.get("id") if isinstance(spec, dict) else "spec"
        raise OffbenchError(f"dataset {dataset_id}: its env {found} is not an ALE Atari env (an env spec with id ALE/<Game>-v5 and kwargs)")
    return spec["id"], dict(spec.get("kwargs") or {})


def load_minari_atari(path: Path, dataset_id: str) -> OfflineDataset:
    """The Minari Atari dataset at `path` (the folder holding `data/`) as 84x84 frames stored once (see the module docstring).

    Raises `OffbenchError` when the files cannot be read, the env is not an ALE env, the observations are not
    (210, 160, 3) uint8 screens, or ale-py/OpenCV are missing (the `offbench[atari]` extra).
    """
    atari.require_atari()
    dataset = minari_io.open_minari(path, dataset_id)
    meta = dict(dataset.storage.metadata)
    env_id, env_kwargs = env_spec(meta, dataset_id)
    space = meta["observation_space"]
    if not isinstance(space, gym.spaces.Box) or space.shape != SCREEN or space.dtype != np.uint8:
        raise OffbenchError(f"dataset {dataset_id}: observations {space}, expected raw ALE screens Box(0, 255, (210, 160, 3), uint8)")
    game = str(env_kwargs.get("game") or env_id.removeprefix("ALE/").split("-")[0].lower())
    action_space = from_gymnasium(meta["action_space"], f"dataset {dataset_id}")
    rows = _read_rows(dataset, dataset_id, action_space)
    random, human, reference = atari.human_normalized(game)
    metadata = DatasetMetadata(
        id=dataset_id,
        source="minari",
        env_id=env_id,
        observation_space=ObservationSpace((atari.SCREEN_SIZE, atari.SCREEN_SIZE), "uint8"),
        action_space=action_space,
        score="human-normalized",
        ref_min_score=random,
        ref_max_score=human,
        ref_source=reference,
        env_kwargs=env_kwargs,
        eval_wrappers=atari.MINARI_JPEG_WRAPPERS if dataset.storage.jpeg_encoding else atari.MINARI_WRAPPERS,
        extra={"path": str(path), "game": game, "protocol": PROTOCOL_NOTE},
    )
    return OfflineDataset.build(metadata, next_observations=None, **rows)


def _read_rows(dataset: Any, dataset_id: str, action_space: ActionSpace) -> dict[str, np.ndarray]:
    """Episode by episode, each checked first (`minari_io.check_episode`: (T+1, 210, 160, 3) uint8 screens, T actions of
    `action_space`, rewards and flags): frames (N, 84, 84) uint8 (the final observation of each episode dropped), actions,
    rewards, ends."""
    if dataset.total_episodes == 0:
        raise OffbenchError(f"dataset {dataset_id}: it holds no episodes")
    total = int(dataset.total_steps)
    try:
        frames = np.empty((total, atari.SCREEN_SIZE, atari.SCREEN_SIZE), np.uint8)
    except MemoryError:  # the metadata's total_steps is untrusted: a huge one is refused here, a smaller lie where an episode passes it
        raise OffbenchError(f"dataset {dataset_id}: its metadata's total_steps {total} needs {total * atari.SCREEN_SIZE ** 2 / 1e9:.3g} GB "
                            "of frames, more than this machine can hold") from None
    parts: dict[str, list[np.ndarray]] = {"actions": [], "rewards": [], "terminals": [], "timeouts": []}
    spaces = (ObservationSpace(SCREEN, "uint8"), action_space)
    starts, offset = [], 0
    for index in range(dataset.total_episodes):
        what = f"dataset {dataset_id}: episode {index}"
        episode = minari_io.check_episode(what, minari_io.read_episode(dataset, dataset_id, index), spaces, np.dtype(np.uint8))
        length = episode["actions"].shape[0]
        if offset + length > total:
            raise OffbenchError(f"{what} ends at step {offset + length}, past the dataset's total_steps {total}")
        for row, rgb in enumerate(episode["observations"][:-1]):
            frames[offset + row] = atari.minari_frame(rgb)
        terminals = episode["terminations"]
        timeouts = ~terminals
        timeouts[:-1] = False  # an episode that does not end in a termination ends by a time-out
        parts["actions"].append(episode["actions"])
        parts["rewards"].append(episode["rewards"])
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
        starts.append(offset)
        offset += length
    return {"observations": frames[:offset], **{k: np.concatenate(v) for k, v in parts.items()}, "episode_starts": np.asarray(starts, dtype=np.int64)}
