"""Reading .npy / .npz files as arrays of rows, without loading them whole and without unpickling.

Input files are data, never code: ``.npy`` headers are parsed with NumPy's format reader,
object dtypes are refused before any data is read, and nothing is ever unpickled
(``allow_pickle=False``). ``.npy`` files and uncompressed ``.npz`` members are
memory-mapped; compressed ``.npz`` members are decompressed batch by batch; no input is
loaded whole. Every problem with a file is an :class:`InputError` whose message names the
file and what is wrong with it (the command line prints it as one line and exits with 2).
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zipfile
import zlib
from typing import Any, Literal

import numpy as np

__all__ = ["InputError", "close", "open_array", "require_kind"]


class InputError(Exception):
    """Bad input (a file, an option, a shape): reported as one line on stderr, exit code 2."""


# What zipfile and zlib raise on a damaged archive or member: bad sizes, CRCs and offsets, an unknown
# compression method or flags (NotImplementedError), "encrypted" (RuntimeError), a name that does not decode.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    OverflowError,
)


def _npy_header(f, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an open .npy stream, refusing anything that is not plain numbers.

    The header is parsed by NumPy's own readers (``numpy.lib.format``: a literal parser, never ``eval``); whatever
    they raise on a damaged header (ValueError, but also tokenize and syntax errors, unknown dtype codes, ...)
    becomes one :class:`InputError`, as does a header that parses but cannot describe an array (negative sizes).
    """
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise InputError(
            f"{what}: not a .npy file (it does not start with the NPY magic string); "
            f"pickles and other formats are refused, never unpickled"
        ) from None
    # Version 3.0 differs from 2.0 only in decoding the header as UTF-8, not Latin-1: the same for every header
    # that describes plain numbers (non-ASCII appears only in the field names of structured dtypes, refused below).
    two = np.lib.format.read_array_header_2_0
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): two, (3, 0): two}
    if version not in readers:
        raise InputError(
            f"{what}: unsupported .npy format version {version[0]}.{version[1]} (expected 1.0, 2.0 or 3.0)"
        )
    try:
        with warnings.catch_warnings():
            # NumPy warns when a header needed its Python 2 fix-up ("1L"); such a header is still read exactly.
            warnings.simplefilter("ignore", UserWarning)
            shape, fortran, dtype = readers[version](f)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        raise  # the container, not the header: the caller names it
    except Exception as err:  # a damaged header can make NumPy's parser raise almost anything
        text = " ".join(str(err).split()) or type(err).__name__
        detail = text if len(text) <= 120 else text[:117] + "..."
        raise InputError(f"{what}: corrupt .npy header ({detail!r}); write the file again with np.save") from None
    if any(n < 0 for n in shape):
        raise InputError(f"{what}: corrupt .npy header (negative dimension in shape {shape}); write the file again")
    if math.prod(n for n in shape if n) * max(dtype.itemsize, 1) >= 2**63:
        raise InputError(f"{what}: corrupt .npy header (shape {shape} of {dtype} exceeds 2^63 bytes)")
    if dtype.hasobject:
        raise InputError(
            f"{what}: holds Python objects (dtype {dtype}); refused: jaxloss reads numbers only and "
            f"never unpickles (allow_pickle=False)"
        )
    return tuple(shape), fortran, dtype


def _expect_bytes(what: str, shape, dtype: np.dtype, available: int) -> None:
    needed = math.prod(shape) * dtype.itemsize
    if available < needed:
        raise InputError(
            f"{what}: truncated: the header promises shape {shape} of {dtype} ({needed:,} bytes of data), "
            f"the file holds {max(available, 0):,}"
        )


def _open_npy(path: str, what: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _npy_header(f, what)
            offset = f.tell()
        _expect_bytes(what, shape, dtype, os.path.getsize(path) - offset)
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)  # nothing to map
        # The header just parsed, mapped as np.load(mmap_mode="r") would (which would parse it a second time).
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    except OSError as err:
        raise InputError(f"{what}: cannot read {path} ({err.strerror or err})") from None


class _ZipRows:
    """Rows of a compressed .npz member, decompressed in order, one requested slice at a time."""

    def __init__(self, path: str, member: str, what: str, shape, dtype: np.dtype, data_offset: int):
        self.path, self.member, self.what = path, member, what
        self.shape, self.dtype, self.ndim = tuple(shape), dtype, len(shape)
        self.row_bytes = math.prod(self.shape[1:]) * dtype.itemsize
        self.data_offset = data_offset
        self._archive: zipfile.ZipFile | None = None
        self._file: Any = None  # the member's decompressing stream, opened on first read
        self._next = 0  # the row the open stream is positioned at

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, n: int) -> bytes:
        try:
            data = self._file.read(n)
        except _ZIP_ERRORS as err:
            raise InputError(f"{self.what}: corrupt compressed data ({err})") from None
        if len(data) < n:
            raise InputError(f"{self.what}: truncated: the compressed data ends before the rows its header promises")
        return data

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("rows of a compressed .npz member are read as contiguous slices")
        start, stop, _ = index.indices(self.shape[0])
        stop = max(stop, start)
        if self._file is None or start < self._next:
            self.close()
            try:
                self._archive = zipfile.ZipFile(self.path)
                self._file = self._archive.open(self.member)
            except _ZIP_ERRORS as err:
                raise InputError(f"{self.what}: corrupt .npz archive ({err})") from None
            self._read(self.data_offset)
            self._next = 0
        if start > self._next:
            self._read((start - self._next) * self.row_bytes)
        data = self._read((stop - start) * self.row_bytes)
        self._next = stop
        # In the file's byte order; jaxloss.streaming converts each batch to the native one.
        return np.frombuffer(data, self.dtype).reshape((stop - start, *self.shape[1:]))

    def close(self) -> None:
        for handle in (self._file, self._archive):
            if handle is not None:
                handle.close()
        self._archive = self._file = None


def _open_npz(path: str, key: str | None, what: str):
    try:
        archive = zipfile.ZipFile(path)
    except OSError as err:
        raise InputError(f"{what}: cannot read {path} ({err.strerror or err})") from None
    except _ZIP_ERRORS:
        raise InputError(f"{what}: not a valid .npz archive (corrupt or truncated zip file)") from None
    with archive:
        try:
            return _npz_member(archive, path, key, what)
        except _ZIP_ERRORS as err:
            raise InputError(f"{what}: corrupt .npz archive ({' '.join(str(err).split())[:120]})") from None


def _npz_member(archive: zipfile.ZipFile, path: str, key: str | None, what: str):
    keys = sorted(name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy"))
    if key is None:
        if len(keys) != 1:
            listed = ", ".join(keys) if keys else "none"
            raise InputError(f"{what}: name the array as {path}:KEY; the archive holds {len(keys)} ({listed})")
        key = keys[0]
    if key not in keys:
        listed = ", ".join(keys) if keys else "none"
        raise InputError(f"{what}: no array named {key!r} in {path}; it holds: {listed}")
    info = archive.getinfo(key + ".npy")
    try:
        with archive.open(info) as f:
            shape, fortran, dtype = _npy_header(f, what)
            data_offset = f.tell()
    except _ZIP_ERRORS as err:
        raise InputError(f"{what}: corrupt .npz member {key!r} ({' '.join(str(err).split())[:120]})") from None
    _expect_bytes(what, shape, dtype, info.file_size - data_offset)
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype)
    if info.compress_type == zipfile.ZIP_STORED:  # np.savez: the member's bytes lie in the file as they are
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            local = raw.read(30)
        if len(local) < 30:
            raise InputError(f"{what}: corrupt .npz archive (truncated local header for {key!r})")
        signature, *_, name_length, extra_length = struct.unpack("<IHHHHHIIIHH", local)
        if signature != 0x04034B50:
            raise InputError(f"{what}: corrupt .npz archive (bad local header for {key!r})")
        start = info.header_offset + 30 + name_length + extra_length + data_offset
        _expect_bytes(what, shape, dtype, os.path.getsize(path) - start)
        order: Literal["F", "C"] = "F" if fortran else "C"
        return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=tuple(shape), order=order)
    if fortran and sum(n > 1 for n in shape) > 1:  # (a vector is the same in either order)
        raise InputError(
            f"{what}: a Fortran-ordered array in a compressed .npz cannot be read row by row; "
            f"save it with np.savez (uncompressed) or as .npy"
        )
    return _ZipRows(path, info.filename, what, shape, dtype, data_offset)


def open_array(spec: str, what: str) -> np.ndarray | _ZipRows:
    """The array ``spec`` names (``file.npy``, ``file.npz:key`` or a one-array ``file.npz``), not loaded."""
    path, key = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".npz"):
        path, key = head, tail
    what = f"{what} {spec}"
    if not os.path.exists(path):
        raise InputError(f"{what}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{what}: is a directory, not a .npy or .npz file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{what}: the file is empty")
    if path.endswith(".npz"):
        return _open_npz(path, key, what)
    return _open_npy(path, what)


def require_kind(what: str, dtype: np.dtype, allowed: str, hint: str) -> None:
    """Refuse ``dtype`` unless its kind (``np.dtype.kind``) is one of ``allowed``; ``hint`` says what is expected."""
    if dtype.kind not in allowed:
        raise InputError(f"{what}: dtype {dtype} is not allowed here; expected {hint}")


def close(x: object) -> None:
    """Release what :func:`open_array` holds open for ``x`` (a compressed member's archive); memmaps need nothing."""
    if isinstance(x, _ZipRows):
        x.close()
