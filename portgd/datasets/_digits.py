"""scikit-learn's 8x8 handwritten digits, read from its package data without importing it."""

from __future__ import annotations

import functools
import importlib.util
import numbers
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DatasetError
from ._dataset import DATA_INSTALL_HINT, Dataset, _build, _host_float, _target

if TYPE_CHECKING:
    import numpy as np


# -- digits ---------------------------------------------------------------------------------
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def _digits_file() -> Path:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn (which is slow)."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise DatasetError(
            "the digits dataset ships with scikit-learn, which is not installed; "
            f"install it with {DATA_INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations or ():
        candidate = Path(folder, *DIGITS_FILE)
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"scikit-learn is installed but has no {'/'.join(DIGITS_FILE)}; its installation "
        f"looks incomplete: reinstall it with {DATA_INSTALL_HINT}"
    )


@functools.cache
def _digits_host() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) uint8 in 0..16, labels (1797,) int64), read once, read-only."""
    import numpy as np

    path = _digits_file()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DatasetError(
            f"cannot parse {path} ({exc}); reinstall scikit-learn with {DATA_INSTALL_HINT}"
        ) from exc
    if table.shape[1] != 65 or table.shape[0] == 0:
        raise DatasetError(
            f"{path} has shape {table.shape}, expected rows of 64 pixels and a label; "
            f"reinstall scikit-learn with {DATA_INSTALL_HINT}"
        )
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(
            f"{path} holds values outside 0..16 (pixels) or 0..9 (labels); "
            f"reinstall scikit-learn with {DATA_INSTALL_HINT}"
        )
    pixels = pixels.astype(np.uint8)
    labels = labels.copy()
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def _digit_classes(classes: Sequence[int]) -> tuple[int, ...]:
    try:
        chosen = tuple(classes)
    except TypeError:
        raise DatasetError(f"classes must be a sequence of digits, got {classes!r}") from None
    for c in chosen:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c <= 9:
            raise DatasetError(f"classes must be digits 0..9, got {c!r} in {classes!r}")
    if len(set(chosen)) != len(chosen):
        raise DatasetError(f"classes must not repeat a digit, got {classes!r}")
    if len(chosen) < 2:
        raise DatasetError(f"classes needs at least two digits to classify, got {classes!r}")
    return tuple(int(c) for c in chosen)


def digits(
    classes: Sequence[int] | None = None,
    *,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
) -> Dataset:
    """The 8x8 handwritten digits that ship with scikit-learn (UCI optical digits test set).

    ``X`` is ``(1797, 64)`` with the pixel counts 0..16 divided by 16, so values lie in
    [0, 1]; ``y`` holds the digit in the backend's index dtype (int64, else int32),
    ``(1797,)``. The file is read from scikit-learn's package data without importing
    scikit-learn.

    Args:
        classes: keep only these digits, relabelled 0..k-1 in the given order:
            ``classes=(0, 1)`` is the binary 0-vs-1 task (360 samples), ``(1, 0)`` the same
            task with the labels swapped. Sample order is kept.
        backend: the backend the arrays go to (default: the active backend).
        device: the device on that backend (default: its default device).
        dtype: the float dtype of ``X``.

    Raises:
        DatasetError: scikit-learn is not installed (``pip install 'portgd[data]'``) or
            ``classes`` is not a list of at least two distinct digits.
    """
    import numpy as np

    chosen = None if classes is None else _digit_classes(classes)
    target, dtype = _target(backend, device, dtype)
    pixels, labels = _digits_host()
    if chosen is None:
        name, num_classes = "digits", 10
        y = labels.copy()
    else:
        name, num_classes = "digits" + "".join(map(str, chosen)), len(chosen)
        relabel = np.full(10, -1, dtype=np.int64)
        relabel[list(chosen)] = np.arange(len(chosen))
        y = relabel[labels]
        keep = y >= 0
        pixels, y = pixels[keep], y[keep]
    X = pixels.astype(_host_float(dtype))
    X /= 16
    info = {"source": str(_digits_file()), "classes": chosen or tuple(range(10))}
    return _build(
        target, dtype, X, y, name=name, num_classes=num_classes, feature_shape=(8, 8), info=info
    )
