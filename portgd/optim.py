"""Optimizers, gradient clipping, and the per-parameter update rules behind them.

Parameters and gradients travel as dicts ``{name: array}`` (names such as ``"0.weight"``)::

    opt = Adam(lr=1e-3)
    new_params = opt.step(params, grads)    # a new dict with the same keys
    opt.update(model)                       # model.params = opt.step(model.params, model.grads)

Formulas, defaults and edge cases follow ``torch.optim``; docs/optimizers.md states each one.

The update rules
----------------
Each optimizer's arithmetic for one parameter is one pure function, written once against
the array API standard::

    update(param, grad, state, hp, step, *, xp) -> (new_param, new_state)

- ``param``, ``grad``: arrays of the same shape and dtype on the optimizer's device. ``grad``
  has already been clipped and, with ``maximize=True``, negated.
- ``state``: this parameter's state, a dict ``{key: array}`` shaped like ``param`` with the
  keys of the optimizer's :meth:`Optimizer.state_keys`. It is read, never modified.
- ``hp``: a dict of Python floats and bools, the optimizer's hyperparameters (its
  ``config()`` without the clipping options) with ``"lr"`` set to this step's rate.
- ``step``: a Python int, how many updates this parameter has had including this one
  (1 on its first update).
- ``xp``: the array namespace.

It returns the new parameter and a new state dict with the same keys; it creates new
arrays and mutates nothing. The optimizer looks the function up as
``backend.op(name, generic)`` (``name`` is ``"sgd"``, ``"adagrad"``, ``"rmsprop"``,
``"adam"`` or ``"adamw"``), so a backend can register a fused or in-place fast path with
this signature in its ``fast`` table; the generic function stays the reference.

Device discipline
-----------------
The optimizer resolves its Backend from the first parameter at its first step and keeps
it. State is created lazily on that device with each parameter's dtype. Nothing is read
back to the host during a step: learning rates are Python floats computed from the host
step counter, and global-norm clipping scales on the device.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ._checks import check_real
from ._registry import backend_of, get_backend
from .errors import (
    BackendMismatchError,
    CheckpointError,
    InputError,
    PortgdError,
    ShapeError,
)
from .model import param_name
from .schedules import Schedule, schedule_from_config

if TYPE_CHECKING:
    from portgd.backends import Backend

__all__ = [
    "OPTIMIZERS",
    "STATE_DICT_FORMAT",
    "SGD",
    "AdaGrad",
    "Adam",
    "AdamW",
    "LayerwiseStep",
    "Optimizer",
    "RMSprop",
    "adagrad_update",
    "adam_update",
    "clip_by_global_norm",
    "clip_by_value",
    "global_norm",
    "make_optimizer",
    "optimizer_from_state_dict",
    "rmsprop_update",
    "sgd_update",
]

Array = Any
Params = Mapping[str, Array]
UpdateFn = Callable[..., tuple[Array, dict[str, Array]]]
LearningRate = float | Schedule | Callable[[int], float] | Mapping[str, Any]

#: The ``format`` tag of :meth:`Optimizer.state_dict`.
STATE_DICT_FORMAT = "portgd.optimizer/1"

#: The ``eps`` that ``clip_norm=`` uses, as ``torch.nn.utils.clip_grad_norm_``.
CLIP_NORM_EPS = 1e-6


# -- the update rules ------------------------------------------------------------------


def sgd_update(
    param: Array, grad: Array, state: dict[str, Array], hp: Mapping[str, Any], step: int,
    *, xp: Any,
) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 decay.

    With ``mu = momentum``, ``tau = dampening``, ``lambda = weight_decay``::

        g = grad + lambda * p
        b = g                                 on the first step
        b = mu * b_prev + (1 - tau) * g       afterwards
        d = g + mu * b  if nesterov,  b  if mu > 0,  g  if mu == 0
        p' = p - lr * d

    State: ``momentum_buffer`` (only when ``momentum > 0``), shaped like ``p``.
    """
    g = grad
    if hp["weight_decay"] != 0.0:
        g = g + hp["weight_decay"] * param
    momentum = hp["momentum"]
    if momentum == 0.0:
        return param - hp["lr"] * g, {}
    if step == 1:
        buf = xp.asarray(g, copy=True)  # the caller may reuse its gradient array
    else:
        buf = momentum * state["momentum_buffer"] + (1.0 - hp["dampening"]) * g
    direction = g + momentum * buf if hp["nesterov"] else buf
    return param - hp["lr"] * direction, {"momentum_buffer": buf}


def adagrad_update(
    param: Array, grad: Array, state: dict[str, Array], hp: Mapping[str, Any], step: int,
    *, xp: Any,
) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    """AdaGrad: per-coordinate rates from the sum of squared gradients.

    With ``t = step`` (1 on the first update)::

        g = grad + weight_decay * p
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s = s_prev + g * g                    (s starts at initial_accumulator_value)
        p' = p - lr_t * g / (sqrt(s) + eps)

    State: ``sum``, shaped like ``p``.
    """
    g = grad
    if hp["weight_decay"] != 0.0:
        g = g + hp["weight_decay"] * param
    rate = hp["lr"] / (1 + (step - 1) * hp["lr_decay"])
    total = state["sum"] + g * g
    std = xp.sqrt(total) + hp["eps"]
    return param - rate * (g / std), {"sum": total}


def rmsprop_update(
    param: Array, grad: Array, state: dict[str, Array], hp: Mapping[str, Any], step: int,
    *, xp: Any,
) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    """RMSprop, optionally centered and with momentum.

    With ``a = alpha`` and ``mu = momentum``::

        g = grad + weight_decay * p
        v = a * v_prev + (1 - a) * g * g
        m = a * m_prev + (1 - a) * g          (centered only)
        r = sqrt(v - m * m) + eps  if centered,  sqrt(v) + eps  otherwise
        b = mu * b_prev + g / r;  p' = p - lr * b      if mu > 0
        p' = p - lr * g / r                            otherwise

    State: ``square_avg``; ``momentum_buffer`` when ``momentum > 0``; ``grad_avg`` when
    ``centered``; each shaped like ``p`` and starting at zero.
    """
    g = grad
    if hp["weight_decay"] != 0.0:
        g = g + hp["weight_decay"] * param
    alpha = hp["alpha"]
    square_avg = alpha * state["square_avg"] + (1.0 - alpha) * (g * g)
    new_state = {"square_avg": square_avg}
    if hp["centered"]:
        grad_avg = alpha * state["grad_avg"] + (1.0 - alpha) * g
        new_state["grad_avg"] = grad_avg
        rms = xp.sqrt(square_avg - grad_avg * grad_avg) + hp["eps"]
    else:
        rms = xp.sqrt(square_avg) + hp["eps"]
    if hp["momentum"] > 0.0:
        buf = hp["momentum"] * state["momentum_buffer"] + g / rms
        new_state["momentum_buffer"] = buf
        return param - hp["lr"] * buf, new_state
    return param - hp["lr"] * (g / rms), new_state


def adam_update(
    param: Array, grad: Array, state: dict[str, Array], hp: Mapping[str, Any], step: int,
    *, xp: Any,
) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    """Adam and AdamW (``hp["decoupled_weight_decay"]``), optionally AMSGrad.

    With ``(b1, b2) = betas``, ``lambda = weight_decay`` and ``t = step``::

        p = p * (1 - lr * lambda)             decoupled (AdamW)
        g = grad + lambda * p                 coupled L2 (Adam)
        m = b1 * m_prev + (1 - b1) * g
        v = b2 * v_prev + (1 - b2) * g * g
        v_max = max(v_max_prev, v)            (amsgrad; then v_max replaces v below)
        p' = p - lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)

    State: ``exp_avg``, ``exp_avg_sq``, and ``max_exp_avg_sq`` with ``amsgrad``; each shaped
    like ``p`` and starting at zero.
    """
    lr = hp["lr"]
    beta1, beta2 = hp["betas"]
    g = grad
    weight_decay = hp["weight_decay"]
    if weight_decay != 0.0:
        if hp["decoupled_weight_decay"]:
            param = param * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * param
    exp_avg = beta1 * state["exp_avg"] + (1.0 - beta1) * g
    exp_avg_sq = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * (g * g)
    new_state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    second = exp_avg_sq
    if hp["amsgrad"]:
        second = xp.maximum(state["max_exp_avg_sq"], exp_avg_sq)
        new_state["max_exp_avg_sq"] = second
    step_size = lr / (1.0 - beta1**step)
    correction2_sqrt = (1.0 - beta2**step) ** 0.5
    denom = xp.sqrt(second) / correction2_sqrt + hp["eps"]
    return param - step_size * (exp_avg / denom), new_state


# -- gradient clipping -----------------------------------------------------------------


def _describe(x: Any) -> str:
    try:
        found = backend_of(x)
    except PortgdError:
        return f"a {type(x).__module__}.{type(x).__name__}"
    return f"{found.name} on device {found.device_name!r}"


def _common_backend(grads: Mapping[str, Array], owner: str) -> Backend:
    """The Backend holding every array of ``grads`` (non-empty, no None values)."""
    first_name, first = next(iter(grads.items()))
    backend = backend_of(first)
    for name, g in grads.items():
        if not backend.holds(g):
            raise BackendMismatchError(
                f"{owner}: gradient {name!r} is {_describe(g)} but gradient {first_name!r} "
                f"is {backend.name} on device {backend.device_name!r}; all gradients must "
                f"live on one backend and device."
            )
    return backend


def _present(grads: Mapping[str, Array | None], owner: str) -> dict[str, Array]:
    if not isinstance(grads, Mapping):
        raise InputError(f"{owner}: grads must be a dict {{name: array}}, got {type(grads)}")
    return {name: g for name, g in grads.items() if g is not None}


def _clip_value(grads: dict[str, Array], limit: float, xp: Any) -> dict[str, Array]:
    return {name: xp.clip(g, min=-limit, max=limit) for name, g in grads.items()}


def _global_norm(grads: dict[str, Array], xp: Any) -> Array:
    total = None
    for g in grads.values():
        square_sum = xp.sum(g * g)
        total = square_sum if total is None else total + square_sum
    return xp.sqrt(total)


def _clip_global_norm(
    grads: dict[str, Array], max_norm: float, eps: float, xp: Any
) -> dict[str, Array]:
    if not grads:
        return {}
    scale = xp.clip(max_norm / (_global_norm(grads, xp) + eps), max=1.0)
    return {
        name: g * (scale if scale.dtype == g.dtype else xp.astype(scale, g.dtype))
        for name, g in grads.items()
    }


def clip_by_value(grads: Mapping[str, Array | None], limit: float) -> dict[str, Array | None]:
    """Clamp every gradient entry to ``[-limit, limit]`` (torch's ``clip_grad_value_``).

    Returns a new dict with the same keys; ``None`` entries pass through. Shapes and dtypes
    are kept.
    """
    limit = check_real("clip_by_value", "limit", limit, low=0.0)
    present = _present(grads, "clip_by_value")
    if not present:
        return dict(grads)
    xp = _common_backend(present, "clip_by_value").xp
    return {**grads, **_clip_value(present, limit, xp)}


def global_norm(grads: Mapping[str, Array | None]) -> Array:
    """The 2-norm of all gradients together, ``sqrt(sum_i sum(g_i ** 2))``.

    A 0-d array on the gradients' device (read it with ``portgd.to_numpy`` when you need
    the number; that is a device synchronisation).
    """
    present = _present(grads, "global_norm")
    if not present:
        raise InputError("global_norm: no gradients given")
    return _global_norm(present, _common_backend(present, "global_norm").xp)


def clip_by_global_norm(
    grads: Mapping[str, Array | None], max_norm: float, eps: float = 1e-6
) -> dict[str, Array | None]:
    """Scale all gradients together so that their global norm is at most about ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: with ``n = global_norm(grads)``, every gradient is
    multiplied by ``min(1, max_norm / (n + eps))``. The factor is computed on the device
    (no host read), so gradients whose norm is below ``max_norm`` are multiplied by 1.
    Returns a new dict with the same keys; ``None`` entries pass through.
    """
    max_norm = check_real("clip_by_global_norm", "max_norm", max_norm, low=0.0)
    eps = check_real("clip_by_global_norm", "eps", eps, low=0.0)
    present = _present(grads, "clip_by_global_norm")
    if not present:
        return dict(grads)
    xp = _common_backend(present, "clip_by_global_norm").xp
    return {**grads, **_clip_global_norm(present, max_norm, eps, xp)}


# -- optimizers ------------------------------------------------------------------------


def _names_keyword(function: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    named = parameters.get(keyword)
    return named is not None and named.kind in (named.KEYWORD_ONLY, named.POSITIONAL_OR_KEYWORD)


_names_keyword_cached = functools.lru_cache(maxsize=64)(_names_keyword)


def _takes_keyword(function: Callable[..., Any], keyword: str) -> bool:
    """Whether ``function`` names ``keyword`` as a parameter (a backend's rule need not take
    every option; ``**kwargs`` does not count). Cached: a signature costs ~12 us."""
    try:
        return _names_keyword_cached(function, keyword)
    except TypeError:  # an unhashable callable: ask every time
        return _names_keyword(function, keyword)


def _check_lr(owner: str, lr: Any) -> float | Callable[[int], float]:
    if isinstance(lr, Mapping):
        return schedule_from_config(lr)
    if callable(lr):
        return lr
    return check_real(owner, "lr", lr, low=0.0)


def _check_flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


class Optimizer:
    """Base class: per-parameter state, the step loop, clipping, schedules, checkpoints.

    Subclasses set ``name`` (the fast-path key) and ``update_rule`` (the generic update
    function, see the module docstring), store their hyperparameters in ``self._hyper``
    and list their state keys in :meth:`state_keys`.

    Attributes:
        state: ``{param name: {key: array}}``, created at a parameter's first update on
            its device with its dtype.
        param_steps: ``{param name: updates so far}`` (host ints; Adam's bias correction
            and SGD's first momentum step use it).
        step_count: calls of :meth:`step` so far (host int; schedules read it).
        clip_value, clip_norm: clipping applied to the gradients before the update.
        maximize: ascend instead of descend (the gradient is negated after clipping).
    """

    name: ClassVar[str] = ""
    update_rule: ClassVar[UpdateFn]
    _fixed_hp: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        lr: LearningRate,
        *,
        clip_value: float | None = None,
        clip_norm: float | None = None,
        maximize: bool = False,
    ) -> None:
        owner = type(self).__name__
        if not self.name:
            raise TypeError("Optimizer is a base class; use SGD, Adam, ... or make_optimizer()")
        self._lr = _check_lr(owner, lr)
        self.clip_value = (
            None if clip_value is None else check_real(owner, "clip_value", clip_value, low=0.0)
        )
        self.clip_norm = (
            None if clip_norm is None else check_real(owner, "clip_norm", clip_norm, low=0.0)
        )
        self.maximize = _check_flag(owner, "maximize", maximize)
        self._hyper: dict[str, Any] = {}
        self._backend: Backend | None = None
        self.reset()

    # -- configuration ----------------------------------------------------------------
    def state_keys(self) -> tuple[str, ...]:
        """The keys of each parameter's state dict under this configuration."""
        raise NotImplementedError

    def init_state(self, param: Array, xp: Any, device: Any) -> dict[str, Array]:
        """A parameter's state before its first update: zeros shaped and typed like it."""
        return {
            key: xp.zeros(param.shape, dtype=param.dtype, device=device)
            for key in self.state_keys()
        }

    @property
    def lr(self) -> float:
        """The learning rate the next step will use (``schedule(step_count)`` if scheduled).

        Assigning a float (or a schedule) replaces the rate or schedule from then on.
        """
        if isinstance(self._lr, float):
            return self._lr
        value = self._lr(self.step_count)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(
                    f"the learning-rate schedule {self._lr!r} returned {value!r} at step "
                    f"{self.step_count}; it must return a Python float"
                ) from None
        if not (math.isfinite(value) and value >= 0):
            raise InputError(
                f"the learning-rate schedule {self._lr!r} returned {value!r} at step "
                f"{self.step_count}; a rate must be finite and >= 0"
            )
        return float(value)

    @lr.setter
    def lr(self, value: LearningRate) -> None:
        self._lr = _check_lr(type(self).__name__, value)

    @property
    def schedule(self) -> Callable[[int], float] | None:
        """The learning-rate schedule, or None for a constant rate."""
        return None if isinstance(self._lr, float) else self._lr

    @property
    def backend(self) -> Backend | None:
        """The Backend the state lives on (None before the first step or :meth:`to`)."""
        return self._backend

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments that rebuild this optimizer.

        A schedule from :mod:`portgd.schedules` appears as its ``config()`` dict (the
        constructor accepts that too), so the result is JSON-serialisable unless ``lr`` is
        a custom callable.
        """
        lr = self._lr
        if isinstance(lr, Schedule):
            lr = lr.config()
        return {
            "lr": lr,
            **self._hyper,
            "clip_value": self.clip_value,
            "clip_norm": self.clip_norm,
            "maximize": self.maximize,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def reset(self) -> None:
        """Forget all state and step counts (hyperparameters and backend stay)."""
        self.state: dict[str, dict[str, Array]] = {}
        self.param_steps: dict[str, int] = {}
        self.step_count = 0
        self._pending: dict[str, dict[str, Any]] = {}  # loaded host state, backend unknown
        self._unchecked: set[str] = set()  # loaded state not yet checked against params

    # -- stepping ---------------------------------------------------------------------
    def step(
        self, params: Mapping[str, Array], grads: Mapping[str, Array | None]
    ) -> dict[str, Array]:
        """One update: a new ``{name: array}`` dict with the keys of ``params``.

        ``grads[name]`` has the shape of ``params[name]``. A parameter whose gradient is
        missing or None is returned unchanged and its state is left alone (as torch skips
        parameters without ``.grad``). Order: clip by value, clip by global norm, negate
        if ``maximize``, then the update rule. Raises BackendMismatchError when an array
        is not on the optimizer's backend and device; ShapeError on a shape mismatch.
        The arrays passed in are not modified.
        """
        return self._apply(params, grads, in_place=False)

    def update(self, model: Any) -> None:
        """``model.params = self.step(model.params, model.grads)``.

        The model owns its parameter arrays, so here a backend's in-place fast path
        (``"<name>:inplace"`` in its ``fast`` table, e.g. NumPy's) may update them and the
        optimizer state without allocating; results are the same as the generic rule's.
        """
        self._bind(model)
        model.params = self._apply(model.params, model.grads, in_place=True, trusted=True)

    def begin_step(self, model: Any) -> LayerwiseStep:
        """Start a step that updates each layer during the backward pass; see LayerwiseStep.

        Call it with the model's device current, as ``fit`` does (``with
        model.backend.activate():``); loaded state is checked against every parameter here,
        so a checkpoint of another model fails before any layer changes.
        """
        self._bind(model)
        backend = self._backend if self._backend is not None else self._resolve(model.params)
        if self._unchecked:
            params = model.params
            with backend.activate():  # a dtype cast allocates on the current device
                self._check_loaded(params, params, backend.xp)
        return LayerwiseStep(self, model, backend)

    def _bind(self, model: Any) -> None:
        """Adopt the model's backend, or raise if the state lives elsewhere."""
        backend = getattr(model, "backend", None)
        if self._backend is None and backend is not None:
            self._adopt(backend)  # the model knows its backend: no need to guess from arrays
        elif backend is not None and backend != self._backend:
            raise BackendMismatchError(
                f"{type(self).__name__}: the model is on {backend.name} on device "
                f"{backend.device_name!r} but this optimizer's state lives on "
                f"{self._backend.name} on device {self._backend.device_name!r}. Move the "
                f"optimizer with opt.to(model.backend) after moving the model."
            )

    def _apply(
        self,
        params: Mapping[str, Array],
        grads: Mapping[str, Array | None],
        in_place: bool,
        trusted: bool = False,
    ) -> dict[str, Array]:
        """The update; ``trusted`` (a model's own arrays, already on its backend with
        matching shapes) skips the per-array checks that guard the functional ``step``."""
        owner = type(self).__name__
        if not isinstance(params, Mapping):
            raise InputError(f"{owner}.step: params must be a dict {{name: array}}")
        present = _present(grads, f"{owner}.step")
        unknown = sorted(set(present) - set(params))
        if unknown:
            raise InputError(
                f"{owner}.step: gradients for {unknown} have no parameter of that name; "
                f"parameters: {sorted(params)}"
            )
        new_params = dict(params)
        if not params:
            self.step_count += 1
            return new_params
        backend = self._resolve(params)
        with backend.activate():  # CuPy allocates on the current device
            return self._apply_on(backend, params, present, new_params, in_place, trusted)

    def _apply_on(
        self,
        backend: Backend,
        params: Mapping[str, Array],
        present: dict[str, Array],
        new_params: dict[str, Array],
        in_place: bool,
        trusted: bool,
    ) -> dict[str, Array]:
        if not trusted:
            self._check_arrays(backend, params, present)
        if self._unchecked:
            self._check_loaded(params, present, backend.xp)
        update, hp = self._rule(backend, in_place)
        updated, new_state = self._updated(params, present, backend, update, hp)
        new_params.update(updated)
        self._commit(new_state)
        self.step_count += 1
        return new_params

    def _rule(
        self, backend: Backend, in_place: bool, may_overwrite_grad: bool = False
    ) -> tuple[UpdateFn, dict[str, Any]]:
        """This step's update function (a backend fast path or the generic rule) and ``hp``.

        ``in_place`` allows the backend's ``"<name>:inplace"`` rule; ``may_overwrite_grad``
        is passed on to it (if it takes that keyword) when the gradients are released after
        the update, so it may keep intermediates in them.
        """
        update = backend.op(self.name, type(self).update_rule)
        in_place_update = backend.fast.get(f"{self.name}:inplace") if in_place else None
        if in_place_update is not None:
            update = in_place_update
            if may_overwrite_grad and _takes_keyword(update, "may_overwrite_grad"):
                update = functools.partial(update, may_overwrite_grad=True)
        return update, {**self._hyper, **self._fixed_hp, "lr": self.lr}

    def _updated(
        self,
        params: Mapping[str, Array],
        grads: dict[str, Array],
        backend: Backend,
        update: UpdateFn,
        hp: Mapping[str, Any],
        name_of: Callable[[str], str] | None = None,
    ) -> tuple[dict[str, Array], dict[str, dict[str, Array]]]:
        """New parameters for the keys of ``grads`` and their new states, keyed by parameter
        name (``name_of(key)``; the key itself by default). Commits nothing."""
        xp = backend.xp
        new_params: dict[str, Array] = {}
        new_state: dict[str, dict[str, Array]] = {}
        for key, g in self._prepare_grads(grads, xp).items():
            name = key if name_of is None else name_of(key)
            p = params[key]
            state = self.state.get(name)
            if state is None:
                state = self.init_state(p, xp, backend.device)
            step = self.param_steps.get(name, 0) + 1
            new_params[key], new_state[name] = update(p, g, state, hp, step, xp=xp)
        return new_params, new_state

    def _commit(self, new_state: Mapping[str, dict[str, Array]]) -> None:
        self.state.update(new_state)
        for name in new_state:
            self.param_steps[name] = self.param_steps.get(name, 0) + 1

    def _check_arrays(
        self, backend: Backend, params: Mapping[str, Array], grads: dict[str, Array]
    ) -> None:
        owner = type(self).__name__
        for name, p in params.items():
            self._check_array(backend, p, f"parameter {name!r}")
        for name, g in grads.items():
            self._check_array(backend, g, f"gradient {name!r}")
            if tuple(g.shape) != tuple(params[name].shape):
                raise ShapeError(
                    f"{owner}.step: gradient {name!r} has shape {tuple(g.shape)} but the "
                    f"parameter has shape {tuple(params[name].shape)}"
                )

    def _prepare_grads(self, grads: dict[str, Array], xp: Any) -> dict[str, Array]:
        if self.clip_value is not None:
            grads = _clip_value(grads, self.clip_value, xp)
        if self.clip_norm is not None:
            grads = _clip_global_norm(grads, self.clip_norm, CLIP_NORM_EPS, xp)
        if self.maximize:
            grads = {name: -g for name, g in grads.items()}
        return grads

    # -- backends ---------------------------------------------------------------------
    def _resolve(self, params: Mapping[str, Array]) -> Backend:
        if self._backend is None:
            self._adopt(backend_of(next(iter(params.values()))))
        assert self._backend is not None
        return self._backend

    def _adopt(self, backend: Backend) -> None:
        """Make ``backend`` the state's home, moving state that lives elsewhere."""
        old = self._backend
        if old is not None and old != backend:
            self.state = {
                name: {k: backend.asarray(old.to_numpy(v), copy=True) for k, v in state.items()}
                for name, state in self.state.items()
            }
        for name, host in self._pending.items():
            self.state[name] = {k: backend.asarray(v, copy=True) for k, v in host.items()}
        self._pending = {}
        self._backend = backend

    def _check_array(self, backend: Backend, x: Any, what: str) -> None:
        if backend.holds(x):
            return
        raise BackendMismatchError(
            f"{type(self).__name__}: {what} is {_describe(x)}, but this optimizer's state "
            f"lives on {backend.name} on device {backend.device_name!r}. Move the optimizer "
            f"with opt.to(...) after moving the model, or make a new optimizer."
        )

    def to(self, backend: str | Backend, device: Any = None) -> Optimizer:
        """Move the state to ``backend`` on ``device`` (through the host); returns self.

        The next step then expects parameters there. ``backend`` is a registry name or a
        Backend; ``device`` its device object or string.
        """
        self._adopt(get_backend(backend, device))
        return self

    def _check_loaded(self, params: Params, names: Iterable[str], xp: Any) -> None:
        """Check loaded state of the parameters ``names`` against them; cast it to their
        dtype. Runs before any parameter changes."""
        for name in [name for name in names if name in self._unchecked]:
            p = params[name]
            state = self.state[name]
            for key, value in state.items():
                if tuple(value.shape) != tuple(p.shape):
                    raise CheckpointError(
                        f"{type(self).__name__}: loaded state {name!r}/{key!r} has shape "
                        f"{tuple(value.shape)} but parameter {name!r} has shape "
                        f"{tuple(p.shape)}; the state dict belongs to another model"
                    )
            self.state[name] = {
                k: v if v.dtype == p.dtype else xp.astype(v, p.dtype) for k, v in state.items()
            }
            self._unchecked.discard(name)

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot: JSON-serialisable metadata plus host NumPy copies of the state.

        Keys: ``format`` (:data:`STATE_DICT_FORMAT`), ``type`` (class name), ``config``
        (:meth:`config`), ``step_count``, ``param_steps`` (``{name: int}``) and ``state``
        (``{name: {key: numpy.ndarray}}``, the only non-JSON part). Reading the state is
        a device synchronisation.
        """
        config = self.config()
        if callable(config["lr"]):
            raise InputError(
                f"{type(self).__name__}.state_dict: the learning rate is a custom callable "
                f"({config['lr']!r}) that cannot be saved; use a float or a schedule from "
                f"portgd.schedules (StepDecay, ExponentialDecay, CosineDecay)"
            )
        if "betas" in config:
            config["betas"] = list(config["betas"])
        state: dict[str, dict[str, Any]] = {}
        backend = self._backend
        for name, entry in self.state.items():
            assert backend is not None
            state[name] = {k: backend.to_numpy(v) for k, v in entry.items()}
        for name, host in self._pending.items():
            state[name] = {k: v.copy() for k, v in host.items()}
        return {
            "format": STATE_DICT_FORMAT,
            "type": type(self).__name__,
            "config": config,
            "step_count": self.step_count,
            "param_steps": dict(self.param_steps),
            "state": state,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` snapshot: hyperparameters, schedule, counters, state.

        As in torch, the saved hyperparameters replace the current ones. Host arrays are
        copied to the optimizer's backend now if it is known (first step or :meth:`to`),
        else at the next step; their shapes are checked against the parameters there.
        Raises CheckpointError when the snapshot is malformed or of another optimizer.
        """
        owner = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise CheckpointError(f"{owner}: a state dict is a dict, got {type(state_dict)}")
        required = ("type", "config", "step_count", "param_steps", "state")
        missing = [key for key in required if key not in state_dict]
        if missing:
            raise CheckpointError(
                f"{owner}: the optimizer state dict lacks {missing}; it needs {list(required)}"
            )
        fmt = state_dict.get("format", STATE_DICT_FORMAT)
        if fmt != STATE_DICT_FORMAT:
            raise CheckpointError(
                f"{owner}: unknown state dict format {fmt!r}; this portgd reads "
                f"{STATE_DICT_FORMAT!r}"
            )
        if state_dict["type"] != owner:
            raise CheckpointError(
                f"this state dict belongs to a {state_dict['type']} optimizer, not {owner}; "
                f"rebuild the right one with portgd.optim.optimizer_from_state_dict(d)"
            )
        fresh = _build(type(self), state_dict["config"])
        steps = _counter(owner, "step_count", state_dict["step_count"])
        saved_state = state_dict["state"]
        saved_steps = state_dict["param_steps"]
        if not isinstance(saved_state, Mapping) or not isinstance(saved_steps, Mapping):
            raise CheckpointError(f"{owner}: 'state' and 'param_steps' must be dicts")
        if set(saved_state) != set(saved_steps):
            raise CheckpointError(
                f"{owner}: 'state' has entries for {sorted(saved_state)} but 'param_steps' "
                f"for {sorted(saved_steps)}; they must name the same parameters"
            )
        keys = set(fresh.state_keys())
        host: dict[str, dict[str, Any]] = {}
        for name, entry in saved_state.items():
            if not isinstance(entry, Mapping) or set(entry) != keys:
                found = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
                raise CheckpointError(
                    f"{owner}: state of parameter {name!r} has keys {found}, expected "
                    f"{sorted(keys)} for this configuration"
                )
            for key, value in entry.items():
                if type(value).__module__.split(".")[0] != "numpy" or not hasattr(value, "shape"):
                    raise CheckpointError(
                        f"{owner}: state {name!r}/{key!r} is a {type(value).__name__}; a "
                        f"state dict holds host NumPy arrays (opt.state_dict() makes them)"
                    )
            host[name] = {key: value.copy() for key, value in entry.items()}
        param_steps = {name: _counter(owner, f"param_steps[{name!r}]", n)
                       for name, n in saved_steps.items()}  # fmt: skip

        self._lr, self._hyper = fresh._lr, fresh._hyper
        self.clip_value, self.clip_norm, self.maximize = (
            fresh.clip_value, fresh.clip_norm, fresh.maximize
        )
        self.reset()
        self.step_count = steps
        self.param_steps = param_steps
        self._pending = host
        self._unchecked = set(host)
        if self._backend is not None:
            self._adopt(self._backend)


class LayerwiseStep:
    """One optimizer step applied layer by layer, as the backward pass produces gradients.

    ``fit`` runs each training step as::

        step = optimizer.begin_step(model)
        model.loss_and_backward(yhat, y, loss, after_layer=step)
        step.finish()

    ``model.backward`` calls ``step(index, layer)`` right after ``layer.backward``, which has
    already used the layer's current weights for the gradient it passes down, so updating
    them then gives the same numbers, bit for bit, as ``optimizer.update(model)`` after the
    whole backward pass. Each layer's gradients are released once applied (``model.grads``
    is empty afterwards, as after ``model.zero_grad()``), so a step never holds all of them,
    and a backend's in-place rule may keep its intermediates in them
    (``may_overwrite_grad``), as a hand-written loop does.

    Clipping by global norm needs every gradient before the first update: then nothing
    happens per layer, and :meth:`finish` runs ``optimizer.update(model)`` and releases
    the gradients.

    If the backward pass raises part-way (or is interrupted), the layers above the failure
    have taken the step and those below have not. Each parameter's update count
    (``param_steps``, which Adam's bias correction reads) stays exact; ``step_count`` (which
    schedules read) advances only in :meth:`finish`.
    """

    def __init__(self, optimizer: Optimizer, model: Any, backend: Backend) -> None:
        self.optimizer = optimizer
        self.model = model
        self.backend = backend
        self.layerwise = optimizer.clip_norm is None
        self.finished = False
        if self.layerwise:
            self._update, self._hp = optimizer._rule(backend, in_place=True,
                                                     may_overwrite_grad=True)

    def __call__(self, index: int, layer: Any) -> None:
        """Update the parameters of ``layer`` (``model.layers[index]``) from the gradients
        its backward just stored, and release those."""
        if self.finished:
            self._already_finished()
        if not self.layerwise or not layer.grads:
            return
        optimizer = self.optimizer
        grads = {key: g for key, g in layer.grads.items() if g is not None}
        new_params, new_state = optimizer._updated(
            layer.params, grads, self.backend, self._update, self._hp,
            name_of=functools.partial(param_name, index),
        )
        optimizer._commit(new_state)
        layer.params.update(new_params)
        layer.grads = {}

    def finish(self) -> None:
        """End the step: count it (or, with global-norm clipping, apply it now)."""
        if self.finished:
            self._already_finished()
        if self.layerwise:
            self.optimizer.step_count += 1
        else:
            self.optimizer.update(self.model)
            self.model.zero_grad()
        self.finished = True

    @staticmethod
    def _already_finished() -> None:
        raise InputError(
            "this optimizer step has already finished; start the next one with "
            "optimizer.begin_step(model)"
        )


def _counter(owner: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{owner}: {what} must be an int >= 0, got {value!r}")
    return value


def _build(cls: type[Optimizer], config: Any) -> Optimizer:
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{cls.__name__}: 'config' must be a dict, got {config!r}")
    try:
        return cls(**config)
    except (InputError, TypeError) as exc:
        raise CheckpointError(
            f"{cls.__name__}: the state dict's config {dict(config)!r} is invalid: {exc}"
        ) from exc


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum; see :func:`sgd_update`.

    As ``torch.optim.SGD``: the first momentum step sets the buffer to the gradient;
    Nesterov needs ``momentum > 0`` and ``dampening == 0``; ``weight_decay`` is L2 decay
    added to the gradient.
    """

    name = "sgd"
    update_rule = staticmethod(sgd_update)

    def __init__(
        self,
        lr: LearningRate = 0.001,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        maximize: bool = False,
        *,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_value=clip_value, clip_norm=clip_norm, maximize=maximize)
        self._hyper = {
            "momentum": check_real("SGD", "momentum", momentum, low=0.0),
            "dampening": check_real("SGD", "dampening", dampening),
            "nesterov": _check_flag("SGD", "nesterov", nesterov),
            "weight_decay": check_real("SGD", "weight_decay", weight_decay, low=0.0),
        }
        if nesterov and (self._hyper["momentum"] <= 0 or self._hyper["dampening"] != 0):
            raise InputError(
                "SGD: nesterov=True needs momentum > 0 and dampening = 0, got "
                f"momentum={momentum}, dampening={dampening}"
            )

    def state_keys(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self._hyper["momentum"] != 0 else ()


class AdaGrad(Optimizer):
    """AdaGrad (``torch.optim.Adagrad``); see :func:`adagrad_update`."""

    name = "adagrad"
    update_rule = staticmethod(adagrad_update)

    def __init__(
        self,
        lr: LearningRate = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_value=clip_value, clip_norm=clip_norm, maximize=maximize)
        self._hyper = {
            "lr_decay": check_real("AdaGrad", "lr_decay", lr_decay, low=0.0),
            "weight_decay": check_real("AdaGrad", "weight_decay", weight_decay, low=0.0),
            "initial_accumulator_value": check_real(
                "AdaGrad", "initial_accumulator_value", initial_accumulator_value, low=0.0
            ),
            "eps": check_real("AdaGrad", "eps", eps, low=0.0),
        }

    def state_keys(self) -> tuple[str, ...]:
        return ("sum",)

    def init_state(self, param: Array, xp: Any, device: Any) -> dict[str, Array]:
        start = self._hyper["initial_accumulator_value"]
        return {"sum": xp.full(param.shape, start, dtype=param.dtype, device=device)}


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``); see :func:`rmsprop_update`."""

    name = "rmsprop"
    update_rule = staticmethod(rmsprop_update)

    def __init__(
        self,
        lr: LearningRate = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_value=clip_value, clip_norm=clip_norm, maximize=maximize)
        self._hyper = {
            "alpha": check_real("RMSprop", "alpha", alpha, low=0.0, high=1.0),
            "eps": check_real("RMSprop", "eps", eps, low=0.0),
            "weight_decay": check_real("RMSprop", "weight_decay", weight_decay, low=0.0),
            "momentum": check_real("RMSprop", "momentum", momentum, low=0.0),
            "centered": _check_flag("RMSprop", "centered", centered),
        }

    def state_keys(self) -> tuple[str, ...]:
        keys = ("square_avg",)
        if self._hyper["momentum"] > 0:
            keys += ("momentum_buffer",)
        if self._hyper["centered"]:
            keys += ("grad_avg",)
        return keys


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient (``torch.optim.Adam``).

    See :func:`adam_update`. For decay applied to the weights directly, use :class:`AdamW`.
    """

    name = "adam"
    update_rule = staticmethod(adam_update)
    _fixed_hp: ClassVar[dict[str, Any]] = {"decoupled_weight_decay": False}

    def __init__(
        self,
        lr: LearningRate = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_value=clip_value, clip_norm=clip_norm, maximize=maximize)
        owner = type(self).__name__
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise InputError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        self._hyper = {
            "betas": tuple(
                check_real(owner, f"betas[{i}]", b, low=0.0, high=1.0, high_open=True)
                for i, b in enumerate(betas)
            ),
            "eps": check_real(owner, "eps", eps, low=0.0),
            "weight_decay": check_real(owner, "weight_decay", weight_decay, low=0.0),
            "amsgrad": _check_flag(owner, "amsgrad", amsgrad),
        }

    def state_keys(self) -> tuple[str, ...]:
        keys = ("exp_avg", "exp_avg_sq")
        return (*keys, "max_exp_avg_sq") if self._hyper["amsgrad"] else keys


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``).

    Before the Adam update the weights shrink, ``p = p * (1 - lr * weight_decay)``; the
    gradient itself carries no decay term. Same update rule as :class:`Adam`.
    """

    name = "adamw"
    _fixed_hp: ClassVar[dict[str, Any]] = {"decoupled_weight_decay": True}

    def __init__(
        self,
        lr: LearningRate = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         clip_value=clip_value, clip_norm=clip_norm)  # fmt: skip


#: Optimizer classes by their type name (the ``"type"`` of a state dict).
OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.__name__: cls for cls in (SGD, AdaGrad, RMSprop, Adam, AdamW)
}

#: Names accepted by :func:`make_optimizer`: (class, default keyword arguments).
_FACTORY: dict[str, tuple[type[Optimizer], dict[str, Any]]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "adagrad": (AdaGrad, {}),
    "rmsprop": (RMSprop, {}),
    "adam": (Adam, {}),
    "adamw": (AdamW, {}),
}


def make_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """An optimizer by name: ``"sgd"``, ``"momentum"`` (SGD with ``momentum=0.9``),
    ``"adagrad"``, ``"rmsprop"``, ``"adam"`` or ``"adamw"``; keyword arguments go to its
    constructor (and override ``"momentum"``'s 0.9)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _FACTORY:
        raise InputError(
            f"unknown optimizer {name!r}; choose one of {', '.join(_FACTORY)}"
        )
    cls, defaults = _FACTORY[key]
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(
            f"optimizer {name!r} ({cls.__name__}) takes no argument {', '.join(unknown)}; "
            f"it takes {', '.join(accepted)}"
        )
    return cls(**{**defaults, **kwargs})


def optimizer_from_state_dict(state_dict: Mapping[str, Any]) -> Optimizer:
    """A new optimizer of the saved type and configuration with the saved state loaded."""
    if not isinstance(state_dict, Mapping) or "type" not in state_dict:
        raise CheckpointError("an optimizer state dict is a dict with a 'type' key")
    cls = OPTIMIZERS.get(state_dict["type"])
    if cls is None:
        raise CheckpointError(
            f"unknown optimizer type {state_dict['type']!r} in the state dict; known: "
            f"{', '.join(OPTIMIZERS)}"
        )
    if "config" not in state_dict:
        raise CheckpointError(f"{cls.__name__}: the optimizer state dict lacks 'config'")
    opt = _build(cls, state_dict["config"])
    opt.load_state_dict(state_dict)
    return opt
