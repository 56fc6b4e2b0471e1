"""Metrics, accumulated on the device as sums over samples and read once per epoch.

A metric's ``batch_sum(yhat, y)`` returns a 0-d array: the sum of the per-sample metric over
the batch. The training loop adds these up on the device and divides by the number of
samples when it reads them back.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError


def first_max(xp: Any, p: Any, dtype: Any, device: Any) -> Any:
    """``argmax(p, axis=1)`` (the first index on ties) as a ``dtype`` array.

    ``min_j {j : p[i, j] == max_j p[i, j]}``, from the namespace's ``max``, ``where`` and
    ``min``: the standard's ``argmax`` returns the default index dtype, int64, which a device
    without int64 (array_api_strict's ``no_x64``) cannot create. A row with NaN gives its
    last index. Shapes: ``p`` ``(n, k)`` -> ``(n,)``.
    """
    k = p.shape[1]
    positions = xp.arange(k, dtype=dtype, device=device)
    last = xp.full(p.shape, k - 1, dtype=dtype, device=device)
    return xp.min(xp.where(p == xp.max(p, axis=1, keepdims=True), positions, last), axis=1)


class Metric:
    name = "metric"

    def bind(self, xp: Any, threshold: float, binary: bool, device: Any = None) -> Metric:
        """Fix the namespace, the decision threshold (0.5, or 0 for logits), whether the
        outputs are independent binary decisions (binary cross-entropy) or one choice
        among classes, and the device the arrays live on."""
        self.xp = xp
        self.device = device
        self.threshold = threshold
        self.binary = binary
        return self

    def batch_sum(self, yhat: Any, y: Any) -> Any:
        raise NotImplementedError


class Accuracy(Metric):
    """Fraction of decisions that are right.

    Binary (one output, or binary cross-entropy over several independent outputs): each
    output's prediction ``yhat > threshold`` (0.5 for probabilities, 0 for logits) against
    ``y > 0.5``, averaged over the outputs as Keras's binary accuracy. Categorical:
    ``argmax yhat`` (first on ties) against the integer label or the argmax of a
    one-hot target.
    """

    name = "accuracy"

    def batch_sum(self, yhat: Any, y: Any) -> Any:
        xp = self.xp
        if self.binary or yhat.shape[-1] == 1:
            hit = (yhat > self.threshold) == (y > 0.5)
            return xp.sum(xp.astype(hit, yhat.dtype)) / yhat.shape[-1]
        else:
            # Class positions are counted in the outputs' float dtype (exact below 2**24
            # classes): the standard's argmax returns int64, which some devices lack.
            dtype = yhat.dtype
            labels = (xp.astype(y, dtype) if y.ndim == 1
                      else first_max(xp, y, dtype, self.device))
            hit = first_max(xp, yhat, dtype, self.device) == labels
        return xp.sum(xp.astype(hit, yhat.dtype))


class MeanSquaredError(Metric):
    """Mean over samples of the mean squared error over outputs."""

    name = "mse"

    def batch_sum(self, yhat: Any, y: Any) -> Any:
        d = yhat - y
        return self.xp.sum(d * d) / yhat.shape[-1]


class MeanAbsoluteError(Metric):
    """Mean over samples of the mean absolute error over outputs."""

    name = "mae"

    def batch_sum(self, yhat: Any, y: Any) -> Any:
        return self.xp.sum(self.xp.abs(yhat - y)) / yhat.shape[-1]


METRICS: dict[str, type[Metric]] = {
    "accuracy": Accuracy, "acc": Accuracy, "mse": MeanSquaredError, "mae": MeanAbsoluteError,
}  # fmt: skip


def get(metric: str | Metric) -> Metric:
    """A Metric instance from a name (``"accuracy"``, ``"mse"``, ``"mae"``) or a Metric."""
    if isinstance(metric, Metric):
        return metric
    try:
        return METRICS[metric]()
    except KeyError:
        raise InputError(
            f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}"
        ) from None
