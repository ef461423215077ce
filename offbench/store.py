"""Results store: one directory per run plus an SQLite index.

Layout under the store root (``results/`` by default)::

    runs/<run_id>/config.json       resolved algorithm config + protocol + dataset identity
    runs/<run_id>/provenance.json   git commit, package versions, hardware, command line
    runs/<run_id>/curve.json        every evaluation: step, per-episode returns and scores
    runs/<run_id>/policy.pt         the final policy of that seed, written just before the summary (offbench.policy)
    runs/<run_id>/summary.json      written last; its presence is what makes a run finished
    runs/<run_id>/evaluations/      `offbench eval` results, one JSON each (never read as the run's record)
    runs/<run_id>/metrics.csv       training metrics every k steps; evaluations.csv: a row per evaluation;
                                    tb/ and wandb/ when asked for (offbench.logs: logs for people, never read here)
    checkpoints/<group_id>.pt       the resumable state of a seed group (all seeds of one process)
    locks/<group_id>.lock           held (flock) by the process training the group: two processes never train one group
    index.sqlite                    one row per run; rebuildable from runs/ with `reindex()`
    index.lock                      flock: shared while a process has the index open, exclusive while it is rebuilt

Every record file is written atomically (the logs are appended a line at a time). A run is listed as
finished (or diverged: an evaluation returned NaN or inf, and it has no score) only when its summary
exists and its index row says so; a run that ends any other way is never counted. Its row says how it
ended: `failed: <error>`, `interrupted: <signal>` (with the resume command or "no checkpoint: start
again"), or, for a process killed without a word (SIGKILL, a lost machine), `running` in the file and
`interrupted` when read: its process on this host is gone, or no heartbeat came for `STALE_AFTER_S`
(`runs()`, `liveness`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offbench.errors import OffbenchError
from offbench.io import process_alive, write_json
from offbench.paths import safe_name
from offbench.protocol import BUDGET_KEYS
from offbench.records import RunConfig, RunSummary

INDEX_COLUMNS = {
    "run_id": "TEXT PRIMARY KEY",
    "group_id": "TEXT",
    "algo": "TEXT",
    "dataset_id": "TEXT",
    "dataset_sha256": "TEXT",
    "evaluation": "TEXT",  # RunConfig.evaluation["key"]: eval env, kwargs, wrappers, reference returns and score
    "score_kind": "TEXT",  # DatasetRecord.score: what the scores hold (normalized-return, success-rate)
    "seed": "INTEGER",
    **{key: "INTEGER" for key in BUDGET_KEYS},
    "status": "TEXT",
    "started_at": "REAL",
    "finished_at": "REAL",
    "final_score": "REAL",
    "last_k": "INTEGER",
    "last_k_score": "REAL",
    "best_score": "REAL",
    "steps_per_s": "REAL",
    "device": "TEXT",
    "host": "TEXT",  # where the training process runs, and its pid: a dead pid on this host is an interrupted run
    "pid": "INTEGER",
    "heartbeat_at": "REAL",  # the last sign of life of a running run (every HEARTBEAT_EVERY_S while it trains)
}
HEARTBEAT_EVERY_S = 30.0
BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another process's write to the index
STALE_AFTER_S = 600.0  # a running run silent this long is shown as interrupted (its process may be on another host)


@dataclass(frozen=True)
class RunRecord:
    """Everything stored for one run (one seed).

    config:     `RunConfig` (offbench.records): ids, algorithm, seed, dataset identity, protocol, hyperparameters
    curve:      [{"step", "normalized_score", "return_mean", "return_std", "returns": [...],
                  "normalized_scores": [...], "time_s", <training metrics>}, ...]
    summary:    `RunSummary` (offbench.records), None until the run finished
    provenance: {"started_at", "git_commit", "git_dirty", "packages": {...}, "device", "cpu", "gpu",
                 "python", "platform", "command", "wall_time_s", "steps_per_s"}; the code identity (git_commit,
                 git_dirty, packages, git_checkout_now) is that of the process that trained the run's last segment
                 (offbench.provenance.code_identity); a resumed run adds "segment_started_at" and "earlier_segments"
                 (each earlier segment's start, code and machine)
    Scores are D4RL-style normalised scores (x100).
    """

    run_id: str
    config: RunConfig
    provenance: dict[str, Any]
    curve: list[dict[str, Any]]
    summary: RunSummary | None

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.status == "finished"


class DamagedRecord(OffbenchError):
    """A run folder holds a file that does not parse: analysis leaves the run out and names it."""

    def __init__(self, run_id: str, damage: str) -> None:
        super().__init__(f"run {run_id} is damaged: {damage}", f"restore the file, or remove the run with `offbench runs rm {run_id}`")
        self.run_id, self.damage = run_id, damage


def _parsed(run_id: str, name: str, parse: Any, data: Any) -> Any:
    try:
        return parse(data)
    except (KeyError, TypeError, ValueError, AttributeError, OffbenchError) as error:  # OffbenchError: a budget out of range
        reason = error.line() if isinstance(error, OffbenchError) else f"{type(error).__name__}: {error}"
        raise DamagedRecord(run_id, f"{name} lacks or mistypes a field ({reason})"[:300]) from None


class ResultsStore:
    """The embedded results store (a directory and an SQLite index)."""

    def __init__(self, root: str | Path, indexed: bool = True) -> None:
        """`indexed=False`: write run folders and checkpoints only, never index.sqlite (a Ray worker on another
        host: SQLite's locks do not span machines, so the sweep's driver indexes its runs, `index_runs`)."""
        self.root = Path(root)
        self.indexed = indexed
        self.runs_dir = self.root / "runs"
        self.checkpoints_dir = self.root / "checkpoints"
        self.index_path = self.root / "index.sqlite"

    # ---- writing -----------------------------------------------------------------------------

    def ensure_writable(self) -> None:
        """Raise one line when the store's folder cannot be created or written (checked before a run starts)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise OffbenchError(f"results store {self.root} is not writable ({error.strerror})", "pass a writable --results-dir") from None

    @contextmanager
    def training(self, group_id: str) -> Iterator[None]:
        """Hold `group_id`'s training lock while the body trains it, so that a second sweep or `run --resume` on the
        same store cannot train (and write the records of) the same group at once. An advisory `flock`: released by
        the kernel when the holder dies, so a killed run never leaves it held. Raises one-line `OffbenchError` when
        another process holds it."""
        import fcntl

        self.ensure_writable()
        path = self._lock_path(group_id)
        path.parent.mkdir(exist_ok=True)
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise OffbenchError(f"group {group_id} is being trained now by {holder}", "wait for it to end (or stop it), then run again") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start_run(self, run_id: str, config: RunConfig | Mapping[str, Any], provenance: dict[str, Any]) -> None:
        """Create the run directory and index it as `running` (a mapping is read through `RunConfig.from_dict`)."""
        config = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
        run_dir = self.run_dir(run_id)
        if (run_dir / "summary.json").exists():
            raise OffbenchError(f"run {run_id} is already finished in {self.root}", "choose another run id")
        write_json(run_dir / "config.json", config.to_dict())
        write_json(run_dir / "provenance.json", provenance)
        if not (run_dir / "curve.json").exists():
            write_json(run_dir / "curve.json", [])
        self._upsert(self._row(run_id, config, status="running", provenance=provenance, started_at=time.time()))

    def write_curve(self, run_id: str, curve: list[dict[str, Any]]) -> None:
        """Write a run's curve; an entry with a NaN or inf score or return is stored as diverged (`finite_entry`)."""
        write_json(self.run_dir(run_id) / "curve.json", [finite_entry(entry) for entry in curve])

    def finish_run(self, run_id: str, summary: RunSummary | Mapping[str, Any], provenance: dict[str, Any]) -> None:
        """Write the final provenance and the summary (last), then mark the index row finished.

        A mapping is read through `RunSummary.from_dict`. A NaN or inf value is stored as null; a NaN or inf score makes
        the run diverged (no score), as a non-finite evaluation does.
        """
        values = summary.to_dict() if isinstance(summary, RunSummary) else dict(summary)
        lost = {key for key, value in values.items() if isinstance(value, float) and not math.isfinite(value)}
        summary = RunSummary.from_dict({key: None if key in lost else value for key, value in values.items()})
        if lost & {"final_score", "best_score", "last_k_score"}:  # a NaN score is a diverged run, never a number
            curve = self._read(run_id, "curve.json")
            diverged_at = next((entry["step"] for entry in curve if entry.get("diverged")), summary.steps)
            summary = dataclasses.replace(summary, final_score=None, best_score=None, last_k_score=None, status="diverged",
                                          diverged_at_step=diverged_at)
        run_dir = self.run_dir(run_id)
        write_json(run_dir / "provenance.json", provenance)
        write_json(run_dir / "summary.json", summary.to_dict())
        config = self._config(run_id)
        self._upsert(self._row(run_id, config, status=summary.status, summary=summary, provenance=provenance))

    def index_runs(self, run_ids: Iterable[str], failed: str | None = None) -> None:
        """Index runs from their folders (written by workers that do not write the index); `failed`: the reason
        an unfinished one ended."""
        for run_id in run_ids:
            record = self.load(run_id)
            if record.summary is not None:
                self._upsert(self._row(run_id, record.config, record.summary.status, record.summary, record.provenance,
                                       record.provenance.get("started_at")))
            else:
                status = f"failed: {failed}"[:300] if failed else "running"
                self._upsert(self._row(run_id, record.config, status, None, record.provenance, record.provenance.get("started_at")))

    def open_index(self) -> None:
        """Create (or repair) the index now, before many processes write it (offbench.execution's driver calls this),
        so that no worker of a sweep has to wait for a rebuild."""
        if self.indexed:
            with self._connection():
                pass

    def is_finished(self, run_id: str) -> bool:
        """Whether a run's summary exists (finished or diverged): it is over and is never trained again."""
        return (self.run_dir(run_id) / "summary.json").exists()

    def mark_failed(self, run_id: str, reason: str) -> None:
        self._upsert(self._row(run_id, self._config(run_id), status=f"failed: {reason}"[:300]))

    def mark_interrupted(self, run_id: str, reason: str) -> None:
        self._upsert(self._row(run_id, self._config(run_id), status=f"interrupted: {reason}"[:300]))

    def heartbeat(self, run_ids: list[str]) -> None:
        """Record that the process training `run_ids` is alive (one transaction)."""
        if not self.indexed:
            return
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", [(time.time(), r) for r in run_ids])
            conn.execute("COMMIT")

    def remove(self, run_ids: list[str]) -> None:
        """Delete runs (folders and index rows) and the checkpoints of groups left without runs."""
        groups = {group for group in map(self._group_of, run_ids) if group is not None}
        for run_id in run_ids:
            shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in run_ids])
            conn.execute("COMMIT")
            remaining = {row[0] for row in conn.execute("SELECT DISTINCT group_id FROM runs")}
        for group_id in groups - remaining:
            self.checkpoint_path(group_id).unlink(missing_ok=True)
            self._lock_path(group_id).unlink(missing_ok=True)

    def _group_of(self, run_id: str) -> str | None:
        """A run's group id; for a run whose config is missing or damaged (removed without being parsed), the group its
        id names (`<group>-s<seed>`), else None."""
        try:
            return self._config(run_id).group_id
        except DamagedRecord:
            group, sep, seed = run_id.rpartition("-s")
            return group if sep and seed.isdigit() else None

    # ---- reading -----------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run; raises `OffbenchError` for an id that could name a path outside `runs/`."""
        return self.runs_dir / safe_name("run id", run_id)

    def _lock_path(self, group_id: str) -> Path:
        return self.root / "locks" / f"{safe_name('group id', group_id)}.lock"

    def checkpoint_path(self, group_id: str) -> Path:
        return self.checkpoints_dir / f"{safe_name('group id', group_id)}.pt"

    def load(self, run_id: str) -> RunRecord:
        """One run's record; raises `OffbenchError` for an unknown run and `DamagedRecord` for an unreadable one."""
        run_dir = self.run_dir(run_id)
        if not (run_dir / "config.json").exists():
            raise OffbenchError(f"no run {run_id} in {self.root}", "list runs with `offbench runs`")
        summary = self._read(run_id, "summary.json") if (run_dir / "summary.json").exists() else None
        curve = self._read(run_id, "curve.json")
        if not isinstance(curve, list) or not all(is_evaluation(entry) for entry in curve):
            raise DamagedRecord(run_id, "curve.json is not a list of evaluations (a positive int step, numbers or nulls as scores)")
        steps = [entry["step"] for entry in curve]
        if steps != sorted(set(steps)) or (summary is not None and not steps):
            raise DamagedRecord(run_id, "curve.json's evaluation steps are not increasing" if steps else "curve.json of a finished run is empty")
        provenance = self._read(run_id, "provenance.json")
        if not isinstance(provenance, dict):
            raise DamagedRecord(run_id, "provenance.json is not an object")
        return RunRecord(
            run_id=run_id,
            config=self._config(run_id),
            provenance=provenance,
            curve=curve,
            summary=None if summary is None else _parsed(run_id, "summary.json", RunSummary.from_dict, summary),
        )

    def load_intact(self, run_ids: Iterable[str]) -> tuple[dict[str, RunRecord], dict[str, str]]:
        """The records of `run_ids` that read cleanly, and {run id: what is damaged} for the others."""
        records, damaged = {}, {}
        for run_id in run_ids:
            try:
                records[run_id] = self.load(run_id)
            except DamagedRecord as error:
                damaged[run_id] = error.damage
        return records, damaged

    def damaged_runs(self) -> dict[str, str]:
        """{run id: what is damaged} for every run the index lists as damaged (a record that did not parse or could not be
        indexed when the index was rebuilt): analysis names each in its caveats, whatever it selected."""
        frame = self.runs(status=None)
        damaged = frame[frame["status"].astype(str).str.startswith("damaged: ")]
        return {row.run_id: row.status.removeprefix("damaged: ") for row in damaged.itertuples()}

    def runs(self, status: str | None = "finished") -> pd.DataFrame:
        """The index as a DataFrame; `status=None` lists every run, finished or not."""
        if not self.index_path.exists() and not any(self.runs_dir.glob("*/config.json")):
            return pd.DataFrame(columns=list(INDEX_COLUMNS))
        query = "SELECT * FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY started_at, run_id"
        with self._connection() as conn:
            frame = pd.read_sql_query(query, conn, params=(status,) if status else ())
        if status in ("finished", "diverged"):  # the summary file is the ground truth for a run that is over
            frame = frame[np.array([(self.run_dir(r) / "summary.json").exists() for r in frame["run_id"]], dtype=bool)]
        if status is None:
            frame["status"] = [self.liveness(row) for row in frame.itertuples()]
        return frame.reset_index(drop=True)

    def liveness(self, row: Any) -> str:
        """An index row's status, with a silent `running` run told as `interrupted: <why>; <advice>`."""
        if row.status != "running":
            return row.status
        here = row.host == socket.gethostname()
        if here and row.pid is not None and row.pid == row.pid and not process_alive(int(row.pid)):
            why = f"its process {int(row.pid)} is gone"
        elif row.heartbeat_at is not None and row.heartbeat_at == row.heartbeat_at and time.time() - row.heartbeat_at > STALE_AFTER_S:
            why = f"no heartbeat for {(time.time() - row.heartbeat_at) / 60:.0f} min (process {row.pid} on {row.host})"
        else:
            return "running"
        return f"interrupted: {why}; {self.resume_advice(row.group_id)}"

    def resume_advice(self, group_id: str) -> str:
        if self.checkpoint_path(group_id).exists():
            return f"resume with `offbench run --resume {group_id}`"
        return "no checkpoint: start again"

    def finished_records(self) -> Iterator[RunRecord]:
        for run_id in self.runs("finished")["run_id"]:
            yield self.load(run_id)

    def reindex(self, on_wait: Callable[[], None] | None = None) -> int:
        """Rebuild the index from the run directories (after a lost, damaged or outdated index file); returns the
        number of runs indexed. Waits until no other process has the index open (`index.lock`), calling `on_wait()`
        first when one has."""
        with self._index_lock(exclusive=True, on_wait=on_wait):
            return self._rebuild_index()

    # ---- index internals -----------------------------------------------------------------------

    def _config(self, run_id: str) -> RunConfig:
        config = _parsed(run_id, "config.json", RunConfig.from_dict, self._read(run_id, "config.json"))
        try:  # the group id names the group's checkpoint and lock files: a plain name, never a path
            safe_name("group id", config.group_id)
        except OffbenchError as error:
            raise DamagedRecord(run_id, f"config.json: {error.line()}"[:200]) from None
        return config

    def _read(self, run_id: str, name: str) -> Any:
        path = self.run_dir(run_id) / name
        try:
            if not path.is_file():  # a fifo would block the read forever, a folder is no record
                raise OSError(f"{name} is not a regular file")
            return json.loads(path.read_text(), parse_constant=_refuse_constant)
        except (OSError, ValueError, RecursionError) as error:  # ValueError: not JSON, NaN/Infinity, half-written, not UTF-8
            raise DamagedRecord(run_id, f"{name} is unreadable ({type(error).__name__}: {str(error)[:100]})") from None

    @contextmanager
    def _index_lock(self, exclusive: bool, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold `index.lock`: shared by every process while it has the index open, exclusive while one rebuilds it.
        A rebuild renames a new file over the index; under another process's open connection that would leave the
        connection writing to an unlinked file beside a WAL that belongs to neither (SQLite: disk I/O error or a
        corrupt index). An advisory `flock`, released by the kernel when its holder dies; `on_wait()` is called
        before blocking when another process holds it. Raises one-line `OffbenchError` when it cannot be opened."""
        import fcntl

        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / "index.lock", "a+")  # readable too: NFSv4 grants a shared lock only on a file open for reading
        except OSError as error:
            raise OffbenchError(f"results store {self.root}: cannot open index.lock ({error.strerror})",
                                "pass a --results-dir you can write to") from None
        with handle:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(handle, mode)
            yield  # closing the file releases the lock

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection to a current index, open only inside the block, under the shared index lock (or, when the
        index had to be rebuilt first from the run folders because it was missing while runs exist, unreadable or of
        an older schema, under the exclusive lock the rebuild took). An SQLite failure that is not a damaged file
        (locked past the busy timeout, I/O error, no permission) is one-line `OffbenchError`, never a rebuild."""
        try:
            with self._index_lock(exclusive=False):
                conn = self._open_current()
                if conn is not None:
                    with closing(conn):
                        yield conn
                    return
            with self._index_lock(exclusive=True):
                conn = self._open_current()  # another process may have rebuilt it while this one waited
                if conn is None:
                    self._rebuild_index()
                    conn = self._open(self.index_path)
                with closing(conn):
                    yield conn
        except sqlite3.OperationalError as error:
            raise OffbenchError(f"results store {self.root}: index.sqlite failed ({error})",
                                "check the folder's disk and permissions, then run again") from None

    def _open_current(self) -> sqlite3.Connection | None:
        """The index opened (created when no run exists yet), or None when it must be rebuilt first."""
        # Missing or zero-byte (which would open as a new, empty index) while run folders exist: rebuild. A valid
        # index with no rows is never rebuilt: it is what other processes of a sweep are writing their first rows to.
        lost = not self.index_path.exists() or self.index_path.stat().st_size == 0
        if lost and any(self.runs_dir.glob("*/config.json")):
            return None
        conn = None
        try:
            conn = self._open(self.index_path)
            if {row[1] for row in conn.execute("PRAGMA table_info(runs)")} == set(INDEX_COLUMNS):
                return conn
        except sqlite3.OperationalError:  # locked, I/O, permissions: not damage; the caller reports it
            raise
        except sqlite3.DatabaseError:  # garbage, truncated: the run folders are the ground truth
            pass
        if conn is not None:
            conn.close()
        return None

    def _rebuild_index(self) -> int:
        """Write a new index from the run folders beside the old one and rename it into place (a reader sees the old
        index or the new one, never a missing or half-written file). Call only under the exclusive index lock."""
        rows = []
        for run_dir in sorted(p for p in self.runs_dir.glob("*") if (p / "config.json").exists()):
            try:
                record = self.load(run_dir.name)
            except DamagedRecord as error:  # listed, never counted: `offbench runs --all` shows what is wrong
                rows.append({"run_id": run_dir.name, "status": f"damaged: {error.damage}"})
                continue
            except OffbenchError:  # removed (`runs rm`) since it was listed
                continue
            status = record.summary.status if record.summary is not None else "running"
            started_at = record.provenance.get("started_at")
            last_write = max(_mtimes(run_dir), default=0.0)  # the heartbeat a rebuilt index can know
            provenance = {**record.provenance, "heartbeat_at": last_write}
            rows.append(self._row(record.run_id, record.config, status, record.summary, provenance, started_at))
        fresh = self.index_path.with_name(f".{self.index_path.name}.{os.getpid()}.tmp")
        fresh.unlink(missing_ok=True)
        with closing(self._open(fresh, wal=False)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            for row in rows:
                try:
                    conn.execute(*_upsert_statement(row))
                except (OverflowError, sqlite3.InterfaceError, sqlite3.IntegrityError) as error:  # a value SQLite cannot hold
                    conn.execute(*_upsert_statement({"run_id": row["run_id"], "status": f"damaged: cannot be indexed ({error})"[:300]}))
            conn.execute("COMMIT")
        # The old index's write-ahead log, shared memory and rollback journal go first: SQLite would replay a leftover
        # log or journal (a process killed with the index open) into the new file. None is open under the exclusive lock.
        for suffix in ("-wal", "-shm", "-journal"):
            self.index_path.with_name(self.index_path.name + suffix).unlink(missing_ok=True)
        os.replace(fresh, self.index_path)
        return len(rows)

    def _open(self, path: Path, wal: bool = True) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        with _closed_on_error(conn):
            # Many processes of one sweep write the index at once: WAL lets readers run beside the one writer, and
            # a writer waits for the lock up to the busy timeout instead of failing (SQLITE_BUSY).
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if wal:  # the rebuilt index is written without one and renamed into place; its next opener switches it
                conn.execute("PRAGMA journal_mode = WAL")
            columns = ", ".join(f"{name} {kind}" for name, kind in INDEX_COLUMNS.items())
            conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns})")
        return conn

    def _upsert(self, row: dict[str, Any]) -> None:
        if not self.indexed:
            return
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time; others wait up to the timeout
            conn.execute(*_upsert_statement(row))
            conn.execute("COMMIT")

    @staticmethod
    def _row(
        run_id: str,
        config: RunConfig,
        status: str,
        summary: RunSummary | None = None,
        provenance: dict[str, Any] | None = None,
        started_at: float | None = None,
    ) -> dict[str, Any]:
        row = {
            "run_id": run_id,
            "group_id": config.group_id,
            "algo": config.algo,
            "dataset_id": config.dataset.id,
            "dataset_sha256": config.dataset.sha256,
            "evaluation": config.evaluation["key"],
            "score_kind": config.dataset.score,
            "seed": config.seed,
            **config.protocol.budget,
            "status": status,
            "finished_at": summary and summary.finished_at,
            "final_score": summary and summary.final_score,
            "last_k": summary and summary.last_k,
            "last_k_score": summary and summary.last_k_score,
            "best_score": summary and summary.best_score,
            "steps_per_s": summary and summary.steps_per_s,
            "device": (provenance or {}).get("device"),
        }
        if provenance and "pid" in provenance:
            row |= {"host": provenance.get("hostname"), "pid": provenance["pid"], "heartbeat_at": provenance.get("heartbeat_at", time.time())}
        if started_at is not None:
            row["started_at"] = started_at
        return row


SCORE_KEYS = ("normalized_score", "return_mean", "return_std")


def finite_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A curve entry as stored: every NaN or inf number (also in the per-episode lists) becomes null, and an entry whose
    score or return was not finite is marked `"diverged": true` with null score, return mean and std (as
    `offbench.train.evaluation_entry` writes it): a diverged evaluation is never stored, nor scored, as a number."""
    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return [finite(item) for item in value] if isinstance(value, list) else value

    stored = {key: finite(value) for key, value in entry.items()}
    lost = any(entry.get(key) is not None and stored.get(key) is None for key in SCORE_KEYS)
    lost = lost or any(None in stored.get(key, []) for key in ("returns", "normalized_scores") if isinstance(stored.get(key), list))
    return {**stored, **dict.fromkeys(SCORE_KEYS), "diverged": True} if lost else stored


def is_evaluation(entry: Any) -> bool:
    """A curve entry as `offbench.train.evaluation_entry` writes it: a step in [1, 2**63), and every number in it (scores,
    returns, per-episode lists, training metrics) a float or null: analysis, `eval` and `export` read them as floats."""
    if not isinstance(entry, dict) or not isinstance(step := entry.get("step"), int) or isinstance(step, bool) or not 1 <= step < 2**63:
        return False
    values = [v for value in entry.values() for v in (value if isinstance(value, list) else [value])]
    lists = [entry[key] for key in ("returns", "normalized_scores") if key in entry]
    if not all(isinstance(values, list) and all(v is None or _is_number(v) for v in values) for values in lists):
        return False
    return all(_is_number(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)) and all(
        entry.get(key) is None or _is_number(entry[key]) for key in SCORE_KEYS)


def _is_number(value: Any) -> bool:
    """A number a float holds (finite: the reader refuses NaN and Infinity; an int of 400 digits is none)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


def _refuse_constant(name: str) -> None:
    """json's hook for NaN, Infinity and -Infinity: offbench never writes them, so a record holding one is damaged."""
    raise ValueError(f"non-finite number {name}")


def _mtimes(folder: Path) -> Iterator[float]:
    """Modification times of the files in `folder`, skipping one renamed away meanwhile (an atomic write's temporary file)."""
    for path in folder.iterdir():
        try:
            yield path.stat().st_mtime
        except FileNotFoundError:
            continue


@contextmanager
def _closed_on_error(conn: sqlite3.Connection) -> Iterator[None]:
    try:
        yield
    except BaseException:
        conn.close()
        raise


def _upsert_statement(row: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """SQL and parameters that insert `row`, or update every column but run_id and started_at."""
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    updates = ", ".join(f"{k} = excluded.{k}" for k in row if k not in ("run_id", "started_at"))
    return f"INSERT INTO runs ({names}) VALUES ({marks}) ON CONFLICT(run_id) DO UPDATE SET {updates}", tuple(row.values())
