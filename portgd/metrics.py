"""Metrics, accumulated on the device as sums over samples and read once per epoch.

A metric's ``batch_sum(yhat, y)`` returns a 0-d array: the sum of the per-sample metric over
the batch. The training loop adds these up on the device and divides by the number of
samples when it reads them back.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError


class Metric:
    name = "metric"

    def bind(self, xp: Any, threshold: float, binary: bool) -> Metric:
        """Fix the namespace, the decision threshold (0.5, or 0 for logits) and whether the
        outputs are independent binary decisions (binary cross-entropy) or one choice
        among classes."""
        self.xp = xp
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
    ``argmax yhat`` against the integer label or the argmax of a one-hot target.
    """

    name = "accuracy"

    def batch_sum(self, yhat: Any, y: Any) -> Any:
        xp = self.xp
        if self.binary or yhat.shape[-1] == 1:
            hit = (yhat > self.threshold) == (y > 0.5)
            return xp.sum(xp.astype(hit, yhat.dtype)) / yhat.shape[-1]
        else:
            labels = y if y.ndim == 1 else xp.argmax(y, axis=-1)
            predicted = xp.argmax(yhat, axis=-1)
            hit = predicted == xp.astype(labels, predicted.dtype)
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
