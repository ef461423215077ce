"""Where a number came from: code version, packages, hardware, command."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("offbench", "torch", "numpy", "gymnasium", "mujoco", "minari", "h5py", "pandas", "rliable")


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the offbench source checkout, or (None, None) for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict[str, Any]:
    import os

    return {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def code_identity() -> dict[str, Any]:
    """The commit, dirty flag and package versions of the code this process loaded: read once, when this module was
    imported, so that a commit, checkout or install made while a run trains does not relabel it. A checkout that
    has moved since then is recorded (`git_checkout_now`) and the run counted as dirty, since modules imported
    later (an algorithm, a recipe) may come from the new checkout."""
    identity: dict[str, Any] = {"git_commit": _LOADED_COMMIT, "git_dirty": _LOADED_DIRTY, "packages": dict(_LOADED_PACKAGES)}
    commit, dirty = git_state()
    if (commit, dirty) != (_LOADED_COMMIT, _LOADED_DIRTY):
        identity |= {"git_dirty": True, "git_checkout_now": {"commit": commit, "dirty": dirty}}
    return identity


def collect(device: torch.device) -> dict[str, Any]:
    """Provenance of a run's record (`code_identity`, hardware, command)."""
    return {
        **code_identity(),
        **hardware(device),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "command": sys.argv,
    }


# read once at import (train.py imports this module with the training code): see code_identity
_LOADED_COMMIT, _LOADED_DIRTY = git_state()
_LOADED_PACKAGES = package_versions()
