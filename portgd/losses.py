"""Losses, each returning its value as a 0-d array (no host read) and its gradient.

``loss(yhat, y) -> (value, dL/dyhat)``; ``loss.value(yhat, y)`` skips the gradient.
Predictions and targets are batches: ``(N, outputs)``. With ``reduction="mean"`` the loss is
averaged over the ``N`` samples (and, for MSE and BCE, over the outputs, as PyTorch does);
with ``"sum"`` it is summed.

Two losses fuse with the activation before them (DESIGN.md): a Sigmoid followed by
``BinaryCrossEntropy()`` and a Softmax followed by ``CategoricalCrossEntropy(from_logits=False)``.
The model then evaluates the loss from the activation's input ``z`` in the stable logits form
and starts backpropagation at ``z`` with the fused gradient ``(yhat - y) / N``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._registry import device_of, namespace_of
from .errors import InputError, ShapeError
from .layers import Layer, Sigmoid, Softmax, sigmoid, softmax

REDUCTIONS = ("mean", "sum")


class Loss:
    """Base class. Subclasses implement ``_value_and_grad(xp, yhat, y, scale)``.

    ``scale`` is ``1 / count`` for ``reduction="mean"`` (count as documented per loss) and
    ``1.0`` for ``"sum"``.
    """

    #: the activation layer type this loss fuses with (None: no fusion)
    fuses_with: type[Layer] | None = None

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise InputError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def config(self) -> dict[str, Any]:
        return {"reduction": self.reduction}

    def share(self, n: int, total: int) -> float:
        """The factor by which the loss of ``n`` samples enters the loss of ``total``
        samples that contain them: ``n / total`` for ``reduction="mean"`` (a mean of means,
        weighted by size), ``1.0`` for ``"sum"`` (sums add).

        This is the one place that knows how batches combine: an epoch's loss is
        ``sum_b share(n_b, N) * L_b`` over its batches (so it does not depend on the batch
        size), and data-parallel training weights rank ``r``'s gradient of ``n_r`` samples
        by ``share(n_r, B)`` in the global batch of ``B``.
        """
        return n / total if self.reduction == "mean" else 1.0

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __call__(self, yhat: Any, y: Any, xp: Any = None) -> tuple[Any, Any]:
        """``(loss, dL/dyhat)`` for predictions ``yhat`` and targets ``y``.

        ``xp`` is the namespace of the arrays; a model passes its own, resolved once.
        """
        xp = namespace_of(yhat) if xp is None else xp
        y = self._targets(xp, yhat, y)
        return self._value_and_grad(xp, yhat, y, self._scale(yhat), True)

    def value(self, yhat: Any, y: Any, xp: Any = None) -> Any:
        """The loss alone, as a 0-d array (the gradient is not computed)."""
        xp = namespace_of(yhat) if xp is None else xp
        y = self._targets(xp, yhat, y)
        return self._value_and_grad(xp, yhat, y, self._scale(yhat), False)[0]

    def fused(self, logits: Any, yhat: Any, y: Any, xp: Any = None) -> tuple[Any, Any]:
        """``(loss, dL/dz)`` for the fused activation with input ``z`` and output ``yhat``.

        The value comes from the stable logits form; the gradient is ``scale * (yhat - y)``,
        reusing the activation's output.
        """
        xp = namespace_of(logits) if xp is None else xp
        y = self._targets(xp, logits, y)
        scale = self._scale(logits)
        return self._logits_value(xp, logits, y, scale), (yhat - y) * scale

    def fused_with_layer(
        self, layer: Layer, y: Any, xp: Any, grad: bool = True
    ) -> tuple[Any, Any]:
        """:meth:`fused` from the activation layer's saved forward state (logits, output);
        the gradient is None unless ``grad``."""
        y = self._targets(xp, layer.logits, y)
        scale = self._scale(layer.logits)
        value = self._layer_value(xp, layer, y, scale)
        return value, (layer.output - y) * scale if grad else None

    def _layer_value(self, xp: Any, layer: Layer, y: Any, scale: float) -> Any:
        """The fused value from the layer's saved state (by default from its logits)."""
        return self._logits_value(xp, layer.logits, y, scale)

    def fused_value(self, logits: Any, y: Any, xp: Any = None) -> Any:
        """The fused pair's loss value alone, from the logits."""
        xp = namespace_of(logits) if xp is None else xp
        y = self._targets(xp, logits, y)
        return self._logits_value(xp, logits, y, self._scale(logits))

    # -- pieces -----------------------------------------------------------------------
    def _count(self, yhat: Any) -> int:
        return yhat.shape[0] * (yhat.shape[1] if yhat.ndim > 1 else 1)

    def _scale(self, yhat: Any) -> float:
        return 1.0 / self._count(yhat) if self.reduction == "mean" else 1.0

    def _targets(self, xp: Any, yhat: Any, y: Any) -> Any:
        if tuple(y.shape) != tuple(yhat.shape):
            raise ShapeError(
                f"{type(self).__name__}: targets shaped {tuple(y.shape)} do not match "
                f"predictions shaped {tuple(yhat.shape)}"
            )
        return y if y.dtype == yhat.dtype else xp.astype(y, yhat.dtype)

    def _value_and_grad(
        self, xp: Any, yhat: Any, y: Any, scale: float, grad: bool
    ) -> tuple[Any, Any]:
        """``(value, dL/dyhat)``; the gradient is None unless ``grad``."""
        raise NotImplementedError

    def _logits_value(self, xp: Any, z: Any, y: Any, scale: float) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no logits form")

    def check_targets(self, host_y: Any, outputs: int) -> None:
        """Validate host targets once, where data enters (no device reads in the loop)."""


class MSE(Loss):
    """Mean squared error ``L = scale * sum (yhat - y)^2``; ``dL/dyhat = 2 scale (yhat - y)``.

    ``scale = 1 / (N * outputs)`` for ``reduction="mean"``, as ``torch.nn.MSELoss``.
    """

    def _value_and_grad(
        self, xp: Any, yhat: Any, y: Any, scale: float, grad: bool
    ) -> tuple[Any, Any]:
        diff = yhat - y
        return xp.sum(diff * diff) * scale, diff * (2.0 * scale) if grad else None


def softplus(xp: Any, z: Any) -> Any:
    """``log(1 + exp(z))`` without overflow: ``max(z, 0) + log1p(exp(-|z|))``."""
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


class _CrossEntropy(Loss):
    """What the two cross-entropies share: ``from_logits``, the clipping ``eps`` and the
    activation they fuse with when they take probabilities."""

    activation: type[Layer]
    #: the activation as a function ``(xp, z) -> probabilities``
    probabilities: Callable[[Any, Any], Any]

    def __init__(self, from_logits: bool, reduction: str, eps: float) -> None:
        super().__init__(reduction)
        if not 0.0 < eps < 0.5:
            raise InputError(f"eps must be in (0, 0.5), got {eps!r}")
        self.from_logits = bool(from_logits)
        self.eps = float(eps)
        self.fuses_with = None if from_logits else self.activation

    def config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits, "reduction": self.reduction, "eps": self.eps}

    def _value_and_grad(
        self, xp: Any, yhat: Any, y: Any, scale: float, grad: bool
    ) -> tuple[Any, Any]:
        if self.from_logits:
            value = self._logits_value(xp, yhat, y, scale)
            return value, (self.probabilities(xp, yhat) - y) * scale if grad else None
        return self._probability_value_and_grad(xp, yhat, y, scale, grad)

    def _probability_value_and_grad(
        self, xp: Any, yhat: Any, y: Any, scale: float, grad: bool
    ) -> tuple[Any, Any]:
        """``(value, dL/dyhat)`` from predicted probabilities; the gradient only if ``grad``."""
        raise NotImplementedError


class BinaryCrossEntropy(_CrossEntropy):
    """Binary cross-entropy over independent outputs with targets in [0, 1].

    From probabilities (``from_logits=False``): ``p = clip(yhat, eps, 1 - eps)`` with
    ``eps = 1e-7``, ``L = -scale * sum [y log p + (1 - y) log(1 - p)]``,
    ``dL/dyhat = scale * (p - y) / (p (1 - p))``.

    From logits ``z`` (``from_logits=True``, and the fused Sigmoid pair):
    ``L = scale * sum [softplus(z) - y z]``, ``dL/dz = scale * (sigmoid(z) - y)``.

    ``scale = 1 / (N * outputs)`` for ``reduction="mean"``.
    """

    activation = Sigmoid
    probabilities = staticmethod(sigmoid)

    def __init__(self, from_logits: bool = False, reduction: str = "mean", eps: float = 1e-7):
        super().__init__(from_logits, reduction, eps)

    def _probability_value_and_grad(
        self, xp: Any, yhat: Any, y: Any, scale: float, grad: bool
    ) -> tuple[Any, Any]:
        p = xp.clip(yhat, self.eps, 1.0 - self.eps)
        q = 1.0 - p
        value = -xp.sum(y * xp.log(p) + (1.0 - y) * xp.log(q)) * scale
        return value, (p - y) / (p * q) * scale if grad else None

    def _logits_value(self, xp: Any, z: Any, y: Any, scale: float) -> Any:
        return xp.sum(softplus(xp, z) - y * z) * scale

    def check_targets(self, host_y: Any, outputs: int) -> None:
        if host_y.size and (host_y.min() < 0 or host_y.max() > 1):
            raise InputError(
                f"BinaryCrossEntropy needs targets in [0, 1]; got values from "
                f"{host_y.min()} to {host_y.max()}. Use CategoricalCrossEntropy for class labels."
            )


class CategoricalCrossEntropy(_CrossEntropy):
    """Cross-entropy over ``K`` classes with integer labels ``(N,)`` or one-hot targets ``(N, K)``.

    From logits ``z`` (default, and the fused Softmax pair), with log-sum-exp
    ``lse(z) = m + log sum_k exp(z_k - m)``, ``m = max_k z_k``:
    ``L = scale * sum_n [lse(z_n) - sum_k y_nk z_nk]``, ``dL/dz = scale * (softmax(z) - y)``.

    From probabilities (``from_logits=False``): ``L = -scale * sum y log clip(p, eps, 1)``,
    ``dL/dp = -scale * y / clip(p, eps, 1)``.

    ``scale = 1 / N`` for ``reduction="mean"``: the mean over samples, as
    ``torch.nn.CrossEntropyLoss``.
    Integer labels are turned into one-hot rows on the device with the predictions' dtype.
    """

    activation = Softmax
    probabilities = staticmethod(softmax)

    def __init__(self, from_logits: bool = True, reduction: str = "mean", eps: float = 1e-7):
        super().__init__(from_logits, reduction, eps)

    def _count(self, yhat: Any) -> int:
        return yhat.shape[0]

    def _targets(self, xp: Any, yhat: Any, y: Any) -> Any:
        if y.ndim == 1 and yhat.ndim == 2 and y.shape[0] == yhat.shape[0]:
            y = one_hot(xp, y, yhat.shape[1], yhat.dtype)
        return super()._targets(xp, yhat, y)

    def _probability_value_and_grad(
        self, xp: Any, yhat: Any, y: Any, scale: float, grad: bool
    ) -> tuple[Any, Any]:
        p = xp.clip(yhat, self.eps, 1.0)
        return -xp.sum(y * xp.log(p)) * scale, -(y / p) * scale if grad else None

    def _logits_value(self, xp: Any, z: Any, y: Any, scale: float) -> Any:
        shifted = z - xp.max(z, axis=-1, keepdims=True)
        return self._shifted_value(xp, shifted, xp.sum(xp.exp(shifted), axis=-1, keepdims=True),
                                   y, scale)

    @staticmethod
    def _shifted_value(xp: Any, shifted: Any, total: Any, y: Any, scale: float,
                       reduce_sum: Any = None) -> Any:
        """The loss from ``shifted = z - max z`` and ``total = sum exp(shifted)``, (N, 1);
        ``reduce_sum`` is ``xp.sum`` or a backend's fast path for it."""
        reduce_sum = xp.sum if reduce_sum is None else reduce_sum
        return reduce_sum(xp.log(total[:, 0]) - reduce_sum(y * shifted, axis=-1)) * scale

    def _layer_value(self, xp: Any, layer: Layer, y: Any, scale: float) -> Any:
        """The Softmax layer already holds ``z - max z`` and its exponentials' sum: no
        second pass over the logits."""
        return self._shifted_value(xp, layer.shifted, layer.total, y, scale, layer.reduce_sum)

    def check_targets(self, host_y: Any, outputs: int) -> None:
        if host_y.ndim == 1:
            if host_y.dtype.kind not in "iu":
                raise InputError(
                    f"CategoricalCrossEntropy labels must be integers, got dtype {host_y.dtype}"
                )
            if host_y.size and (host_y.min() < 0 or host_y.max() >= outputs):
                raise InputError(
                    f"CategoricalCrossEntropy labels must be in [0, {outputs}) for a model "
                    f"with {outputs} outputs; got labels from {host_y.min()} to {host_y.max()}"
                )


def one_hot(xp: Any, labels: Any, num_classes: int, dtype: Any) -> Any:
    """``(N,)`` integer labels -> ``(N, num_classes)`` rows of 0 and 1 in ``dtype``."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=device_of(labels))
    return xp.astype(xp.reshape(labels, (-1, 1)) == classes, dtype)


LOSSES: dict[str, type[Loss]] = {
    "mse": MSE,
    "bce": BinaryCrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy,
    "ce": CategoricalCrossEntropy,
    "categorical_crossentropy": CategoricalCrossEntropy,
}


def get(loss: str | Loss, **kwargs: Any) -> Loss:
    """A Loss instance from a name (``"mse"``, ``"bce"``, ``"ce"``) or a Loss itself."""
    if isinstance(loss, Loss):
        return loss
    try:
        return LOSSES[loss](**kwargs)
    except KeyError:
        raise InputError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}") from None
