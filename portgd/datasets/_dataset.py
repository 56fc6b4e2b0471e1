"""The Dataset result type and what every loader shares: the target backend and dtype checks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._registry import get_backend
from ..errors import DatasetError
from ._split import train_test_split

if TYPE_CHECKING:
    import numpy as np

    from ..backends import Backend

DATA_INSTALL_HINT = "pip install 'portgd[data]'"


# -- the result type ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Features and targets on one backend, with what a training script needs to know.

    Unpacks as ``X, y = dataset``.

    Attributes:
        X: features ``(n_samples, n_features)``, a floating array on ``backend``.
        y: class indices ``(n_samples,)`` of the backend's index dtype (int64, or int32
            where the backend or device has no int64) when ``num_classes`` is set;
            float targets ``(n_samples, n_targets)`` for regression.
        name: short name (``"digits"``, ``"digits01"``, ``"mnist"``, ``"synthetic"``, ...).
        num_classes: number of classes, or None for a regression dataset.
        feature_shape: the shape of one sample before flattening (``(8, 8)`` for digits,
            ``(28, 28)`` for MNIST, ``(n_features,)`` for synthetic data).
        backend: the Backend that holds ``X`` and ``y``.
        info: host-side extras (read-only mapping), e.g. the MNIST split and folder, or the
            true coefficients of a synthetic regression.
    """

    X: Any
    y: Any
    name: str
    num_classes: int | None
    feature_shape: tuple[int, ...]
    backend: Backend
    info: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __iter__(self) -> Iterator[Any]:
        return iter((self.X, self.y))

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return "regression" if self.num_classes is None else "classification"

    def split(
        self, test_size: float | int = 0.2, *, seed: int = 0, stratify: bool = False
    ) -> tuple[Dataset, Dataset]:
        """``(train, test)`` Datasets from :func:`train_test_split` of this one."""
        X_train, X_test, y_train, y_test = train_test_split(
            self.X, self.y, test_size, seed=seed, stratify=stratify
        )
        return replace(self, X=X_train, y=y_train), replace(self, X=X_test, y=y_test)

    def __repr__(self) -> str:
        def describe(a: Any) -> str:
            return f"{tuple(a.shape)} {_dtype_str(a.dtype)}"

        classes = "regression" if self.num_classes is None else f"num_classes={self.num_classes}"
        return (
            f"Dataset({self.name!r}, X={describe(self.X)}, y={describe(self.y)}, {classes}, "
            f"backend={self.backend.name} on {self.backend.device_name!r})"
        )


def _dtype_str(dtype: Any) -> str:
    from ..backends import dtype_name

    return dtype_name(dtype)


def _target(backend: Any, device: Any, dtype: Any) -> tuple[Backend, str]:
    """The Backend to put data on and the float dtype's name; fails before any work."""
    from ..backends import dtype_name
    from ..backends._base import FLOAT_NAMES

    chosen = get_backend(backend, device)
    name = dtype_name(dtype)
    if name not in FLOAT_NAMES:
        raise DatasetError(
            f"dtype must be a floating dtype ({', '.join(FLOAT_NAMES)}) for the features, "
            f"got {dtype!r}; labels get the backend's index dtype (int64, else int32)"
        )
    chosen.dtype(name)  # DTypeNotSupportedError here, before reading any file
    return chosen, name


def _host_float(dtype: str) -> Any:
    """The host dtype to compute features in before the (exact or rounding) transfer."""
    import numpy as np

    return np.float64 if dtype == "float64" else np.float32


def _build(
    backend: Backend,
    dtype: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    num_classes: int | None,
    feature_shape: tuple[int, ...],
    info: Mapping[str, Any] | None = None,
) -> Dataset:
    if num_classes is not None:
        backend.check_index_range(0, num_classes - 1, f"the {name} class labels")
    y_dtype = backend.index_dtype if num_classes is not None else dtype
    return Dataset(
        X=backend.asarray(X, dtype=dtype),
        y=backend.asarray(y, dtype=y_dtype),
        name=name,
        num_classes=num_classes,
        feature_shape=tuple(int(d) for d in feature_shape),
        backend=backend,
        info=MappingProxyType(dict(info or {})),
    )
