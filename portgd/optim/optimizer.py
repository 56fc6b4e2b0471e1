"""The Optimizer base class: per-parameter state keyed by name, the step, backends.

Parameters and gradients travel as dicts ``{name: array}`` (names such as ``"0.weight"``);
the optimizer knows nothing else about a model::

    new_params = opt.step(params, grads)    # a new dict with the same keys

Device discipline: the optimizer resolves its Backend from the first parameter at its
first step (or takes the one it is given) and keeps it. State is created lazily on that
device with each parameter's dtype. Nothing is read back to the host during a step:
learning rates are Python floats computed from the host step counter, and global-norm
clipping scales on the device.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .._checks import check_real
from .._registry import backend_of, get_backend
from ..errors import BackendMismatchError, CheckpointError, InputError, ShapeError
from ..schedules import Schedule, schedule_from_config
from .clipping import CLIP_NORM_EPS, _clip_global_norm, _clip_value, _describe, _present
from .layerwise import LayerwiseStep
from .rules import Array, UpdateFn
from .state import parse, snapshot

if TYPE_CHECKING:
    from portgd.backends import Backend

__all__ = ["LearningRate", "Optimizer"]

Params = Mapping[str, Array]
LearningRate = float | Schedule | Callable[[int], float] | Mapping[str, Any]


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
    function, see :mod:`portgd.optim.rules`), store their hyperparameters in ``self._hyper``
    (in ``__init__``; a change after a step must go through :meth:`reset`, which makes the
    rules' ``hp`` dict anew) and list their state keys in :meth:`state_keys`.

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

    @property
    def needs_params_to_begin(self) -> bool:
        """Whether :meth:`begin_step` needs every parameter: loaded state awaits its check
        against them, or the backend is not known yet. Otherwise ``begin_step({}, backend)``
        suffices (``fit`` then skips building the dict of all parameters each step)."""
        return self._backend is None or bool(self._unchecked)

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
        #: ``{name: an array known to fit its state}`` (the one the last update returned, or
        #: one just checked): its state needs no shape check
        self._returned: dict[str, Array] = {}
        #: the update functions looked up on the backend ``_rules_for``, by
        #: ``(in_place, may_overwrite_grad)``
        self._rules_for: Backend | None = None
        self._rules: dict[tuple[bool, bool], UpdateFn] = {}
        #: the ``hp`` dict of the last step (see :meth:`_hp`)
        self._last_hp: dict[str, Any] | None = None

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
        return self._materialized(self._apply(params, grads, in_place=False))

    def update(self, model: Any) -> None:
        """``model.params = self.step(model.params, model.grads)``.

        ``model`` is any object holding ``params`` and ``grads`` dicts (and, optionally, its
        ``backend``), such as a :class:`~portgd.model.Sequential`; the optimizer reads
        nothing else from it. The object owns its parameter arrays, so here a backend's
        in-place fast path (``"<name>:inplace"`` in its ``fast`` table, e.g. NumPy's) may
        update them and the optimizer state without allocating; results are the same as
        the generic rule's.
        """
        self._bind(getattr(model, "backend", None))
        model.params = self._materialized(
            self._apply(model.params, model.grads, in_place=True, trusted=True))

    def _materialized(self, params: dict[str, Array]) -> dict[str, Array]:
        """The lazy-library hook (``Backend.materialize``) on the new parameters and the
        state, every ``backend.materialize_every`` steps; ``params`` unchanged otherwise."""
        backend = self._backend
        if backend is None or not backend.due(self.step_count):
            return params
        params, self.state = backend.materialize((params, self.state))
        return params

    def begin_step(
        self, params: Mapping[str, Array], backend: Backend | None = None
    ) -> LayerwiseStep:
        """Start a step that is applied part by part as the gradients arrive (LayerwiseStep).

        Args:
            params: every parameter the step may update, by name; loaded state is checked
                against all of them here, so a checkpoint of another model fails before
                any parameter changes.
            backend: the parameters' Backend (default: found from the arrays).

        Call it with the parameters' device current, as ``fit`` does (``with
        backend.activate():``).
        """
        self._bind(backend)
        if self._backend is None:
            if not params:
                raise InputError(
                    f"{type(self).__name__}.begin_step: no parameters and no backend given; "
                    f"pass backend= so that the step knows where its state lives"
                )
            self._resolve(params)
        backend = self._backend
        assert backend is not None
        if self._unchecked:
            with backend.activate():  # a dtype cast allocates on the current device
                self._check_loaded(params, params, backend.xp)
        return LayerwiseStep(self, backend)

    def _bind(self, backend: Backend | None) -> None:
        """Adopt ``backend`` (the parameters' own), or raise if the state lives elsewhere."""
        if self._backend is None and backend is not None:
            self._adopt(backend)  # the caller knows the backend: no need to guess from arrays
        elif backend is not None and backend is not self._backend and backend != self._backend:
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
        self._check_states(params, present)
        update, hp = self._rule(backend, in_place)
        new_params.update(self._updated(params, present, backend, update, hp))
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
        if self._rules_for is not backend:  # looked up once per backend, as layers bind
            self._rules_for, self._rules = backend, {}
        update = self._rules.get((in_place, may_overwrite_grad))
        if update is None:
            update = self._rules[in_place, may_overwrite_grad] = self._lookup_rule(
                backend, in_place, may_overwrite_grad)
        return update, self._hp()

    def _hp(self) -> dict[str, Any]:
        """The ``hp`` the update rules get: the hyperparameters and this step's ``lr``.

        Made anew unless this step's rate is the very float object of the last step's (a
        constant rate is: one dict for the whole run; identity, not equality, so that 0.0
        and -0.0 stay apart). The rules share the dict and only read it. The
        hyperparameters change only through :meth:`load_state_dict`, whose :meth:`reset`
        forgets the dict.
        """
        lr = self.lr
        hp = self._last_hp
        if hp is None or hp["lr"] is not lr:
            hp = self._last_hp = {**self._hyper, **self._fixed_hp, "lr": lr}
        return hp

    def _lookup_rule(self, backend: Backend, in_place: bool, may_overwrite_grad: bool
                     ) -> UpdateFn:
        update = backend.op(self.name, type(self).update_rule)
        in_place_update = backend.fast.get(f"{self.name}:inplace") if in_place else None
        if in_place_update is None:
            return update
        if not (may_overwrite_grad and _takes_keyword(in_place_update, "may_overwrite_grad")):
            return in_place_update

        def overwriting(param: Array, grad: Array, state: Any, hp: Mapping[str, Any],
                        step: int, *, xp: Any) -> tuple[Array, dict[str, Array]]:
            # a closure, not functools.partial: merging keyword dicts costs ~0.2 us a call
            return in_place_update(param, grad, state, hp, step, xp=xp, may_overwrite_grad=True)

        return overwriting

    def _updated(
        self,
        params: Mapping[str, Array],
        grads: Mapping[str, Array | None],
        backend: Backend,
        update: UpdateFn,
        hp: Mapping[str, Any],
        name_of: Callable[[str], str] | None = None,
    ) -> dict[str, Array]:
        """New parameters for the keys of ``grads`` (None gradients skipped). The new states
        and update counts, by parameter name (``name_of(key)``; the key itself by default),
        become the optimizer's own once every parameter has its update: an update that raises
        part-way commits nothing.

        A held state is checked against its parameter's shape before that parameter is
        updated, unless the parameter is the array this optimizer itself returned for that
        name last time (then its shape cannot have changed): a training loop pays for the
        check once, not every step. (:meth:`_check_states` checks a whole update first.)
        """
        xp = backend.xp
        if self.clip_value is not None or self.clip_norm is not None or self.maximize:
            grads = self._prepare_grads(grads, xp)
        states, counts, returned = self.state, self.param_steps, self._returned
        new_params: dict[str, Array] = {}
        new_state: dict[str, dict[str, Array]] = {}
        new_steps: dict[str, int] = {}
        for key, g in grads.items():
            if g is None:  # a parameter without a gradient this step
                continue
            name = key if name_of is None else name_of(key)
            p = params[key]
            state = states.get(name)
            if state is None:
                state = self.init_state(p, xp, backend.device)
            elif returned.get(name) is not p:
                self._check_state(name, state, p)
            count = new_steps[name] = counts.get(name, 0) + 1
            new_p, new_state[name] = update(p, g, state, hp, count, xp=xp)
            new_params[key] = returned[name] = new_p
        states.update(new_state)
        counts.update(new_steps)
        return new_params

    def _check_states(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None:
        """Every held state of ``grads``' keys against its parameter, before an update writes
        into any of them: with in-place rules a mismatch found part-way would leave the
        parameters before it changed. A parameter that passes is remembered as fitting, so
        the update does not check it again."""
        states, returned = self.state, self._returned
        for name in grads:
            p = params[name]
            if name in states and returned.get(name) is not p:
                self._check_state(name, states[name], p)
                returned[name] = p

    def _check_state(self, name: str, state: Mapping[str, Array], p: Array) -> None:
        key = _state_mismatch(state, p)
        if key is not None:
            raise InputError(
                f"{type(self).__name__} holds state for a parameter {name!r} shaped "
                f"{tuple(state[key].shape)}; this model's {name!r} is shaped "
                f"{tuple(p.shape)}: the optimizer was used with another model. Make a new "
                f"optimizer for this model, or call its reset() first"
            )

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

    def _prepare_grads(self, grads: Mapping[str, Array | None], xp: Any) -> dict[str, Array]:
        grads = {name: g for name, g in grads.items() if g is not None}
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
            self._returned = {}  # arrays of the old device: checked anew, and not kept alive
        for name, host in self._pending.items():
            self.state[name] = {k: backend.asarray(v, copy=True) for k, v in host.items()}
        self._pending = {}
        self._backend = backend

    def _check_array(self, backend: Backend, x: Any, what: str) -> None:
        if backend.holds(x):
            return
        if isinstance(x, (list, tuple, int, float, complex)):  # host data, but no array
            raise InputError(
                f"{type(self).__name__}: {what} is a Python {type(x).__name__}, not an "
                f"array; pass arrays of the backend the state lives on, e.g. "
                f"portgd.get_backend({backend.name!r}).asarray(value)"
            )
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
            key = _state_mismatch(state, p)
            if key is not None:
                raise CheckpointError(
                    f"{type(self).__name__}: loaded state {name!r}/{key!r} has shape "
                    f"{tuple(state[key].shape)} but parameter {name!r} has shape "
                    f"{tuple(p.shape)}; the state dict belongs to another model"
                )
            self.state[name] = {
                k: v if v.dtype == p.dtype else xp.astype(v, p.dtype) for k, v in state.items()
            }
            self._unchecked.discard(name)

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot: JSON-serialisable metadata plus host NumPy copies of the state.

        Keys: ``format`` (:data:`portgd.optim.STATE_DICT_FORMAT`), ``type`` (class name), ``config``
        (:meth:`config`), ``step_count``, ``param_steps`` (``{name: int}``) and ``state``
        (``{name: {key: numpy.ndarray}}``, the only non-JSON part). Reading the state is
        a device synchronisation.
        """
        return snapshot(self)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` snapshot: hyperparameters, schedule, counters, state.

        As in torch, the saved hyperparameters replace the current ones. Host arrays are
        copied to the optimizer's backend now if it is known (first step or :meth:`to`),
        else at the next step; their shapes are checked against the parameters there.
        Raises CheckpointError when the snapshot is malformed or of another optimizer.
        """
        fresh, steps, param_steps, host = parse(type(self), state_dict)
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


def _state_mismatch(state: Mapping[str, Array], param: Array) -> str | None:
    """The first key of a parameter's ``state`` whose array is not shaped like ``param``
    (None: all are). Compares Python ints: no device read."""
    shape = tuple(param.shape)
    return next((key for key, value in state.items() if tuple(value.shape) != shape), None)
