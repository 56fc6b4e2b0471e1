"""Seeded synthetic data: Gaussian blobs for classification, a noisy linear teacher."""

from __future__ import annotations

import math
import numbers
from typing import Any

from ..errors import DatasetError
from ._args import _count
from ._dataset import Dataset, _build, _target


# -- synthetic data -------------------------------------------------------------------------
def synthetic_classification(
    n_samples: int = 1000,
    n_features: int = 20,
    n_classes: int = 2,
    *,
    seed: int = 0,
    class_sep: float = 3.0,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
) -> Dataset:
    """Gaussian blobs: one unit-variance cloud per class around a centre ``class_sep`` from 0.

    Drawn on the host with ``numpy.random.default_rng(seed)``, in this order: the centres, the
    labels, the noise. With ``n_classes <= n_features`` the centres are ``class_sep`` times
    orthonormal directions (every pair of centres is ``class_sep * sqrt(2)`` apart, so with the
    default 3.0 about 2% of two-class samples fall on the wrong side of the best boundary);
    otherwise they are random unit directions times ``class_sep``. Classes are balanced
    (counts differ by at most one) and shuffled.

    ``X`` is ``(n_samples, n_features)`` in ``dtype``, ``y`` class indices ``(n_samples,)``
    in the backend's index dtype (int64, else int32).
    ``info["centers"]`` holds the centres ``(n_classes, n_features)`` as float64.
    """
    import numpy as np

    n_samples = _count(n_samples, "n_samples", 1)
    n_features = _count(n_features, "n_features", 1)
    n_classes = _count(n_classes, "n_classes", 2)
    if n_samples < n_classes:
        raise DatasetError(f"n_samples={n_samples} is too few for {n_classes} classes")
    if not (isinstance(class_sep, numbers.Real) and math.isfinite(class_sep) and class_sep >= 0):
        raise DatasetError(f"class_sep must be a finite number >= 0, got {class_sep!r}")
    target, dtype = _target(backend, device, dtype)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((n_features, n_classes))
    if n_classes <= n_features:
        q, r = np.linalg.qr(directions)
        directions = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    else:
        directions /= np.linalg.norm(directions, axis=0)
    centers = float(class_sep) * directions.T
    labels = rng.permutation(np.arange(n_samples, dtype=np.int64) % n_classes)
    X = centers[labels] + rng.standard_normal((n_samples, n_features))
    return _build(
        target,
        dtype,
        X,
        labels,
        name="synthetic",
        num_classes=n_classes,
        feature_shape=(n_features,),
        info={"centers": centers, "seed": seed},
    )


def synthetic_regression(
    n_samples: int = 1000,
    n_features: int = 10,
    n_targets: int = 1,
    noise: float = 0.1,
    *,
    seed: int = 0,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
) -> Dataset:
    """A noisy linear teacher: ``y = X @ coef + intercept + noise * e``.

    Drawn on the host with ``numpy.random.default_rng(seed)``, in this order:
    ``coef ~ N(0, 1/n_features)`` of shape ``(n_features, n_targets)``,
    ``intercept ~ N(0, 1)`` of shape ``(n_targets,)``, ``X ~ N(0, 1)``, ``e ~ N(0, 1)``.
    The teacher depends only on the seed and the shape, not on ``n_samples``.

    ``X`` is ``(n_samples, n_features)`` and ``y`` is ``(n_samples, n_targets)`` (2-D also for
    one target), both in ``dtype``. ``info["coef"]`` and ``info["intercept"]`` hold the
    teacher as float64, so a solver's answer can be checked against it.
    """
    import numpy as np

    n_samples = _count(n_samples, "n_samples", 1)
    n_features = _count(n_features, "n_features", 1)
    n_targets = _count(n_targets, "n_targets", 1)
    if not (isinstance(noise, numbers.Real) and math.isfinite(noise) and noise >= 0):
        raise DatasetError(f"noise must be a finite number >= 0, got {noise!r}")
    target, dtype = _target(backend, device, dtype)
    rng = np.random.default_rng(seed)
    coef = rng.standard_normal((n_features, n_targets)) / math.sqrt(n_features)
    intercept = rng.standard_normal(n_targets)
    X = rng.standard_normal((n_samples, n_features))
    y = X @ coef + intercept + float(noise) * rng.standard_normal((n_samples, n_targets))
    return _build(
        target,
        dtype,
        X,
        y,
        name="synthetic-regression",
        num_classes=None,
        feature_shape=(n_features,),
        info={"coef": coef, "intercept": intercept, "noise": float(noise), "seed": seed},
    )
