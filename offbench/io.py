"""Crash-safe file writes (a reader sees the old file or the new one, never half of either) and reads that fail in one line.

Output paths a user names (`--out`, `--video`, `--dest`) are checked before any work by `check_output_path` (a file)
or `check_output_folder` (a folder): what is there is never destroyed. A folder, device node, fifo or socket (or
a symlink to one) is refused; an existing regular file is replaced only with `--force` or when it is recognisably
the command's own earlier output (`is_own_output`, e.g. an export of the same run); a parent that is missing, not
a folder or not writable is said in one line.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import socket
import stat
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


def json_text(obj: Any) -> str:
    """`obj` as the project's JSON text (indented, sorted keys; numpy arrays and paths as lists and strings).

    Raises ValueError for a NaN or inf anywhere in `obj`: JSON has no such number, so a writer says null (and
    why, e.g. `"diverged": true`) itself; a bare `NaN` token would make the file unreadable to strict parsers.
    """
    return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable, allow_nan=False)


def json_number(value: float) -> float | None:
    """`value` as a JSON number, or None (null) when it is NaN or inf."""
    return float(value) if math.isfinite(value) else None


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` to `path` atomically as `json_text`. Raises ValueError (nothing written) for a NaN or inf."""
    try:
        text = json_text(obj)
    except ValueError as error:
        raise ValueError(f"not written: {path} would hold a non-finite number ({error})") from None
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_tensors(path: Path, what: str, advice: str) -> Any:
    """A file of tensors and plain values (`torch.save`: checkpoints, policies, world models, snapshots), on the CPU.

    Such a file is untrusted input (a shared results store, a colleague's archive): it is read with
    `torch.load(weights_only=True)`, which builds tensors, containers and plain values and refuses every other object,
    so no code runs from it; what it holds must still be checked by the caller before use. Raises one-line
    `OffbenchError` ("<what> <path> is ...", then `advice`) when it is missing, not a regular file (a fifo would block
    the read), truncated, foreign or holds anything else.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise OffbenchError(f"{what} {path} is {'not a regular file' if path.exists() else 'missing'}", advice)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch raises many types for a truncated, foreign or code-carrying file)
        raise OffbenchError(f"{what} {path} is unreadable or holds more than tensors and plain values ({type(error).__name__})", advice) from None


def check_optimizer_state(name: str, optimizer: Any) -> None:
    """Raise ValueError unless every per-parameter tensor of a loaded optimiser state (Adam's moments) is a float
    tensor of its parameter's shape and every step count a non-negative scalar: `Optimizer.load_state_dict` checks only
    the number of parameters, so a foreign state would otherwise fail, broadcast or turn complex at the first update."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if not hasattr(value, "shape"):
                    continue
                expected = () if key == "step" else param.shape
                if value.shape != expected or not value.is_floating_point():
                    raise ValueError(f"optimiser {name}: state {key} of shape {tuple(value.shape)} and dtype {value.dtype} "
                                     f"for a parameter of shape {tuple(param.shape)}")
                if key == "step" and not (math.isfinite(float(value)) and float(value) >= 0):  # moments may be NaN: a diverging run
                    raise ValueError(f"optimiser {name}: step count {float(value)} is not a finite non-negative number")


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


# ---- user-named output paths --------------------------------------------------------------------


FILE_KINDS = ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
              (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    """What a file of this `st_mode` is, in words ("a fifo")."""
    return next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")


def check_output_path(path: Path, option: str, force: bool = False, is_own_output: Callable[[Path], bool] | None = None,
                      make_parents: bool = False) -> Path:
    """The file to write the output `option` (e.g. "--out") names, checked before any work; returns the path to write.

    A symlink gives the file it points to (existing or not), so the link stays a link and what it names is written.
    Raises one-line `OffbenchError` when `path` is (or links to) a folder, device node, fifo or socket, or is a loop
    of links; when it is an existing regular file and neither `force` nor `is_own_output(file)` (called for regular
    files only) allows replacing it; or when its folder is missing (unless `make_parents`: then its nearest existing
    ancestor counts), is not a folder or is not writable.
    """
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as error:  # a loop of symlinks, a name too long ...
        raise OffbenchError(f"{option} {path} cannot be used ({error.strerror})", "pick another path") from None
    if mode is not None and not stat.S_ISREG(mode):
        shown = path if target == path else f"{path} (a link to {target})"
        raise OffbenchError(f"{option} {shown} is {_kind(mode)}: offbench writes only regular files", "give the path of a new or regular file")
    if mode is not None and not force and not (is_own_output is not None and is_own_output(target)):
        raise OffbenchError(f"{option} {path} already exists", "pass --force to replace it, or pick another path")
    if make_parents:
        writable_folder(target.parent, f"{option} {path}")
    else:
        _existing_writable_folder(target.parent, f"{option} {path}")
    return target


def check_output_folder(folder: Path, option: str, force: bool = False, is_own_output: Callable[[Path], bool] | None = None) -> Path:
    """The folder to write the output `option` names into, checked before any work (missing folders are made later).

    Raises one-line `OffbenchError` when `folder` is not a folder (a file, device, fifo ...), is not writable, or
    holds files and neither `force` nor `is_own_output(folder)` allows writing among them; when it is missing and
    its nearest existing ancestor is not a writable folder.
    """
    if not folder.exists():
        writable_folder(folder, f"{option} {folder}")
        return folder
    if not folder.is_dir():
        raise OffbenchError(f"{option} {folder} is {_kind(folder.stat().st_mode)}, not a folder", "give the path of a folder")
    _existing_writable_folder(folder, f"{option} {folder}")
    if any(folder.iterdir()) and not force and not (is_own_output is not None and is_own_output(folder)):
        raise OffbenchError(f"{option} {folder} already holds other files", "pass --force to write into it, or pick a new or empty folder")
    return folder


def writable_folder(folder: Path, what: str, advice: str = "pick another path") -> Path:
    """`folder`, when it is a writable folder or can be made in one (its nearest existing ancestor is); else one-line
    `OffbenchError` that starts with `what` and ends with `advice`."""
    ancestor = folder
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    _existing_writable_folder(ancestor, what, advice)
    return folder


def _existing_writable_folder(folder: Path, what: str, advice: str = "create it first or pick another path") -> None:
    if not folder.exists():
        raise OffbenchError(f"{what}: folder {folder} does not exist", advice)
    if not folder.is_dir():
        raise OffbenchError(f"{what}: {folder} is not a folder", advice)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OffbenchError(f"{what}: folder {folder} is not writable", advice)
