"""The DQN Replay Dataset (Agarwal, Schuurmans & Norouzi 2020): Dopamine's replay logs, and d4rl-atari's cache of them.

Ids: `dqn-replay/<game>/run<r>-ckpt<N>-v0` (one checkpoint) and `dqn-replay/<game>/run<r>-ckpt<A>-<B>-v0`
(checkpoints A..B concatenated in order, e.g. a "1%" subset), `<game>` the ROM name (`pong`,
`space_invaders`); v0: the dataset has one release. Files (never downloaded by offbench):

    Dopamine layout     <root>/<Game>/<r>/replay_logs/$store$_<field>_ckpt.<N>.gz, field in observation
                        (uint8 (n, 84, 84)), action (int32 (n,)), reward (float32 (n,)), terminal (uint8 (n,)),
                        beside add_count_ckpt.<N>.gz (the buffer's add counter); root `$OFFBENCH_DATA_DIR/dqn-replay`
                        (the bucket's `dqn/` folder as `gsutil -m cp -R` copies it)
    d4rl-atari cache    <root>/<Game>/<r>/<N>/{observation,action,reward,terminal}.gz, the same files renamed,
                        without add_count; root `$D4RL_DATASET_DIR`, else ~/.d4rl/datasets (d4rl-atari's)

Each file is one `.npy` array in a gzip stream. `<Game>` is the game in CamelCase (`SpaceInvaders`).

Semantics (Dopamine's OutOfGraphReplayBuffer, logged by batch_rl's OutOfGraphLoggedReplayBuffer):

- A row is (frame o_t, action a_t taken at o_t, reward r_t, terminal_t): one 84x84 frame, stored once.
  Stacks of 4 are built at sample time by the frame-stack sampler (`offbench.data.sampling.FrameStack`),
  which never crosses an episode start. The next observation of a row is the following row's frame.
- A checkpoint is the circular buffer (capacity n = 1M) when it was logged, i.e. when its add counter
  reached n - 1 modulo n. In the order rows were added it reads rows[c:] then rows[:c], c = add_count
  mod n, when the buffer was full (add_count >= n), else rows[:c]: checkpoint N holds adds
  [add_count - n, add_count), so checkpoints N and N+1 are adjacent windows of one stream and an episode
  that crosses from one file into the next continues across them when both are loaded. d4rl-atari's cache
  has no add_count file: the logging rule gives it, add_count = (N + 1) n - 1. In the Dopamine layout a
  checkpoint without its add_count file is refused (the rule would misorder files written another way).
- Dopamine writes 3 (stack size - 1) zero rows (frame, action, reward and terminal 0) before each
  episode that follows a terminal row, and at the very start of the buffer. They are not transitions:
  the reader drops them, and refuses a file whose rows after a terminal are not zero. At the start of a
  window whose predecessor is not loaded, up to 3 leading rows with action 0, reward 0 and no terminal
  are dropped as well (they may be padding whose terminal lies in the previous checkpoint; the
  window's first episode is partial anyway).
- A terminal row ends its episode and has no valid successor (not_done = 0). The last row of the
  loaded stream, and the last row before a gap between non-adjacent windows, end their episode by a
  time-out (no successor: never sampled). Episodes cut by Dopamine's 27,000-step limit are stored with
  terminal 0 and no padding, so the layout cannot show where they end: such a cut is read as one
  episode continuing into the next, as Dopamine's own sampler reads it (at most one per 27,000 rows).
- Rewards are the game's, unclipped; clipping for learning is the algorithm's.

Each file's `.npy` header is checked (shape and dtype: frames (n, 84, 84) uint8 with n >= 1, the per-row fields (n,)
of integer actions, float rewards and 0/1 terminals) before its data are read.
Files are read to their end, so gzip checks each one's CRC: a damaged, truncated or over-long file is one
error line, never a dataset with wrong bytes. Games are the lower-case ROM names of the reference table.

Memory: the frames are decompressed once, block by block, into one preallocated uint8 array of the
kept rows (1M frames: 7.06 GB); padding rows are skipped on the way, so nothing is copied afterwards.
"""

from __future__ import annotations

import difflib
import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offbench import atari
from offbench.data.checks import FLAGS, INTEGER, Header, Kinds, check_array, check_flags, read_npy_header, regular_file
from offbench.data.dataset import DatasetMetadata, OfflineDataset, episode_starts_from_ends
from offbench.data.spaces import ObservationSpace
from offbench.errors import OffbenchError
from offbench.io import ARCHIVE_ERRORS

FIELDS = ("observation", "action", "reward", "terminal")
FIELD_KINDS: dict[str, Kinds] = {"observation": np.dtype(np.uint8), "action": INTEGER, "reward": "f", "terminal": FLAGS}  # terminal: 0/1
STACK_PADDING = 3  # Dopamine adds stack_size - 1 zero rows before an episode (stack_size 4 on Atari)
BLOCK_ROWS = 4096  # frames decompressed per block while loading (4096 x 84 x 84 bytes = 29 MB)
VERSION = 0
NAME = re.compile(r"(?P<game>[a-z0-9_]+)/run(?P<run>\d+)-ckpt(?P<first>\d+)(?:-(?P<last>\d+))?-v(?P<version>\d+)")
PADDING_HINT = "the files do not follow the Dopamine replay layout (3 zero rows after each terminal)"
NAME_EXAMPLE = "dqn-replay/pong/run1-ckpt50-v0 or dqn-replay/pong/run1-ckpt40-49-v0"
# Games of the DQN Replay Dataset (Dopamine's 60) that Atari-57's human/random table lacks: their ids are known, loading
# one says it has no reference returns (offbench.atari.human_normalized) rather than that the game does not exist.
GAMES_WITHOUT_REFERENCES = ("air_raid", "carnival", "elevator_action", "journey_escape", "pooyan")


@dataclass(frozen=True)
class ReplayName:
    """`pong/run1-ckpt40-49-v0` taken apart: game `pong`, run 1, checkpoints 40..49."""

    game: str
    run: int
    first: int
    last: int

    @property
    def checkpoints(self) -> range:
        return range(self.first, self.last + 1)


def parse_name(name: str) -> ReplayName:
    """The name after `dqn-replay/`; raises `OffbenchError` for one that is not `<game>/run<r>-ckpt<N>[-<M>]-v0`
    with `<game>` a lower-case ROM name of the reference table (`offbench.atari.HUMAN_RANDOM`)."""
    match = NAME.fullmatch(name)
    if match is None:
        game = name.split("/", 1)[0]
        if game != game.lower() and NAME.fullmatch(name.replace(game, _snake_case(game), 1)):
            raise OffbenchError(f"'dqn-replay/{name}' is not a DQN Replay id: games are lower-case ROM names",
                                f"use dqn-replay/{name.replace(game, _snake_case(game), 1)} (the bucket's folder is CamelCase, the id is not)")
        raise OffbenchError(f"'dqn-replay/{name}' is not a DQN Replay id", f"ids look like {NAME_EXAMPLE}")
    if match["game"] not in (*atari.HUMAN_RANDOM, *GAMES_WITHOUT_REFERENCES):
        close = difflib.get_close_matches(match["game"], [*atari.HUMAN_RANDOM, *GAMES_WITHOUT_REFERENCES], n=3)
        raise OffbenchError(f"'dqn-replay/{name}': unknown Atari game '{match['game']}'",
                            f"did you mean {' or '.join(close)}?" if close else f"games: {', '.join(atari.HUMAN_RANDOM)}")
    first, last = int(match["first"]), int(match["last"] if match["last"] is not None else match["first"])
    if last < first or int(match["version"]) != VERSION:
        problem = "its checkpoint range runs backwards" if last < first else f"the DQN Replay Dataset has one release, v{VERSION}"
        raise OffbenchError(f"'dqn-replay/{name}' is not a DQN Replay id: {problem}", f"ids look like {NAME_EXAMPLE}")
    return ReplayName(match["game"], int(match["run"]), first, last)


def dopamine_root() -> Path:
    """offbench's folder for the Dopamine layout: `<data dir>/dqn-replay`."""
    from offbench.paths import data_dir

    return data_dir() / "dqn-replay"


def d4rl_atari_root() -> Path:
    """d4rl-atari's cache: `$D4RL_DATASET_DIR`, else ~/.d4rl/datasets."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets")).expanduser()


def dopamine_files(folder: Path, checkpoint: int) -> dict[str, Path]:
    """The four store files of `checkpoint` in a `replay_logs` folder, by field."""
    return {field: folder / f"$store$_{field}_ckpt.{checkpoint}.gz" for field in FIELDS}


def d4rl_atari_files(folder: Path) -> dict[str, Path]:
    """The four files of one checkpoint in d4rl-atari's `<Game>/<run>/<N>` folder, by field."""
    return {field: folder / f"{field}.gz" for field in FIELDS}


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint's files: the four fields and, in the Dopamine layout, its add counter."""

    number: int
    files: dict[str, Path]
    add_count: Path | None


def find_checkpoint(name: ReplayName, checkpoint: int) -> Checkpoint | None:
    """The checkpoint's files in the Dopamine layout under offbench's folder, else in d4rl-atari's cache, else None."""
    logs = dopamine_root() / atari.camel_case(name.game) / str(name.run) / "replay_logs"
    files = dopamine_files(logs, checkpoint)
    if all(path.is_file() for path in files.values()):
        return Checkpoint(checkpoint, files, logs / f"add_count_ckpt.{checkpoint}.gz")  # checked when read (`window`)
    files = d4rl_atari_files(d4rl_atari_root() / atari.camel_case(name.game) / str(name.run) / str(checkpoint))
    if all(path.is_file() for path in files.values()):
        return Checkpoint(checkpoint, files, None)
    return None


def location(name: str) -> Path:
    """The observation file that decides whether `name` is present: the first of its checkpoints found in
    neither layout (as offbench's Dopamine layout would hold it), else the last checkpoint's. A name that is
    not a DQN Replay name gives a path under offbench's folder that never exists."""
    try:
        parsed = parse_name(name)
    except OffbenchError:
        return dopamine_root() / "not-a-dqn-replay-name" / name
    for number in parsed.checkpoints:
        found = find_checkpoint(parsed, number)
        if found is None:
            return dopamine_files(dopamine_root() / atari.camel_case(parsed.game) / str(parsed.run) / "replay_logs", number)["observation"]
    return found.files["observation"]


def how_to_get(name: str) -> str:
    parsed = parse_name(name)
    game, run = atari.camel_case(parsed.game), parsed.run
    return (f"offbench never downloads the DQN Replay Dataset: copy checkpoints {parsed.first}..{parsed.last} of "
            f"gs://atari-replay-datasets/dqn/{game}/{run}/replay_logs/ to {dopamine_root() / game / str(run) / 'replay_logs'} "
            f"(or use d4rl-atari's cache in {d4rl_atari_root()})")


def listed() -> list[str]:
    """The single-checkpoint ids of every checkpoint found in offbench's Dopamine folder."""
    found = set()
    for path in dopamine_root().glob("*/*/replay_logs/$store$_observation_ckpt.*.gz"):
        run, game = path.parent.parent.name, path.parent.parent.parent.name
        checkpoint = path.name.split(".")[-2]
        name = f"{_snake_case(game)}/run{run}-ckpt{checkpoint}-v{VERSION}"
        if run.isdigit() and checkpoint.isdigit() and is_replay_name(name):  # a folder of another name is not a DQN Replay game
            found.add(f"dqn-replay/{name}")
    return sorted(found)


def is_replay_name(name: str) -> bool:
    """Whether `name` (after `dqn-replay/`) is a well-formed DQN Replay name of a known game (`parse_name` accepts it)."""
    try:
        parse_name(name)
    except OffbenchError:
        return False
    return True


def _snake_case(game: str) -> str:
    """`SpaceInvaders` -> `space_invaders` (the bucket's folder name -> the ROM name)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


def load_dqn_replay(name: str, dataset_id: str) -> OfflineDataset:
    """The checkpoints `name` names as one `OfflineDataset` (frames stored once, no next_observations), evaluated under the pixel protocol.

    Raises `OffbenchError` for a game without reference returns, a missing checkpoint, a file that is not a
    gzipped `.npy` array of the expected dtype and length (or is damaged), an action outside the game's set, or
    rows after a terminal that are not Dopamine's zero padding.
    """
    parsed = parse_name(name)
    atari.human_normalized(parsed.game)  # a game without reference returns is refused before gigabytes are read
    checkpoints = []
    for number in parsed.checkpoints:
        found = find_checkpoint(parsed, number)
        if found is None:
            raise OffbenchError(f"dataset {dataset_id}: checkpoint {number} is missing", how_to_get(name))
        checkpoints.append(found)
    stream = read_stream(checkpoints, dataset_id, atari.action_space(parsed.game).n)
    extra = {"game": parsed.game, "run": parsed.run, "checkpoints": {str(k): v for k, v in stream.checkpoint_rows.items()},
             "files": [str(c.files["observation"].parent) for c in checkpoints]}
    return replay_dataset(dataset_id, "dqn-replay", parsed.game, stream, extra)


def replay_dataset(dataset_id: str, source: str, game: str, stream: Stream, extra: dict[str, Any]) -> OfflineDataset:
    """An `OfflineDataset` of a stream of Atari frames, evaluated in `ALE/<Game>-v5` under the pixel protocol (`offbench.atari`)
    and scored by the human-normalised score with dqn_zoo's random and human returns of `game`."""
    random, human, reference = atari.human_normalized(game)
    metadata = DatasetMetadata(
        id=dataset_id,
        source=source,
        env_id=atari.env_id(game),
        observation_space=ObservationSpace(stream.frames.shape[1:], "uint8"),
        action_space=atari.action_space(game),
        score="human-normalized",
        ref_min_score=random,
        ref_max_score=human,
        ref_source=reference,
        env_kwargs=dict(atari.PIXEL_ENV_KWARGS),
        eval_wrappers=atari.PIXEL_WRAPPERS,
        extra=extra,
    )
    return OfflineDataset.build(metadata, observations=stream.frames, actions=stream.actions, rewards=stream.rewards, next_observations=None,
                                terminals=stream.terminals, timeouts=stream.timeouts,
                                episode_starts=episode_starts_from_ends(stream.terminals | stream.timeouts))


# ---- reading -----------------------------------------------------------------------------------------


def read_header(path: Path) -> Header:
    """The shape and dtype of the `.npy` array in the gzip file at `path`, without reading its data."""
    regular_file(path, "DQN Replay")
    try:
        with gzip.open(path, "rb") as stream:
            return _header(stream, path)
    except ARCHIVE_ERRORS as error:
        raise OffbenchError(f"{path} is not a gzipped .npy array ({error})") from None


def _header(stream, path: Path) -> Header:
    try:
        header, fortran_order = read_npy_header(stream)
    except ARCHIVE_ERRORS as error:
        raise OffbenchError(f"{path} is not a gzipped .npy array ({error})") from None
    if fortran_order:
        raise OffbenchError(f"{path}: a Fortran-ordered array; Dopamine writes C order")
    return header


def read_array(path: Path) -> np.ndarray:
    """The whole `.npy` array in the gzip file at `path` (for the small per-row fields), read to the end of the
    file so that gzip checks its CRC; raises `OffbenchError` for a damaged or truncated file or bytes after the array."""
    regular_file(path, "DQN Replay")
    try:
        with gzip.open(path, "rb") as stream:
            array = np.load(stream, allow_pickle=False)
            _at_end(stream, path)
            return array
    except ARCHIVE_ERRORS as error:
        raise OffbenchError(f"{path} is not a gzipped .npy array ({error})") from None


def _at_end(stream: gzip.GzipFile, path: Path) -> None:
    """Read past the array: gzip checks the file's CRC and length only at its end, so a damaged file is caught here."""
    if stream.read(1):
        raise OffbenchError(f"{path} has bytes after its .npy array", "the file is not one array as Dopamine writes it")


def frame_blocks(path: Path, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, frames) blocks of the observation file at `path`, at most `rows` frames each, in file order.

    The file is read to its end (gzip's CRC check) before the last block is given; raises `OffbenchError` for a
    truncated or damaged file, or bytes after the frames.
    """
    with gzip.open(path, "rb") as stream:
        shape, dtype = _header(stream, path)
        frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        buffer = np.empty((min(rows, shape[0]), *shape[1:]), dtype)
        for first in range(0, shape[0], rows):
            count = min(rows, shape[0] - first)
            view = buffer[:count]
            try:
                complete = stream.readinto(memoryview(view).cast("B")) == count * frame_bytes
                if first + count == shape[0]:
                    _at_end(stream, path)
            except ARCHIVE_ERRORS as error:
                raise OffbenchError(f"{path} is damaged or truncated at frame {first} of {shape[0]} ({error})", "copy the file again") from None
            if not complete:
                raise OffbenchError(f"{path} ends before its {shape[0]} frames (a truncated download?)", "copy the file again")
            yield first, view


@dataclass(frozen=True)
class Window:
    """One checkpoint's rows in the order they were added: `order` (m,) file rows; `first_add` the add counter of order[0]."""

    checkpoint: Checkpoint
    order: np.ndarray
    first_add: int
    rows: int  # rows in its files (n)


def window(checkpoint: Checkpoint, rows: int) -> Window:
    """The add order of a checkpoint's rows from its add counter (d4rl-atari's cache, which has none: the logging rule).

    Raises `OffbenchError` when a Dopamine-layout checkpoint lacks its `add_count_ckpt.<N>.gz` or holds a bad one.
    """
    if checkpoint.add_count is not None and not checkpoint.add_count.is_file():
        raise OffbenchError(f"checkpoint {checkpoint.number} has no {checkpoint.add_count.name} beside its $store$ files, so the order "
                            "its rows were added in is unknown", "copy it from the bucket with the others; for files you wrote in "
                            "the order the rows were added, write np.array(<rows>) there")
    add_count = (checkpoint.number + 1) * rows - 1 if checkpoint.add_count is None else _add_count(checkpoint.add_count)
    cursor = add_count % rows
    if add_count >= rows:
        order = np.concatenate([np.arange(cursor, rows), np.arange(cursor)])
    else:
        order = np.arange(cursor)
    return Window(checkpoint, order, add_count - order.size, rows)


def _add_count(path: Path) -> int:
    """The one non-negative integer in an `add_count_ckpt.<N>.gz`; raises `OffbenchError` for anything else."""
    check_array(str(path), "add_count", read_header(path), (), INTEGER)
    add_count = int(read_array(path))
    if add_count < 0:
        raise OffbenchError(f"{path} holds {add_count}, expected one non-negative integer (the buffer's add counter)")
    return add_count


@dataclass(frozen=True)
class Stream:
    """The loaded windows as one stream of kept rows: frames (M, 84, 84) uint8 and the per-row fields."""

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    checkpoint_rows: dict[int, int]  # kept rows per checkpoint


def read_stream(checkpoints: list[Checkpoint], what: str, num_actions: int) -> Stream:
    """Read checkpoints (in order) as one stream of transitions (see the module docstring); `what` names the dataset in errors.

    Raises `OffbenchError` naming the checkpoint and file row of the first kept row whose action is outside 0..num_actions-1.
    """
    shapes = [_checked_header(checkpoint, what) for checkpoint in checkpoints]
    windows = [window(checkpoint, shape[0]) for checkpoint, shape in zip(checkpoints, shapes)]
    fields = {field: np.concatenate([_field(w, field, what)[w.order] for w in windows]) for field in ("action", "reward", "terminal")}
    terminals = fields["terminal"] != 0
    sizes = [w.order.size for w in windows]
    window_of = np.repeat(np.arange(len(windows)), sizes)
    offsets = np.cumsum([0, *sizes])
    gaps = [int(offsets[i]) for i, continues in enumerate(_continues(windows)) if not continues]  # stream rows that start a segment
    after_terminal, leading = _padding(terminals, fields["action"], fields["reward"], gaps)
    _check_padding(after_terminal, terminals, fields, windows, window_of, offsets, what)
    keep = ~(after_terminal | leading)
    _check_actions(keep & ((fields["action"] < 0) | (fields["action"] >= num_actions)), fields["action"], num_actions, windows, window_of,
                   offsets, what)
    ends = np.zeros(terminals.size, dtype=bool)
    ends[[gap - 1 for gap in gaps if gap > 0]] = True  # the row before a gap has no successor
    ends[-1] = True
    destination = np.cumsum(keep) - 1
    destination[~keep] = -1
    frames = np.empty((int(keep.sum()), *shapes[0][1:]), np.uint8)
    for i, w in enumerate(windows):
        part = slice(offsets[i], offsets[i + 1])
        _fill_frames(frames, w, destination[part], after_terminal[part], what)
    kept_terminals = terminals[keep]
    return Stream(
        frames=frames,
        actions=fields["action"][keep].astype(np.int64),
        rewards=fields["reward"][keep].astype(np.float32),
        terminals=kept_terminals,
        timeouts=_kept_ends(ends, keep) & ~kept_terminals,
        checkpoint_rows={w.checkpoint.number: int(keep[window_of == i].sum()) for i, w in enumerate(windows)},
    )


def _checked_header(checkpoint: Checkpoint, what: str) -> tuple[int, ...]:
    """The shape of a checkpoint's frames, (n, 84, 84) uint8 with n >= 1 as the pixel protocol makes them (else `OffbenchError`)."""
    path = checkpoint.files["observation"]
    header = read_header(path)
    check_array(f"dataset {what}: {path}", "observation", header, ("n", atari.SCREEN_SIZE, atari.SCREEN_SIZE), FIELD_KINDS["observation"])
    if header.shape[0] == 0:
        raise OffbenchError(f"dataset {what}: {path} holds no frames (shape {header.shape})")
    return header.shape


def _field(w: Window, field: str, what: str) -> np.ndarray:
    """A per-row field of a checkpoint, checked to be (n,) of its kind (`FIELD_KINDS`) before it is read; terminals as bool."""
    path = w.checkpoint.files[field]
    check_array(f"dataset {what}: {path}", field, read_header(path), (w.rows,), FIELD_KINDS[field])
    array = read_array(path)
    return check_flags(f"dataset {what}: {path}", field, array) if field == "terminal" else array


def _continues(windows: list[Window]) -> list[bool]:
    """Whether each window continues the previous one: its first add follows the previous window's last."""
    return [i > 0 and windows[i - 1].first_add + windows[i - 1].order.size == w.first_add for i, w in enumerate(windows)]


def _padding(terminals: np.ndarray, actions: np.ndarray, rewards: np.ndarray, gaps: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Dopamine's zero padding as two masks over the stream: the 3 rows after each terminal row (within a
    segment between gaps), and up to 3 leading rows of a segment with action 0, reward 0 and no terminal."""
    n = terminals.size
    segment = np.zeros(n, dtype=np.int64)
    segment[[gap for gap in gaps if gap > 0]] = 1
    segment = np.cumsum(segment)
    after_terminal = np.zeros(n, dtype=bool)
    for shift in range(1, min(STACK_PADDING, n - 1) + 1):
        after_terminal[shift:] |= terminals[:-shift] & (segment[shift:] == segment[:-shift])
    zero = (actions == 0) & (rewards == 0) & ~terminals
    leading = np.zeros(n, dtype=bool)
    for gap in gaps:
        row = gap
        while row < min(gap + STACK_PADDING, n) and zero[row] and not after_terminal[row]:
            leading[row] = True
            row += 1
    return after_terminal, leading


def _file_row(index: int, windows: list[Window], window_of: np.ndarray, offsets: np.ndarray) -> tuple[int, int]:
    """(checkpoint, row in its files) of stream row `index`."""
    w = windows[window_of[index]]
    return w.checkpoint.number, int(w.order[index - offsets[window_of[index]]])


def _check_actions(bad: np.ndarray, actions: np.ndarray, num_actions: int, windows, window_of, offsets, what) -> None:
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        checkpoint, row = _file_row(index, windows, window_of, offsets)
        raise OffbenchError(f"dataset {what}: row {row} of checkpoint {checkpoint} has action {int(actions[index])}, outside "
                            f"the game's {num_actions} actions (0..{num_actions - 1}) under the pixel protocol",
                            "DQN Replay stores the minimal action set's indices (full_action_space=False)")


def _check_padding(after_terminal, terminals, fields, windows, window_of, offsets, what) -> None:
    """Refuse a row after a terminal whose action, reward or terminal is not zero: the files are not Dopamine's layout."""
    bad = after_terminal & ((fields["action"] != 0) | (fields["reward"] != 0) | terminals)
    if bad.any():
        checkpoint, row = _file_row(int(np.flatnonzero(bad)[0]), windows, window_of, offsets)
        raise OffbenchError(f"dataset {what}: row {row} of checkpoint {checkpoint} follows a terminal row but is not zero padding", PADDING_HINT)


def _kept_ends(ends: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Episode ends among the kept rows: an end that falls on a dropped row moves to the last kept row before it."""
    last_kept = np.maximum.accumulate(np.where(keep, np.arange(keep.size), -1))
    moved = last_kept[ends]
    moved = moved[moved >= 0]
    kept_ends = np.zeros(keep.size, dtype=bool)
    kept_ends[moved] = True
    return kept_ends[keep]


def _fill_frames(frames: np.ndarray, w: Window, destination: np.ndarray, after_terminal: np.ndarray, what: str) -> None:
    """Decompress one checkpoint's frames into their kept rows of `frames` (`destination`: the stream row of each row of the
    window, -1 when dropped); the padding rows after a terminal must hold zero frames."""
    target = np.full(w.rows, -1, dtype=np.int64)
    target[w.order] = destination  # file row -> frames row (-1: outside the window, or dropped)
    must_be_zero = np.zeros(w.rows, dtype=bool)
    must_be_zero[w.order[after_terminal]] = True
    for first, block in frame_blocks(w.checkpoint.files["observation"]):
        rows = target[first:first + block.shape[0]]
        kept = rows >= 0
        frames[rows[kept]] = block[kept]
        if block[must_be_zero[first:first + block.shape[0]]].any():
            raise OffbenchError(f"dataset {what}: checkpoint {w.checkpoint.number} has a frame after a terminal row that is not zero padding", PADDING_HINT)
