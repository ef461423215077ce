"""Crash-safe file writes (a reader sees the old file or the new one, never half of either) and reads that fail in one line."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
import tomllib
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offbench.errors import OffbenchError


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    `suffix` ends the temporary file's name, for writers that pick a format by extension (".mp4").
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a store shared with teammates needs the user's umask
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def staging_folder(folder: Path) -> Path:
    """A new, empty hidden folder beside `folder` (`.<name>.making-<host>-<pid>`) to write its next version in,
    then `replace_folder` it into place. Those a killed make of this host left behind are removed first
    (`remove_dead_staging`)."""
    prefix = f".{folder.name}.making-"
    remove_dead_staging(folder.parent, prefix)
    staging = folder.with_name(prefix + staging_tag())
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def staging_tag() -> str:
    """`<host>-<pid>`: whose a staging folder is, checkable by `remove_dead_staging`."""
    return f"{socket.gethostname()}-{os.getpid()}"


def remove_dead_staging(parent: Path, prefix: str) -> None:
    """Remove the folders `<parent>/<prefix><host>-<pid>` of this host whose process no longer runs.

    Another host's are left alone: its pids cannot be checked from here (a data folder can be shared). A folder
    named `<prefix><pid>` (offbench's name before the host was added) counts as this host's.
    """
    mine = f"{prefix}{socket.gethostname()}-"
    for folder in parent.glob(f"{glob.escape(prefix)}*"):
        # `<prefix><pid>`: the name offbench used before the host was added (taken as this host's)
        pid = folder.name.removeprefix(mine) if folder.name.startswith(mine) else folder.name.removeprefix(prefix)
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def replace_folder(staged: Path, folder: Path) -> None:
    """Rename the complete folder `staged` to `folder` (same filesystem), replacing a folder already there.

    The old folder is first renamed aside (`.<name>.retired`) in one step and removed last, so a reader, or a kill
    at any moment, finds the old folder, the new one or none, never one half removed; a retired folder a killed
    replace left behind is removed by the next one. Raises one-line `OffbenchError` when a rename fails (another
    process making the same folder at once).
    """
    retired = folder.with_name(f".{folder.name}.retired")
    shutil.rmtree(retired, ignore_errors=True)
    try:
        if folder.exists():
            os.replace(folder, retired)
        os.replace(staged, folder)
    except OSError as error:
        raise OffbenchError(f"cannot put {folder} in place ({error.strerror})", "is another process making it? run again when it is done") from None
    shutil.rmtree(retired, ignore_errors=True)


# What reading a damaged, truncated or foreign .npy/.npz/gzip file raises (numpy, zipfile, gzip, zlib): readers catch
# these to say one line, never a traceback. zipfile.BadZipFile covers a bad CRC of an .npz member; gzip's is an OSError.
ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable)))


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file offbench ships or the user wrote; one-line `OffbenchError` when it cannot be read or parsed."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: TOMLDecodeError, or bytes that are not UTF-8
        raise OffbenchError(f"{path} is not a readable TOML file ({str(error).splitlines()[0]})",
                            "restore it (e.g. `git checkout -- FILE` for a shipped one)") from None


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
