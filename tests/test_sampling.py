"""Samplers: the uniform sampler's draws, frame stacks against a naive reference, episode boundaries, memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.sampling import FrameStack, UniformTransitions, make_sampler
from offbench.data.spaces import Discrete, ObservationSpace
from offbench.errors import OffbenchError

K = 4


def frame_dataset(lengths: list[int], ends: list[str], frame_shape: tuple[int, ...] = (3, 2)) -> OfflineDataset:
    """Episodes of uint8 frames stored once (no next_observations); frame i is filled with the value i + 1."""
    n = sum(lengths)
    frames = (np.arange(n, dtype=np.int64)[:, None, None] + 1 + np.zeros((1, *frame_shape), dtype=np.int64)).astype(np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    last = starts + np.array(lengths) - 1
    terminals, timeouts = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for index, end in zip(last, ends):
        (terminals if end == "terminal" else timeouts)[index] = True
    metadata = DatasetMetadata("test/frames-v0", "test", "Toy-v0", ObservationSpace(frame_shape, "uint8"), Discrete(3))
    rng = np.random.default_rng(0)
    return OfflineDataset.build(metadata, observations=frames, actions=rng.integers(3, size=n), rewards=rng.standard_normal(n),
                                next_observations=None, terminals=terminals, timeouts=timeouts, episode_starts=starts)


def naive_stack(dataset: OfflineDataset, row: int, k: int) -> np.ndarray:
    """Frames row-k+1 .. row, zeros for every frame before the row's episode start."""
    start = dataset.episode_starts[np.searchsorted(dataset.episode_starts, row, side="right") - 1]
    return np.stack([dataset.observations[i] if i >= start else np.zeros_like(dataset.observations[0]) for i in range(row - k + 1, row + 1)])


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_frame_stacks_equal_the_naive_reference_and_never_cross_an_episode_start() -> None:
    dataset = frame_dataset([2, 6, 5], ["terminal", "timeout", "terminal"])
    sampler = FrameStack(dataset, torch.device("cpu"), K, timeouts_as_terminals=False)
    rows = torch.arange(len(dataset))
    stacks = sampler.stack(rows).numpy()
    for row in range(len(dataset)):
        np.testing.assert_array_equal(stacks[row], naive_stack(dataset, row, K))
    # row 2 starts episode 2: its stack is three zero frames and its own frame (value 3), nothing from episode 1
    assert [int(frame.max()) for frame in stacks[2]] == [0, 0, 0, 3]


def test_frame_stack_batches_pair_each_stack_with_its_successor_and_skip_cut_episode_ends() -> None:
    dataset = frame_dataset([2, 6, 5], ["terminal", "timeout", "terminal"])
    sampler = FrameStack(dataset, torch.device("cpu"), K, timeouts_as_terminals=False)
    batch = sampler.sample(generators(0, 1), 512)
    assert batch.observations.shape == (2, 512, K, 3, 2) and batch.observations.dtype == torch.uint8
    assert batch.actions.dtype == torch.int64 and batch.actions.shape == (2, 512)
    newest = batch.observations[..., -1, 0, 0].long() - 1  # frame value i + 1 identifies row i
    assert 7 not in set(newest.flatten().tolist())  # row 7 ends episode 2 by a time-out: no s' to learn from
    for s in range(2):
        for b in range(512):
            row = int(newest[s, b])
            done = bool(dataset.terminals[row])
            expected_next = naive_stack(dataset, row if done else row + 1, K)
            np.testing.assert_array_equal(batch.next_observations[s, b].numpy(), expected_next)
            assert float(batch.not_dones[s, b]) == (0.0 if done else 1.0)
            assert int(batch.actions[s, b]) == int(dataset.actions[row])


def test_frame_stack_holds_one_copy_of_the_frames() -> None:
    dataset = frame_dataset([50, 70], ["terminal", "terminal"], frame_shape=(84, 84))
    sampler = FrameStack(dataset, torch.device("cpu"), K, timeouts_as_terminals=False)
    frame_tensors = [t for t in vars(sampler).values() if isinstance(t, torch.Tensor) and t.dtype == torch.uint8]
    assert sum(t.untyped_storage().nbytes() for t in frame_tensors) == dataset.observations.nbytes
    assert sampler.observation_space == ObservationSpace((K, 84, 84), "uint8")


def test_uniform_sampler_draws_per_seed_indices_from_each_generator(data_root) -> None:
    from conftest import TINY_ID

    from offbench.data import load_dataset

    dataset = load_dataset(TINY_ID)
    sampler = UniformTransitions(dataset, torch.device("cpu"), normalize_states=False, timeouts_as_terminals=False)
    batch = sampler.sample(generators(3, 4), 8)
    for s, seed in enumerate((3, 4)):
        index = torch.randint(len(dataset), (8,), generator=torch.Generator().manual_seed(seed)).numpy()
        np.testing.assert_array_equal(batch.observations[s].numpy(), dataset.observations[index])
        np.testing.assert_array_equal(batch.actions[s].numpy(), dataset.actions[index])


def test_samplers_refuse_what_they_cannot_sample() -> None:
    frames = frame_dataset([5], ["terminal"])
    with pytest.raises(OffbenchError, match="stores each frame once"):
        UniformTransitions(frames, torch.device("cpu"), normalize_states=False, timeouts_as_terminals=False)

    class Config:
        sampler, normalize_states, timeouts_as_terminals = "frame-stack", False, False

    with pytest.raises(OffbenchError, match="needs the config key 'frame_stack'"):
        make_sampler(frames, torch.device("cpu"), Config())
    Config.frame_stack, Config.normalize_states = 4, True
    with pytest.raises(OffbenchError, match="cannot normalise states"):
        make_sampler(frames, torch.device("cpu"), Config())
    Config.normalize_states = False
    assert make_sampler(frames, torch.device("cpu"), Config()).observation_space == ObservationSpace((4, 3, 2), "uint8")
    Config.sampler = "replay-of-dreams"
    with pytest.raises(OffbenchError, match="unknown sampler 'replay-of-dreams'"):
        make_sampler(frames, torch.device("cpu"), Config())
