"""Checks on what is read from data files, which are untrusted input: each array's shape and dtype before it is used.

Every reader in `offbench.data` checks a field with `check_array` before it reshapes, casts or indexes it (on an
h5py dataset or an `.npy` header, before its data are even read), 0/1 flags with `check_flags`, and opens a
file only after `regular_file` has said it is one (a named pipe would block the read forever).

A shape is a tuple of sizes: an int is an exact size; a str names a free size (`"N"`, `"obs_dim"`), which may
be 0 in the first place (rows) and must be at least 1 elsewhere (a feature axis of width 0 holds nothing).
Dtypes are checked by numpy kind: `REAL` (integer or float numbers), `FLAGS` (bool, or numbers that
`check_flags` requires to be 0 or 1), `INTEGER`, or as one exact dtype. Object, string, bytes, complex,
structured and time dtypes are refused wherever a number is expected.

offbench's JSON sidecar beside a dataset it made is read by `read_sidecar`, which checks the types of its keys.
"""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

import numpy as np

from offbench.data.spaces import first_true
from offbench.errors import OffbenchError

REAL = "iuf"  # numpy dtype kinds: signed and unsigned integers, floats
FLAGS = "biuf"  # bool, or numbers that must be 0 or 1 (`check_flags`)
INTEGER = "iu"
KIND_NAMES = {REAL: "real numbers (integer or float)", FLAGS: "bool or 0/1 numbers", INTEGER: "integers"}

Shape = tuple[int | str, ...]
Kinds = str | np.dtype  # numpy dtype kinds ("iuf"), or one exact dtype (np.dtype(np.uint8))
# offbench's JSON sidecar beside a dataset it made (`offbench.json`): the keys readers use, and their JSON types
SIDECAR_KEYS: dict[str, type] = {"env_id": str, "ref_source": str, "eval_wrappers": list, "sha256": str, "recipe": str, "recipe_config": dict,
                                 "requirements": list, "episodes_left_out_at_cap": int}


class Shaped(Protocol):
    """An array or a description of one: np.ndarray, h5py.Dataset, `Header`."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...


class Header(NamedTuple):
    """The shape and dtype an `.npy` header declares, checked before its data are read."""

    shape: tuple[int, ...]
    dtype: np.dtype


def check_array(what: str, name: str, array: Shaped, shape: Shape | list[Shape], kinds: Kinds) -> None:
    """Raise one-line `OffbenchError` "<what>: field '<name>' has shape S and dtype D, expected ..." unless `array` has
    `shape` (or one of several shapes, a list of them) and a dtype of `kinds` (numpy kinds, or one exact dtype)."""
    shapes = shape if isinstance(shape, list) else [shape]
    if not (is_kind(array.dtype, kinds) and any(_fits(tuple(array.shape), expected) for expected in shapes)):
        expected = " or ".join(_describe(s) for s in shapes)
        described = str(kinds) if isinstance(kinds, np.dtype) else KIND_NAMES.get(kinds, kinds)
        raise OffbenchError(f"{what}: field '{name}' has shape {tuple(array.shape)} and dtype {array.dtype}, expected {expected} of {described}")


def common_rows(what: str, fields: Mapping[str, Shaped]) -> int:
    """The number of rows N that `fields` (one row per step each) share: the most common first dimension among them.

    Raises `OffbenchError` naming a field without a rows axis (shape ()) or whose row count is not N, with its shape and dtype,
    so that one field of a different length is the one named, whichever it is.
    """
    scalar = next((name for name, array in fields.items() if len(array.shape) == 0), None)
    if scalar is not None:
        raise OffbenchError(f"{what}: field '{scalar}' has shape () and dtype {fields[scalar].dtype}, expected one row per step")
    n = Counter(array.shape[0] for array in fields.values()).most_common(1)[0][0]
    odd = next((name for name, array in fields.items() if array.shape[0] != n), None)
    if odd is not None:
        raise OffbenchError(f"{what}: field '{odd}' has shape {tuple(fields[odd].shape)} and dtype {fields[odd].dtype}, "
                            f"where the other fields have {n} rows")
    return n


def is_kind(dtype: np.dtype, kinds: Kinds) -> bool:
    """Whether `dtype` is `kinds` (an exact dtype), or a plain (not structured) dtype of a numpy kind in `kinds` (a str)."""
    dtype = np.dtype(dtype)
    if isinstance(kinds, np.dtype):
        return dtype == kinds
    return dtype.kind in kinds and dtype.fields is None


def any_per_row(mask: np.ndarray) -> np.ndarray:
    """(N,) bool: whether any element of each row of the (N, ...) bool `mask` is True (also for N = 0 or an empty row)."""
    return mask.any(axis=tuple(range(1, mask.ndim))) if mask.ndim > 1 else mask


def check_flags(what: str, name: str, array: np.ndarray) -> np.ndarray:
    """`array` (N,) (checked by `check_array` with `FLAGS`) as bool; raises `OffbenchError` naming the first value that is not 0 or 1."""
    if array.dtype == bool:
        return array
    bad = first_true((array != 0) & (array != 1))
    if bad is not None:
        raise OffbenchError(f"{what}: field '{name}' at index {bad} holds {array[bad].tolist()}, expected bool or 0/1 (dtype {array.dtype})")
    return array.astype(bool)


def column(array: np.ndarray) -> np.ndarray:
    """An (N,) or (N, 1) array (checked by `check_array`) as (N,)."""
    return array[:, 0] if array.ndim == 2 else array


def read_npy_header(stream: BinaryIO) -> tuple[Header, bool]:
    """(header, fortran_order) of the `.npy` array `stream` is at, leaving it at the array's data.

    Raises ValueError for bytes that are not an `.npy` header (numpy's own errors: callers say which file in one line).
    """
    version = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = reader(stream)
    return Header(tuple(shape), np.dtype(dtype)), bool(fortran_order)


def npz_headers(archive: np.lib.npyio.NpzFile, what: str) -> dict[str, Header]:
    """The header of each array in an open `.npz` archive, by the name `archive[name]` reads it by, without reading data.

    Raises `OffbenchError` naming a member that is not an `.npy` array (numpy would hand back its raw bytes).
    """
    members = set(archive.zip.namelist())
    headers = {}
    for name in archive.files:
        with archive.zip.open(name if name in members else f"{name}.npy") as stream:  # numpy's own lookup
            try:
                headers[name] = read_npy_header(stream)[0]
            except ValueError as error:
                raise OffbenchError(f"{what}: field '{name}' is not an .npy array ({str(error).splitlines()[0]})") from None
    return headers


def regular_file(path: Path, what: str) -> Path:
    """`path` when it is a regular file (after following links); one-line `OffbenchError` for anything else.

    A named pipe, socket or device would block or never end a read; a folder is not the file asked for.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise OffbenchError(f"{what}: cannot read {path} ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        raise OffbenchError(f"{what}: {path} is {_file_kind(mode)}, not a regular file", "give the path of the data file itself")
    return path


def read_sidecar(path: Path, dataset_id: str) -> dict[str, Any]:
    """The JSON object in offbench's sidecar at `path`, its known keys (`SIDECAR_KEYS`) of their types (`eval_wrappers` and
    `requirements` lists of strings); one-line `OffbenchError` with the fix for anything else."""
    what, fix = f"dataset {dataset_id}", f"remake it with `offbench data make {dataset_id} --force`, or restore the file"
    regular_file(path, what)
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, ValueError):
        sidecar = None
    if not isinstance(sidecar, dict):
        raise OffbenchError(f"{what}: {path} is damaged (not a JSON object)", fix)
    for key, kind in SIDECAR_KEYS.items():
        value = sidecar.get(key)
        if key in sidecar and (not isinstance(value, kind) or isinstance(value, bool) or kind is list and not all(isinstance(v, str) for v in value)):
            expected = "a list of strings" if kind is list else kind.__name__
            raise OffbenchError(f"{what}: key '{key}' of {path} is {json.dumps(value)[:60]}, expected {expected}", fix)
    return sidecar


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _fits(actual: tuple[int, ...], expected: Shape) -> bool:
    if len(actual) != len(expected):
        return False
    return all(size == want if isinstance(want, int) else (size >= 0 if axis == 0 else size >= 1)
               for axis, (size, want) in enumerate(zip(actual, expected)))


def _describe(shape: Shape) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ("," if len(shape) == 1 else "") + ")"
