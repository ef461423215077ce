"""Run provenance: the code identity recorded is the one the process loaded."""

import subprocess

import torch

from offbench import provenance


def test_a_commit_or_install_during_a_run_does_not_relabel_its_code(monkeypatch) -> None:
    loaded = provenance.collect(torch.device("cpu"))
    assert (loaded["git_commit"], loaded["git_dirty"]) == provenance.git_state()  # nothing changed since import

    def moved_checkout(*args, **kwargs):
        raise AssertionError("collect re-read the checkout")

    monkeypatch.setattr(subprocess, "run", moved_checkout)
    monkeypatch.setattr(provenance, "package_versions", lambda: {"torch": "9.9.9"})
    later = provenance.collect(torch.device("cpu"))
    assert (later["git_commit"], later["git_dirty"], later["packages"]) == (loaded["git_commit"], loaded["git_dirty"], loaded["packages"])
    assert later["packages"]["torch"] and later["packages"]["torch"] != "9.9.9"
