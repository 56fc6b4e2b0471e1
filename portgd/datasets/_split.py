"""Class labels and seeded (optionally stratified) train/test splits on any backend."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from .._registry import backend_of
from ..errors import BackendMismatchError, DatasetError
from ._args import _count

if TYPE_CHECKING:
    import numpy as np


# -- labels ---------------------------------------------------------------------------------
def _class_labels(y: Any, what: str) -> np.ndarray:
    """``y`` on the host as one whole-number class label per sample, ``(n,)``."""
    import numpy as np

    host = y if isinstance(y, np.ndarray) else backend_of(y).to_numpy(y)
    host = np.asarray(host)
    if host.ndim == 2 and host.shape[1] == 1:
        host = host[:, 0]
    if host.ndim != 1:
        raise DatasetError(
            f"{what} must hold one class index per sample, shape (n,); got shape "
            f"{host.shape} (for one-hot rows pass their argmax)"
        )
    if host.dtype.kind in "biu":
        return host.astype(np.int64)
    if host.dtype.kind == "f":
        whole = np.isfinite(host) & (host == np.round(host))
        if not whole.all():
            bad = host[~whole][0]
            raise DatasetError(
                f"{what} must be whole class indices, found {bad!r}; regression targets "
                "have no classes"
            )
        return host.astype(np.int64)
    raise DatasetError(f"{what} must be integer class indices, got dtype {host.dtype}")


def check_labels(y: Any, num_classes: int, *, what: str = "labels") -> None:
    """Raise DatasetError unless ``y`` holds one class index in ``[0, num_classes)`` per sample.

    ``y`` may be a host array or any backend's array (it is read back to the host once), of
    shape ``(n,)`` or ``(n, 1)``; integer, boolean, or float holding whole numbers. Use it
    before training: ``num_classes=2`` is what binary cross-entropy accepts (labels 0 and 1).
    """
    num_classes = _count(num_classes, "num_classes", 2)
    import numpy as np

    labels = _class_labels(y, what)
    if labels.size == 0:
        return
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        bad = np.unique(labels[outside])
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DatasetError(
            f"{what} must be class indices 0..{num_classes - 1} for {num_classes} classes, "
            f"found {shown}; relabel them (digits(classes=...) does) or use a model with "
            f"more outputs"
        )


# -- splitting ------------------------------------------------------------------------------
def _test_count(test_size: Any, n: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise DatasetError(
            f"test_size must be a fraction in (0, 1) or a number of samples, got {test_size!r}"
        )
    if isinstance(test_size, numbers.Integral):
        n_test = int(test_size)
        if n_test < 1:
            raise DatasetError(f"test_size must be at least 1 sample, got {n_test}")
    else:
        fraction = float(test_size)
        if not 0.0 < fraction < 1.0:
            raise DatasetError(
                f"test_size must be a fraction in (0, 1) or a number of samples, got {fraction}"
            )
        n_test = math.ceil(round(fraction * n, 6))  # round: 0.7 * 10 is 7.000000000000001
    if n_test >= n:
        raise DatasetError(
            f"a dataset of {n} samples is too small for test_size={test_size!r}: it leaves "
            f"{n - n_test} training samples; both sides of the split need at least one"
        )
    return n_test


def _stratified_counts(counts: np.ndarray, n_test: int) -> np.ndarray:
    """Test samples per class: proportional, at least one on each side, summing to n_test."""
    import numpy as np

    exact = counts * (n_test / counts.sum())
    take = np.clip(np.floor(exact).astype(np.int64), 1, counts - 1)
    while take.sum() < n_test:  # give to the class furthest below its share
        room = np.flatnonzero(take < counts - 1)
        take[room[np.argmax((exact - take)[room])]] += 1
    while take.sum() > n_test:  # take from the class furthest above its share
        room = np.flatnonzero(take > 1)
        take[room[np.argmin((exact - take)[room])]] -= 1
    return take


def _split_indices(
    n: int, n_test: int, rng: np.random.Generator, labels: np.ndarray | None
) -> np.ndarray:
    """Host int64 indices, the test part first (``n_test`` of them), then the training part."""
    import numpy as np

    if labels is None:
        return rng.permutation(n)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        lonely = classes[np.argmin(counts)]
        raise DatasetError(
            f"stratify=True needs at least 2 samples of every class; class {lonely} has "
            f"{counts.min()}"
        )
    if not len(classes) <= n_test <= n - len(classes):
        raise DatasetError(
            f"stratify=True with {len(classes)} classes needs at least {len(classes)} samples "
            f"on each side of the split; test_size gives {n_test} test and {n - n_test} "
            "training samples"
        )
    take = _stratified_counts(counts, n_test)
    test, train = [], []
    for c, k in zip(classes, take, strict=True):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[:k])
        train.append(members[k:])
    return np.concatenate([rng.permutation(np.concatenate(test)),
                           rng.permutation(np.concatenate(train))])


def train_test_split(
    X: Any,
    y: Any,
    test_size: float | int = 0.2,
    *,
    seed: int = 0,
    stratify: bool = False,
) -> tuple[Any, Any, Any, Any]:
    """``X_train, X_test, y_train, y_test``: a seeded random split of the rows of ``X`` and ``y``.

    Works on any backend's arrays and returns arrays on the same backend and device. The
    permutation is drawn on the host (``backend.rng(seed)``), moved to the device once and
    applied with ``xp.take``, so the split is the same on every backend.

    Args:
        X: features, an array of any backend.
        y: targets with as many rows as ``X``, on the same backend and device.
        test_size: a fraction in (0, 1) (the test set gets ``ceil(test_size * n)`` rows) or
            a number of test rows.
        seed: the host generator's seed.
        stratify: keep each class's share of ``y`` (class labels) in both parts, to the
            nearest sample; every class needs at least one sample on each side.

    Raises:
        DatasetError: bad ``test_size``, a side of the split would be empty, or ``y`` has
            other than one row per row of ``X``.
        BackendMismatchError: ``X`` and ``y`` live on different backends or devices.
    """
    for array, what in ((X, "X"), (y, "y")):
        if not hasattr(array, "shape") or len(array.shape) == 0:
            raise DatasetError(f"{what} must be an array with one row per sample, got {array!r}")
    backend = backend_of(X)
    other = backend_of(y)
    if other != backend:
        raise BackendMismatchError(
            f"X is on {backend.name} device {backend.device_name!r} but y is on {other.name} "
            f"device {other.device_name!r}; create both on one backend (the loaders take "
            "backend= and device=)"
        )
    n = int(X.shape[0])
    if int(y.shape[0]) != n:
        raise DatasetError(f"X has {n} rows but y has {y.shape[0]}; they must match")
    if n < 2:
        raise DatasetError(f"a dataset of {n} samples is too small to split into train and test")
    n_test = _test_count(test_size, n)
    labels = _class_labels(y, "y (stratify=True)") if stratify else None
    order = _split_indices(n, n_test, backend.rng(seed), labels)
    xp = backend.xp
    index = backend.asarray(order, dtype=backend.index_dtype)
    test, train = index[:n_test], index[n_test:]
    return (
        xp.take(X, train, axis=0),
        xp.take(X, test, axis=0),
        xp.take(y, train, axis=0),
        xp.take(y, test, axis=0),
    )
