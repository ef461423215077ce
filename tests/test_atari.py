"""Atari: the DQN Replay reader on files written here in Dopamine's real layout (by this test's own logger, not by
offbench), d4rl-atari's cache, Minari's atari datasets, the pixel protocol's settings, the observation a policy sees
at evaluation against the dataset's stacks, human-normalised scores, the missing-extra message, and a short run."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_cli

from offbench import atari
from offbench.data import dqn_replay, registry
from offbench.data.atari_recipes import record_dqn, record_random
from offbench.data.catalogue import catalogue
from offbench.data.dataset import episode_scores
from offbench.data.sampling import FrameStack
from offbench.errors import OffbenchError

FRAME = (84, 84)
CAPACITY = 40


class DopamineLog:
    """A circular replay buffer filled as Dopamine's OutOfGraphReplayBuffer (2019) fills it: 3 zero rows at the
    start and after each terminal row; logged as batch_rl's logged buffer logs it, whenever the add counter
    reaches capacity - 1 modulo capacity, to `$store$_<field>_ckpt.<k>.gz` and `add_count_ckpt.<k>.gz`."""

    def __init__(self, folder: Path, capacity: int = CAPACITY) -> None:
        self.folder, self.capacity = folder, capacity
        self.store = {"observation": np.zeros((capacity, *FRAME), np.uint8), "action": np.zeros(capacity, np.int32),
                      "reward": np.zeros(capacity, np.float32), "terminal": np.zeros(capacity, np.uint8)}
        self.add_count, self.log_count = 0, 0
        self.adds: list[int | None] = []  # the step id of each add, None for padding
        self.terminal_adds: set[int] = set()
        folder.mkdir(parents=True, exist_ok=True)

    def _write(self, frame_value: int, action: int, reward: float, terminal: bool, step: int | None) -> None:
        cursor = self.add_count % self.capacity
        self.store["observation"][cursor] = frame_value
        self.store["action"][cursor], self.store["reward"][cursor], self.store["terminal"][cursor] = action, reward, terminal
        if terminal:
            self.terminal_adds.add(self.add_count)
        self.add_count += 1
        self.adds.append(step)

    def add(self, step: int, terminal: bool) -> None:
        if self.add_count == 0 or self.store["terminal"][(self.add_count - 1) % self.capacity] == 1:
            for _ in range(3):
                self._write(0, 0, 0.0, False, None)
        self._write(1 + step % 250, 1 + step % 5, float(step + 1), terminal, step)  # reward = step + 1: rows are recognisable
        if self.add_count % self.capacity == self.capacity - 1:
            for name, array in self.store.items():
                save_gz(self.folder / f"$store$_{name}_ckpt.{self.log_count}.gz", array)
            save_gz(self.folder / f"add_count_ckpt.{self.log_count}.gz", np.array(self.add_count))
            self.log_count += 1


def save_gz(path: Path, array: np.ndarray) -> None:
    with gzip.open(path, "wb") as stream:
        np.save(stream, array, allow_pickle=False)


def write_run(root: Path, lengths: list[int], game: str = "Pong", run: int = 1) -> DopamineLog:
    """Episodes of the given lengths (each ending in a terminal) through the logged buffer of `<root>/<game>/<run>/replay_logs`."""
    log = DopamineLog(root / game / str(run) / "replay_logs")
    step = 0
    for length in lengths:
        for t in range(length):
            log.add(step, terminal=t == length - 1)
            step += 1
    return log


LENGTHS = [7, 12, 20, 9, 25, 6, 14, 11, 30, 8]


def expected(log: DopamineLog, first: int, last: int) -> tuple[list[int], list[bool]]:
    """Step ids and terminal flags of the adds of checkpoints first..last (adds [(first+1)C-1-C, (last+1)C-1)), padding dropped."""
    begin, end = first * log.capacity - 1 if first else 0, (last + 1) * log.capacity - 1
    rows = [(log.adds[i], i in log.terminal_adds) for i in range(begin, end) if log.adds[i] is not None]
    return [step for step, _ in rows], [terminal for _, terminal in rows]


@pytest.fixture()
def replay_root(empty_roots: Path) -> tuple[Path, DopamineLog]:
    log = write_run(empty_roots / "data" / "dqn-replay", LENGTHS)
    assert log.log_count >= 3 and all(int(dqn_replay.read_array(log.folder / f"add_count_ckpt.{k}.gz")) == (k + 1) * CAPACITY - 1 for k in range(3))
    return empty_roots, log


def test_a_checkpoint_reads_in_add_order_without_padding_and_terminals_have_no_successor(replay_root) -> None:
    _, log = replay_root
    dataset = registry.load_dataset("dqn-replay/pong/run1-ckpt1-v0")
    steps, terminals = expected(log, 1, 1)
    assert dataset.rewards.tolist() == [s + 1.0 for s in steps]  # rows in add order: the stale last file row comes first
    assert dataset.terminals.tolist() == terminals
    assert np.array_equal(dataset.observations[:, 0, 0], [1 + s % 250 for s in steps])
    assert dataset.next_observations is None and dataset.observations.dtype == np.uint8 and dataset.observations.shape[1:] == FRAME
    assert dataset.timeouts.tolist() == [False] * (len(steps) - 1) + [True]  # the window's last row: no successor in this file
    assert set(np.flatnonzero(dataset.terminals | dataset.timeouts) + 1) == {*dataset.episode_starts[1:].tolist(), len(dataset)}
    assert dataset.metadata.env_id == "ALE/Pong-v5" and dataset.metadata.eval_wrappers == atari.PIXEL_WRAPPERS
    assert dataset.metadata.env_kwargs == {"frameskip": 1, "repeat_action_probability": 0.25, "full_action_space": False}


def test_a_checkpoint_range_continues_an_episode_across_the_file_boundary(replay_root) -> None:
    _, log = replay_root
    both = registry.load_dataset("dqn-replay/pong/run1-ckpt1-2-v0")
    alone = registry.load_dataset("dqn-replay/pong/run1-ckpt1-v0")
    steps, terminals = expected(log, 1, 2)
    assert both.rewards.tolist() == [s + 1.0 for s in steps] and both.terminals.tolist() == terminals
    boundary = len(alone)  # first row of checkpoint 2 in the concatenation
    episode = np.searchsorted(both.episode_starts, boundary, side="right") - 1
    assert both.episode_starts[episode] < boundary < both.episode_ends[episode]  # one episode spans both files
    assert not both.timeouts[boundary - 1] and alone.timeouts[boundary - 1]  # its row before the boundary has a successor only when both load
    assert both.metadata.extra["checkpoints"] == {"1": len(alone), "2": len(both) - len(alone)}


def test_frame_stacks_are_zero_padded_at_episode_starts_and_terminal_rows_do_not_bootstrap(replay_root) -> None:
    dataset = registry.load_dataset("dqn-replay/pong/run1-ckpt1-2-v0")
    sampler = FrameStack(dataset, torch.device("cpu"), 4, timeouts_as_terminals=False)
    start = int(dataset.episode_starts[2])
    stacks = sampler.stack(torch.tensor([start, start + 1, start + 3])).numpy()
    frames = dataset.observations
    assert np.array_equal(stacks[0], np.stack([np.zeros(FRAME), np.zeros(FRAME), np.zeros(FRAME), frames[start]]))
    assert np.array_equal(stacks[1][2:], frames[start:start + 2]) and not stacks[1][:2].any()
    assert np.array_equal(stacks[2], frames[start:start + 4])
    terminal = int(np.flatnonzero(dataset.terminals)[0])
    assert sampler.not_dones[terminal] == 0 and terminal in sampler.sampleable.tolist()
    assert len(dataset) - 1 not in sampler.sampleable.tolist()  # the time-out at the stream's end is never sampled
    assert sampler.frames.data_ptr() == dataset.observations.ctypes.data  # frames stored once, shared with the sampler


def test_d4rl_atari_cache_reads_as_the_dopamine_layout(replay_root, monkeypatch: pytest.MonkeyPatch) -> None:
    roots, log = replay_root
    dopamine = registry.load_dataset("dqn-replay/pong/run1-ckpt1-2-v0")
    for checkpoint in (1, 2):  # d4rl-atari's cache: the same files renamed, no add_count
        folder = roots / "d4rl-cache" / "Pong" / "1" / str(checkpoint)
        folder.mkdir(parents=True)
        for field in dqn_replay.FIELDS:
            (log.folder / f"$store$_{field}_ckpt.{checkpoint}.gz").rename(folder / f"{field}.gz")
    assert registry.location("dqn-replay/pong/run1-ckpt1-2-v0") == roots / "d4rl-cache" / "Pong" / "1" / "2" / "observation.gz"
    cached = registry.load_dataset("dqn-replay/pong/run1-ckpt1-2-v0")
    assert cached.metadata.sha256 == dopamine.metadata.sha256


def test_ids_aliases_and_missing_checkpoints(replay_root) -> None:
    assert registry.resolve("pong-run1-ckpt1") == "dqn-replay/pong/run1-ckpt1-v0"
    assert "dqn-replay/pong/run1-ckpt0-v0" in {row.id for row in registry.list_datasets()}
    assert registry.resolve("hopper-medium").startswith(("d4rl/", "minari/", "local/"))  # other aliases are unaffected
    with pytest.raises(OffbenchError, match=r"dqn-replay/pong/run1-ckpt7-v0 is missing.*gs://atari-replay-datasets/dqn/Pong/1/replay_logs/"):
        registry.load_dataset("dqn-replay/pong/run1-ckpt7-v0")
    for bad in ("dqn-replay/pong/run1-ckpt5-3-v0", "dqn-replay/pong/ckpt5-v0", "dqn-replay/pong/run1-ckpt5-v2"):
        with pytest.raises(OffbenchError, match="is not a DQN Replay id"):
            registry.load_dataset(bad)


def test_rows_after_a_terminal_that_are_not_padding_are_refused(replay_root) -> None:
    _, log = replay_root
    terminal = dqn_replay.read_array(log.folder / "$store$_terminal_ckpt.1.gz")
    action = dqn_replay.read_array(log.folder / "$store$_action_ckpt.1.gz")
    action[int(np.flatnonzero(terminal)[0]) + 1] = 2
    save_gz(log.folder / "$store$_action_ckpt.1.gz", action)
    with pytest.raises(OffbenchError, match="follows a terminal row but is not zero padding"):
        registry.load_dataset("dqn-replay/pong/run1-ckpt1-v0")


def _damaged(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "crc":  # the gzip trailer's CRC32: only a read to the end of the file can notice
        path.write_bytes(data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:])
    else:  # bytes after the array, inside the gzip stream
        with gzip.open(path, "ab") as stream:
            stream.write(b"\0" * 16)


@pytest.mark.parametrize("field", ["observation", "action"])
@pytest.mark.parametrize("how, message", [("truncated", "damaged or truncated|not a gzipped .npy array"), ("crc", "CRC check failed"),
                                          ("extra", "has bytes after its .npy array")])
def test_a_damaged_or_truncated_file_is_one_line_never_a_silent_load(replay_root, field: str, how: str, message: str) -> None:
    _, log = replay_root
    _damaged(log.folder / f"$store$_{field}_ckpt.1.gz", how)
    with pytest.raises(OffbenchError, match=message) as caught:
        registry.load_dataset("dqn-replay/pong/run1-ckpt1-v0")
    assert "\n" not in caught.value.line()


def test_a_checkpoint_without_its_add_counter_or_with_other_frames_or_dtypes_is_one_line(replay_root) -> None:
    _, log = replay_root
    (log.folder / "add_count_ckpt.2.gz").unlink()  # Dopamine's layout always has it; only d4rl-atari's cache goes without
    with pytest.raises(OffbenchError, match=r"checkpoint 2 has no add_count_ckpt.2.gz beside its \$store\$ files"):
        registry.load_dataset("dqn-replay/pong/run1-ckpt2-v0")
    save_gz(log.folder / "$store$_observation_ckpt.1.gz", np.zeros((CAPACITY, 80, 80), np.uint8))
    with pytest.raises(OffbenchError, match=r"field 'observation' has shape \(40, 80, 80\) and dtype uint8, expected \(n, 84, 84\) of uint8"):
        registry.load_dataset("dqn-replay/pong/run1-ckpt1-v0")
    save_gz(log.folder / "$store$_action_ckpt.0.gz", np.zeros(CAPACITY, np.float64))
    with pytest.raises(OffbenchError, match=r"action_ckpt.0.gz: field 'action' has shape \(40,\) and dtype float64, expected \(40,\) of integers"):
        registry.load_dataset("dqn-replay/pong/run1-ckpt0-v0")


@pytest.mark.parametrize("field, corrupt, message", [
    ("reward", lambda a: np.stack([a, a], axis=1), r"field 'reward' has shape \(40, 2\) and dtype float32, expected \(40,\)"),
    ("terminal", lambda a: a[:-1], r"field 'terminal' has shape \(39,\) and dtype uint8, expected \(40,\)"),
    ("action", lambda a: np.asarray(a[0]), r"field 'action' has shape \(\) and dtype int32, expected \(40,\)"),
    ("reward", lambda a: a.astype(np.complex64), r"field 'reward' has shape \(40,\) and dtype complex64"),
    ("action", lambda a: a.astype("S4"), r"field 'action' has shape \(40,\) and dtype \|S4"),
    ("terminal", lambda a: np.where(a == 1, 2, a).astype(np.uint8), r"field 'terminal' at index \d+ holds 2, expected bool or 0/1"),
    ("observation", lambda a: a[:0], r"observation_ckpt.1.gz holds no frames \(shape \(0, 84, 84\)\)"),
    ("observation", lambda a: a.astype(np.float32), r"field 'observation' has shape \(40, 84, 84\) and dtype float32, expected \(n, 84, 84\) of uint8"),
    ("add_count", lambda a: np.array([int(a)]), r"field 'add_count' has shape \(1,\) and dtype int64, expected \(\) of integers"),
    ("add_count", lambda a: np.array(-5), r"holds -5, expected one non-negative integer"),
])
def test_a_dopamine_field_of_another_shape_or_dtype_is_one_line_naming_it(replay_root, field: str, corrupt, message: str) -> None:
    _, log = replay_root
    path = log.folder / ("add_count_ckpt.1.gz" if field == "add_count" else f"$store$_{field}_ckpt.1.gz")
    save_gz(path, corrupt(dqn_replay.read_array(path)))
    with pytest.raises(OffbenchError, match=message) as caught:
        registry.load_dataset("dqn-replay/pong/run1-ckpt1-v0")
    assert "\n" not in caught.value.line()


def test_an_action_outside_the_games_set_is_one_line_naming_its_file_row(replay_root) -> None:
    _, log = replay_root
    action = dqn_replay.read_array(log.folder / "$store$_action_ckpt.1.gz")
    reward = dqn_replay.read_array(log.folder / "$store$_reward_ckpt.1.gz")
    row = int(np.flatnonzero(reward)[5])  # a real step (padding has reward 0), not the first of the window
    action[row] = 7
    save_gz(log.folder / "$store$_action_ckpt.1.gz", action)
    with pytest.raises(OffbenchError, match=rf"row {row} of checkpoint 1 has action 7, outside the game's 6 actions \(0..5\)"):
        registry.load_dataset("dqn-replay/pong/run1-ckpt1-v0")


def test_game_names_are_checked_and_an_alias_of_an_absent_checkpoint_says_how_to_get_it(replay_root) -> None:
    with pytest.raises(OffbenchError, match="unknown Atari game 'pogn'.*did you mean pong"):
        registry.load_dataset("dqn-replay/pogn/run1-ckpt0-v0")
    with pytest.raises(OffbenchError, match="games are lower-case ROM names.*use dqn-replay/space_invaders/run1-ckpt0-v0"):
        registry.load_dataset("dqn-replay/SpaceInvaders/run1-ckpt0-v0")
    assert registry.resolve("pong-run1-ckpt7") == "dqn-replay/pong/run1-ckpt7-v0"  # not on disk: still the id it names
    with pytest.raises(OffbenchError, match="gs://atari-replay-datasets/dqn/Pong/1/replay_logs/"):
        registry.load_dataset("pong-run1-ckpt7")
    with pytest.raises(OffbenchError, match="unknown dataset 'pogn-run1-ckpt7'"):
        registry.resolve("pogn-run1-ckpt7")


def test_a_dqn_replay_game_without_reference_returns_is_listed_and_says_so(replay_root) -> None:
    roots, log = replay_root
    air_raid = roots / "data" / "dqn-replay" / "AirRaid" / "1" / "replay_logs"  # one of DQN Replay's 60 games, not of Atari-57
    air_raid.mkdir(parents=True)
    for path in log.folder.glob("*_ckpt.0.gz"):
        (air_raid / path.name).write_bytes(path.read_bytes())
    (roots / "data" / "dqn-replay" / "NotAGame" / "1" / "replay_logs").mkdir(parents=True)
    (roots / "data" / "dqn-replay" / "NotAGame" / "1" / "replay_logs" / "$store$_observation_ckpt.0.gz").write_bytes(b"")
    listed = {row.id: row.state for row in registry.list_datasets()}
    assert listed["dqn-replay/air_raid/run1-ckpt0-v0"] == "present" and not any("not_a_game" in dataset_id for dataset_id in listed)
    with pytest.raises(OffbenchError, match="no human/random reference returns for Atari game 'air_raid'"):
        registry.load_dataset("dqn-replay/air_raid/run1-ckpt0-v0")


def test_rewards_stay_unclipped_in_the_data_and_atari_settings_clip_them_for_learning() -> None:
    from offbench.algos.discrete_bcq import DiscreteBCQ
    from offbench.config import resolve_config

    assert resolve_config("discrete-bcq", DiscreteBCQ, None, {}, "frames").clip_rewards
    # rewards of the logs above are step + 1 (up to 150): kept as they are, as test_a_checkpoint_reads... asserts


def test_human_normalised_score_formula_and_its_source() -> None:
    random, human, source = atari.human_normalized("pong")
    assert (random, human) == (-20.7, 14.6) and "dqn_zoo/atari_data.py" in source and source.startswith("atari:pong")
    returns = np.array([-20.7, 14.6, -3.05])
    assert np.allclose(episode_scores("human-normalized", returns, None, random, human), 100 * (returns - random) / (human - random))
    assert np.allclose(episode_scores("human-normalized", returns, None, random, human), [0.0, 100.0, 50.0])
    assert registry.reference_for({"reference": "atari:qbert"})[:2] == (163.9, 13455.0)


def test_the_pixel_protocol_settings_on_the_env() -> None:
    env = atari.make_pixel_env("breakout")
    try:
        ale = env.unwrapped.ale
        assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25) and env.unwrapped._frameskip == 1
        time_limit, stack = env, env.env
        preprocessing = stack.env
        assert isinstance(time_limit, gym.wrappers.TimeLimit) and time_limit._max_episode_steps == 27_000
        assert isinstance(stack, gym.wrappers.FrameStackObservation) and stack.stack_size == 4 and not stack.padding_value.any()
        assert isinstance(preprocessing, gym.wrappers.AtariPreprocessing)
        assert (preprocessing.frame_skip, preprocessing.noop_max, preprocessing.terminal_on_life_loss, preprocessing.screen_size) == (4, 0, False, (84, 84))
        observation, _ = env.reset(seed=3)
        assert observation.shape == (4, 84, 84) and observation.dtype == np.uint8 and not observation[:3].any()
        for _ in range(30):
            observation, *_ = env.step(1)
        import cv2

        pooled = np.maximum(preprocessing.obs_buffer[0], preprocessing.obs_buffer[1])  # the last two frames of the skip
        assert np.array_equal(observation[-1], cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA))
        assert not np.array_equal(preprocessing.obs_buffer[0], preprocessing.obs_buffer[1])  # the max matters here
    finally:
        env.close()


def test_the_evaluation_observation_equals_the_datasets_stack(empty_roots: Path) -> None:
    """Replaying a local recording's actions in the evaluation env (same seed) gives, at every step, the sampler's stack of that row."""
    entry = {"game": "pong", "steps": 200, "seed": 5, "env_id": "ALE/Pong-v5", "recipe": "atari-random", "reference": "atari:pong"}
    dataset = registry.make_dataset("local/pong-check-v5", recipe=entry)
    sampler = FrameStack(dataset, torch.device("cpu"), 4, timeouts_as_terminals=False)
    from offbench.evaluate import make_env

    env = make_env(dataset.metadata.env_id, dataset.metadata.env_kwargs, dataset.metadata.eval_wrappers)
    try:
        observation, _ = env.reset(seed=entry["seed"])
        for row in range(len(dataset)):
            assert np.array_equal(observation, sampler.stack(torch.tensor(row)).numpy()), row
            observation, *_ = env.step(int(dataset.actions[row]))
    finally:
        env.close()
    assert record_random(entry)["observation"].shape == (203, 84, 84)  # Dopamine's 3 padding rows, dropped by the reader
    assert registry.describe(registry.load_dataset("local/pong-check-v5"))["episodes_left_out_at_cap"] == 0  # from the sidecar


def write_conv_snapshot(path: Path, favoured_action: int = 4, num_actions: int = 6) -> dict:
    """A random-init Atari DQN snapshot in offbench.behavior.dqn's format whose greedy action is `favoured_action`."""
    from offbench.behavior import dqn

    torch.manual_seed(0)
    network = dqn.ConvQNetwork(4, num_actions)
    with torch.no_grad():
        network.last_fc.bias[favoured_action] = 1e6
    snapshot = {"format": dqn.SNAPSHOT_FORMAT, "env_id": "ALE/Pong-v5", "env_steps": 0, "updates": 0, "num_actions": num_actions, "arch": "conv",
                "q": {layer: {k: v.detach().clone() for k, v in getattr(network, layer).state_dict().items()} for layer in dqn.CONV_LAYERS}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(snapshot, path)
    return snapshot


DQN_ENTRY = {"game": "pong", "env_id": "ALE/Pong-v5", "recipe": "atari-dqn", "policy": "pong/q.pt", "steps": 150, "seed": 3,
             "low_noise_p": 0.0, "rand_action_p": 0.2, "eval_eps": 0.001, "reference": "atari:pong"}


def test_a_dqn_recording_acts_with_the_snapshot_and_the_buffer_noise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench.behavior.dqn import GreedyQPolicy, NoisyGreedyPolicy
    from offbench.data import recipes

    monkeypatch.setattr(recipes, "policies_dir", lambda: tmp_path)
    snapshot = write_conv_snapshot(tmp_path / "pong" / "q.pt")
    rows = record_dqn(DQN_ENTRY)
    assert all(np.array_equal(rows[f], again) for f, again in record_dqn(DQN_ENTRY).items())  # a seed gives the same bytes
    frames = np.asarray(rows["observation"])
    assert frames.shape == (153, 84, 84) and not frames[:3].any()  # 3 padding rows, then the steps
    random_share = (rows["action"][3:] != 4).mean()
    assert 0.05 < random_share < 0.35  # greedy (4) but for the noisy episode's 19.9% of uniform actions (5 in 6 not 4)
    policy = NoisyGreedyPolicy(GreedyQPolicy(snapshot), 1, DQN_ENTRY["seed"], 0.0, 0.2, 0.001)
    env = atari.make_pixel_env("pong")
    try:  # the recipe's actions are those the noisy policy gives on the env's own stacks, drawn in the same order
        observation, _ = env.reset(seed=DQN_ENTRY["seed"])
        for row in range(3, 153):
            assert np.array_equal(observation[-1], frames[row])
            action = int(policy(observation[None], np.zeros(1, dtype=np.int64), np.array([row == 3]))[0])
            assert action == rows["action"][row], row
            observation, *_ = env.step(action)
    finally:
        env.close()
    low_noise = record_dqn({**DQN_ENTRY, "low_noise_p": 1.0})
    assert (low_noise["action"][3:] == 4).mean() > 0.98  # a low-noise episode: epsilon 0.001


def test_frames_are_kept_in_blocks_cut_back_across_a_block_and_saved_as_np_save_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench.data.atari_recipes import Frames, _save

    monkeypatch.setattr(Frames, "BLOCK", 3)
    frames, expected = Frames(), np.random.default_rng(0).integers(0, 256, (8, 84, 84), dtype=np.uint8)
    for frame in expected:
        frames.append(frame)
    assert len(frames.blocks) == 3 and frames.shape == (8, 84, 84) and np.array_equal(np.asarray(frames), expected)
    del frames[2:]  # back into the first block: the later blocks are freed
    assert len(frames.blocks) == 1 and np.array_equal(np.asarray(frames), expected[:2])
    frames.append(expected[5])
    frames.append(expected[6])  # a new block after the cut
    kept = np.concatenate([expected[:2], expected[5:7]])
    assert len(frames.blocks) == 2 and np.array_equal(np.asarray(frames), kept)
    _save(tmp_path / "streamed.gz", frames)
    with gzip.open(tmp_path / "np_save.gz", "wb", compresslevel=1) as stream:
        np.save(stream, kept, allow_pickle=False)
    assert gzip.decompress((tmp_path / "streamed.gz").read_bytes()) == gzip.decompress((tmp_path / "np_save.gz").read_bytes())
    del frames[0:]
    assert not frames.blocks and np.asarray(frames).shape == (0, 84, 84)
    with pytest.raises(ValueError, match="only drop its newest"):
        del frames[1:]


class _FirstEpisodeCut(gym.Wrapper):
    """Truncates the first episode after `limit` steps, as the 27,000-step cap would; keeps each reset's newest frame."""

    def __init__(self, env: gym.Env, limit: int) -> None:
        super().__init__(env)
        self.limit, self.steps, self.total_steps, self.reset_frames = limit, 0, 0, []

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self.steps = 0
        self.reset_frames.append(observation[-1].copy())
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.steps, self.total_steps = self.steps + 1, self.total_steps + 1
        return observation, reward, terminated, truncated or (len(self.reset_frames) == 1 and self.steps == self.limit), info


def test_an_episode_cut_by_the_cap_is_left_out_whole_and_a_policy_that_keeps_reaching_it_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench.data import atari_recipes, recipes

    monkeypatch.setattr(recipes, "policies_dir", lambda: tmp_path)
    snapshot = write_conv_snapshot(tmp_path / "pong" / "q.pt")
    make, envs = atari.make_pixel_env, []
    monkeypatch.setattr(atari_recipes.atari, "make_pixel_env", lambda game: envs.append(_FirstEpisodeCut(make(game), 40)) or envs[-1])
    rows = record_dqn({**DQN_ENTRY, "steps": 60})
    (env,) = envs
    assert env.total_steps == 100 and len(env.reset_frames) == 2 and len(rows["action"]) == 63 and rows["capped_episodes"] == 1
    frames = np.asarray(rows["observation"])
    assert np.array_equal(frames[3], env.reset_frames[1])  # the kept rows start with the second episode
    assert not rows["terminal"].any() and not frames[:3].any()
    monkeypatch.setattr(atari_recipes.atari, "make_pixel_env", lambda game: gym.wrappers.TimeLimit(make(game), 30))
    with pytest.raises(OffbenchError, match="2 of the behaviour policy's 2 episodes reached the 27000-step cap"):
        record_dqn({**DQN_ENTRY, "steps": 50})
    monkeypatch.setattr(atari_recipes.atari, "make_pixel_env", make)
    write_conv_snapshot(tmp_path / "pong" / "q.pt", favoured_action=0, num_actions=4)
    with pytest.raises(OffbenchError, match="has 4 actions, ALE/Pong-v5 under the pixel protocol has 6"):
        record_dqn(DQN_ENTRY)
    torch.save({**snapshot, "env_id": "CartPole-v1"}, tmp_path / "pong" / "q.pt")
    with pytest.raises(OffbenchError, match="was trained on CartPole-v1, not ALE/Pong-v5"):
        record_dqn(DQN_ENTRY)


def write_minari_atari(root: Path, episodes: int = 2, steps: int = 25) -> list[np.ndarray]:
    """A tiny Minari Atari dataset as Minari's own are: ALE/Pong-v5 with frameskip 4, no sticky actions, raw RGB screens."""
    import minari
    from minari.data_collector import EpisodeBuffer

    atari.require_atari()
    env = gym.make("ALE/Pong-v5", frameskip=4, repeat_action_probability=0.0, full_action_space=False, max_num_frames_per_episode=108_000)
    buffers, screens, rng = [], [], np.random.default_rng(0)
    for index in range(episodes):
        observation, _ = env.reset(seed=10 + index)
        observations, actions, rewards = [observation], [], []
        for _ in range(steps):
            action = int(rng.integers(6))
            observation, reward, *_ = env.step(action)
            observations.append(observation), actions.append(action), rewards.append(reward)
        screens.append(np.stack(observations))
        buffers.append(EpisodeBuffer(id=index, observations=np.stack(observations), actions=np.array(actions), rewards=rewards,
                                     terminations=[False] * steps, truncations=[False] * (steps - 1) + [True], infos={}))
    assert Path(os.environ["MINARI_DATASETS_PATH"]) == root  # the empty_roots fixture's Minari root
    minari.create_dataset_from_buffers("atari/pong/expert-v0", buffers, env=env, algorithm_name="test", author="test",
                                       author_email="test@example.com", code_permalink="https://example.com", description="test")
    env.close()
    return screens


def test_minari_atari_is_read_through_minari_and_evaluated_in_its_own_env(empty_roots: Path) -> None:
    screens = write_minari_atari(empty_roots / "minari")
    dataset = registry.load_dataset("pong-expert")
    assert dataset.metadata.id == "minari/atari/pong/expert-v0" and dataset.metadata.score == "human-normalized"
    assert dataset.observations.shape == (50, 84, 84) and dataset.timeouts.sum() == 2 and not dataset.terminals.any()
    assert np.array_equal(dataset.observations[25], atari.minari_frame(atari.jpeg_round_trip(screens[1][0])))  # Minari stores JPEG
    assert not np.array_equal(dataset.observations[25], atari.minari_frame(screens[1][0]))
    kwargs = dataset.metadata.env_kwargs
    assert (kwargs["frameskip"], kwargs["repeat_action_probability"], dataset.metadata.eval_wrappers) == (4, 0.0, atari.MINARI_JPEG_WRAPPERS)
    sampler = FrameStack(dataset, torch.device("cpu"), 4, timeouts_as_terminals=False)
    from offbench.evaluate import make_env

    env = make_env(dataset.metadata.env_id, kwargs, dataset.metadata.eval_wrappers)
    try:
        observation, _ = env.reset(seed=11)
        for row in range(25, 50):
            assert np.array_equal(observation, sampler.stack(torch.tensor(row)).numpy()), row
            observation, *_ = env.step(int(dataset.actions[row]))
    finally:
        env.close()


@pytest.mark.parametrize("change, message", [
    (lambda meta: {**meta, "total_steps": 10**13}, "its metadata's total_steps 10000000000000 needs"),
    (lambda meta: {**meta, "total_steps": 30}, "episode 1 ends at step 50, past the dataset's total_steps 30"),
    (lambda meta: {**meta, "env_spec": None}, "its env None is not an ALE Atari env"),
])
def test_minari_atari_metadata_that_does_not_fit_its_episodes_is_one_line(empty_roots: Path, change, message: str) -> None:
    write_minari_atari(empty_roots / "minari")
    metadata = empty_roots / "minari" / "atari" / "pong" / "expert-v0" / "data" / "metadata.json"
    metadata.write_text(json.dumps(change(json.loads(metadata.read_text()))))
    with pytest.raises(OffbenchError, match=message) as caught:
        registry.load_dataset("minari/atari/pong/expert-v0")
    assert "\n" not in caught.value.line()


def test_a_missing_atari_extra_is_one_line_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ale_py", None)
    with pytest.raises(OffbenchError) as caught:
        atari.make_pixel_env("pong")
    assert caught.value.line() == "Atari needs the atari extra (ale_py is not installed) — pip install 'offbench[atari]' (ale-py and opencv-python-headless)"
    script = "import sys; sys.modules['ale_py'] = None; sys.argv = ['offbench', 'data', 'make', 'local/pong-random-tiny-v5', '--force']; " \
             "from offbench.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pip install 'offbench[atari]'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("alias, games", [("pong-random-tiny", 3), ("pong-dqn-tiny", 1)])
def test_discrete_bcq_runs_end_to_end_on_the_tiny_local_pong_made_with_the_catalogue_hash(alias: str, games: int, data_root: Path, tmp_path: Path) -> None:
    """The CI-sized recordings (uniform actions; the committed Pong policy): made on first use, each must have the
    catalogue's bytes (the claim that local data are the same on every CPU class; the policy acts in float64)."""
    result = run_cli("run", "--algo", "discrete-bcq", "--dataset", alias, "--steps", "20", "--eval-every", "20",
                     "--eval-episodes", "1", "--set", "batch_size=8", "--results-dir", str(tmp_path / "results"))
    assert result.returncode == 0, result.stderr
    dataset_id = f"local/{alias}-v5"
    assert f"{dataset_id}: human-normalised score" in result.stdout and "differs from the catalogue" not in result.stderr
    made = registry.load_dataset(dataset_id)
    assert made.metadata.sha256 == catalogue()[dataset_id]["sha256"]
    assert (made.terminals.sum(), made.timeouts.sum()) == (games, 1)  # whole games, then the cut by the 3,000-step budget


def test_the_tiny_local_breakout_is_made_with_the_catalogue_hash(data_root: Path) -> None:
    """Breakout's CI-sized recording by its committed policy must have the catalogue's bytes (training on such a
    recording is the Pong cases above: a 20-step network's Breakout evaluation can wait thousands of steps for FIRE)."""
    made = registry.load_dataset("breakout-dqn-tiny")
    assert made.metadata.id == "local/breakout-dqn-tiny-v5" and made.metadata.sha256 == catalogue()[made.metadata.id]["sha256"]
    assert (made.terminals.sum(), made.timeouts.sum(), made.rewards[:made.terminals.argmax() + 1].sum()) == (1, 1, 5.0)  # one game, then the cut


def test_the_atari_protocol_is_the_reference_codes_budget_on_the_catalogued_recordings() -> None:
    from offbench.analysis.leaderboard import load_protocol

    protocol = load_protocol("atari-local")
    assert (protocol.steps, protocol.eval_every, protocol.eval_episodes) == (1_000_000, 50_000, 10)  # spec: Atari evaluation
    assert set(protocol.algos) == {"discrete-bcq", "offline-dqn"} and protocol.statistic.to_dict() == {"statistic": "last-k", "k": 3}
    for dataset_id in protocol.datasets:
        entry = catalogue()[dataset_id]
        assert (entry["recipe"], entry["steps"], entry["env_id"]) == ("atari-dqn", 1_000_000, atari.env_id(entry["game"]))
