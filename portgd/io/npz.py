"""Reading ``.npz`` archives and ``.npy`` arrays without trusting them.

``numpy.load`` assumes a well-formed file: a damaged one can escape as ``tokenize.TokenError``
(from the NPY header parser), ``NotImplementedError`` (from ``zipfile``), or allocate whatever a
corrupt header declares before finding out that the data is not there. Here every member is
checked before use, and every failure of the ZIP or NPY layer becomes ``error(message)``, the
caller's portgd exception, with a message that names the file, the member and the problem.

What is checked, in order, for a member:

1. the ZIP entry: stored or deflated, not encrypted, its declared sizes plausible for the
   archive's size (a deflated entry holds at most ``MAX_DEFLATE_RATIO`` times its compressed
   size);
2. the NPY prefix: the magic string ``\\x93NUMPY``, a version 1.0, 2.0 or 3.0, a header length
   of at most ``MAX_HEADER_BYTES`` that fits in the entry;
3. the NPY header: a Python literal dict with exactly the keys ``descr`` (a dtype string),
   ``fortran_order`` (a bool) and ``shape`` (a tuple of non-negative ints); the dtype must be
   a plain number type (bool, integer or float; never Python objects, which would be pickled,
   nor structured, subarray, complex or date types), or text where the caller asks for it, and
   at least one byte wide;
4. the size: ``prod(shape) * itemsize`` bytes must be exactly what the entry holds after the
   header. This is checked before the data is read, so a huge declared shape is refused
   without allocating anything; an empty shape must still be one NumPy can create (each size,
   and the bytes of its non-zero sizes, at most ``numpy.intp``'s maximum);
5. the data: read in full, so the entry's CRC-32 is checked.

Anything the file, ZIP or NPY layer raises on the way (:data:`ZIP_ERRORS`) becomes the
caller's error too, through one converter (:func:`failures_named`).

This is a host-I/O module: it uses NumPy, the host format, directly.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import PortgdError

#: the NPY magic string
MAGIC = b"\x93NUMPY"
#: the longest NPY header accepted (NumPy's own default limit is 10000)
MAX_HEADER_BYTES = 65536
#: deflate cannot expand data by more than about 1032:1; a larger claim is corrupt
MAX_DEFLATE_RATIO = 1032
#: number dtypes an array may hold: bool, signed and unsigned integers, floats
NUMBER_KINDS = "biuf"
#: ... and text (NumPy's fixed-width unicode and byte strings), for class names in data files
TEXT_KINDS = "US"
#: the end-of-central-directory record of a ZIP archive: signature, disk numbers, entry
#: counts (this disk, all), directory size and offset, comment length
_END_RECORD = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
#: what the ZIP layer raises for a damaged archive (zipfile has no single error type).
#: NotImplementedError and RecursionError are RuntimeErrors; UnicodeDecodeError a ValueError.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, EOFError, OSError,
              ValueError, OverflowError, struct.error, zlib.error)
#: the largest size and byte count of an array NumPy can create (``numpy.intp``'s maximum)
INDEX_MAX = int(np.iinfo(np.intp).max)


class Where:
    """The file (and member) a message is about, and the error type to raise."""

    def __init__(self, path: Path, error: type[PortgdError], advice: str,
                 member: str | None = None) -> None:
        self.path, self.error, self.advice, self.member = path, error, advice, member

    def at(self, member: str) -> Where:
        return Where(self.path, self.error, self.advice, member)

    def fail(self, problem: str) -> PortgdError:
        """The error to raise: ``PATH: member 'M' PROBLEM; ADVICE``."""
        subject = f"{self.path}" if self.member is None else f"{self.path}: member {self.member!r}"
        return self.error(f"{subject} {problem}; {self.advice}")


def _read_exactly(stream: IO[bytes], count: int, where: Where, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise where.fail(f"is truncated: it ends inside the {what} ({len(data)} of {count} bytes)")
    return data


def parse_header(text: str, where: Where,
                 kinds: str = NUMBER_KINDS) -> tuple[np.dtype[Any], bool, tuple[int, ...]]:
    """``(dtype, fortran_order, shape)`` from the text of an NPY header dict, validated.

    ``kinds`` are the dtype kinds accepted (``numpy.dtype.kind`` letters).
    """
    try:
        fields = ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        # MemoryError and RecursionError: the parser's answer to absurdly nested text
        raise where.fail(
            f"has an unreadable NPY header ({type(exc).__name__}: {str(exc)[:80]})"
        ) from None
    keys = {"descr", "fortran_order", "shape"}
    if not isinstance(fields, dict) or set(fields) != keys:
        found = sorted(map(str, fields)) if isinstance(fields, dict) else type(fields).__name__
        raise where.fail(f"has an NPY header with keys {found}, expected {sorted(keys)}")
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if not isinstance(descr, str):
        raise where.fail(
            f"declares the dtype {descr!r}; portgd reads plain number arrays, not structured ones"
        )
    try:
        with warnings.catch_warnings():  # a deprecated alias ('a' for 'S') is still read
            warnings.simplefilter("ignore", DeprecationWarning)
            dtype = np.dtype(descr)
    except (TypeError, ValueError, SyntaxError) as exc:  # SyntaxError: NumPy parses some forms
        raise where.fail(f"declares an unknown dtype {descr!r} ({exc})") from None
    if dtype.hasobject:
        raise where.fail(
            "holds Python objects (pickled); portgd refuses to load pickled Python objects "
            "because unpickling can execute code"
        )
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        allowed = "bool, integer and float" + (" and text" if "U" in kinds else "")
        raise where.fail(f"declares the dtype {descr!r}; only {allowed} arrays are read")
    if dtype.itemsize == 0:
        raise where.fail(f"declares the zero-width dtype {descr!r}; an array item is at least "
                         "one byte")
    if not isinstance(fortran, bool):
        raise where.fail(f"declares fortran_order={fortran!r}, not True or False")
    if (not isinstance(shape, tuple) or len(shape) > 32
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise where.fail(f"declares the shape {shape!r}, not a tuple of at most 32 sizes >= 0")
    return dtype, fortran, shape


def read_npy(stream: IO[bytes], size: int, where: Where,
             kinds: str = NUMBER_KINDS) -> np.ndarray:
    """The array in the NPY data ``stream`` of ``size`` bytes, checked before allocating.

    ``kinds`` are the dtype kinds accepted. Returns a writeable, native-byte-order array
    that owns its memory.
    """
    prefix = _read_exactly(stream, 8, where, "NPY magic string")
    if prefix[:6] != MAGIC:
        raise where.fail(f"is not an NPY array (it starts with {prefix[:6]!r}, not {MAGIC!r})")
    version = (prefix[6], prefix[7])
    if version == (1, 0):
        (length,) = struct.unpack("<H", _read_exactly(stream, 2, where, "NPY header length"))
        start = 10
    elif version in ((2, 0), (3, 0)):
        (length,) = struct.unpack("<I", _read_exactly(stream, 4, where, "NPY header length"))
        start = 12
    else:
        raise where.fail(f"is NPY version {version[0]}.{version[1]}; portgd reads 1.0, 2.0, 3.0")
    if length > MAX_HEADER_BYTES or start + length > size:
        raise where.fail(
            f"declares an NPY header of {length} bytes, more than "
            f"{min(MAX_HEADER_BYTES, size - start)} it can hold"
        )
    raw = _read_exactly(stream, length, where, "NPY header")
    try:
        text = raw.decode("utf-8" if version == (3, 0) else "latin-1")
    except UnicodeDecodeError as exc:
        raise where.fail(f"has an NPY header that is not UTF-8 ({exc.reason})") from None
    dtype, fortran, shape = parse_header(text, where, kinds)
    nbytes = math.prod(shape) * dtype.itemsize
    if start + length + nbytes != size:
        raise where.fail(
            f"declares shape {shape} of {dtype.name} ({nbytes} bytes of data) but holds "
            f"{size - start - length} bytes of data"
        )
    if max(shape, default=0) > INDEX_MAX or (
            math.prod(n for n in shape if n) * dtype.itemsize > INDEX_MAX):  # an empty array
        raise where.fail(f"declares shape {shape} of {dtype.name}, larger than any array "
                         f"NumPy can create (sizes and bytes at most {INDEX_MAX})")
    data = _read_exactly(stream, nbytes, where, "array data")
    if stream.read(1):
        raise where.fail("has bytes after its array data")
    values = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return values.astype(dtype.newbyteorder("="), order="C", copy=True)


@contextmanager
def failures_named(where: Where, problem: str = "cannot be read") -> Iterator[None]:
    """Inside the block, a failure of the file, ZIP or NPY layer becomes ``where.fail``.

    A portgd error passes unchanged; a missing file "does not exist"; anything in
    :data:`ZIP_ERRORS` becomes ``PROBLEM (TYPE: message)``. Every reader here goes through
    this one converter, so a check that :func:`parse_header` misses still ends as the
    caller's error, never as NumPy's or zipfile's exception.
    """
    try:
        yield
    except PortgdError:
        raise
    except FileNotFoundError:
        raise where.fail("does not exist") from None
    except ZIP_ERRORS as exc:
        raise where.fail(f"{problem} ({type(exc).__name__}: {exc})") from None


def read_npy_file(path: Path, error: type[PortgdError], advice: str,
                  kinds: str = NUMBER_KINDS) -> np.ndarray:
    """The array in the ``.npy`` file ``path``, validated as :func:`read_npy` does."""
    where = Where(path, error, advice)
    with failures_named(where), open(path, "rb") as handle:
        return read_npy(handle, os.fstat(handle.fileno()).st_size, where, kinds)


def _declared_entries(path: Path, size: int) -> int | None:
    """The entry count in the archive's end record (None for ZIP64, which keeps it elsewhere)."""
    with open(path, "rb") as handle:
        tail_size = min(size, _END_RECORD.size + 65535)
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
    at = tail.rfind(_END_SIGNATURE)
    if at < 0 or len(tail) - at < _END_RECORD.size:
        return None  # zipfile found it, so this cannot happen; let zipfile's checks stand
    count = _END_RECORD.unpack_from(tail, at)[4]
    return None if count == 0xFFFF else count


class NpzArchive:
    """An open ``.npz`` archive whose entries are validated as a whole and one by one.

    ``names`` lists the arrays (entry names without ``.npy``); :meth:`array` reads one.
    """

    def __init__(self, zip_file: zipfile.ZipFile, size: int, where: Where) -> None:
        self._zip, self._size, self._where = zip_file, size, where
        self._entries: dict[str, zipfile.ZipInfo] = {}
        declared = _declared_entries(where.path, size)
        infos = zip_file.infolist()
        if declared is not None and declared != len(infos):
            raise where.fail(
                f"is corrupt: its end record declares {declared} entries but its directory "
                f"lists {len(infos)}"
            )
        for info in infos:
            if info.filename in self._entries:
                raise where.at(info.filename).fail(
                    "appears twice in the archive, so which one is meant is unclear"
                )
            self._entries[info.filename] = info

    @property
    def names(self) -> list[str]:
        """The arrays in the archive, in archive order (``.npy`` entries, suffix removed)."""
        return [name[:-4] for name in self._entries if name.endswith(".npy")]

    def _check_entry(self, info: zipfile.ZipInfo, where: Where) -> None:
        if info.flag_bits & 0x1:
            raise where.fail("is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise where.fail(
                    f"is stored uncompressed but declares {info.file_size} bytes and "
                    f"{info.compress_size} stored bytes"
                )
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
                raise where.fail(
                    f"declares {info.file_size} bytes, more than its {info.compress_size} "
                    f"deflated bytes can hold"
                )
        else:
            raise where.fail(
                f"uses ZIP compression method {info.compress_type}; only stored (0) and "
                f"deflated (8) entries are read"
            )
        if info.header_offset + info.compress_size > self._size:
            raise where.fail(
                f"declares {info.compress_size} bytes at offset {info.header_offset}, past the "
                f"end of the {self._size}-byte file"
            )

    def array(self, name: str, kinds: str = NUMBER_KINDS) -> np.ndarray:
        """The array ``name`` (without ``.npy``), validated; the error names a missing one.

        ``kinds`` are the dtype kinds accepted.
        """
        entry = f"{name}.npy"
        where = self._where.at(entry)
        info = self._entries.get(entry)
        if info is None:
            raise where.fail("is missing from the archive")
        self._check_entry(info, where)
        with failures_named(where), self._zip.open(info) as stream:
            return read_npy(stream, info.file_size, where, kinds)


@contextmanager
def open_npz(path: str | os.PathLike[str], error: type[PortgdError],
             advice: str) -> Iterator[NpzArchive]:
    """Open the ``.npz`` file ``path`` for validated reading; failures raise ``error``.

    ``advice`` ends every message (what the user should do about a damaged file).
    """
    where = Where(Path(path), error, advice)
    with failures_named(where, "is corrupt or truncated, or not an .npz archive"):
        size = where.path.stat().st_size
        zip_file = zipfile.ZipFile(where.path)
    with zip_file:
        with failures_named(where, "is corrupt"):
            archive = NpzArchive(zip_file, size, where)
        yield archive
