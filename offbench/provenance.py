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


def collect(device: torch.device) -> dict[str, Any]:
    """Provenance of a run's record. The code identity is the process's, never re-read: a commit, checkout or
    install made while a run trains must not relabel the code that trained it."""
    return {
        "git_commit": _LOADED_COMMIT,
        "git_dirty": _LOADED_DIRTY,
        "packages": dict(_LOADED_PACKAGES),
        **hardware(device),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "command": sys.argv,
    }


# The code this process runs, read once when offbench.provenance is imported (train.py imports it with the training
# modules): the checkout's commit and dirty flag, and the package versions.
_LOADED_COMMIT, _LOADED_DIRTY = git_state()
_LOADED_PACKAGES = package_versions()
