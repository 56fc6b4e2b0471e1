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

import math
from typing import Any, ClassVar

from . import init as initializers
from ._checks import positive_int
from .errors import InputError, ShapeError


class Layer:
    """Base class: a parameter-free layer that passes its input through unchanged."""

    #: names of the layer's parameters, in order
    param_names: ClassVar[tuple[str, ...]] = ()
    #: True while ``fit`` runs training steps (Dropout drops units only then); the model
    #: sets it through :meth:`portgd.Sequential.train`
    training: bool = False
    #: ``(first, last, total)`` while a data-parallel ``fit`` step runs: this rank's batch is
    #: rows ``[first, last)`` of a global batch of ``total`` (None: the batch is the whole
    #: batch). A layer that draws random numbers per row draws them for all ``total`` rows,
    #: as one process would, and uses its own; the model sets it with :attr:`training`.
    rows: tuple[int, int, int] | None = None

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
        """Take ``xp`` (and any fast paths) from ``backend``; parameters are not touched.

        ``reduce_sum`` and ``reduce_max`` are ``xp.sum`` and ``xp.max`` or the backend's
        ``"sum"`` and ``"max"`` fast paths (the same numbers with less dispatch), for the
        reductions of every step.
        """
        xp = self.xp = backend.xp
        self.reduce_sum = backend.op("sum", xp.sum)
        self.reduce_max = backend.op("max", xp.max)

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


def add_bias(y: Any, bias: Any) -> Any:
    """``y + bias``: Dense's bias added to its product ``x @ W``, a new array. The generic
    rule makes a new array; a backend's ``"add_bias"`` fast path may write into ``y``
    (NumPy's does), since nothing else holds it."""
    return y + bias


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

    def bind(self, backend: Any) -> None:
        super().bind(backend)
        self._add_bias = backend.op("add_bias", add_bias)

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
        return self._add_bias(y, self.params["bias"]) if self.use_bias else y

    def backward(self, dout: Any, need_input_grad: bool = True) -> Any:
        """Store ``dW`` and ``db``; return ``dx`` unless ``need_input_grad`` is False."""
        self.grads = {"weight": self._x.T @ dout}
        if self.use_bias:
            self.grads["bias"] = self.reduce_sum(dout, axis=0)
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
    ``e / (1 + e)`` for ``x < 0``; both keep full relative precision. The numerator is
    computed as ``exp(min(x, 0))``: exactly 1 for ``x >= 0`` and exactly ``e`` for ``x < 0``
    (the same exponential of the same number), so no select is needed; a second ``exp`` costs
    less than ``where`` (a 128x128 float32 batch: 37 against 83 us on NumPy, 57 against 106
    us on torch's CPU, one thread).
    """
    return xp.exp(xp.minimum(x, 0.0)) / (1.0 + xp.exp(-xp.abs(x)))


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
        self.shifted = x - self.reduce_max(x, axis=-1, keepdims=True)
        e = xp.exp(self.shifted)
        self.total = self.reduce_sum(e, axis=-1, keepdims=True)
        self.output = e / self.total
        return self.output

    def backward(self, dout: Any) -> Any:
        y = self.output
        return y * (dout - self.reduce_sum(dout * y, axis=-1, keepdims=True))


#: sqrt(2 / pi), the scale of the tanh form of GELU
GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)
#: Chebyshev coefficients of ``f(y) = log(erfc(a) / t) + a^2`` with ``t = 2 / (2 + a)`` and
#: ``y = 2 t - 1`` (tools/erfc_chebyshev.py computes them).
_ERFC_CHEBYSHEV = (
-0.6513268598908547,
    0.6419697923564902,
    0.019476473204185836,
    -0.009561514786808632,
    -0.0009465953444820369,
    0.00036683949785276145,
    4.252332480690777e-05,
    -2.0278578112534242e-05,
    -1.6242900046470256e-06,
    1.3036558355805232e-06,
    1.5626441722066142e-08,
    -8.523809591492654e-08,
    6.5290544390988515e-09,
    5.059343495551469e-09,
    -9.91364156493033e-10,
    -2.273651222931836e-10,
    9.646791102015527e-11,
    2.3940380830391146e-12,
    -6.886027526497553e-12,
    8.944879273090725e-13,
    3.130921399342958e-13,
    -1.1270822361367252e-13,
    3.810905255189232e-16,
    7.106097613609237e-15,
    -1.5230282014571041e-15,
)
#: Past this ``erfc`` is 0 in float64; clipping keeps ``+-inf`` inputs finite in the fit.
_ERFC_ZERO_BEYOND = 30.0


def erfc_nonnegative(xp: Any, a: Any) -> Any:
    """``erfc(a)`` for ``a >= 0`` in plain array-API operations, to float64 precision.

    ``erfc(a) = t exp(-a^2 + f(y))`` with ``t = 2 / (2 + a)``, ``y = 2 t - 1`` and ``f`` a
    25-term Chebyshev series in ``y`` (Clenshaw's recurrence). The relative error is below
    8e-16 wherever ``erfc(a)`` is a normal float64 number. ``a^2`` is split as
    ``s^2 + (a - s)(a + s)`` with ``s`` = ``a`` rounded down to a multiple of ``2^-12``, so
    ``s^2`` is exact and the large exponent loses no digits.
    """
    a = xp.clip(a, max=_ERFC_ZERO_BEYOND)
    t = 2.0 / (2.0 + a)
    y = 2.0 * t - 1.0
    b1, b2 = _ERFC_CHEBYSHEV[-1], 0.0  # Python floats until the first step makes arrays
    for c in reversed(_ERFC_CHEBYSHEV[1:-1]):
        b1, b2 = 2.0 * y * b1 - b2 + c, b1
    f = y * b1 - b2 + _ERFC_CHEBYSHEV[0]
    s = xp.floor(a * 4096.0) * (1.0 / 4096.0)
    return t * xp.exp(-(s * s)) * xp.exp(f - (a - s) * (a + s))


def normal_cdf(xp: Any, x: Any) -> Any:
    """``Phi(x) = erfc(-x / sqrt(2)) / 2``, the standard normal CDF.

    The array API has no ``erf``; :func:`erfc_nonnegative` supplies it to float64
    precision (relative error below 8e-16), using ``erfc(-z) = 2 - erfc(z)`` for ``z < 0``.
    """
    z = x * (-1.0 / math.sqrt(2.0))
    tail = erfc_nonnegative(xp, xp.abs(z))
    return 0.5 * xp.where(z >= 0, tail, 2.0 - tail)


class GELU(Layer):
    """Gaussian error linear unit: ``y = x * Phi(x)``, ``Phi`` the standard normal CDF.

    ``approximate="none"`` (as torch's default): ``dx = dy * (Phi(x) + x * phi(x))`` with
    ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``; ``Phi`` from :func:`normal_cdf` (float64
    precision). ``approximate="tanh"``: ``y = x (1 + tanh(u)) / 2``
    with ``u = sqrt(2/pi) (x + 0.044715 x^3)``, and
    ``dx = dy * ((1 + tanh u) / 2 + x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2)``.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise InputError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def config(self) -> dict[str, Any]:
        return {"approximate": self.approximate}

    def forward(self, x: Any) -> Any:
        xp = self.xp
        self._x = x
        if self.approximate == "tanh":
            self._tanh = xp.tanh(GELU_TANH_SCALE * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1.0 + self._tanh)
        self._cdf = normal_cdf(xp, x)
        return x * self._cdf

    def backward(self, dout: Any) -> Any:
        x, xp = self._x, self.xp
        if self.approximate == "tanh":
            th = self._tanh
            du = GELU_TANH_SCALE * (1.0 + 3.0 * 0.044715 * x * x)
            return dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du)
        pdf = xp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
        return dout * (self._cdf + x * pdf)


class Dropout(Layer):
    """Inverted dropout: while training, each unit is kept with probability ``1 - rate``
    and scaled by ``1 / (1 - rate)``; otherwise (predict, evaluate) ``y = x``.

    ``y = x * m``, ``dx = dy * m`` with ``m = [u >= rate] / (1 - rate)``, ``u`` uniform in
    [0, 1) drawn on the host, one per element, and moved to the device once per step. ``u``
    comes from the model's host generator (the one its ``seed`` seeds), so every backend
    sees the same masks, and a checkpoint, which saves that generator, resumes them.
    ``fit`` sets :attr:`training` for its steps only.
    """

    def __init__(self, rate: float = 0.5) -> None:
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise InputError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self._rng: Any = None
        self._mask: Any = None

    def config(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def bind(self, backend: Any) -> None:
        super().bind(backend)
        self._backend = backend

    def build(self, backend: Any, rng: Any, dtype: Any) -> None:
        super().build(backend, rng, dtype)
        self._dtype = dtype
        self._rng = rng

    def forward(self, x: Any) -> Any:
        if not self.training or self.rate == 0.0:
            self._mask = None
            return x
        first, last, total = self.rows or (0, x.shape[0], x.shape[0])
        keep = self._rng.random((total, *x.shape[1:]))[first:last, ...] >= self.rate
        self._mask = self._backend.asarray(keep * (1.0 / (1.0 - self.rate)),
                                           dtype=self._dtype)
        return x * self._mask

    def backward(self, dout: Any) -> Any:
        return dout if self._mask is None else dout * self._mask


LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (Dense, Identity, ReLU, LeakyReLU, Tanh, Sigmoid, Softmax, GELU, Dropout)
}

ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid,
    "softmax": Softmax, "identity": Identity, "linear": Identity, "gelu": GELU,
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
    if kind == "Dropout" and "seed" in kwargs and kwargs["seed"] is None:
        del kwargs["seed"]  # saved when Dropout had seed=; None meant the model's generator
    try:
        return LAYERS[kind](**kwargs)
    except TypeError as exc:
        raise InputError(f"layer {kind} cannot be rebuilt from {config!r}: {exc}") from None
