"""Results store: atomic records, unfinished runs never listed as finished, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from offbench.errors import OffbenchError
from offbench.records import RunConfig, RunSummary
from offbench.store import ResultsStore


def config_for(run_id: str, seed: int = 0) -> dict:
    return {
        "run_id": run_id, "group_id": run_id.rsplit("-s", 1)[0], "algo": "td3bc", "seed": seed,
        "dataset": {"id": "local/hopper-random-v5", "sha256": "ab" * 32},
        "protocol": {"steps": 10, "eval_every": 5, "eval_episodes": 2},
    }


def write_run(root: Path, run_id: str, score: float = 1.0) -> None:
    store = ResultsStore(root)
    store.start_run(run_id, RunConfig.from_dict(config_for(run_id)), {"started_at": 0.0})
    store.write_curve(run_id, [{"step": 5, "normalized_score": score}, {"step": 10, "normalized_score": score}])
    summary = {"final_score": score, "last10_score": score, "best_score": score, "steps_per_s": 1.0, "finished_at": 1.0}
    store.finish_run(run_id, RunSummary.from_dict(summary), {"device": "cpu"})


def test_finished_and_unfinished_runs(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    write_run(tmp_path, "a-s0", 3.0)
    store.start_run("b-s0", RunConfig.from_dict(config_for("b-s0")), {"started_at": 0.0})
    finished = store.runs()
    assert list(finished["run_id"]) == ["a-s0"]
    assert finished.loc[0, "final_score"] == 3.0
    assert set(store.runs(status=None)["run_id"]) == {"a-s0", "b-s0"}
    assert not store.load("b-s0").finished and store.load("a-s0").finished
    store.mark_failed("b-s0", "killed")
    assert store.runs(status=None).set_index("run_id").loc["b-s0", "status"].startswith("failed: killed")


def test_a_row_without_its_summary_file_is_not_finished(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    write_run(tmp_path, "a-s0")
    (store.run_dir("a-s0") / "summary.json").unlink()
    assert store.runs().empty


def test_finished_run_cannot_be_restarted(tmp_path: Path) -> None:
    write_run(tmp_path, "a-s0")
    with pytest.raises(OffbenchError, match="already finished"):
        ResultsStore(tmp_path).start_run("a-s0", RunConfig.from_dict(config_for("a-s0")), {})


def test_reindex_rebuilds_a_lost_index(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    write_run(tmp_path, "a-s0", 2.0)
    store.start_run("b-s0", RunConfig.from_dict(config_for("b-s0")), {"started_at": 0.0})
    store.index_path.unlink()
    assert store.reindex() == 2
    assert list(store.runs()["run_id"]) == ["a-s0"]
    assert store.runs()["final_score"].tolist() == [2.0]


def test_an_index_of_an_older_schema_is_rebuilt_from_the_run_folders(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    write_run(tmp_path, "a-s0", 2.0)
    store.index_path.unlink()
    with closing(sqlite3.connect(store.index_path)) as conn:  # the schema before last-k: a last10_score column
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, algo TEXT, status TEXT, last10_score REAL)")
        conn.execute("INSERT INTO runs VALUES ('stale', 'td3bc', 'finished', 1.0)")
        conn.commit()
    frame = store.runs()
    assert frame["run_id"].tolist() == ["a-s0"] and frame["last_k"].tolist() == [10] and frame["last_k_score"].tolist() == [2.0]


def test_plain_mappings_are_read_through_the_schema(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.start_run("a-s0", config_for("a-s0"), {})
    store.write_curve("a-s0", [{"step": 10, "normalized_score": 4.0}])  # a finished run has evaluated: an empty curve is damage
    store.finish_run("a-s0", {"final_score": 4.0, "finished_at": 1.0}, {})
    record = store.load("a-s0")
    assert isinstance(record.config, RunConfig) and record.summary.final_score == 4.0 and record.summary.best_score is None


def test_records_written_before_the_typed_schema_still_load(tmp_path: Path) -> None:
    write_run(tmp_path, "a-s0", 2.0)
    record = ResultsStore(tmp_path).load("a-s0")
    assert record.config.protocol.sampler == "uniform" and record.config.protocol.steps == 10
    assert (record.summary.last_k, record.summary.last_k_score) == (10, 2.0)  # read from the legacy last10_score


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    write_run(tmp_path, "a-s0")
    assert sorted(p.name for p in (tmp_path / "runs" / "a-s0").iterdir()) == ["config.json", "curve.json", "provenance.json", "summary.json"]


def _writer(root: str, prefix: str, count: int, start: Any = None) -> None:
    if start is not None:
        start.wait(timeout=180)  # every writer's first run at the same moment
    for i in range(count):
        write_run(Path(root), f"{prefix}{i}-s0", float(i))


def test_two_processes_writing_at_once_corrupt_nothing(tmp_path: Path) -> None:
    context = mp.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(tmp_path), prefix, 15)) for prefix in ("x", "y")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    frame = ResultsStore(tmp_path).runs()
    assert len(frame) == 30
    assert sorted(frame["final_score"]) == sorted([float(i) for i in range(15)] * 2)


def test_processes_starting_at_once_on_a_new_store_all_index_their_runs(tmp_path: Path) -> None:
    """Each writes its run folder, finds no index and rebuilds one: the rebuilds never swap the file under another's
    open connection (which SQLite answered with `disk I/O error`)."""
    context = mp.get_context("spawn")
    roots = [tmp_path / f"store{i}" for i in range(3)]
    start = context.Barrier(12)
    workers = [context.Process(target=_writer, args=(str(root), prefix, 3, start)) for root in roots for prefix in "wxyz"]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=240)
            assert worker.exitcode == 0
    finally:
        for worker in workers:
            worker.kill()
    for root in roots:
        assert len(ResultsStore(root).runs()) == 12


def test_a_rebuild_waits_until_no_connection_is_open(tmp_path: Path) -> None:
    write_run(tmp_path, "a-s0")
    store = ResultsStore(tmp_path)
    waited = threading.Event()
    rebuild = threading.Thread(target=ResultsStore(tmp_path).reindex, kwargs={"on_wait": waited.set})
    with store._connection():
        inode = store.index_path.stat().st_ino
        rebuild.start()
        rebuild.join(timeout=0.5)
        assert rebuild.is_alive() and waited.is_set() and store.index_path.stat().st_ino == inode
    rebuild.join(timeout=30)
    assert not rebuild.is_alive() and store.index_path.stat().st_ino != inode
    assert list(store.runs()["run_id"]) == ["a-s0"]


def test_a_file_renamed_away_while_a_rebuild_reads_the_folder_is_skipped(tmp_path: Path) -> None:
    write_run(tmp_path, "a-s0")
    (tmp_path / "runs" / "a-s0" / ".curve.json.x1.tmp").symlink_to("gone")  # listed, then gone when its time is read
    assert ResultsStore(tmp_path).reindex() == 1


def test_an_index_that_fails_without_being_damaged_is_one_line_and_never_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path, "a-s0")
    store = ResultsStore(tmp_path)

    def failing(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_open", failing)
    monkeypatch.setattr(store, "_rebuild_index", lambda: pytest.fail("rebuilt an index that is not damaged"))
    with pytest.raises(OffbenchError, match=r"index.sqlite failed \(disk I/O error\)"):
        store.runs()


def test_a_write_ahead_log_left_by_a_killed_process_is_never_replayed_into_a_rebuilt_index(tmp_path: Path) -> None:
    write_run(tmp_path, "a-s0")
    store = ResultsStore(tmp_path)
    wal = store.index_path.with_name("index.sqlite-wal")
    with closing(sqlite3.connect(store.index_path, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("UPDATE runs SET status = 'ghost'")
        left_behind = wal.read_bytes()  # what a process killed now leaves beside the index
    wal.write_bytes(left_behind)
    store.reindex()
    assert list(store.runs(status=None)["status"]) == ["finished"]


def test_a_status_no_run_has_gives_an_empty_frame_with_the_index_columns(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.start_run("a-s0", config_for("a-s0"), {})
    assert store.runs().empty and "run_id" in store.runs().columns and list(store.finished_records()) == []


def test_a_valid_empty_index_is_never_rebuilt_under_writers_but_a_zero_byte_one_is(tmp_path: Path, monkeypatch) -> None:
    """A sweep's driver creates the index empty; workers write run folders first and index them next: rebuilding
    the empty index then would swap the file under another worker's open connection and lose its row."""
    write_run(tmp_path / "elsewhere", "a-s0")
    store = ResultsStore(tmp_path / "store")
    store.open_index()
    shutil.copytree(tmp_path / "elsewhere" / "runs" / "a-s0", store.run_dir("a-s0"))  # a folder not indexed yet
    monkeypatch.setattr(store, "_rebuild_index", lambda: pytest.fail("a valid empty index was rebuilt"))
    assert store.runs(status=None).empty
    monkeypatch.undo()
    store.index_path.write_bytes(b"")  # a zero-byte file: lost, rebuilt from the folders
    assert list(store.runs()["run_id"]) == ["a-s0"]
