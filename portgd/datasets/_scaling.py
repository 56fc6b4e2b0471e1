"""Per-feature standardisation with the statistics of the training data."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from .._registry import backend_of
from ..errors import BackendMismatchError, DatasetError

if TYPE_CHECKING:
    from ..backends import Backend


# -- standardisation ------------------------------------------------------------------------
class Standardizer:
    """Per-feature ``(x - mean) / std`` with the statistics of the data it was fitted on.

    ``mean`` and ``std`` (population std, ``correction=0``) are computed with the backend's
    ``xp`` and stay on its device. Features whose std is at most ``eps`` (constant pixels, for
    example) are only centred: their scale is 1, so a test value never gets divided by ~0.

    Attributes (after :meth:`fit`):
        mean: ``X.shape[1:]`` per-feature means.
        scale: ``X.shape[1:]`` per-feature divisors (the std, or 1 where the std <= eps).
        backend: the Backend of the fitted data; transform only accepts arrays there.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps >= 0):
            raise DatasetError(f"eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)
        self.mean: Any = None
        self.scale: Any = None
        self.backend: Backend | None = None

    def __repr__(self) -> str:
        where = "unfitted" if self.backend is None else f"fitted on {self.backend!r}"
        return f"Standardizer(eps={self.eps}, {where})"

    def _check(self, X: Any, backend: Backend, what: str) -> None:
        xp = backend.xp
        if not hasattr(X, "dtype") or not xp.isdtype(X.dtype, "real floating"):
            dtype = getattr(X, "dtype", type(X).__name__)
            raise DatasetError(f"{what} must be a floating array, got {dtype}")
        if X.ndim < 1 or X.shape[0] < 1:
            raise DatasetError(f"{what} must hold at least one sample, got shape {X.shape}")

    def fit(self, X: Any) -> Standardizer:
        """Compute the per-feature mean and scale of ``X`` (rows are samples)."""
        backend = backend_of(X)
        self._check(X, backend, "X")
        xp = backend.xp
        std = xp.std(X, axis=0)
        self.mean = xp.mean(X, axis=0)
        self.scale = xp.where(std > self.eps, std, xp.ones_like(std))
        self.backend = backend
        return self

    def transform(self, X: Any) -> Any:
        """``(X - mean) / scale``, on ``X``'s backend."""
        self._fitted_backend(X)
        return (X - self.mean) / self.scale

    def inverse_transform(self, X: Any) -> Any:
        """``X * scale + mean``: undo :meth:`transform`."""
        self._fitted_backend(X)
        return X * self.scale + self.mean

    def fit_transform(self, X: Any) -> Any:
        return self.fit(X).transform(X)

    def _fitted_backend(self, X: Any) -> Backend:
        if self.backend is None:
            raise DatasetError("this Standardizer is not fitted; call fit(X_train) first")
        backend = backend_of(X)
        if backend != self.backend:
            raise BackendMismatchError(
                f"the Standardizer was fitted on {self.backend.name} device "
                f"{self.backend.device_name!r} but X is on {backend.name} device "
                f"{backend.device_name!r}; fit and transform arrays of one backend"
            )
        self._check(X, backend, "X")
        if tuple(X.shape[1:]) != tuple(self.mean.shape):
            raise DatasetError(
                f"X has samples of shape {tuple(X.shape[1:])} but the Standardizer was fitted "
                f"on samples of shape {tuple(self.mean.shape)}"
            )
        return backend


def standardize(X_train: Any, *others: Any, eps: float = 1e-8) -> Any:
    """Standardise ``X_train`` and ``others`` with the mean and std of ``X_train``.

    ``X_train, X_test = standardize(X_train, X_test)``; with no ``others`` it returns the one
    array. See :class:`Standardizer` for the formula and the ``eps`` rule.
    """
    scaler = Standardizer(eps).fit(X_train)
    if not others:
        return scaler.transform(X_train)
    return tuple(scaler.transform(X) for X in (X_train, *others))
