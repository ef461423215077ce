"""Where offbench keeps data, results and its shipped resources."""

from __future__ import annotations

import os
import re
from pathlib import Path

from offbench.errors import OffbenchError
from offbench.io import writable_folder

SAFE_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9_.+=-]*")


def safe_name(kind: str, name: str) -> str:
    """`name` when it can only name a file or folder inside its parent: letters, digits and `_.+=-`, not
    starting with "." (so no "..", no hidden file, no "/"); else one-line `OffbenchError` naming `kind`."""
    if not SAFE_NAME.fullmatch(name):
        raise OffbenchError(f"{name!r} is not a valid {kind}: use letters, digits and _ . + = - (no '/', not starting with '.')")
    return name


def data_dir() -> Path:
    """Root of offbench's dataset storage: `$OFFBENCH_DATA_DIR`, else `~/.offbench/data`."""
    return Path(os.environ.get("OFFBENCH_DATA_DIR", Path.home() / ".offbench" / "data")).expanduser()


def check_data_dir(location: Path | None = None) -> Path:
    """`data_dir()`, checked before a dataset is made in it: it, and the folder of the dataset's `location` in it
    when given, must be writable folders or makeable in one. Raises one-line `OffbenchError` naming the folder."""
    root = data_dir()
    advice = "set OFFBENCH_DATA_DIR to a writable folder"
    writable_folder(root, f"cannot make a dataset in the data folder {root} ($OFFBENCH_DATA_DIR, default ~/.offbench/data)", advice)
    if location is not None:
        writable_folder(location.parent, f"cannot make a dataset in {location.parent}", advice)
    return root


def results_dir(override: str | Path | None = None) -> Path:
    """The results store: `--results-dir`, else `$OFFBENCH_RESULTS_DIR`, else `./results`."""
    if override is not None:
        return Path(override).expanduser()
    return Path(os.environ.get("OFFBENCH_RESULTS_DIR", "results")).expanduser()


def resource_dir(name: str) -> Path:
    """A shipped data folder (`baselines`, `datasets`): the source checkout's, else the wheel's copy."""
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "_resources" / name
