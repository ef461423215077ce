"""Run provenance: the code identity recorded is the one the process loaded, and a checkout that moved since is flagged."""

import pytest
import torch

from offbench import provenance
from offbench.train import _after_earlier_segments


def test_a_commit_or_install_during_a_run_does_not_relabel_its_code_and_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded_commit, loaded_dirty = provenance._LOADED_COMMIT, provenance._LOADED_DIRTY
    monkeypatch.setattr(provenance, "git_state", lambda: (loaded_commit, loaded_dirty))
    unchanged = provenance.collect(torch.device("cpu"))
    assert (unchanged["git_commit"], unchanged["git_dirty"]) == (loaded_commit, loaded_dirty) and "git_checkout_now" not in unchanged

    monkeypatch.setattr(provenance, "git_state", lambda: ("b" * 40, False))  # committed or checked out while training
    monkeypatch.setattr(provenance, "package_versions", lambda: {"torch": "9.9.9"})  # installed while training
    moved = provenance.collect(torch.device("cpu"))
    assert (moved["git_commit"], moved["git_dirty"], moved["git_checkout_now"]) == (loaded_commit, True, {"commit": "b" * 40, "dirty": False})
    assert moved["packages"] == unchanged["packages"] and moved["packages"]["torch"] != "9.9.9"


def test_each_resume_keeps_the_earlier_segments_start_code_and_machine() -> None:
    first = {"started_at": 1.0, "git_commit": "a" * 40, "git_dirty": False, "hostname": "box-1", "pid": 11, "logs": {}}
    second = _after_earlier_segments(first, {"started_at": 5.0, "git_commit": "b" * 40, "git_dirty": False, "hostname": "box-2", "pid": 12})
    third = _after_earlier_segments(second, {"started_at": 9.0, "git_commit": "c" * 40, "git_dirty": True, "hostname": "box-2", "pid": 13})
    assert (third["started_at"], third["segment_started_at"], third["git_commit"], third["pid"]) == (1.0, 9.0, "c" * 40, 13)
    assert third["earlier_segments"] == [{"started_at": 1.0, "git_commit": "a" * 40, "git_dirty": False, "hostname": "box-1"},
                                         {"started_at": 5.0, "git_commit": "b" * 40, "git_dirty": False, "hostname": "box-2"}]
