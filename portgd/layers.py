"""Layers: Dense and the activations, with backpropagation written out by the chain rule.

Every layer follows one protocol. ``forward(x)`` computes the output and keeps what the
backward pass needs; ``backward(dout)`` takes ``dL/dout``, stores the gradients of the
layer's own parameters in ``grads`` and returns ``dL/dx``. The stored gradients are new
arrays the layer neither keeps nor returns: ``fit`` applies them right after the layer's
backward and may overwrite them in place. Only optimizers change parameters. Inputs are
batches shaped ``(N, features)``.

A layer gets its array namespace ``xp`` once, when a model builds it on a backend.
"""

from __future__ import annotations

from typing import Any, ClassVar

from . import init as initializers
from ._checks import positive_int
from .errors import InputError, ShapeError


class Layer:
    """Base class: a parameter-free layer that passes its input through unchanged."""

    #: names of the layer's parameters, in order
    param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.index: int | None = None
        self.xp: Any = None

    # -- building ---------------------------------------------------------------------
    def output_features(self, in_features: int | None) -> int | None:
        """The number of output features for ``in_features`` inputs (None: unknown)."""
        return in_features

    def bind(self, backend: Any) -> None:
        """Take ``xp`` (and any fast paths) from ``backend``; parameters are not touched."""
        self.xp = backend.xp

    def build(self, backend: Any, rng: Any, dtype: Any) -> None:
        """Bind the layer to ``backend`` and draw its parameters from the host ``rng``."""
        self.bind(backend)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{parameter name: shape}`` of what :meth:`build` draws (known before building)."""
        return {}

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable (for checkpoints)."""
        return {}

    @property
    def label(self) -> str:
        where = "" if self.index is None else f" {self.index}"
        return f"layer{where} ({type(self).__name__})"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- computing --------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        return x

    def backward(self, dout: Any) -> Any:
        return dout


class Dense(Layer):
    """Fully connected layer ``y = x @ W + b``.

    Shapes: ``x`` (N, in), ``W`` (in, out), ``b`` (out,), ``y`` (N, out).
    Gradients: ``dW = x^T @ dy``, ``db = sum_n dy[n]``, ``dx = dy @ W^T``.
    """

    param_names = ("weight", "bias")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str = "glorot_uniform",
    ) -> None:
        super().__init__()
        positive_int("Dense in_features", in_features)
        positive_int("Dense out_features", out_features)
        initializers.get(init)  # fail now on an unknown name
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = bias
        self.init = init
        self.param_names = ("weight", "bias") if bias else ("weight",)
        self._x: Any = None

    def output_features(self, in_features: int | None) -> int | None:
        if in_features is not None and in_features != self.in_features:
            raise ShapeError(
                f"{self.label} expects {self.in_features} input features but the layer "
                f"before it produces {in_features}"
            )
        return self.out_features

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.in_features, self.out_features)}
        if self.use_bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def build(self, backend: Any, rng: Any, dtype: Any) -> None:
        super().build(backend, rng, dtype)
        shapes = self.param_shapes()
        weight = initializers.draw(backend, self.init, shapes["weight"], rng, dtype)
        self.params = {"weight": weight}
        if self.use_bias:
            self.params["bias"] = initializers.draw(backend, "zeros", shapes["bias"], rng, dtype)

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.use_bias,
            "init": self.init if isinstance(self.init, str) else "custom",  # a callable
        }

    def forward(self, x: Any) -> Any:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(
                f"{self.label} expects inputs shaped (batch, {self.in_features}); "
                f"got shape {tuple(x.shape)}"
            )
        self._x = x
        y = x @ self.params["weight"]
        return y + self.params["bias"] if self.use_bias else y

    def backward(self, dout: Any, need_input_grad: bool = True) -> Any:
        """Store ``dW`` and ``db``; return ``dx`` unless ``need_input_grad`` is False."""
        self.grads = {"weight": self._x.T @ dout}
        if self.use_bias:
            self.grads["bias"] = self.xp.sum(dout, axis=0)
        return dout @ self.params["weight"].T if need_input_grad else None


class Identity(Layer):
    """``y = x``."""


def relu_backward(x: Any, dout: Any, xp: Any) -> Any:
    """``dout * [x > 0]``: the upstream gradient times the 0/1 mask of active units.

    A product, as TensorFlow's ReluGrad (not a select): a non-finite ``dout`` at an
    inactive unit gives NaN rather than 0, so a diverging run shows it at once.
    """
    return dout * xp.astype(x > 0, dout.dtype)


class ReLU(Layer):
    """``y = max(x, 0)``; ``dx = dy * [x > 0]``.

    The backward pass is looked up as the backend's ``"relu_backward"`` fast path
    ``(x, dout) -> dx`` (NumPy multiplies by the boolean mask without converting it), with
    :func:`relu_backward` as the generic fallback.
    """

    def bind(self, backend: Any) -> None:
        super().bind(backend)
        xp = backend.xp
        self._grad = backend.op("relu_backward", lambda x, dout: relu_backward(x, dout, xp))

    def forward(self, x: Any) -> Any:
        self._x = x
        return self.xp.maximum(x, 0.0)

    def backward(self, dout: Any) -> Any:
        return self._grad(self._x, dout)


class LeakyReLU(Layer):
    """``y = x`` for ``x > 0``, ``alpha * x`` otherwise; ``dx = dy`` or ``alpha * dy``."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def forward(self, x: Any) -> Any:
        self._active = x > 0
        return self.xp.where(self._active, x, self.alpha * x)

    def backward(self, dout: Any) -> Any:
        return self.xp.where(self._active, dout, self.alpha * dout)


class Tanh(Layer):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def forward(self, x: Any) -> Any:
        self._y = self.xp.tanh(x)
        return self._y

    def backward(self, dout: Any) -> Any:
        return dout * (1.0 - self._y * self._y)


def sigmoid(xp: Any, x: Any) -> Any:
    """``1 / (1 + exp(-x))`` without overflow in either tail.

    With ``e = exp(-|x|)`` (never above 1): ``1 / (1 + e)`` for ``x >= 0`` and
    ``e / (1 + e)`` for ``x < 0``; both keep full relative precision.
    """
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0, e) / (1.0 + e)


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``, stable in both tails; ``dx = dy * y * (1 - y)``.

    Keeps its input ``x`` as well: followed by BinaryCrossEntropy the model computes the loss
    from these logits and uses the fused gradient ``(y - target) / N``.
    """

    def forward(self, x: Any) -> Any:
        self.logits = x
        self.output = sigmoid(self.xp, x)
        return self.output

    def backward(self, dout: Any) -> Any:
        return dout * self.output * (1.0 - self.output)


def softmax(xp: Any, z: Any) -> Any:
    """``exp(z - max z) / sum exp(z - max z)`` along the last axis (as Softmax.forward)."""
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


class Softmax(Layer):
    """``y_k = exp(x_k) / sum_j exp(x_j)`` over the features of each sample.

    ``dx = y * (dy - sum_k dy_k y_k)``. Keeps its input ``x``: followed by
    CategoricalCrossEntropy the model uses the fused gradient ``(y - target) / N``.
    """

    def forward(self, x: Any) -> Any:
        xp = self.xp
        self.logits = x
        #: ``x - max x`` and ``sum exp(x - max x)`` per sample, kept for the fused loss
        self.shifted = x - xp.max(x, axis=-1, keepdims=True)
        e = xp.exp(self.shifted)
        self.total = xp.sum(e, axis=-1, keepdims=True)
        self.output = e / self.total
        return self.output

    def backward(self, dout: Any) -> Any:
        y = self.output
        return y * (dout - self.xp.sum(dout * y, axis=-1, keepdims=True))


LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (Dense, Identity, ReLU, LeakyReLU, Tanh, Sigmoid, Softmax)
}

ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid,
    "softmax": Softmax, "identity": Identity, "linear": Identity,
}  # fmt: skip


def layer_from_config(config: dict[str, Any]) -> Layer:
    """Rebuild a layer from ``{"type": name, **config()}``.

    A Dense layer saved with a custom (callable) initializer records ``init="custom"``; it
    is rebuilt with ``init="zeros"``, and loading the saved weights then replaces them.
    """
    kind = config.get("type")
    if kind not in LAYERS:
        raise InputError(f"unknown layer type {kind!r}; known: {', '.join(LAYERS)}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    if kwargs.get("init") == "custom":
        kwargs["init"] = "zeros"
    return LAYERS[kind](**kwargs)
