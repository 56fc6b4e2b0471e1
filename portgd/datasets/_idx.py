"""IDX files (the MNIST format): parsing, raw or gzipped, with every malformation refused."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DatasetError

if TYPE_CHECKING:
    import numpy as np


# -- IDX files ------------------------------------------------------------------------------
#: IDX type codes (third byte of the magic number) -> big-endian NumPy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip signature."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(
                f"{path} is a damaged gzip file ({exc}); delete it and download it again"
            ) from None
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in an IDX file (raw or gzipped), as a native-endian NumPy array.

    IDX layout (all integers big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions ``d``, then
    ``d`` uint32 sizes, then the values in C order. The file must hold exactly that many bytes.

    Raises:
        DatasetError: the file is missing, unreadable, not IDX, truncated or too long.
    """
    import numpy as np

    path = Path(path)
    data = _read_bytes(path)
    redo = "the file is damaged or not an IDX file; delete it and download it again"
    if len(data) < 4:
        raise DatasetError(
            f"{path} holds {len(data)} bytes, too few for the 4-byte IDX magic number; {redo}"
        )
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DatasetError(
            f"{path} has magic number 0x{data[:4].hex()}, expected 0x0000TTDD with type "
            f"code TT in {codes} and DD dimensions; {redo}"
        )
    ndim = data[3]
    if ndim == 0:
        raise DatasetError(f"{path} declares 0 dimensions; {redo}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path} is truncated: its {ndim} dimension sizes need {header} header bytes, "
            f"the file holds {len(data)}; {redo}"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has extra bytes at the end"
        raise DatasetError(
            f"{path} {problem}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"the file holds {len(data)}; {redo}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))
