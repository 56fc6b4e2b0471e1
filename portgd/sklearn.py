"""scikit-learn estimators: ``MLPClassifier`` and ``MLPRegressor`` trained by portgd.

They take scikit-learn's parameter names where the concept is the same, plus ``backend``,
``device`` and ``dtype``, and pass scikit-learn's own estimator checks::

    from portgd.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(64,), backend="torch", random_state=0)
    clf.fit(X, y).predict(X)

Data flow. Host data (NumPy arrays, lists, pandas frames) is validated on the host,
moved once to the model's backend and device, and results come back as NumPy arrays. With
``sklearn.set_config(array_api_dispatch=True)`` an array of another registered backend
(torch, CuPy, array-api-strict) stays where it is: the model is built on that backend and
device (unless ``backend``/``device`` name it explicitly) and ``predict``, ``predict_proba``
and ``predict_log_proba`` return arrays of the input's library on its device. Only the
targets are read to the host once per ``fit``, to find the classes and check them.

L2 penalty. ``alpha`` weighs the squared Frobenius norm of the weight matrices (not the
biases) against the *summed* loss of the ``n`` training samples of the call::

    objective = mean_i loss_i + alpha / (2 n) * sum_l ||W_l||^2

so each step adds ``(alpha / n) * W_l`` to the gradient of ``W_l``, whatever the batch size.
scikit-learn divides by the size of each batch instead of ``n``; the two agree when the batch
is the whole training set, and scikit-learn's ``alpha`` at batch size ``B`` is portgd's
``alpha * n / B`` (``2 * alpha * n / B`` for the regressor, whose mean squared error is twice
scikit-learn's half-MSE). ``loss_curve_`` reports the objective: the epoch's mean data loss plus the
penalty at the end of the epoch.

Fitted attributes follow scikit-learn: ``classes_``, ``n_features_in_``,
``feature_names_in_``, ``loss_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
``best_validation_score_``, ``n_iter_``, ``t_``, ``n_layers_``, ``n_outputs_``,
``out_activation_``, and ``coefs_`` / ``intercepts_`` as host NumPy arrays (copies of the
model's parameters, ``coefs_[i]`` shaped ``(fan_in, fan_out)``). ``model_`` is the trained
:class:`portgd.Sequential`.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from array_api_compat import is_array_api_obj

from ._checks import check_real, positive_int
from ._registry import backend_of, get_backend
from .callbacks import Callback
from .errors import BackendError, BackendNotFoundError, InputError
from .layers import Dense
from .losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy, softplus
from .metrics import first_max
from .model import Sequential, mlp, param_name
from .optim import make_optimizer, optimizer_from_state_dict

try:
    from sklearn import get_config
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        f"portgd.sklearn needs scikit-learn >= 1.6 ({exc}); install it with "
        "pip install 'portgd[sklearn]'"
    ) from exc

__all__ = ["MLPClassifier", "MLPRegressor", "BackendFallbackWarning"]

#: scikit-learn's activation names and portgd's, mapped to portgd's layers.
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "sigmoid": "sigmoid", "leaky_relu": "leaky_relu"}  # fmt: skip

#: ``solver`` names: portgd's optimizers.
SOLVERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")

#: scikit-learn's name for each output activation.
_OUT_NAMES = {"sigmoid": "logistic", "softmax": "softmax", "identity": "identity"}


class BackendFallbackWarning(UserWarning):
    """An unpickled estimator's backend is not usable here; it was loaded on NumPy."""


class _PenalizedDense(Dense):
    """Dense whose weight gradient includes the L2 term: ``dW = x^T @ dy + penalty * W``.

    ``penalty`` is ``alpha / n`` (see the module docstring); 0 adds nothing.
    """

    def __init__(self, *args: Any, penalty: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.penalty = penalty

    def backward(self, dout: Any, need_input_grad: bool = True) -> Any:
        dx = super().backward(dout, need_input_grad)
        if self.penalty:
            self.grads["weight"] = self.grads["weight"] + self.penalty * self.params["weight"]
        return dx


def _build_model(arch: dict[str, Any], seed: int, dtype: Any, backend: Any) -> Sequential:
    """The network of ``arch`` (widths, activation, output), initialised as scikit-learn does.

    Every weight and bias is drawn from ``U(-b, b)`` with ``b = sqrt(f / (fan_in + fan_out))``,
    ``f = 2`` for a logistic activation and 6 otherwise, on the host from ``seed`` (so every
    backend starts from the same numbers), then cast to ``dtype`` and moved to ``backend``.
    """
    widths = arch["widths"]
    base = mlp(widths[0], widths[1:-1], widths[-1], activation=arch["activation"],
               output=arch["output"], seed=seed, dtype=dtype, backend=backend)
    layers = [
        _PenalizedDense(layer.in_features, layer.out_features, init="zeros")
        if isinstance(layer, Dense) else layer
        for layer in base.layers
    ]
    model = Sequential(layers, seed=seed, dtype=dtype, backend=base.backend)
    factor = 2.0 if arch["activation"] == "sigmoid" else 6.0
    draw = np.random.default_rng([seed, 1])  # a stream apart from the batch order's
    state = {}
    for index, layer in enumerate(model.layers):
        if isinstance(layer, Dense):
            bound = np.sqrt(factor / (layer.in_features + layer.out_features))
            for name, param in layer.params.items():
                state[param_name(index, name)] = draw.uniform(
                    -bound, bound, tuple(param.shape)).astype(model.dtype_name)
    model.load_state_dict(state)
    return model


def _label_dtype(backend: Any, host: np.dtype[Any], low: Any, high: Any) -> Any:
    """The dtype labels of host dtype ``host`` (values ``low..high``) are returned in.

    The same dtype where the backend's device has it; integer labels otherwise in the
    backend's index dtype (int32 on a device without int64), after checking that ``low..high``
    fits it. Anything else raises the backend's DTypeNotSupportedError, naming what it has.
    """
    if not backend.supports(host.name) and host.kind in "iu":
        backend.check_index_range(int(low), int(high), "class labels")
        return backend.index_dtype
    return backend.dtype(host.name)


def _dense_layers(model: Sequential) -> list[_PenalizedDense]:
    return [layer for layer in model.layers if isinstance(layer, _PenalizedDense)]


def _dispatch() -> bool:
    return bool(get_config().get("array_api_dispatch", False))


def _is_device_array(x: Any) -> bool:
    """Whether ``x`` is an array of a non-NumPy library (torch, CuPy, array-api-strict...)."""
    return is_array_api_obj(x) and not isinstance(x, (np.ndarray, np.generic))


def _host_targets(y: Any) -> Any:
    """Targets on the host: arrays of a registered backend are read once; the rest as is."""
    if _is_device_array(y):
        try:
            return backend_of(y).to_numpy(y)
        except BackendNotFoundError:
            return np.asarray(y)
    return y


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, training loop, pickling."""

    _output: str  # set by the subclass for its problem
    _is_classifier = False
    #: scikit-learn estimator checks this estimator is known to fail, ``{check name:
    #: reason}``; the test suite passes it to ``parametrize_with_checks``. Empty: it
    #: passes all of them.
    _expected_failed_checks: dict[str, str] = {}  # noqa: RUF012

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        backend: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # -- tags ---------------------------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.array_api_support = True
        return tags

    # -- parameters ---------------------------------------------------------------------
    def _hidden(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral):
            sizes = (sizes,)
        try:
            sizes = tuple(sizes)
        except TypeError:
            sizes = None
        if sizes is None or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
            for s in sizes
        ):
            raise InputError(
                f"hidden_layer_sizes must be a tuple of positive ints, e.g. (100,) or "
                f"(64, 32); got {self.hidden_layer_sizes!r}"
            )
        return tuple(int(s) for s in sizes)

    def _check_params(self) -> None:
        """Check every parameter at fit time (scikit-learn's rule: never in __init__)."""
        name = type(self).__name__

        def real(key: str, **limits: Any) -> None:
            value = getattr(self, key)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                value = float(value)  # NumPy scalars from a parameter grid
            check_real(name, key, value, **limits)

        def count(key: str) -> None:
            value = getattr(self, key)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                value = int(value)
            positive_int(f"{name}: {key}", value)

        self._hidden()
        if self.activation not in ACTIVATIONS:
            raise InputError(f"{name}: activation must be one of {', '.join(ACTIVATIONS)}; "
                             f"got {self.activation!r}")
        if self.solver not in SOLVERS:
            raise InputError(f"{name}: solver must name a portgd optimizer, one of "
                             f"{', '.join(SOLVERS)}; got {self.solver!r} (scikit-learn's "
                             f"'lbfgs' has no portgd counterpart)")
        real("alpha", low=0.0)
        real("learning_rate_init", low=0.0, low_open=True)
        real("tol", low=0.0)
        real("momentum", low=0.0, high=1.0)
        real("validation_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
        real("beta_1", low=0.0, high=1.0, high_open=True)
        real("beta_2", low=0.0, high=1.0, high_open=True)
        real("epsilon", low=0.0, low_open=True)
        count("max_iter")
        count("n_iter_no_change")
        if self.batch_size != "auto":
            count("batch_size")
        for flag in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise InputError(f"{name}: {flag} must be True or False; "
                                 f"got {getattr(self, flag)!r}")

    def _make_optimizer(self) -> Any:
        lr = float(self.learning_rate_init)
        if self.solver == "sgd":
            momentum = float(self.momentum)
            return make_optimizer("sgd", lr=lr, momentum=momentum,
                                  nesterov=bool(self.nesterovs_momentum) and momentum > 0)
        if self.solver in ("adam", "adamw"):
            return make_optimizer(self.solver, lr=lr, eps=float(self.epsilon),
                                  betas=(float(self.beta_1), float(self.beta_2)))
        return make_optimizer(self.solver, lr=lr)

    def _batch(self, n: int) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(f"batch_size={self.batch_size} is larger than the {n} training "
                          f"samples; it is clipped to {n}", UserWarning, stacklevel=3)
        return min(int(self.batch_size), n)

    # -- where the model lives ----------------------------------------------------------
    def _resolve_backend(self, X: Any) -> tuple[Any, bool]:
        """The Backend to fit on and whether the caller's data stays on it.

        Under array-API dispatch a non-NumPy ``X`` decides, as in scikit-learn's array-API
        estimators ("everything follows X"): the model trains on X's library and device.
        Otherwise ``backend``/``device`` (None: portgd's active selection) say where.
        """
        if _dispatch() and _is_device_array(X):
            return backend_of(X), True
        return get_backend(self.backend, self.device), False

    def _model_dtype(self, backend: Any, X: Any) -> Any:
        if self.dtype is not None:
            return backend.dtype(self.dtype)
        from portgd.backends import dtype_name

        wanted = "float32" if dtype_name(X.dtype) == "float32" else "float64"
        if not backend.supports(wanted):
            wanted = "float32"
        return backend.dtype(wanted)

    def _check_namespace(self, X: Any, method: str) -> bool:
        """Whether ``X`` is a device array the result should stay with (dispatch only).

        Raises scikit-learn's ``ValueError`` when, with dispatch on, ``X`` comes from
        another library or device than the data ``fit`` saw.
        """
        if not _dispatch():
            return False
        backend = self.model_.backend
        if _is_device_array(X):
            found = backend_of(X)
            if found == backend:
                return True
            detail = f"fit used {backend.name} ({backend.device_name}), {method} got " \
                     f"{found.name} ({found.device_name})"
        elif not self._fit_on_device:
            return False
        else:
            detail = f"fit used {backend.name} ({backend.device_name}), {method} got host data"
        raise ValueError(
            f"Inputs passed to {type(self).__name__}.{method}() must use the same namespace "
            f"and the same device as those passed to fit(): {detail}. Pass X on the fitted "
            f"backend and device, or turn array_api_dispatch off to work with NumPy data."
        )

    def _to_model(self, X: Any) -> Any:
        model = self.model_
        with model.backend.activate():
            return model.backend.asarray(X, dtype=model.dtype)

    def _out(self, x: Any, on_device: bool) -> Any:
        return x if on_device else self.model_.backend.to_numpy(x)

    # -- fitted attributes as scikit-learn names them -----------------------------------
    @property
    def coefs_(self) -> list[np.ndarray]:
        """The weight matrices as host NumPy copies; ``coefs_[i]`` is ``(fan_in, fan_out)``."""
        check_is_fitted(self, "model_")
        return [self.model_.backend.to_numpy(d.params["weight"])
                for d in _dense_layers(self.model_)]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """The bias vectors as host NumPy copies; ``intercepts_[i]`` is ``(fan_out,)``."""
        check_is_fitted(self, "model_")
        return [self.model_.backend.to_numpy(d.params["bias"])
                for d in _dense_layers(self.model_)]

    # -- training -----------------------------------------------------------------------
    def _validate_fit_data(self, X: Any, y: Any, reset: bool) -> tuple[Any, np.ndarray]:
        y = _host_targets(y)
        X, y = validate_data(self, X, y, reset=reset, dtype="numeric", multi_output=True,
                             y_numeric=not self._is_classifier)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please "
                          "change the shape of y to (n_samples,), for example using ravel().",
                          DataConversionWarning, stacklevel=3)
            y = y[:, 0]
        return X, y

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None) -> Any:
        self._check_params()
        fresh = not hasattr(self, "model_") or (not incremental and not self.warm_start)
        X, y = self._validate_fit_data(X, y, reset=fresh)
        targets, n_outputs = self._encode(y, fresh, incremental, classes)
        if fresh:
            backend, on_device = self._resolve_backend(X)
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            self._arch = {"widths": [X.shape[1], *self._hidden(), n_outputs],
                          "activation": ACTIVATIONS[self.activation], "output": self._output}
            self.model_ = _build_model(self._arch, seed, self._model_dtype(backend, X), backend)
            self._seed = seed
            self._fit_on_device = on_device
            self._optimizer = None
            self.n_iter_, self.t_ = 0, 0
            self.loss_curve_: list[float] = []
            self.n_layers_ = len(self._arch["widths"])
            self.n_outputs_ = n_outputs
            self.out_activation_ = _OUT_NAMES[self._output]
        elif not incremental:
            self._check_namespace(X, "fit")
        model = self.model_
        if not incremental or self._optimizer is None:
            self._optimizer = self._make_optimizer()
        early = bool(self.early_stopping) and not incremental
        if early:
            self.best_loss_ = None
        elif fresh or getattr(self, "best_loss_", None) is None:
            self.best_loss_ = np.inf
        self.validation_scores_ = [] if early else None
        self.best_validation_score_ = -np.inf if early else None
        self._no_improvement_count = 0
        with model.backend.activate():
            x = model.backend.asarray(X, dtype=model.dtype)
            validation = None
            if early:
                x, targets, validation = self._split(x, targets, model)
            n = x.shape[0]
            for layer in _dense_layers(model):
                layer.penalty = float(self.alpha) / n
            stopper = _SklearnStopping(self, validation, n, stop=not incremental)
            model.fit(x, targets, loss=self._loss(), optimizer=self._optimizer,
                      epochs=1 if incremental else int(self.max_iter),
                      batch_size=self._batch(n), shuffle=bool(self.shuffle),
                      callbacks=[stopper], verbose=0)
            if early and stopper.best_params is not None:
                model.load_state_dict(stopper.best_params)  # the model's own storage again
        self.loss_ = self.loss_curve_[-1]
        if not incremental and not stopper.converged:
            warnings.warn(
                f"{type(self).__name__}: the optimizer did not converge in max_iter="
                f"{self.max_iter} epochs; raise max_iter or tol", ConvergenceWarning,
                stacklevel=3)
        return self

    def _split(self, x: Any, targets: np.ndarray, model: Sequential) -> tuple[Any, Any, Any]:
        """Hold out ``validation_fraction`` of the samples for early stopping (on device)."""
        n = x.shape[0]
        stratify = targets if self._is_classifier and targets.ndim == 1 else None
        train, val = train_test_split(np.arange(n), test_size=float(self.validation_fraction),
                                      random_state=self._seed, stratify=stratify)
        if val.size == 0 or train.size == 0:
            raise InputError(f"validation_fraction={self.validation_fraction} of {n} samples "
                             f"leaves none for training or validation")
        xp, backend = model.xp, model.backend
        backend.check_index_range(0, n - 1, "sample indices")
        take = lambda idx: xp.take(  # noqa: E731
            x, backend.asarray(idx, dtype=backend.index_dtype), axis=0)
        return take(train), targets[train], (take(val), targets[val])

    def fit(self, X: Any, y: Any) -> Any:
        """Train from scratch (or, with ``warm_start=True``, from the current weights)."""
        return self._fit(X, y, incremental=False)

    def _raw(self, X: Any, method: str) -> tuple[Any, bool]:
        """The network's output for ``X`` on the model's device, and where results go."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype="numeric")
        on_device = self._check_namespace(X, method)
        return self.model_.predict(self._to_model(X)), on_device

    # -- pickling -----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # object.__getstate__ is the live __dict__
        model = state.pop("model_", None)
        optimizer = state.pop("_optimizer", None)
        if model is not None:
            state["_pickled_model"] = {
                "backend": model.backend.name, "device": model.backend.device_name,
                "dtype": model.dtype_name, "params": model.state_dict(),
                "optimizer": None if optimizer is None else optimizer.state_dict(),
                "rng": model.rng,  # the batch order continues where it was
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        pickled = state.pop("_pickled_model", None)
        super().__setstate__(state)
        if pickled is None:
            return
        try:
            backend = get_backend(pickled["backend"], pickled["device"])
            dtype = backend.dtype(pickled["dtype"])
        except BackendError as exc:
            warnings.warn(
                f"{type(self).__name__} was fitted on {pickled['backend']} "
                f"({pickled['device']}), which is not usable here ({exc}); it is loaded on "
                f"numpy (cpu) instead. Refitting uses backend={self.backend!r} again; set "
                f"backend='numpy' to refit here.", BackendFallbackWarning, stacklevel=2)
            backend = get_backend("numpy")
            dtype = backend.dtype(pickled["dtype"])
            self._fit_on_device = False
        self.model_ = _build_model(self._arch, self._seed, dtype, backend)
        self.model_.load_state_dict(pickled["params"])
        self.model_.rng = pickled["rng"]
        self._optimizer = None
        if pickled["optimizer"] is not None:
            self._optimizer = optimizer_from_state_dict(pickled["optimizer"])


class _SklearnStopping(Callback):
    """scikit-learn's bookkeeping at the end of each epoch, as a portgd callback.

    Appends the objective to ``loss_curve_`` and counts ``n_iter_`` and ``t_``. Without
    early stopping an epoch counts as no improvement when its loss is above
    ``best_loss_ - tol``; with it, when the validation score is below
    ``best_validation_score_ + tol`` (the best epoch's parameters are kept on the device
    and restored). Training stops after more than ``n_iter_no_change`` such epochs in a row.
    """

    def __init__(self, estimator: _BaseMLP, validation: Any, n: int, stop: bool) -> None:
        self.estimator, self.validation, self.n, self.stop = estimator, validation, n, stop
        self.converged = False
        self.best_params: dict[str, Any] | None = None

    def _penalty(self) -> float:
        est, model = self.estimator, self.model
        if not est.alpha:
            return 0.0
        xp = model.xp
        squares = xp.stack([xp.sum(d.params["weight"] * d.params["weight"])
                            for d in _dense_layers(model)])
        return float(est.alpha) / (2 * self.n) * float(model.backend.to_numpy(xp.sum(squares)))

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        est = self.estimator
        loss = logs["loss"] + self._penalty()
        est.loss_curve_.append(loss)
        est.n_iter_ += 1
        est.t_ += self.n
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is not None:
            score = est._validation_score(*self.validation)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            worse = score < est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                xp = self.model.xp
                self.best_params = {k: xp.asarray(v, copy=True)
                                    for k, v in self.model.params.items()}
        else:
            worse = loss > est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, loss)
        est._no_improvement_count = est._no_improvement_count + 1 if worse else 0
        if self.stop and est._no_improvement_count > est.n_iter_no_change:
            self.converged = True
            self.model.stop_training = True
            if est.verbose:
                what = "Validation score" if self.validation is not None else "Training loss"
                print(f"{what} did not improve more than tol={est.tol} for "
                      f"{est.n_iter_no_change} consecutive epochs. Stopping.")


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by portgd, as scikit-learn's.

    Two classes: one sigmoid output and binary cross-entropy; more: softmax outputs and
    categorical cross-entropy; a 0/1 indicator matrix ``y``: one sigmoid output per label
    (multilabel). Parameters as :class:`sklearn.neural_network.MLPClassifier` (``solver``
    names a portgd optimizer: ``"adam"``, ``"sgd"`` with ``momentum`` and
    ``nesterovs_momentum``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"``), plus:

    Args:
        backend: portgd backend name (``"numpy"``, ``"torch"``, ``"cupy"``, ...); None
            follows the data under array-API dispatch, else portgd's active selection.
        device: the device on that backend (``"cpu"``, ``"cuda:0"``); None: its default.
        dtype: ``"float32"`` or ``"float64"``; None follows ``X`` as scikit-learn does
            (float32 stays float32, everything else trains in float64).

    ``alpha`` is the L2 penalty on the weights relative to the summed loss of the training
    samples (module docstring); ``predict_proba`` rows sum to 1 (binary: ``[1 - p, p]``).
    """

    _is_classifier = True

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _encode(self, y: np.ndarray, fresh: bool, incremental: bool,
                classes: Any) -> tuple[np.ndarray, int]:
        """Targets for the loss (labels, 0/1 floats or indicator rows) and the output width."""
        if incremental and fresh and classes is None:
            raise InputError("classes must be passed on the first call to partial_fit")
        kind = type_of_target(y)
        multilabel = kind == "multilabel-indicator"
        if not multilabel:
            check_classification_targets(y)
        if fresh:
            if multilabel:
                self.classes_ = np.arange(y.shape[1])
                self._label_dtype = y.dtype
            else:
                self.classes_ = np.unique(np.asarray(classes) if classes is not None else y)
                self._label_dtype = None
            if len(self.classes_) < 2:
                raise InputError(f"{type(self).__name__} needs samples of at least 2 classes "
                                 f"in y; got 1 class ({self.classes_[0]!r})")
            self._multilabel = multilabel
            self._output = ("sigmoid" if multilabel or len(self.classes_) == 2
                            else "softmax")
        elif multilabel != self._multilabel or (
                multilabel and y.shape[1] != len(self.classes_)):
            raise InputError(f"y is {kind} but {type(self).__name__} was fitted on "
                             f"{'multilabel' if self._multilabel else 'class label'} targets "
                             f"with {len(self.classes_)} classes")
        if multilabel:
            return y.astype(np.float64), len(self.classes_)
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            if incremental:
                raise InputError(f"y holds labels {unknown.tolist()} that are not in classes="
                                 f"{self.classes_.tolist()} given on the first partial_fit")
            raise InputError(
                f"warm_start can only be used where y has the same classes as in the "
                f"previous call to fit; previously got {self.classes_.tolist()}, y has "
                f"{np.unique(y).tolist()}")
        index = np.searchsorted(self.classes_, y)
        if len(self.classes_) == 2:
            return index.astype(np.float64), 1
        return index, len(self.classes_)

    def _loss(self) -> Any:
        if self._output == "softmax":
            return CategoricalCrossEntropy(from_logits=False)
        return BinaryCrossEntropy(from_logits=False)

    def _validation_score(self, x: Any, targets: np.ndarray) -> float:
        """Accuracy on the held-out part (exact match of every label when multilabel)."""
        model = self.model_
        predicted = model.backend.to_numpy(self._indices(model.predict(x)))
        if targets.ndim == 1 and self._output == "sigmoid":
            targets = targets.astype(np.int64)
        if predicted.ndim == 2:
            return float(np.mean(np.all(predicted == targets, axis=1)))
        return float(np.mean(predicted == targets))

    def _indices(self, p: Any) -> Any:
        """Class indices (or 0/1 label rows when multilabel) from the network's output."""
        xp = self.model_.xp
        index_dtype = self.model_.backend.index_dtype
        if self._multilabel:
            return xp.astype(p > 0.5, index_dtype)
        if self._output == "sigmoid":
            return xp.astype(p[:, 0] > 0.5, index_dtype)
        return first_max(xp, p, index_dtype, self.model_.backend.device)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch over ``(X, y)``, keeping the weights and the optimizer state.

        ``classes`` (every label that will ever occur) is required on the first call.
        """
        return self._fit(X, y, incremental=True, classes=classes)

    def predict(self, X: Any) -> Any:
        """Class labels ``(n_samples,)`` (0/1 rows ``(n_samples, n_labels)`` if multilabel)."""
        p, on_device = self._raw(X, "predict")
        index = self._indices(p)
        if not on_device:
            index = self.model_.backend.to_numpy(index)
            if self._multilabel:
                return index.astype(self._label_dtype)
            return self.classes_[index]
        if self.classes_.dtype.kind not in "biuf":
            raise InputError(f"the classes {self.classes_.tolist()} are not numbers, so they "
                             f"cannot be returned as a {self.model_.backend.name} array; turn "
                             f"array_api_dispatch off to get them as a NumPy array")
        xp, backend = self.model_.xp, self.model_.backend
        if self._multilabel:
            return xp.astype(index, _label_dtype(backend, self._label_dtype, 0, 1))
        low, high = self.classes_.min().item(), self.classes_.max().item()
        with backend.activate():
            classes = backend.asarray(
                self.classes_, dtype=_label_dtype(backend, self.classes_.dtype, low, high))
        return xp.take(classes, index, axis=0)

    def _probabilities(self, p: Any) -> Any:
        if self._output == "sigmoid" and not self._multilabel:
            return self.model_.xp.concat([1.0 - p, p], axis=1)
        return p

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n_samples, n_classes)`` (per label if multilabel)."""
        p, on_device = self._raw(X, "predict_proba")
        return self._out(self._probabilities(p), on_device)

    def predict_log_proba(self, X: Any) -> Any:
        """``log(predict_proba(X))``; where a probability underflows to 0 it is the stable
        log-softmax (log-sigmoid) of the logits instead of ``-inf``."""
        p, on_device = self._raw(X, "predict_log_proba")
        xp = self.model_.xp
        z = self.model_.layers[-1].logits
        if self._output == "softmax":
            shifted = z - xp.max(z, axis=1, keepdims=True)
            stable = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        elif self._multilabel:
            stable = -softplus(xp, -z)
        else:
            stable = xp.concat([-softplus(xp, z), -softplus(xp, -z)], axis=1)
        proba = self._probabilities(p)
        positive = proba > 0
        logs = xp.where(positive, xp.log(xp.where(positive, proba, 1.0)), stable)
        return self._out(logs, on_device)


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by portgd, as scikit-learn's.

    Identity outputs (one per target column) and the mean squared error
    ``mean (yhat - y)^2`` over samples and outputs (scikit-learn reports half of it).
    Parameters and fitted attributes as :class:`MLPClassifier` and
    :class:`sklearn.neural_network.MLPRegressor`.
    """

    _output = "identity"

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _encode(self, y: np.ndarray, fresh: bool, incremental: bool,
                classes: Any) -> tuple[np.ndarray, int]:
        outputs = 1 if y.ndim == 1 else y.shape[1]
        if not fresh and outputs != self.n_outputs_:
            raise InputError(f"y has {outputs} outputs but {type(self).__name__} was fitted "
                             f"with {self.n_outputs_}")
        y = y.astype(np.float64)
        return (y.reshape(-1, 1) if y.ndim == 1 else y), outputs

    def _loss(self) -> Any:
        return MSE()

    def _validation_score(self, x: Any, targets: np.ndarray) -> float:
        """R^2 on the held-out part, averaged uniformly over the outputs."""
        predicted = self.model_.backend.to_numpy(self.model_.predict(x))
        residual = ((targets - predicted) ** 2).sum(axis=0)
        total = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
        safe = np.where(total > 0, total, 1.0)
        scores = np.where(total > 0, 1.0 - residual / safe, np.where(residual > 0, 0.0, 1.0))
        return float(scores.mean())

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch over ``(X, y)``, keeping the weights and the optimizer state."""
        return self._fit(X, y, incremental=True)

    def predict(self, X: Any) -> Any:
        """Predictions ``(n_samples,)`` for one output, else ``(n_samples, n_outputs)``."""
        out, on_device = self._raw(X, "predict")
        if self.n_outputs_ == 1:
            out = self.model_.xp.reshape(out, (-1,))
        return self._out(out, on_device)
