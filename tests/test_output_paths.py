"""Output paths never destroy what is there: every command that writes where the user says refuses a folder, device,
fifo or (a link to) one, replaces an existing file only with --force or when it is its own earlier output, says in
one line what is wrong with a path it cannot use, and does so before any work. JSON never holds a bare NaN."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from analysis_fixtures import write_synthetic_store
from conftest import TINY_ID

from offbench.behavior import dqn
from offbench.behavior.policy import check_export_folder, export_run
from offbench.errors import OffbenchError
from offbench.io import check_output_folder, check_output_path, write_json
from offbench.policy import POLICY_FILE
from offbench.store import ResultsStore
from offbench.train import RunPlan, run

AS_ROOT = os.geteuid() == 0  # root writes into read-only folders: those cases cannot be made


def offbench_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """`offbench ARGS` in this process (so the work can be replaced by a trap): exit code, stdout, stderr."""
    from offbench import cli

    monkeypatch.setattr(sys, "argv", ["offbench", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def trap(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    """Replace the work `target.name` by a function that fails the test if the command gets that far."""
    def work_started(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(f"{name} ran before the output path was refused")

    monkeypatch.setattr(target, name, work_started)


def make_bad_path(folder: Path, kind: str, suffix: str = ".x") -> Path:
    """An output path `folder/out<suffix>` that is a folder, a fifo, a link to a fifo, or in a folder that is missing or a file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"out{suffix}"
    if kind == "folder":
        out.mkdir()
    elif kind in ("fifo", "link-to-fifo"):
        os.mkfifo(folder / "pipe" if kind == "link-to-fifo" else out)
        if kind == "link-to-fifo":
            out.symlink_to(folder / "pipe")
    elif kind == "missing-parent":
        out = folder / "missing" / out.name
    else:  # parent-is-a-file
        (folder / "file").write_text("kept")
        out = folder / "file" / out.name
    return out


BAD_PATHS = {"folder": "is a folder", "fifo": "is a fifo", "link-to-fifo": "is a fifo", "missing-parent": "does not exist",
             "parent-is-a-file": "is not a folder"}


# ---- the shared check ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BAD_PATHS)
def test_a_path_that_is_not_a_writable_file_is_one_line(tmp_path: Path, kind: str) -> None:
    path = make_bad_path(tmp_path, kind)
    with pytest.raises(OffbenchError, match=BAD_PATHS[kind]):
        check_output_path(path, "--out", force=True)


def test_an_existing_file_is_kept_unless_forced_or_its_own_output(tmp_path: Path) -> None:
    path = tmp_path / "out.x"
    path.write_text("kept")
    with pytest.raises(OffbenchError, match="already exists") as refused:
        check_output_path(path, "--out")
    assert "--force" in refused.value.line() and path.read_text() == "kept"
    assert check_output_path(path, "--out", force=True) == path
    assert check_output_path(path, "--out", is_own_output=lambda file: file.read_text() == "kept") == path
    with pytest.raises(OffbenchError, match="already exists"):
        check_output_path(path, "--out", is_own_output=lambda file: False)


def test_a_device_node_is_never_replaced_even_with_force() -> None:
    with pytest.raises(OffbenchError, match="/dev/null is a character device"):
        check_output_path(Path("/dev/null"), "--out", force=True)


def test_a_link_is_followed_so_it_stays_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link.x").symlink_to(tmp_path / "real" / "file.x")  # to a file not made yet
    assert check_output_path(tmp_path / "link.x", "--out") == tmp_path / "real" / "file.x"
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(OffbenchError, match="cannot be used"):
        check_output_path(tmp_path / "loop", "--out", force=True)


def test_missing_folders_are_allowed_only_when_they_will_be_made(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "a" / "b" / "out.x", "--out", make_parents=True) == tmp_path / "a" / "b" / "out.x"
    (tmp_path / "file").write_text("")
    with pytest.raises(OffbenchError, match="is not a folder"):
        check_output_path(tmp_path / "file" / "b" / "out.x", "--out", make_parents=True)


@pytest.mark.skipif(AS_ROOT, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(OffbenchError, match="is not writable"):
        check_output_path(tmp_path / "ro" / "out.x", "--out")
    with pytest.raises(OffbenchError, match="is not writable"):
        check_output_folder(tmp_path / "ro" / "new", "--out")


def test_a_folder_output_is_written_into_when_new_empty_its_own_or_forced(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("kept")
    assert check_output_folder(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert check_output_folder(tmp_path / "empty", "--out") == tmp_path / "empty"
    with pytest.raises(OffbenchError, match="already holds other files"):
        check_output_folder(tmp_path / "other", "--out")
    assert check_output_folder(tmp_path / "other", "--out", is_own_output=lambda folder: True) == tmp_path / "other"
    assert check_output_folder(tmp_path / "other", "--out", force=True) == tmp_path / "other"
    with pytest.raises(OffbenchError, match="notes.txt is a file, not a folder"):
        check_output_folder(tmp_path / "other" / "notes.txt", "--out", force=True)


# ---- JSON ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), torch.tensor([1.0, float("nan")]).numpy()])
def test_write_json_refuses_a_non_finite_number_and_writes_nothing(tmp_path: Path, value: object) -> None:
    path = tmp_path / "record.json"
    path.write_text('{"kept": 1}')
    with pytest.raises(ValueError, match="non-finite"):
        write_json(path, {"score": value})
    assert path.read_text() == '{"kept": 1}' and [p.name for p in tmp_path.iterdir()] == ["record.json"]


# ---- offbench export / eval ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultsStore, list[str]]:
    """A store with two finished TD3+BC runs (seeds 0 and 1) of a few steps."""
    store = ResultsStore(tmp_path_factory.mktemp("outputs") / "results")
    plan = RunPlan("td3bc", TINY_ID, seeds=[0, 1], steps=10, eval_every=10, eval_episodes=2,
                   overrides={"hidden_dims": [16, 16], "batch_size": 16})
    return store, run(plan, store)


@pytest.mark.parametrize("kind", BAD_PATHS)
def test_export_and_eval_refuse_a_bad_path_in_one_line_before_any_work(finished: tuple, tmp_path: Path, kind: str,
                                                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import offbench.policy

    store, (run_id, _) = finished
    trap(monkeypatch, offbench.policy, "load_run_policy")
    export = make_bad_path(tmp_path / "export", kind, ".pt2")
    code, _, err = offbench_cli(monkeypatch, capsys, "export", run_id, "--out", export, "--force", "--results-dir", store.root)
    assert_one_line(code, err, "--out", BAD_PATHS[kind])
    video = make_bad_path(tmp_path / "video", kind, ".mp4")
    code, _, err = offbench_cli(monkeypatch, capsys, "eval", run_id, "--video", video, "--force", "--results-dir", store.root)
    assert_one_line(code, err, "--video", BAD_PATHS[kind])


def test_export_keeps_a_file_unless_forced_or_an_export_of_the_same_run(finished: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    store, (run_id, other_id) = finished
    out = tmp_path / "policy.pt2"
    out.write_text("someone's file")
    with monkeypatch.context() as patched:
        import offbench.policy

        trap(patched, offbench.policy, "load_run_policy")
        code, _, err = offbench_cli(patched, capsys, "export", run_id, "--out", out, "--results-dir", store.root)
    assert_one_line(code, err, f"--out {out} already exists", "--force")
    assert out.read_text() == "someone's file"
    code, stdout, err = offbench_cli(monkeypatch, capsys, "export", run_id, "--out", out, "--force", "--results-dir", store.root)
    assert code == 0, err
    assert f"wrote {out}" in stdout and out.read_bytes()[:2] == b"PK"
    exported = out.read_bytes()
    code, _, err = offbench_cli(monkeypatch, capsys, "export", run_id, "--out", out, "--results-dir", store.root)  # its own export: replaced
    assert code == 0, err
    code, _, err = offbench_cli(monkeypatch, capsys, "export", other_id, "--out", out, "--results-dir", store.root)  # another run's: kept
    assert_one_line(code, err, "already exists")
    assert out.read_bytes()[:2] == b"PK" and len(out.read_bytes()) == len(exported)
    link = tmp_path / "link.pt2"
    link.symlink_to(out)
    code, _, err = offbench_cli(monkeypatch, capsys, "export", run_id, "--out", link, "--results-dir", store.root)
    assert code == 0 and link.is_symlink(), err  # written through the link, which stays


def test_eval_keeps_an_existing_video_unless_forced_and_checks_before_any_episode(finished: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("imageio_ffmpeg")
    import offbench.policy

    store, (run_id, _) = finished
    video = tmp_path / "episode.mp4"
    video.write_text("someone's video")
    trap(monkeypatch, offbench.policy, "evaluate_episodes")
    code, _, err = offbench_cli(monkeypatch, capsys, "eval", run_id, "--video", video, "--results-dir", store.root)
    assert_one_line(code, err, f"--video {video} already exists", "--force")
    assert video.read_text() == "someone's video"
    with pytest.raises(AssertionError, match="evaluate_episodes ran"):  # with --force the path passes and the episodes start
        offbench_cli(monkeypatch, capsys, "eval", run_id, "--video", video, "--force", "--results-dir", store.root)
    assert video.read_text() == "someone's video"  # the failed evaluation left it as it was


def test_eval_of_a_policy_that_returns_nan_is_recorded_as_diverged(finished: tuple, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store, (run_id, _) = finished
    nan_run = "nan-policy-run"
    shutil.copytree(store.run_dir(run_id), store.run_dir(nan_run))
    state = torch.load(store.run_dir(nan_run) / POLICY_FILE, weights_only=True)
    first = next(iter(state["module"]))
    state["module"][first] = torch.full_like(state["module"][first], float("nan"))  # every action becomes NaN
    state["run_id"] = nan_run  # the copy's own policy file
    torch.save(state, store.run_dir(nan_run) / POLICY_FILE)
    code, stdout, err = offbench_cli(monkeypatch, capsys, "eval", nan_run, "--results-dir", store.root)
    assert code == 0, err
    assert stdout.splitlines()[0] == f"{nan_run}: diverged: an episode's return was NaN or inf (2 episodes, seed 0); no return or score"
    assert "nan ±" not in stdout and "score nan" not in stdout  # no return or score printed as nan
    [record_path] = (store.run_dir(nan_run) / "evaluations").iterdir()
    record = json.loads(record_path.read_text(), parse_constant=lambda token: pytest.fail(f"bare {token} in {record_path}"))
    assert record["diverged"] is True and record["return_mean"] is None and record["normalized_score"] is None
    assert None in record["returns"] and record["matches_last_evaluation"] is False


# ---- offbench report --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> ResultsStore:
    return write_synthetic_store(tmp_path_factory.mktemp("report-store") / "results", {("td3bc", "local/hopper-random-v5"): 40.0}, range(2), n_evals=3)


def report(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: ResultsStore, out: Path, *extra: str) -> tuple[int, str, str]:
    return offbench_cli(monkeypatch, capsys, "report", "--results-dir", store.root, "--reps", 100, "--out", out, *extra)


def trap_report(monkeypatch: pytest.MonkeyPatch) -> None:
    import offbench.analysis.report

    trap(monkeypatch, offbench.analysis.report, "collect_scores")


def test_report_writes_into_another_folder_only_with_force_and_rewrites_its_own(small_store: ResultsStore, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("kept")
    with monkeypatch.context() as patched:
        trap_report(patched)
        code, _, err = report(patched, capsys, small_store, out)
    assert_one_line(code, err, f"--out {out} already holds other files", "--force")
    assert [p.name for p in out.iterdir()] == ["notes.md"]
    code, _, err = report(monkeypatch, capsys, small_store, out, "--force")
    assert code == 0, err
    assert (out / "notes.md").read_text() == "kept" and (out / "report.md").is_file()
    code, _, err = report(monkeypatch, capsys, small_store, out)  # an earlier report's folder: written again
    assert code == 0, err


@pytest.mark.parametrize("kind", ["file", "fifo", "link-to-fifo", "report-file-is-a-fifo", "ancestor-is-a-file"])
def test_report_refuses_a_bad_folder_in_one_line_before_computing(small_store: ResultsStore, tmp_path: Path, kind: str,
                                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("kept")
    elif kind in ("fifo", "link-to-fifo"):
        os.mkfifo(tmp_path / "pipe")
        out.symlink_to(tmp_path / "pipe") if kind == "link-to-fifo" else (tmp_path / "pipe").rename(out)
    elif kind == "report-file-is-a-fifo":
        (out / "tables").mkdir(parents=True)
        os.mkfifo(out / "tables" / "per_dataset.csv")
    else:
        (tmp_path / "file").write_text("kept")
        out = tmp_path / "file" / "out"
    trap_report(monkeypatch)
    code, _, err = report(monkeypatch, capsys, small_store, out, "--force")
    assert_one_line(code, err, "--out", "is a fifo" if "fifo" in kind else "not a folder")


# ---- behaviour-policy exports -----------------------------------------------------------------------


def fake_dqn_run(folder: Path) -> Path:
    """A DQN run folder as `export_partial` reads it: log.json and two snapshot files."""
    (folder / "snapshots").mkdir(parents=True)
    snapshots = [{"env_steps": step, "updates": step, "return_mean": float(step), "return_std": 0.0, "episodes": 1, "seed": 0, "epsilon": 0.0}
                 for step in (0, 100)]
    for entry in snapshots:
        (folder / "snapshots" / f"step_{entry['env_steps']:07d}.pt").write_bytes(b"snapshot %d" % entry["env_steps"])
    (folder / "log.json").write_text(json.dumps({"config": {"env": "CartPole-v1", "steps": 100}, "command": "test", "wall_s": 1.0,
                                                 "snapshots": snapshots}))
    return folder


def test_the_dqn_export_keeps_a_file_unless_forced_or_an_earlier_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, dest = fake_dqn_run(tmp_path / "run"), tmp_path / "policy.pt"
    dest.write_text("someone's file")
    with pytest.raises(SystemExit) as stopped:
        dqn.main(["export", "--run", str(run_dir), "--dest", str(dest), "--target-return", "90"])
    assert_one_line(stopped.value.code, capsys.readouterr().err, "already exists", "--force")
    assert dest.read_text() == "someone's file" and not dest.with_suffix(".json").exists()
    dqn.main(["export", "--run", str(run_dir), "--dest", str(dest), "--target-return", "90", "--force"])
    assert dest.read_bytes() == b"snapshot 100"
    assert dqn.export_partial(run_dir, dest, 10.0)["env_steps"] == 0  # an earlier export (its card holds its hash): replaced
    dest.write_bytes(b"changed since")  # no longer the file its card describes
    with pytest.raises(OffbenchError, match="already exists"):
        dqn.export_partial(run_dir, dest, 10.0)


@pytest.mark.parametrize("kind", ["folder", "fifo", "link-to-fifo", "parent-is-a-file"])
def test_the_dqn_export_refuses_a_bad_path_before_reading_the_run(tmp_path: Path, kind: str) -> None:
    dest = make_bad_path(tmp_path, kind)
    with pytest.raises(OffbenchError, match=BAD_PATHS[kind]):
        dqn.export_partial(tmp_path / "no-such-run", dest, 0.0, force=True)  # the run is never read: no FileNotFoundError


def sac_export_exists(dest: Path, write: Callable[[Path], None]) -> Path:
    dest.mkdir()
    write(dest)
    return dest


def test_the_sac_export_writes_into_a_folder_of_other_files_only_with_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from offbench.behavior import policy

    dest = sac_export_exists(tmp_path / "hopper", lambda d: (d / "README").write_text("kept"))
    with pytest.raises(SystemExit) as stopped:
        policy.main(["export", "--run", str(tmp_path / "no-such-run"), "--dest", str(dest), "--expert-target", "1"])
    assert_one_line(stopped.value.code, capsys.readouterr().err, "already holds other files", "--force")
    assert check_export_folder(dest, force=True) == dest
    earlier = sac_export_exists(tmp_path / "earlier", lambda d: (d / "medium.json").write_text(json.dumps({"trainer": policy.TRAINER + " (SAC)"})))
    assert check_export_folder(earlier) == earlier


@pytest.mark.parametrize("kind", ["file", "replay-is-a-file", "card-is-a-fifo"])
def test_the_sac_export_refuses_a_bad_folder_before_reading_the_run(tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "hopper"
    if kind == "file":
        dest.write_text("kept")
    else:
        dest.mkdir()
        (dest / "replay").write_text("kept") if kind == "replay-is-a-file" else os.mkfifo(dest / "medium.json")
    with pytest.raises(OffbenchError, match="not a folder" if kind != "card-is-a-fifo" else "is a fifo"):
        export_run(tmp_path / "no-such-run", dest, 1.0, force=True)


# ---- offbench data make ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["data-dir-is-a-file", "data-dir-in-a-file"] + ([] if AS_ROOT else ["read-only"]))
def test_data_make_refuses_an_unwritable_data_folder_before_making(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import offbench.data.registry

    if kind == "read-only":
        data = tmp_path / "data"
        data.mkdir(mode=0o500)
    else:
        (tmp_path / "file").write_text("kept")
        data = tmp_path / "file" if kind == "data-dir-is-a-file" else tmp_path / "file" / "data"
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(data))
    trap(monkeypatch, offbench.data.registry, "make_dataset")
    code, _, err = offbench_cli(monkeypatch, capsys, "data", "make", "local/hopper-random-v5")
    assert_one_line(code, err, "cannot make a dataset", "OFFBENCH_DATA_DIR", "is not writable" if kind == "read-only" else "is not a folder")
