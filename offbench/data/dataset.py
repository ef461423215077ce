"""`OfflineDataset`: the one in-memory form of every offline dataset, whatever its source format."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from offbench.data.checks import FLAGS, INTEGER, REAL, any_per_row, check_array, check_flags, is_kind
from offbench.data.spaces import ActionSpace, ObservationSpace, first_true
from offbench.errors import OffbenchError

SCORES = {
    "normalized-return": "normalised return x100: 100 (R - ref min) / (ref max - ref min) (D4RL)",
    "success-rate": "success rate x100: 100 x the share of episodes that end in the task's success (OGBench)",
    "human-normalized": "human-normalised score: 100 (R - random) / (human - random), per-game random and human returns (Atari)",
}
SCORE_NAMES = {  # how tables and messages name them
    "normalized-return": "normalised score", "success-rate": "success rate", "human-normalized": "human-normalised score",
}
ROW_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
TRANSITION_FIELDS = (*ROW_FIELDS, "episode_starts")


@dataclass(frozen=True)
class DatasetMetadata:
    """Where a dataset came from and how its returns are normalised.

    `score` says what an evaluation scores (`SCORES`): for "normalized-return" and "human-normalized" (Atari: the
    game's random and human returns), `ref_min_score`/
    `ref_max_score` give 100 * (R - min) / (max - min), the D4RL convention, and `ref_source` says whose
    reference numbers they are; for "success-rate" (goal-reaching tasks) an episode scores 100 when it
    ends in success, else 0, and no reference returns are used.
    """

    id: str
    source: str  # "d4rl" | "minari" | "local" | "test" ...
    env_id: str  # the Gymnasium env the dataset is evaluated in
    observation_space: ObservationSpace
    action_space: ActionSpace
    score: str = "normalized-return"  # what an evaluation's score is: a name in SCORES
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    ref_source: str | None = None
    sha256: str = ""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_wrappers: tuple[str, ...] = ()  # names in offbench.evaluate.EVAL_WRAPPERS, applied in order
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OfflineDataset:
    """Columnar transitions (s, a, r, s', terminal, timeout) plus an episode index.

    Each field keeps its natural dtype: observations as the metadata's observation space says (float32
    vectors or uint8 frames, shape (N, *obs_shape)); actions float32 (N, dims) in a box or int64 (N,) for
    discrete actions; rewards float32 (N,); `terminals` and `timeouts` bool (N,). A time-out marks an
    episode cut by a time limit (or the end of the data) and is never a terminal: only terminals stop
    bootstrapping. `episode_starts[i]` is the index of the first transition of episode i.

    `extras` holds per-row arrays a source keeps beside the transitions (OGBench's `qpos`, `qvel` and
    `button_states` of each row's observation), each with N rows; the content hash covers them.

    `next_observations` is None for datasets that store each frame once (Atari replay logs): then s' of
    row i is row i + 1 of the same episode, and the last row of an episode has no stored successor.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray | None
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_starts: np.ndarray
    metadata: DatasetMetadata
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        metadata: DatasetMetadata,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_observations: np.ndarray | None,
        terminals: np.ndarray,
        timeouts: np.ndarray,
        episode_starts: np.ndarray,
        validate: bool = True,
        extras: dict[str, np.ndarray] | None = None,
    ) -> OfflineDataset:
        """Cast the arrays to the dtypes of the metadata's spaces, validate them and stamp the content hash.

        Before any cast: rewards, terminals, timeouts and episode_starts must be 1-D (no array is flattened here), the
        observations, actions and rewards real numbers, the flags bool or 0/1; raises one-line `OffbenchError` otherwise.
        """
        what = f"dataset {metadata.id}"
        observations, actions, rewards, terminals, timeouts, episode_starts = (
            np.asarray(a) for a in (observations, actions, rewards, terminals, timeouts, episode_starts))
        next_observations = None if next_observations is None else np.asarray(next_observations)
        _check_before_cast(what, observations, actions, rewards, next_observations, terminals, timeouts, episode_starts)
        obs_dtype = np.dtype(metadata.observation_space.dtype)
        if metadata.action_space.kind == "discrete" and not np.issubdtype(actions.dtype, np.integer):
            if not np.array_equal(actions, np.round(actions)):
                raise OffbenchError(f"dataset {metadata.id}: field 'actions': discrete actions must be integers, got {actions.dtype} values")
        dataset = cls(
            observations=np.ascontiguousarray(observations, dtype=obs_dtype),
            actions=np.ascontiguousarray(actions, dtype=np.dtype(metadata.action_space.dtype)),
            rewards=np.ascontiguousarray(rewards, dtype=np.float32),
            next_observations=None if next_observations is None else np.ascontiguousarray(next_observations, dtype=obs_dtype),
            terminals=np.ascontiguousarray(check_flags(what, "terminals", terminals)),
            timeouts=np.ascontiguousarray(check_flags(what, "timeouts", timeouts)),
            episode_starts=np.ascontiguousarray(episode_starts, dtype=np.int64),
            metadata=metadata,
            extras={name: np.ascontiguousarray(array) for name, array in (extras or {}).items()},
        )
        if validate:
            dataset.validate()
        return replace(dataset, metadata=replace(metadata, sha256=dataset.content_hash()))

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        """Index one past the last transition of each episode."""
        return np.append(self.episode_starts[1:], len(self))

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, in float64."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts) if len(self) else np.zeros(0)

    def episode_lengths(self) -> np.ndarray:
        return self.episode_ends - self.episode_starts

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray:
        """D4RL-style normalised score x100 under this dataset's reference returns."""
        lo, hi = self.metadata.ref_min_score, self.metadata.ref_max_score
        if lo is None or hi is None:
            raise OffbenchError(f"dataset {self.metadata.id} has no reference scores to normalise returns with")
        return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)

    def content_hash(self) -> str:
        """sha256 over the arrays (shape, dtype and bytes, in a fixed order; extras after the fields, by name): the dataset's identity."""
        digest = hashlib.sha256()
        arrays = [(name, getattr(self, name)) for name in TRANSITION_FIELDS] + [(f"extra:{name}", self.extras[name]) for name in sorted(self.extras)]
        for name, array in arrays:
            if array is None:
                continue
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))  # the bytes without a copy: frames can be gigabytes
        return digest.hexdigest()

    def validate(self) -> None:
        """Raise one `OffbenchError` naming the dataset, the field and the first bad index."""
        name = self.metadata.id
        n = len(self)

        def fail(field_name: str, index: int | None, problem: str) -> None:
            where = f" at index {index}" if index is not None else ""
            raise OffbenchError(f"dataset {name}: field '{field_name}'{where}: {problem}")

        if n == 0:
            fail("rewards", None, "the dataset is empty")
        present = [f for f in ROW_FIELDS if getattr(self, f) is not None]
        for field_name, array in [*((f, getattr(self, f)) for f in present), *self.extras.items()]:
            if array.shape[0] != n:
                fail(field_name, None, f"has {array.shape[0]} rows but 'rewards' has {n}")
        if self.metadata.score not in SCORES:
            fail("score", None, f"unknown score '{self.metadata.score}' (known: {', '.join(SCORES)})")
        obs_space, action_space = self.metadata.observation_space, self.metadata.action_space
        for field_name, shape in (
            ("observations", obs_space.shape),
            ("next_observations", obs_space.shape),
            ("actions", action_space.shape),
        ):
            array = getattr(self, field_name)
            if array is not None and array.shape[1:] != shape:
                fail(field_name, None, f"has shape {array.shape}, expected (N{''.join(f', {d}' for d in shape)})")
        for field_name in present:
            array = getattr(self, field_name)
            if np.issubdtype(array.dtype, np.floating):
                bad = first_true(any_per_row(~np.isfinite(array)))
                if bad is not None:
                    fail(field_name, bad, "value is not finite (NaN or inf)")
        both = first_true(self.terminals & self.timeouts)
        if both is not None:
            fail("timeouts", both, "a transition is marked both terminal and time-out")
        outside = action_space.first_outside(self.actions)
        if outside is not None:
            fail("actions", outside, f"action {self.actions[outside].tolist()} is outside {action_space.describe()}")
        self._validate_episodes(fail)

    def _validate_episodes(self, fail: Any) -> None:
        starts, n = self.episode_starts, len(self)
        if starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n:
            fail("episode_starts", None, "must start at 0 and increase strictly inside the data")
        last = self.episode_ends - 1
        open_end = first_true(~(self.terminals[last] | self.timeouts[last]))
        if open_end is not None:
            fail("timeouts", int(last[open_end]), "an episode ends without a terminal or a time-out")
        inside = np.ones(n, dtype=bool)
        inside[last] = False  # the transition after an episode's last one belongs to the next episode
        early_end = first_true(inside & (self.terminals | self.timeouts))
        if early_end is not None:
            fail("terminals", early_end, "a terminal or time-out falls inside an episode")
        if self.next_observations is None:
            return
        continuity = np.zeros(n, dtype=bool)
        continuity[:-1] = inside[:-1]
        mismatch = np.zeros(n, dtype=bool)
        following, stored = self.observations[1:], self.next_observations[:-1]
        if np.issubdtype(following.dtype, np.floating):
            differs = np.abs(stored - following) > 1e-5 * (1.0 + np.abs(following))
        else:
            differs = stored != following
        mismatch[:-1] = any_per_row(differs)
        bad = first_true(continuity & mismatch)
        if bad is not None:
            fail("next_observations", bad, "differs from the next transition's observation inside an episode")


def _check_before_cast(what: str, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_observations: np.ndarray | None,
                       terminals: np.ndarray, timeouts: np.ndarray, episode_starts: np.ndarray) -> None:
    """`OfflineDataset.build`'s checks before it casts: 1-D rewards, flags and episode starts; real-number observations and actions."""
    for name, array, kinds in (("rewards", rewards, REAL), ("terminals", terminals, FLAGS), ("timeouts", timeouts, FLAGS),
                               ("episode_starts", episode_starts, INTEGER)):
        check_array(what, name, array, ("N",), kinds)
    for name, array in (("observations", observations), ("next_observations", next_observations), ("actions", actions)):
        if array is not None and not is_kind(array.dtype, REAL):
            raise OffbenchError(f"{what}: field '{name}' has dtype {array.dtype} (shape {array.shape}), expected real numbers (integer or float)")


def episode_scores(score: str, returns: np.ndarray, successes: np.ndarray | None, ref_min: float | None, ref_max: float | None) -> np.ndarray:
    """Each evaluation episode's score x100 (float64, the shape of `returns`), by the dataset's `score` (`SCORES`).

    "normalized-return": 100 (R - ref_min) / (ref_max - ref_min) (D4RL's normalised score); "human-normalized": the same
    formula with the game's random return as ref_min and the human return as ref_max (Atari);
    "success-rate": 100 where the episode ended in success, else 0, so the mean over episodes is the
    success rate x100 (OGBench's single-task protocol). Raises `OffbenchError` when the score needs
    successes the env did not report, or references the dataset lacks.
    """
    if score == "success-rate":
        if successes is None:
            raise OffbenchError("the dataset is scored by success rate, but its evaluation env reports no info['success'] at an episode's end")
        return 100.0 * np.asarray(successes, dtype=np.float64)
    if ref_min is None or ref_max is None:
        raise OffbenchError("the dataset has no reference returns to normalise returns with")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


def episode_starts_from_ends(ends: np.ndarray) -> np.ndarray:
    """Episode starts from a bool array that is True on the last transition of each episode."""
    ends = np.asarray(ends, dtype=bool)
    starts = np.flatnonzero(np.concatenate([[True], ends[:-1]]))
    return starts.astype(np.int64)
