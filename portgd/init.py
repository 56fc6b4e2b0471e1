"""Weight initializers.

Every initializer draws on the host from a seeded ``numpy.random.Generator`` (the one
``Backend.rng`` returns) in float64, casts on the host to the model's dtype and only then
transfers. The same seed therefore gives bit-identical initial weights on every backend.

A weight matrix is shaped ``(fan_in, fan_out)`` (Dense computes ``x @ W + b``); each
initializer is a function ``init(host, rng, shape) -> host float64 array``, where ``host`` is
the host array namespace (NumPy, ``Backend.host``) and ``rng`` the host generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import InputError

Initializer = Callable[[Any, Any, tuple[int, ...]], Any]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], shape[0]
    return shape[0], shape[1]


def zeros(host: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    """All zeros."""
    return host.zeros(shape)


def ones(host: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    """All ones."""
    return host.ones(shape)


def normal(host: Any, rng: Any, shape: tuple[int, ...], std: float = 0.05) -> Any:
    """N(0, std^2), std = 0.05 by default."""
    return rng.normal(0.0, std, size=shape)


def uniform(host: Any, rng: Any, shape: tuple[int, ...], limit: float = 0.05) -> Any:
    """U(-limit, limit), limit = 0.05 by default."""
    return rng.uniform(-limit, limit, size=shape)


def glorot_uniform(host: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    fan_in, fan_out = _fans(shape)
    return uniform(host, rng, shape, math.sqrt(6.0 / (fan_in + fan_out)))


def glorot_normal(host: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    """N(0, s^2) with s = sqrt(2 / (fan_in + fan_out)) (untruncated, as torch's xavier_normal_)."""
    fan_in, fan_out = _fans(shape)
    return normal(host, rng, shape, math.sqrt(2.0 / (fan_in + fan_out)))


def he_uniform(host: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    """U(-a, a) with a = sqrt(6 / fan_in) (He et al., 2015; for ReLU)."""
    fan_in, _ = _fans(shape)
    return uniform(host, rng, shape, math.sqrt(6.0 / fan_in))


def he_normal(host: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    """N(0, s^2) with s = sqrt(2 / fan_in) (untruncated)."""
    fan_in, _ = _fans(shape)
    return normal(host, rng, shape, math.sqrt(2.0 / fan_in))


def lecun_normal(host: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    """N(0, s^2) with s = sqrt(1 / fan_in) (untruncated)."""
    fan_in, _ = _fans(shape)
    return normal(host, rng, shape, math.sqrt(1.0 / fan_in))


def orthogonal(host: Any, rng: Any, shape: tuple[int, ...], gain: float = 1.0) -> Any:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al., 2014).

    Q of the QR factorisation of a standard normal matrix, with the signs of R's diagonal
    folded in so that the result is uniformly distributed. For ``(in, out)`` with
    ``in >= out`` the columns are orthonormal, otherwise the rows.
    """
    if len(shape) != 2:
        raise InputError(f"orthogonal initialisation needs a 2-d shape, got {shape}")
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = host.linalg.qr(a)
    q = q * host.where(host.diagonal(r) >= 0, 1.0, -1.0)
    if rows < cols:
        q = q.T
    return gain * q


def unit_norm(host: Any, rng: Any, shape: tuple[int, ...]) -> Any:
    """Standard normal draws, then each output unit's incoming weights scaled to L2 norm 1.

    For ``W`` shaped ``(in, out)`` that is each column: ``sum_i W[i, j]**2 == 1``.
    """
    w = rng.standard_normal(shape)
    norms = (w * w).sum(axis=0, keepdims=True) ** 0.5
    return w / norms


INITIALIZERS: dict[str, Initializer] = {
    f.__name__: f
    for f in (
        zeros, ones, normal, uniform, glorot_uniform, glorot_normal,
        he_uniform, he_normal, lecun_normal, orthogonal, unit_norm,
    )
}  # fmt: skip


def get(init: str | Initializer) -> Initializer:
    """The initializer named ``init`` (or ``init`` itself if it is callable)."""
    if callable(init):
        return init
    try:
        return INITIALIZERS[init]
    except KeyError:
        raise InputError(
            f"unknown initializer {init!r}; choose one of {', '.join(INITIALIZERS)}"
        ) from None


def draw(
    backend: Any, init: str | Initializer, shape: tuple[int, ...], rng: Any, dtype: Any
) -> Any:
    """Draw ``init`` on the host from ``rng`` and transfer to ``backend`` as ``dtype``."""
    values = get(init)(backend.host, rng, tuple(shape))
    return backend.asarray(values, dtype=dtype)
