"""The training loop: mini-batch gradient descent with device-side bookkeeping.

Data is moved to the model's device once. Each epoch draws its batch order on the host from
the seeded generator (so every backend sees the same batches), transfers the permutation once
and gathers the epoch's data on the device; batches are slices of that. Inside a step nothing
is read back to the host: the loss and metrics are added up on the device and read once per
epoch (and, with a progress bar on a terminal, at most twice a second).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import losses as losses_module
from . import metrics as metrics_module
from ._checks import positive_int
from .callbacks import Callback, CallbackList
from .errors import DatasetError, DistributedError, InputError, NonFiniteLossError, ShapeError
from .history import History
from .model import install_training_loop
from .optim import Optimizer, make_optimizer
from .progress import EpochProgress
from .step import TrainingStep

if TYPE_CHECKING:
    from .losses import Loss
    from .model import Sequential


def _host(model: Sequential, y: Any) -> Any:
    """Targets on the host for one-time validation (a single read before training)."""
    backend = model.backend
    if backend.is_host(y):
        return backend.host.asarray(y)
    backend.check(y, "y")
    return backend.to_numpy(y)


def prepare(model: Sequential, x: Any, y: Any, loss: Loss) -> tuple[Any, Any]:
    """Validate ``(x, y)`` once and return them on the model's device.

    ``x`` becomes the model's float dtype. Class labels for CategoricalCrossEntropy become
    one-hot rows; ``(N,)`` targets for a one-output model become ``(N, 1)``.
    """
    x = model.input(x)
    host_y = _host(model, y)
    if x.ndim != 2:
        raise ShapeError(f"x must be 2-d, shaped (samples, features); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DatasetError("x holds no samples; fit and evaluate need at least one row")
    _check_finite(model, x, host_y)
    if host_y.shape[0] != x.shape[0]:
        raise ShapeError(
            f"x has {x.shape[0]} samples but y has {host_y.shape[0]}; they must match"
        )
    outputs = model.out_features
    if host_y.dtype.kind not in "biuf":
        raise InputError(f"targets must be numeric, got dtype {host_y.dtype}")
    loss.check_targets(host_y, outputs)
    if isinstance(loss, losses_module.CategoricalCrossEntropy) and host_y.ndim == 1:
        backend = model.backend
        if host_y.size:
            backend.check_index_range(int(host_y.min()), int(host_y.max()), "class labels")
        labels = backend.asarray(host_y, dtype=backend.index_dtype)
        y = losses_module.one_hot(model.xp, labels, outputs, model.dtype)
    else:
        if host_y.ndim == 1 and outputs == 1:
            host_y = host_y.reshape(-1, 1)
        y = model.backend.asarray(host_y, dtype=model.dtype)
    if outputs is not None and (y.ndim != 2 or y.shape[1] != outputs):
        raise ShapeError(
            f"targets shaped {tuple(host_y.shape)} do not fit a model with {outputs} outputs"
        )
    return x, y


def _check_finite(model: Sequential, x: Any, host_y: Any) -> None:
    """DatasetError for NaN or infinity in the inputs or targets (one read of ``x``), so that
    bad data is reported as bad data, not as a diverging loss."""
    xp = model.xp
    if not bool(model.backend.to_numpy(xp.all(xp.isfinite(x)))):
        bad = model.backend.host.argwhere(~model.backend.host.isfinite(model.backend.to_numpy(x)))
        row, column = (int(v) for v in bad[0])
        raise DatasetError(
            f"x holds NaN or infinite values (the first at row {row}, column {column}); drop "
            f"or fill in those samples before training"
        )
    if host_y.dtype.kind == "f" and not bool(model.backend.host.isfinite(host_y).all()):
        row = int(model.backend.host.argwhere(~model.backend.host.isfinite(host_y))[0][0])
        raise DatasetError(f"y holds NaN or infinite values (the first at row {row}); drop "
                           f"or fill in those samples before training")


def _loss_for(model: Sequential, loss: str | Loss) -> Loss:
    """The Loss object; a loss *name* after the activation it fuses with takes probabilities.

    ``loss="ce"`` after a Softmax (``"bce"`` after a Sigmoid) is the fused, stable pair;
    a Loss object with ``from_logits=True`` there would apply the activation twice and is
    refused.
    """
    last = type(model.layers[-1]).__name__
    fused = {"bce": "Sigmoid", "ce": "Softmax"}
    if isinstance(loss, str) and fused.get(loss) == last:
        return losses_module.get(loss, from_logits=False)
    loss = losses_module.get(loss)
    expects = {losses_module.BinaryCrossEntropy: "Sigmoid",
               losses_module.CategoricalCrossEntropy: "Softmax"}.get(type(loss))
    if getattr(loss, "from_logits", False) and last == expects:
        raise InputError(
            f"the model ends in {expects} but {type(loss).__name__}(from_logits=True) "
            f"expects logits, so the activation would be applied twice and training would "
            f"stall; pass from_logits=False (portgd then uses the fused, stable gradient) or "
            f"drop the last {expects}"
        )
    return loss


def _bind_metrics(metrics: Sequence[Any], loss: Loss, xp: Any,
                  device: Any) -> list[metrics_module.Metric]:
    """Metric objects bound to ``xp``, ``device`` and to how ``loss`` reads the outputs."""
    binary = isinstance(loss, losses_module.BinaryCrossEntropy)
    threshold = 0.0 if binary and loss.from_logits else 0.5
    return [metrics_module.get(m).bind(xp, threshold, binary, device=device)
            for m in metrics]


def _split(x: Any, y: Any, fraction: float) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation_split must be in [0, 1), got {fraction!r}")
    n = x.shape[0]
    n_val = round(n * fraction)
    if fraction > 0 and (n_val == 0 or n_val == n):
        raise DatasetError(
            f"validation_split={fraction} of {n} samples leaves "
            f"{n - n_val} for training and {n_val} for validation; both need at least one"
        )
    cut = n - n_val
    return (x[:cut, ...], y[:cut, ...]), (x[cut:, ...], y[cut:, ...])


class _Accumulator:
    """Sums of the loss and the metrics over an epoch, kept on the device.

    The loss total is ``sum_b loss.share(n_b, 1) * L_b`` (``n_b L_b`` for mean reduction,
    ``L_b`` for sum), read as ``total * loss.share(1, N)``: the loss of all ``N`` samples
    under the loss's reduction, whatever the batch size. Metrics are means per sample.
    """

    def __init__(self, metrics: Sequence[metrics_module.Metric], backend: Any,
                 loss: Loss) -> None:
        self.metrics = metrics
        self.backend = backend
        self.loss = loss
        self.loss_sum: Any = 0.0
        self.sums: list[Any] = [0.0] * len(metrics)
        self.batch_losses: list[Any] = []
        self.samples = 0

    def add(self, value: Any, yhat: Any, y: Any) -> None:
        n = yhat.shape[0]
        self.batch_losses.append(value)
        self.loss_sum = self.loss_sum + value * self.loss.share(n, 1)
        if self.metrics:
            self.sums = [s + m.batch_sum(yhat, y)
                         for s, m in zip(self.sums, self.metrics, strict=True)]
        self.samples += n

    def read(self, prefix: str = "", distributed: Any = None) -> dict[str, float]:
        """One host read of everything accumulated: the loss (see the class) and the
        metrics' means per sample.

        With ``distributed`` (a Communicator) the sums and sample counts of every rank are
        added first (one small allreduce), so every rank gets the global means.
        """
        backend = self.backend
        xp = backend.xp
        values = [xp.reshape(xp.asarray(v), (1,)) for v in (self.loss_sum, *self.sums)]
        host = backend.to_numpy(xp.concat(values))
        samples = self.samples
        if distributed is not None:
            host, samples = distributed.sum_totals(host, samples)
        self.global_samples = samples
        values = [host[0] * self.loss.share(1, max(samples, 1)),
                  *(host[1:] / max(samples, 1))]
        names = ["loss", *(m.name for m in self.metrics)]
        return {prefix + name: float(v) for name, v in zip(names, values, strict=True)}

    def materialize(self, *also: Any) -> tuple[Any, ...]:
        """Do the pending work of the sums and of ``also`` in one call of the lazy-library
        hook (so work they share is done once); returns ``also`` materialised. The batch
        losses become one array, so the number of arrays held stays bounded."""
        xp = self.backend.xp
        if self.batch_losses:
            self.batch_losses = [xp.concat([xp.reshape(xp.asarray(v), (-1,))
                                            for v in self.batch_losses])]
        self.loss_sum, self.sums, self.batch_losses, also = self.backend.materialize(
            (self.loss_sum, self.sums, self.batch_losses, also))
        return also

    def first_nonfinite_batch(self) -> int | None:
        backend = self.backend
        xp = backend.xp
        host = backend.to_numpy(xp.concat([xp.reshape(xp.asarray(v), (-1,))
                                           for v in self.batch_losses]))
        bad = [i for i, v in enumerate(host.tolist()) if not math.isfinite(v)]
        return bad[0] if bad else None


def on_model_device(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``function(model, ...)`` with the model's device current (CuPy needs it)."""

    @functools.wraps(function)
    def wrapper(model: Sequential, *args: Any, **kwargs: Any) -> Any:
        with model.backend.activate():
            return function(model, *args, **kwargs)

    return wrapper


@on_model_device
def fit(
    model: Sequential,
    x: Any,
    y: Any,
    loss: str | Loss = "mse",
    optimizer: Any = "adam",
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    metrics: Sequence[str | metrics_module.Metric] = (),
    callbacks: Sequence[Callback] = (),
    verbose: int = 1,
    seed: int | None = None,
    stop_on_nonfinite: bool = True,
    initial_epoch: int = 0,
    distributed: Any = None,
) -> History:
    """Train ``model`` on ``(x, y)`` by mini-batch gradient descent; returns a History.

    Each step is forward, loss and backward, with each layer's parameters updated as soon
    as the backward pass has their gradients (:class:`portgd.step.TrainingStep`; the
    numbers are those of ``optimizer.update(model)`` after the whole backward pass). The
    gradients are released as they are used: ``model.grads`` is empty after ``fit``. If a
    step is interrupted part-way through the backward pass, the layers above that point
    have taken it and those below have not.

    Args:
        x: ``(N, in_features)`` host data or arrays of the model's backend and device.
        y: targets: ``(N, outputs)``; ``(N,)`` for one output; integer labels ``(N,)`` for
            CategoricalCrossEntropy.
        loss: a Loss or its name (``"mse"``, ``"bce"``, ``"ce"``).
        optimizer: an Optimizer or its name (``"sgd"``, ``"adam"``, ...; default settings).
        epochs: the number of passes over the data (the index the last epoch ends at).
        batch_size: samples per step (the last batch of an epoch may be smaller).
        shuffle: draw a new batch order every epoch from the host generator.
        validation_data: ``(x_val, y_val)`` evaluated after every epoch.
        validation_split: instead of ``validation_data``, the fraction of ``(x, y)`` to
            hold out: the last samples, before shuffling.
        metrics: names or Metric objects, reported for training and validation data.
        callbacks: Callback objects (EarlyStopping, ModelCheckpoint, ...).
        verbose: 1 reports each epoch on stderr (a progress bar on a terminal, refreshed
            at most twice a second; one line per epoch elsewhere); 0 prints nothing.
        seed: seeds the batch order; None continues the model's own generator.
        stop_on_nonfinite: raise NonFiniteLossError when an epoch's loss is NaN or infinite
            (read once per epoch); False keeps training.
        initial_epoch: the epoch to start at, when resuming (as Keras): epochs
            ``initial_epoch`` to ``epochs - 1`` run, and callbacks and the History see
            those numbers.
        distributed: a :class:`portgd.distributed.Communicator` to train data-parallel
            over its ranks (docs/scaling.md): every rank passes the same model, data and
            arguments; each global batch of ``batch_size`` is split across the ranks and
            the gradients are combined with the weights ``loss.share(n_r, B)`` (the
            sample-weighted mean for mean reduction, the sum for sum), so the result
            equals one process's to rounding. Loss and metrics are global, validation is
            sharded, and only rank 0 prints. A refusal every rank makes alike (the
            same argument or data error) is raised on every rank; a failure on one rank
            ends the whole job (MPI_Abort) instead of leaving the others waiting.
    """
    arguments = dict(locals())
    if distributed is None:
        return _fit(**arguments)
    with distributed.fault_guard():
        return _fit(**arguments)


def _fit(
    model: Sequential,
    x: Any,
    y: Any,
    loss: str | Loss,
    optimizer: Any,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    validation_data: tuple[Any, Any] | None,
    validation_split: float,
    metrics: Sequence[str | metrics_module.Metric],
    callbacks: Sequence[Callback],
    verbose: int,
    seed: int | None,
    stop_on_nonfinite: bool,
    initial_epoch: int,
    distributed: Any,
) -> History:
    with contextlib.nullcontext() if distributed is None else distributed.agree():
        # every refusal up to here is decided from the arguments and data alone
        loss, optimizer, x, y, validation = _setup(
            model, x, y, loss, optimizer, epochs, batch_size, validation_data,
            validation_split, initial_epoch)
        bound = _bind_metrics(metrics, loss, model.xp, model.backend.device)
        history = History()
        hooks = CallbackList(callbacks, model=model, optimizer=optimizer, history=history,
                             distributed=distributed)
    backend, xp = model.backend, model.xp
    n = x.shape[0]
    rng = model.rng if seed is None else backend.rng(seed)
    reducer = None
    if distributed is not None:
        _check_ranks(distributed, model, optimizer, loss, rng, x, y, validation, {
            "epochs": epochs, "batch_size": batch_size, "shuffle": shuffle,
            "validation_split": validation_split, "metrics": [m.name for m in bound],
            "callbacks": [type(cb).__name__ for cb in callbacks], "seed": seed,
            "stop_on_nonfinite": stop_on_nonfinite, "initial_epoch": initial_epoch})
        reducer = distributed.gradient_reducer(backend)
        verbose = verbose if distributed.rank == 0 else 0
        if validation is not None:
            validation = _shard_rows(*validation, distributed)
    model.loss, model.optimizer, model.stop_training = loss, optimizer, False
    hooks.on_train_begin()
    n_batches = math.ceil(n / batch_size)
    for epoch in range(initial_epoch, epochs):
        hooks.on_epoch_begin(epoch)
        if shuffle:
            order = backend.asarray(rng.permutation(n), dtype=backend.index_dtype)
            xe, ye = xp.take(x, order, axis=0), xp.take(y, order, axis=0)
        else:
            xe, ye = x, y
        progress = EpochProgress(epoch, epochs, n_batches) if verbose else None
        totals = _Accumulator(bound, backend, loss)
        for b, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            rows = None
            if reducer is not None:  # this rank's shard of the global batch
                first, last = distributed.shard(stop - start)
                reducer.begin(loss.share(last - first, stop - start))
                rows = (first, last, stop - start)
                start, stop = start + first, start + last
            xb, yb = xe[start:stop, ...], ye[start:stop, ...]
            yhat = model.forward(xb, training=True, rows=rows)
            step = TrainingStep(model, optimizer, reducer)
            totals.add(model.loss_and_backward(yhat, yb, loss, after_layer=step), yhat, yb)
            step.finish()
            hooks.on_batch_end(b)
            if backend.due(b + 1):
                _materialize(model, optimizer, totals)
            if progress is not None:
                progress.step(b + 1, totals.samples, totals.read)
        if backend.materialize_every is not None:  # the host reads now anyway
            _materialize(model, optimizer, totals)
        logs = totals.read(distributed=distributed)
        if validation is not None:
            logs.update(_evaluate(model, *validation, loss, bound, batch_size, "val_",
                                  distributed))
        if distributed is not None:  # one rank's figures: every rank decides alike
            logs = distributed.broadcast(logs)
        if progress is not None:
            progress.finish(logs, totals.global_samples)
        history.append(epoch, logs)
        hooks.on_epoch_end(epoch, logs)
        if distributed is not None:
            model.stop_training = distributed.broadcast(model.stop_training)
        if not math.isfinite(logs["loss"]) and stop_on_nonfinite and not model.stop_training:
            batch = _first_nonfinite_batch(totals, distributed)
            where = "every batch loss was finite but their sum overflowed" if (
                batch is None) else (
                f"first at batch {batch}, samples {batch * batch_size} to "
                f"{min((batch + 1) * batch_size, n) - 1} of the epoch's order")
            raise _everywhere(distributed, NonFiniteLossError(
                f"the training loss became {logs['loss']} in epoch {epoch + 1} ({where}). "
                f"Lower the learning rate, standardise the inputs or clip gradients; "
                f"pass stop_on_nonfinite=False to keep training."
            ))
        if model.stop_training:
            break
    hooks.on_train_end()
    return history


def _setup(model: Sequential, x: Any, y: Any, loss: str | Loss, optimizer: Any, epochs: int,
           batch_size: int, validation_data: tuple[Any, Any] | None, validation_split: float,
           initial_epoch: int) -> tuple[Loss, Optimizer, Any, Any, tuple[Any, Any] | None]:
    """``fit``'s checks of its arguments and data: the loss and optimizer objects, and
    ``(x, y)`` and the validation pair on the model's device."""
    loss = _loss_for(model, loss)
    if not isinstance(optimizer, Optimizer):
        optimizer = make_optimizer(optimizer)
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    if (isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int)
            or not 0 <= initial_epoch < epochs):
        raise InputError(
            f"initial_epoch must be an int in [0, epochs={epochs}), got {initial_epoch!r}"
        )
    x, y = prepare(model, x, y, loss)
    if validation_data is not None:
        if validation_split:
            raise InputError("pass validation_data or validation_split, not both")
        validation = prepare(model, *validation_data, loss)
    elif validation_split:
        (x, y), validation = _split(x, y, validation_split)
    else:
        validation = None
    if x.shape[0] < batch_size:
        raise DatasetError(
            f"the training data has {x.shape[0]} samples, fewer than batch_size={batch_size}; "
            f"use batch_size <= {x.shape[0]} or more data"
        )
    return loss, optimizer, x, y, validation


def _evaluate(
    model: Sequential,
    x: Any,
    y: Any,
    loss: Loss,
    metrics: Sequence[metrics_module.Metric],
    batch_size: int | None,
    prefix: str = "",
    distributed: Any = None,
) -> dict[str, float]:
    n = x.shape[0]
    step = max(n, 1) if batch_size is None else batch_size
    totals = _Accumulator(metrics, model.backend, loss)
    for start in range(0, n, step):
        stop = min(start + step, n)
        xb, yb = x[start:stop, ...], y[start:stop, ...]
        yhat = model.forward(xb)
        totals.add(model.loss_value(yhat, yb, loss), yhat, yb)
        if model.backend.due(start // step + 1):
            totals.materialize()
    return totals.read(prefix, distributed)


def _materialize(model: Sequential, optimizer: Optimizer, totals: _Accumulator) -> None:
    """The lazy-library hook of ``fit``: parameters, optimizer state and the epoch's sums
    in one call, so the work they share is done once."""
    model.params, optimizer.state = totals.materialize(model.params, optimizer.state)


@on_model_device
def evaluate(
    model: Sequential,
    x: Any,
    y: Any,
    loss: str | Loss | None = None,
    metrics: Sequence[str | metrics_module.Metric] = (),
    batch_size: int | None = None,
) -> dict[str, float]:
    """The mean loss and metrics of ``model`` on ``(x, y)``, as host floats.

    ``loss`` defaults to the loss of the last ``fit``.
    """
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise InputError("evaluate needs loss=...: this model has not been fitted yet")
    loss = losses_module.get(loss)
    x, y = prepare(model, x, y, loss)
    bound = _bind_metrics(metrics, loss, model.xp, model.backend.device)
    return _evaluate(model, x, y, loss, bound, batch_size)


# -- data parallelism (fit(distributed=...); the Communicator does the communicating) --------


def _everywhere(distributed: Any, exc: Exception) -> Exception:
    """``exc``, marked as raised by every rank alike when training is distributed."""
    return exc if distributed is None else distributed.raised_everywhere(exc)


def _shard_rows(x: Any, y: Any, distributed: Any) -> tuple[Any, Any]:
    """This rank's contiguous share of the rows of ``(x, y)``."""
    first, last = distributed.shard(x.shape[0])
    return x[first:last, ...], y[first:last, ...]


def _check_ranks(distributed: Any, model: Sequential, optimizer: Optimizer, loss: Loss,
                 rng: Any, x: Any, y: Any, validation: tuple[Any, Any] | None,
                 arguments: dict[str, Any]) -> None:
    """Refuse to start unless every rank holds the same parameters, optimizer, data and
    arguments, and every rank gets at least one sample of every global batch."""
    backend, xp = model.backend, model.xp
    data = [x, y] if validation is None else [x, y, *validation]
    # column sums and position-weighted column sums: a different data set or order shows
    fingerprints = []
    for array in data:
        weights = xp.arange(1, array.shape[0] + 1, dtype=array.dtype, device=backend.device)
        fingerprints += [xp.sum(array, axis=0), weights @ array]
    host = backend.to_numpy(xp.concat(fingerprints))
    settings, state = _optimizer_snapshot(optimizer)
    distributed.check_same({
        "the parameters": b"".join(p.tobytes() for p in model.state_dict().values()),
        "the model": model.config(),
        "the optimizer": settings,
        "the optimizer state": state,
        "the loss": [type(loss).__name__, loss.config()],
        "the data": [list(a.shape) for a in data],
        "the data values": host.tobytes(),
        "the batch order (generator state)": rng.bit_generator.state,
        "the fit arguments": arguments,
    })
    n, batch_size = x.shape[0], arguments["batch_size"]
    smallest = min(batch_size, n % batch_size or batch_size)
    if distributed.size > smallest:
        raise distributed.raised_everywhere(DistributedError(
            f"{distributed.size} ranks cannot share a global batch of {smallest} samples "
            f"(batch_size={batch_size}, {n} training samples); use at most {smallest} ranks "
            f"or a larger batch_size"
        ))


def _optimizer_snapshot(optimizer: Optimizer) -> tuple[Any, bytes]:
    """(configuration and counters, the state's bytes) of ``optimizer``."""
    try:
        snapshot = optimizer.state_dict()
    except InputError:  # a custom learning-rate callable: compare what can be compared
        return [type(optimizer).__name__, optimizer.step_count, optimizer.param_steps], b""
    arrays = snapshot.pop("state")
    state = b"".join(arrays[name][key].tobytes() for name in sorted(arrays)
                     for key in sorted(arrays[name]))
    return snapshot, state


def _first_nonfinite_batch(totals: _Accumulator, distributed: Any) -> int | None:
    batch = totals.first_nonfinite_batch()
    if distributed is None:
        return batch
    found = [b for b in distributed.allgather(batch) if b is not None]
    return min(found) if found else None


# Sequential.fit and Sequential.evaluate call this module's fit and evaluate; the model
# sits below the training loop and does not import it.
install_training_loop(sys.modules[__name__])
