"""Fast paths for the NumPy backend: the in-place optimizer rules of ``backends/inplace.py``
made from NumPy's ufuncs, and NumPy versions of a few operations of every training step
(each with the generic path's numbers; tests/test_fast_paths.py and the conformance suite
check them bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .inplace import in_place_rules

add = np.add  # a module-level name: less to look up on every call than np.add


def relu_backward(x: np.ndarray, dout: np.ndarray) -> np.ndarray:
    """``dout * (x > 0)``: NumPy multiplies by the boolean mask directly (one pass less than
    converting it first), with the same result as the generic ``relu_backward``."""
    return dout * (x > 0)


def add_bias(y: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``y + bias`` written into ``y``, Dense's fresh product: one allocation less per layer
    and step, the same numbers as the generic ``portgd.layers.add_bias``."""
    return add(y, bias, out=y)


#: bytes: where the model's parameter arrays start (a cache line; AVX-512's vector width)
ALIGNMENT = 64


def parameter(x: np.ndarray) -> np.ndarray:
    """``x`` in writable C-ordered memory that starts on a 64-byte boundary: ``x`` itself if
    it already is such an array, else a copy with the same values (the model's storage for a
    new parameter, which the in-place rules then update).

    malloc aligns to 16 bytes. OpenBLAS's two-thread float32 products read the weight
    matrices of every step, and with a weight at an offset of 16, 32 or 48 bytes a
    784-256-256-10 step ran 6-22% slower here (docs/performance.md); at one thread the
    aligned weights were 1-2% slower.
    """
    flags = x.flags
    if flags.c_contiguous and flags.writeable and x.ctypes.data % ALIGNMENT == 0:
        return x
    buffer = np.empty(x.nbytes + ALIGNMENT, dtype=np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    aligned = buffer[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    np.copyto(aligned, x)
    return aligned


_add_reduce, _maximum_reduce = np.add.reduce, np.maximum.reduce


def reduce_sum(x: np.ndarray, /, *, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    """``np.sum(x, axis=..., keepdims=...)`` without its Python dispatch layer: ``np.sum``
    calls ``np.add.reduce`` with these arguments (about 1.5 us less per call)."""
    return _add_reduce(x, axis, None, None, keepdims)


def reduce_max(x: np.ndarray, /, *, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    """``np.max`` the same way: it calls ``np.maximum.reduce``."""
    return _maximum_reduce(x, axis, None, None, keepdims)


FAST_PATHS: Mapping[str, Callable[..., Any]] = {
    **in_place_rules(add=np.add, subtract=np.subtract, multiply=np.multiply,
                     divide=np.divide, sqrt=np.sqrt, maximum=np.maximum,
                     empty_like=np.empty_like, copy=lambda a: np.array(a, copy=True)),
    "relu_backward": relu_backward,
    "add_bias": add_bias,
    "parameter": parameter,
    "sum": reduce_sum,
    "max": reduce_max,
}
