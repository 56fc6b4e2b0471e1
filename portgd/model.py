"""Sequential: a stack of layers bound to one backend, device and dtype."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._registry import get_backend
from .errors import InputError, ShapeError
from .layers import ACTIVATIONS, Dense, Dropout, Layer, layer_from_config

if TYPE_CHECKING:
    from .callbacks import Callback
    from .history import History
    from .losses import Loss
    from .metrics import Metric


def param_name(index: int, name: str) -> str:
    """A model-level parameter name: ``"<layer index>.<name>"``, e.g. ``"0.weight"``."""
    return param_prefix(index) + name


def param_prefix(index: int) -> str:
    """What :func:`param_name` puts before the names of layer ``index``'s parameters."""
    return f"{index}."


def parameter_storage(x: Any) -> Any:
    """A new parameter as the model keeps it: ``x`` itself (the generic rule).

    A backend's ``"parameter"`` fast path may instead return a copy in memory its kernels
    read faster, with the same values (NumPy's starts on a 64-byte boundary). The model
    calls it where parameters are made: building, ``load_state_dict`` and ``to``.
    """
    return x


def mlp(
    in_features: int,
    hidden: Iterable[int],
    out_features: int,
    activation: str = "relu",
    output: str = "identity",
    init: str | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> Sequential:
    """A multi-layer perceptron: Dense layers of the given widths with ``activation`` between.

    ``output`` is the activation after the last Dense (``"sigmoid"``, ``"softmax"``,
    ``"identity"``). ``init`` defaults to ``he_uniform`` for ReLU-like activations and
    ``glorot_uniform`` otherwise. ``dropout > 0`` puts a :class:`~portgd.layers.Dropout` of
    that rate after each hidden activation. ``kwargs`` go to :class:`Sequential`.
    """
    for name in (activation, output):
        if name not in ACTIVATIONS:
            raise InputError(
                f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
    if output == "softmax" and out_features == 1:
        raise InputError(
            "output='softmax' over one output is always 1, so the model cannot learn; use "
            "output='sigmoid' for one output (two classes), or out_features=k for k classes"
        )
    if init is None:
        init = "he_uniform" if activation in ("relu", "leaky_relu") else "glorot_uniform"
    widths = [in_features, *hidden, out_features]
    layers: list[Layer] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        last = i == len(widths) - 2
        layers.append(Dense(a, b, init="glorot_uniform" if last else init))
        name = output if last else activation
        if ACTIVATIONS[name] is not ACTIVATIONS["identity"] or not last:
            layers.append(ACTIVATIONS[name]())
        if dropout and not last:
            layers.append(Dropout(dropout))
    return Sequential(layers, **kwargs)


class Sequential:
    """Layers applied in order: ``forward`` left to right, ``backward`` right to left.

    Args:
        layers: the layers; each Dense's ``in_features`` must match what comes before it.
        seed: seeds the host generator that draws the initial weights and, unless ``fit``
            is given its own seed, the batch order. The same seed gives bit-identical
            initial weights on every backend.
        dtype: floating dtype of parameters and activations (name or dtype object).
        backend: the backend (name or Backend) the model lives on (default: the active
            selection).
        device: the device on that backend (default: the backend's default device).

    Parameters are addressed ``"<layer index>.<name>"``: ``"0.weight"``, ``"0.bias"``, ...
    """

    def __init__(
        self,
        layers: Iterable[Layer],
        seed: int | None = 0,
        dtype: Any = "float32",
        backend: Any = None,
        device: Any = None,
    ) -> None:
        self.layers = list(layers)
        if not self.layers:
            raise InputError("Sequential needs at least one layer")
        features: int | None = None
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise InputError(f"item {index} of layers is {layer!r}, not a portgd layer")
            layer.index = index
            features = layer.output_features(features)
        self.seed = seed
        self.backend = get_backend(backend, device)
        self.dtype = self.backend.dtype(dtype)
        self.rng = self.backend.rng(seed)
        with self.backend.activate():
            store = self.backend.op("parameter", parameter_storage)
            for layer in self.layers:
                layer.build(self.backend, self.rng, self.dtype)
                layer.params = {name: store(p) for name, p in layer.params.items()}

    # -- description ------------------------------------------------------------------
    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def in_features(self) -> int | None:
        first = next((layer for layer in self.layers if isinstance(layer, Dense)), None)
        return None if first is None else first.in_features

    @property
    def out_features(self) -> int | None:
        features = None
        for layer in self.layers:
            features = layer.output_features(features)
        return features

    def config(self) -> dict[str, Any]:
        """The architecture, JSON-serialisable: ``Sequential.from_config`` rebuilds it."""
        return {
            "layers": [{"type": type(layer).__name__, **layer.config()} for layer in self.layers],
            "dtype": self.dtype_name,
            "seed": self.seed,
        }

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], backend: Any = None, device: Any = None
    ) -> Sequential:
        layers = [layer_from_config(layer) for layer in config["layers"]]
        return cls(layers, seed=config.get("seed", 0), dtype=config.get("dtype", "float32"),
                   backend=backend, device=device)

    @property
    def dtype_name(self) -> str:
        from portgd.backends import dtype_name  # the helper lives with the backends

        return dtype_name(self.dtype)

    def num_parameters(self) -> int:
        """The number of scalar parameters."""
        return sum(math.prod(p.shape) for p in self.params.values())

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return (f"Sequential([{inner}], dtype={self.dtype_name!r}, "
                f"backend={self.backend.name!r}, device={self.backend.device_name!r})")

    # -- parameters -------------------------------------------------------------------
    def _by_name(self, attribute: str) -> dict[str, Any]:
        """Every layer's ``params`` or ``grads`` dict merged, keyed ``"<index>.<name>"``."""
        return {
            param_name(i, name): value
            for i, layer in enumerate(self.layers)
            for name, value in getattr(layer, attribute).items()
        }

    @property
    def params(self) -> dict[str, Any]:
        """All parameters, keyed ``"<layer index>.<name>"``."""
        return self._by_name("params")

    @params.setter
    def params(self, new: Mapping[str, Any]) -> None:
        for i, layer in enumerate(self.layers):
            if layer.params:
                layer.params = {name: new[param_name(i, name)] for name in layer.params}

    @property
    def grads(self) -> dict[str, Any]:
        """The gradients stored by the last ``backward``, keyed like ``params``."""
        return self._by_name("grads")

    def zero_grad(self) -> None:
        """Forget the stored gradients (``grads`` becomes empty), freeing their memory."""
        for layer in self.layers:
            layer.grads = {}

    def state_dict(self) -> dict[str, Any]:
        """Host NumPy copies of every parameter, keyed like ``params``."""
        return {name: self.backend.to_numpy(p) for name, p in self.params.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Set every parameter from host arrays (or this backend's arrays), checking shapes.

        The values are copied: the model never updates arrays the caller still holds.
        """
        with self.backend.activate():
            self.params = self._converted(state, self.backend, self.dtype)

    def _converted(self, state: Mapping[str, Any], backend: Any, dtype: Any) -> dict[str, Any]:
        """``state`` checked against this model's parameters and copied onto ``backend``."""
        current = self.params
        missing = sorted(set(current) - set(state))
        unexpected = sorted(set(state) - set(current))
        if missing or unexpected:
            raise InputError(
                f"state dict does not fit this model: missing {missing}, unexpected {unexpected}"
            )
        new = {}
        store = backend.op("parameter", parameter_storage)
        for name, value in state.items():
            if backend.is_host(value):
                value = backend.host.asarray(value)
            if tuple(value.shape) != tuple(current[name].shape):
                raise ShapeError(
                    f"parameter {name!r} is shaped {tuple(current[name].shape)} in this model "
                    f"but {tuple(value.shape)} in the state dict"
                )
            new[name] = store(backend.asarray(value, dtype=dtype, copy=True))
        return new

    def to(self, backend: Any, device: Any = None) -> Sequential:
        """Move the model to another backend or device (through the host); returns self.

        Nothing changes if the move fails (say, float64 onto a device without it).
        """
        target = get_backend(backend, device)
        if target == self.backend:
            return self
        dtype = target.dtype(self.dtype_name)
        with target.activate():
            params = self._converted(self.state_dict(), target, dtype)
        self.backend, self.dtype = target, dtype
        for layer in self.layers:
            layer.bind(target)
        self.params = params
        return self

    # -- computing --------------------------------------------------------------------
    def forward(self, x: Any, training: bool = False,
                rows: tuple[int, int, int] | None = None) -> Any:
        """The output for a batch ``x`` shaped ``(N, in_features)``; keeps what backward needs.

        ``training=True`` (what ``fit`` passes for its steps) makes Dropout drop units.
        ``rows=(first, last, total)`` (data-parallel ``fit``) says that ``x`` is rows
        ``[first, last)`` of a global batch of ``total``: Dropout then draws the global
        batch's mask, as one process does, and uses those rows. Every call sets each
        layer's ``training`` and ``rows``, so no mode outlives the call.
        """
        for layer in self.layers:
            layer.training, layer.rows = training, rows
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(
        self,
        dout: Any,
        start: int | None = None,
        after_layer: Callable[[int, Layer], None] | None = None,
    ) -> None:
        """Backpropagate ``dL/d(output of layer start)`` (default: the last layer).

        Stores every parameter gradient. The first layer's input gradient is not needed
        and not computed. ``after_layer(index, layer)``, if given, is called right after
        each layer's backward, with the layer's position in ``layers`` (an optimizer's
        LayerwiseStep updates the layer there).
        """
        last = len(self.layers) - 1 if start is None else start
        for index in range(last, -1, -1):
            layer = self.layers[index]
            if index > 0:
                dout = layer.backward(dout)
            elif isinstance(layer, Dense):
                layer.backward(dout, need_input_grad=False)
            else:
                layer.backward(dout)
            if after_layer is not None:
                after_layer(index, layer)

    def _fused_activation(self, loss: Loss) -> Layer | None:
        """The last layer if ``loss`` fuses with it (Sigmoid + BCE, Softmax + CE), else None."""
        last = self.layers[-1]
        return last if loss.fuses_with is not None and type(last) is loss.fuses_with else None

    def loss_value(self, yhat: Any, y: Any, loss: Loss) -> Any:
        """``loss`` of the last forward's output ``yhat`` (the fused stable form if it applies)."""
        fused = self._fused_activation(loss)
        if fused is not None:
            return loss.fused_with_layer(fused, y, self.xp, grad=False)[0]
        return loss.value(yhat, y, self.xp)

    def loss_and_backward(
        self,
        yhat: Any,
        y: Any,
        loss: Loss,
        after_layer: Callable[[int, Layer], None] | None = None,
    ) -> Any:
        """Compute ``loss`` on the last forward's output, backpropagate, return the loss.

        Uses the fused stable gradient when the last layer is the activation the loss fuses
        with (Sigmoid + BinaryCrossEntropy, Softmax + CategoricalCrossEntropy).
        ``after_layer`` is passed on to :meth:`backward`.
        """
        fused = self._fused_activation(loss)
        if fused is not None:
            value, dz = loss.fused_with_layer(fused, y, self.xp)
            self.backward(dz, start=len(self.layers) - 2, after_layer=after_layer)
        else:
            value, dout = loss(yhat, y, self.xp)
            self.backward(dout, after_layer=after_layer)
        return value

    def input(self, x: Any) -> Any:
        """``x`` as an array of this model's backend, device and dtype.

        Host data is transferred; integer data is cast to the float dtype; arrays of another
        backend or device raise BackendMismatchError.
        """
        return self.backend.asarray(x, dtype=self.dtype)

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """The model's output for ``x`` (host data or this backend's arrays)."""
        with self.backend.activate():
            x = self.input(x)
            n = x.shape[0]
            if batch_size is None or n <= batch_size:
                return self.forward(x)
            parts = [self.forward(x[i : min(i + batch_size, n), ...])
                     for i in range(0, n, batch_size)]
            return self.xp.concat(parts, axis=0)

    def fit(
        self,
        x: Any,
        y: Any,
        loss: str | Loss = "mse",
        optimizer: Any = "adam",
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        metrics: Sequence[str | Metric] = (),
        callbacks: Sequence[Callback] = (),
        verbose: int = 1,
        seed: int | None = None,
        stop_on_nonfinite: bool = True,
        initial_epoch: int = 0,
        distributed: Any = None,
    ) -> History:
        """Train with mini-batch gradient descent; the arguments are those of
        :func:`portgd.training.fit`, which documents them."""
        return _loop().fit(
            self, x, y, loss=loss, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
            shuffle=shuffle, validation_data=validation_data,
            validation_split=validation_split, metrics=metrics, callbacks=callbacks,
            verbose=verbose, seed=seed, stop_on_nonfinite=stop_on_nonfinite,
            initial_epoch=initial_epoch, distributed=distributed,
        )

    def evaluate(
        self,
        x: Any,
        y: Any,
        loss: str | Loss | None = None,
        metrics: Sequence[str | Metric] = (),
        batch_size: int | None = None,
    ) -> dict[str, float]:
        """Loss and metrics on ``(x, y)``; see :func:`portgd.training.evaluate`."""
        return _loop().evaluate(self, x, y, loss=loss, metrics=metrics, batch_size=batch_size)

    def summary(self) -> str:
        """A table of the layers: output shape per sample batch, parameter counts, then the
        total, dtype, backend and device. ``print(model.summary())`` shows it."""
        rows = [("#", "layer", "output shape", "parameters")]
        features: int | None = None
        for index, layer in enumerate(self.layers):
            features = layer.output_features(features)
            count = sum(math.prod(p.shape) for p in layer.params.values())
            shape = "(N, ?)" if features is None else f"(N, {features})"
            rows.append((str(index), type(layer).__name__, shape, f"{count:,}"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join((row[0].rjust(widths[0]), row[1].ljust(widths[1]),
                            row[2].ljust(widths[2]), row[3].rjust(widths[3]))).rstrip()
                 for row in rows]
        n_bytes = self.num_parameters() * _itemsize(self.dtype_name)
        lines.append(f"{self.num_parameters():,} parameters ({_size(n_bytes)}), "
                     f"{self.dtype_name}, on {self.backend.name} {self.backend.device_name}")
        return "\n".join(lines)


def _itemsize(dtype_name: str) -> int:
    digits = "".join(c for c in dtype_name if c.isdigit())
    return int(digits) // 8 if digits else 4


def _size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


class TrainingLoop(Protocol):
    """What :meth:`Sequential.fit` and :meth:`Sequential.evaluate` run.

    The training loop sits above the model (it also brings callbacks, checkpoints and
    distribution; see DESIGN.md, "Which way imports run"), so this module does not import
    it: :mod:`portgd.training` installs itself with :func:`install_training_loop` when it
    is imported, which ``import portgd`` does.
    """

    def fit(self, model: Sequential, x: Any, y: Any, **kwargs: Any) -> History: ...

    def evaluate(self, model: Sequential, x: Any, y: Any, **kwargs: Any) -> dict[str, float]: ...


_training_loop: list[TrainingLoop] = []


def install_training_loop(loop: TrainingLoop) -> None:
    """Make ``loop`` the one ``Sequential.fit`` and ``Sequential.evaluate`` call."""
    _training_loop[:] = [loop]


def _loop() -> TrainingLoop:
    if not _training_loop:
        raise InputError(
            "no training loop is installed; import portgd (or portgd.training) before "
            "calling fit or evaluate"
        )
    return _training_loop[0]
