"""The backend conformance suite, packaged for backend authors.

Run it against a registered backend with one command::

    PORTGD_BACKEND=dask python -m pytest -p my_backend --pyargs portgd.testing

``PORTGD_BACKEND`` names the backend (``PORTGD_DEVICE`` picks a device); ``-p my_backend``
imports the module that registers it, and is not needed for an installed plugin (entry
point). The checks: the registry recognises the backend's arrays (``owns``,
``portgd.backend_of``), devices and dtypes answer consistently, host transfers are copies,
the lazy hook keeps structure and values, every fast path gives the generic path's numbers
(:func:`fast_path_runs`), checkpoints move to and from NumPy, and the seed linear system
and a small MLP stay within the tolerance table of :mod:`portgd.check` (the fast paths
too) in every float dtype the backend has. pytest is needed only here;
portgd itself does not import this module.

Inside another test suite, define a ``conformance_backend`` fixture that returns the Backend
and import the ``test_*`` functions from here. :func:`fast_path_runs` is the one comparison of
a fast path with its generic path; portgd's own tests use it too, with tolerance 0 for NumPy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import portgd

from . import check
from .optim import OPTIMIZERS
from .optim.optimizer import _takes_keyword

__all__ = [
    "conformance_backend",
    "test_backend_of_and_owns_recognise_its_arrays",
    "test_checkpoints_move_to_and_from_numpy",
    "test_devices_are_consistent",
    "test_dtypes_are_consistent",
    "test_fast_paths_match_the_generic_path",
    "test_materialize_keeps_structure_and_values",
    "test_mlp_within_tolerance",
    "test_rng_is_the_shared_host_stream",
    "test_seed_linear_system_within_tolerance",
    "test_to_numpy_is_a_copy",
]


@pytest.fixture(scope="module")
def conformance_backend(request: Any) -> Any:
    """The Backend named by ``PORTGD_BACKEND`` (and ``PORTGD_DEVICE``)."""
    name = os.environ.get("PORTGD_BACKEND")
    if not name:
        message = ("portgd.testing: set PORTGD_BACKEND to the backend to check "
                   "(PORTGD_DEVICE for a device)")
        if request.module.__name__ == __name__:  # --pyargs portgd.testing: say it once
            pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
        pytest.fail(message)  # imported into another suite: fail these tests, not the run
    return portgd.get_backend(name, os.environ.get("PORTGD_DEVICE") or None)


def _floats(backend: Any) -> list[str]:
    return [d for d in ("float64", "float32") if backend.supports(d)]


def test_devices_are_consistent(conformance_backend: Any) -> None:
    backend = conformance_backend
    assert backend.device_name in backend.devices()
    assert portgd.get_backend(backend.name, backend.device_name) == backend
    x = backend.asarray([1.0, 2.0], dtype="float32")
    assert backend.same_device(backend.device_of(x), backend.device)


def test_backend_of_and_owns_recognise_its_arrays(conformance_backend: Any) -> None:
    backend = conformance_backend
    x = backend.asarray(np.arange(6.0).reshape(2, 3), dtype="float32")
    assert backend.owns(x) and backend.holds(x)
    assert not backend.owns(np.ones(2)) or backend.library == "numpy"
    for array in (x, backend.xp.sum(x)):
        found = portgd.backend_of(array)
        # the backend itself, or the built-in named after the same library (which wins)
        assert found == backend or (found.name == backend.library and found.holds(array))


def test_dtypes_are_consistent(conformance_backend: Any) -> None:
    backend = conformance_backend
    assert "float32" in _floats(backend)
    for name in (*_floats(backend), "int32"):
        assert backend.asarray([1, 2], dtype=name).dtype == backend.dtype(name)
    wide = "int64" if backend.supports("int64") else "int32"
    assert backend.index_dtype == backend.dtype(wide)
    for missing in ("float64", "int64"):
        if not backend.supports(missing):
            with pytest.raises(portgd.DTypeNotSupportedError, match=missing):
                backend.dtype(missing)
            with pytest.raises(portgd.DTypeNotSupportedError):
                backend.asarray(np.zeros(2, dtype=missing))  # refused, never narrowed


def test_to_numpy_is_a_copy(conformance_backend: Any) -> None:
    backend = conformance_backend
    for dtype in _floats(backend):
        host = np.array([[1.5, -2.0], [3.25, 0.0]], dtype=dtype)
        x = backend.asarray(host, dtype=dtype)
        back = backend.to_numpy(x)
        assert isinstance(back, np.ndarray) and back.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back, host)
        back[0, 0] = 99.0
        np.testing.assert_array_equal(backend.to_numpy(x), host)
        np.testing.assert_array_equal(portgd.to_numpy(x), host)


def test_rng_is_the_shared_host_stream(conformance_backend: Any) -> None:
    expected = np.random.default_rng(7).standard_normal(4)
    np.testing.assert_array_equal(conformance_backend.rng(7).standard_normal(4), expected)


def test_materialize_keeps_structure_and_values(conformance_backend: Any) -> None:
    backend = conformance_backend
    xp = backend.xp
    x = backend.asarray([1.0, 2.0, 3.0], dtype="float32")
    tree = {"a": x * 2.0, "b": [xp.sum(x), (x + 1.0,)]}
    done = backend.materialize(tree)
    assert set(done) == {"a", "b"} and len(done["b"]) == 2 and len(done["b"][1]) == 1
    np.testing.assert_array_equal(backend.to_numpy(done["a"]), [2.0, 4.0, 6.0])
    assert float(backend.to_numpy(done["b"][0])) == 6.0
    np.testing.assert_array_equal(backend.to_numpy(done["b"][1][0]), [2.0, 3.0, 4.0])
    every = backend.materialize_every
    assert every is None or (isinstance(every, int) and every >= 1)


def test_fast_paths_match_the_generic_path(conformance_backend: Any) -> None:
    backend = conformance_backend
    for key in backend.fast:
        assert isinstance(key, str) and callable(backend.fast[key]), key
    failures = [
        f"{run.key} ({run.case}, {dtype}): {problem}"
        for dtype in _floats(backend)
        for key in sorted(backend.fast)
        for run in fast_path_runs(backend, key, dtype)
        for problem in run.mismatches(check.TOLERANCE[dtype])
    ]
    assert not failures, "fast paths that differ from the generic path:\n" + "\n".join(failures)


def test_checkpoints_move_to_and_from_numpy(conformance_backend: Any, tmp_path: Any) -> None:
    from .model import mlp

    backend = conformance_backend
    model = mlp(4, [3], 2, seed=0, backend=backend)
    saved = portgd.save(tmp_path / "model.npz", model)
    on_numpy = portgd.load(saved, backend="numpy").model
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(on_numpy.state_dict()[name], value)
    back = portgd.load(portgd.save(tmp_path / "numpy.npz", on_numpy), backend=backend).model
    assert back.backend == backend
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_seed_linear_system_within_tolerance(conformance_backend: Any, dtype: str) -> None:
    _within_tolerance(conformance_backend, "seed linear system", dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mlp_within_tolerance(conformance_backend: Any, dtype: str) -> None:
    _within_tolerance(conformance_backend, "mlp 10-16-12-3 adam", dtype)


def _within_tolerance(backend: Any, case: str, dtype: str) -> None:
    if not backend.supports(dtype):
        pytest.skip(f"{backend} has no {dtype}")
    with backend.activate():
        found = check.divergence(backend, case, dtype)
    assert found <= check.TOLERANCE[dtype], (
        f"{case} in {dtype}: divergence {found:.2e} from the NumPy float64 reference exceeds "
        f"{check.TOLERANCE[dtype]:.0e}")


# -- fast paths against their generic paths ------------------------------------------------

OPTIMIZER_CASES: Mapping[str, tuple[dict[str, Any], ...]] = {
    "sgd": ({}, {"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
            {"momentum": 0.9, "nesterov": True}),
    "adagrad": ({"lr_decay": 0.01, "weight_decay": 0.01, "initial_accumulator_value": 0.1},),
    "rmsprop": ({}, {"centered": True, "momentum": 0.5, "weight_decay": 0.01}),
    "adam": ({}, {"amsgrad": True, "weight_decay": 0.01}),
    "adamw": ({}, {"amsgrad": True}),
}
"""The hyperparameters under which an optimizer's fast path is compared with its generic
rule; together they take every branch of the rules (momentum, dampening, Nesterov, weight
decay, centred RMSprop, AMSGrad, decoupled weight decay). An optimizer not listed runs with
its defaults."""

OPTIMIZER_STEPS = 6
"""Steps each optimizer fast path takes beside its generic rule."""


@dataclass(frozen=True)
class FastPathRun:
    """A backend's fast path ``key`` and the generic path it replaces, run on the same inputs.

    ``fast`` and ``generic`` map each output (``"step 3 param"``, ``"step 3 exp_avg"``,
    ``"result"``) to a host copy of its value. ``gradient_overwritten`` says, per step,
    whether an in-place optimizer rule wrote into the gradient it was given (only for runs
    with ``may_overwrite_grad=True``, which ``fit`` passes; empty otherwise).
    """

    key: str
    case: str
    fast: dict[str, np.ndarray]
    generic: dict[str, np.ndarray]
    gradient_overwritten: tuple[bool, ...] = field(default=())

    def mismatches(self, tolerance: float) -> list[str]:
        """One line per output that differs: another shape or dtype, NaN or infinity where
        the generic path has none (or the reverse), or a relative difference
        ``max|fast - generic| / max|generic|`` over the finite entries above ``tolerance``
        (0 asks for identical numbers)."""
        found = []
        for name, ref in self.generic.items():
            got = self.fast.get(name)
            if got is None:
                found.append(f"{name}: missing from the fast path's result")
            elif got.shape != ref.shape or got.dtype != ref.dtype:
                found.append(f"{name}: {got.dtype}{list(got.shape)} where the generic path "
                             f"gives {ref.dtype}{list(ref.shape)}")
            elif not _same_non_finite(got, ref):
                found.append(f"{name}: NaN or infinity where the generic path differs")
            else:
                finite = np.isfinite(ref)
                difference = check._relative(got[finite], ref[finite]) if finite.any() else 0.0
                if difference > tolerance:
                    found.append(f"{name}: relative difference {difference:.2e} exceeds "
                                 f"{tolerance:.0e}")
        return found


def _same_non_finite(got: np.ndarray, ref: np.ndarray) -> bool:
    """NaN at the same places, and the same infinities."""
    special = ~np.isfinite(ref)
    return bool(np.array_equal(np.isnan(got), np.isnan(ref))
                and np.array_equal(~np.isfinite(got), special)
                and np.array_equal(got[np.isinf(ref)], ref[np.isinf(ref)]))


def fast_path_runs(backend: Any, key: str, dtype: str) -> list[FastPathRun]:
    """Run the fast path ``backend.fast[key]`` and the generic path beside it, on the
    backend, in ``dtype``, from the same host-drawn inputs.

    Known keys are those portgd looks up: ``"<optimizer>"`` (a functional update rule) and
    ``"<optimizer>:inplace"`` for each optimizer (one run per :data:`OPTIMIZER_CASES` entry,
    :data:`OPTIMIZER_STEPS` steps on a 7x5 parameter; an in-place rule that takes
    ``may_overwrite_grad`` runs both ways), ``"relu_backward"`` (inputs with zeros, signed
    infinities and NaN) and ``"linear_steps"`` (25 plain steps on a 6x3 system, one and two
    right-hand sides), ``"add_bias"`` (a fresh (3, 4) array plus a bias, with infinities and
    NaN), ``"parameter"`` (the values of new parameters shaped (3, 4), (5,), (1, 1) and
    (0, 3), with infinities and NaN, must come back unchanged), ``"sum"`` and ``"max"``
    (``xp.sum``/``xp.max`` over every axis and none, with and without ``keepdims``, on
    inputs with infinities and NaN). Any other key raises LookupError: portgd would never
    call it.
    """
    if key not in backend.fast:
        raise LookupError(f"{backend} has no fast path {key!r}")
    if key == "relu_backward":
        return [_relu_run(backend, dtype)]
    if key == "linear_steps":
        return [_linear_run(backend, dtype, shape) for shape in ((6,), (6, 2))]
    if key in ("sum", "max"):
        return [_reduction_run(backend, key, dtype)]
    if key == "add_bias":
        return [_bias_run(backend, dtype)]
    if key == "parameter":
        return [_parameter_run(backend, dtype)]
    base, _, mode = key.partition(":")
    optimizers = _optimizer_classes()
    if base not in optimizers or mode not in ("", "inplace"):
        known = ", ".join(f"{name!r}, '{name}:inplace'" for name in sorted(optimizers))
        raise LookupError(
            f"{backend} offers a fast path {key!r}, a name portgd never looks up, so it never "
            f"runs; the names are {known}, 'relu_backward', 'linear_steps', 'add_bias', "
            f"'parameter', 'sum' and 'max'")
    in_place = mode == "inplace"
    runs = []
    for kwargs in OPTIMIZER_CASES.get(base, ({},)):
        overwrite = (False, True) if in_place and _takes_keyword(
            backend.fast[key], "may_overwrite_grad") else (False,)
        runs += [_optimizer_run(backend, key, optimizers[base], kwargs, dtype, in_place, o)
                 for o in overwrite]
    return runs


def _optimizer_classes() -> dict[str, Any]:
    return {cls.name: cls for cls in OPTIMIZERS.values()}


def _optimizer_run(backend: Any, key: str, cls: Any, kwargs: dict[str, Any], dtype: str,
                   in_place: bool, may_overwrite_grad: bool) -> FastPathRun:
    """``OPTIMIZER_STEPS`` steps of the rule ``fit`` would take (``Optimizer._rule``) and of
    the class's generic ``update_rule``, every output recorded after every step."""
    opt = cls(lr=0.05, **kwargs)
    fast, hp = opt._rule(backend, in_place, may_overwrite_grad)
    rng = np.random.default_rng(0)
    start = rng.normal(size=(7, 5))
    fast_param = backend.asarray(start, dtype=dtype, copy=True)
    param = backend.asarray(start, dtype=dtype, copy=True)
    fast_state = opt.init_state(fast_param, backend.xp, backend.device)
    state = opt.init_state(param, backend.xp, backend.device)
    got: dict[str, np.ndarray] = {}
    want: dict[str, np.ndarray] = {}
    overwritten = []
    for step in range(1, OPTIMIZER_STEPS + 1):
        grad = rng.normal(size=start.shape)
        given = backend.asarray(grad, dtype=dtype, copy=True)
        fast_param, fast_state = fast(fast_param, given, fast_state, hp, step, xp=backend.xp)
        param, state = cls.update_rule(param, backend.asarray(grad, dtype=dtype, copy=True),
                                       state, hp, step, xp=backend.xp)
        got[f"step {step} param"] = backend.to_numpy(fast_param)
        want[f"step {step} param"] = backend.to_numpy(param)
        for name in state:
            want[f"step {step} {name}"] = backend.to_numpy(state[name])
            if name in fast_state:
                got[f"step {step} {name}"] = backend.to_numpy(fast_state[name])
        if may_overwrite_grad:
            overwritten.append(not np.array_equal(backend.to_numpy(given),
                                                  grad.astype(dtype)))
    case = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"
    if may_overwrite_grad:
        case += "; may overwrite the gradient"
    return FastPathRun(key, case, got, want, tuple(overwritten))


def _relu_run(backend: Any, dtype: str) -> FastPathRun:
    from .layers import relu_backward

    inf, nan = float("inf"), float("nan")
    x = backend.asarray([[-1.0, 0.0, 2.0, -3.0], [1.0, -0.5, 0.0, 4.0]], dtype=dtype)
    dout = backend.asarray([[inf, -3.0, nan, -2.0], [5.0, -inf, 1.0, -1.0]], dtype=dtype)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN on purpose (see relu_backward)
        fast = backend.fast["relu_backward"](x, dout)
        generic = relu_backward(x, dout, backend.xp)
    return FastPathRun("relu_backward", "zeros, infinities and NaN",
                       {"result": backend.to_numpy(fast)}, {"result": backend.to_numpy(generic)})


def _bias_run(backend: Any, dtype: str) -> FastPathRun:
    from .layers import add_bias

    inf, nan = float("inf"), float("nan")
    rows = [[0.5, -2.0, 3.25, 1e-3], [-inf, 4.0, -0.75, 2.5], [1.5, nan, 0.0, -1.0]]
    bias = backend.asarray([1.0, -inf, 0.25, 2.0], dtype=dtype)
    fast = backend.fast["add_bias"](backend.asarray(rows, dtype=dtype), bias)
    generic = add_bias(backend.asarray(rows, dtype=dtype), bias)
    return FastPathRun("add_bias", "infinities and NaN", {"result": backend.to_numpy(fast)},
                       {"result": backend.to_numpy(generic)})


def _parameter_run(backend: Any, dtype: str) -> FastPathRun:
    from .model import parameter_storage

    inf, nan = float("inf"), float("nan")
    values = {"(3, 4)": [[0.5, -2.0, 3.25, 1e-3], [-inf, 4.0, -0.75, 2.5], [1.5, nan, 0.0, -1.0]],
              "(5,)": [1.0, -inf, 0.25, 2.0, nan], "(1, 1)": [[-0.125]],
              "(0, 3)": np.zeros((0, 3))}
    got, want = {}, {}
    for name, value in values.items():
        got[name] = backend.to_numpy(backend.fast["parameter"](backend.asarray(value,
                                                                               dtype=dtype)))
        want[name] = backend.to_numpy(parameter_storage(backend.asarray(value, dtype=dtype)))
    return FastPathRun("parameter", "shapes with infinities and NaN", got, want)


def _reduction_run(backend: Any, key: str, dtype: str) -> FastPathRun:
    inf, nan = float("inf"), float("nan")
    rows = [[0.5, -2.0, 3.25, 1e-3], [-inf, 4.0, -0.75, 2.5], [1.5, nan, 0.0, -1.0]]
    x = backend.asarray(rows, dtype=dtype)
    fast, generic = backend.fast[key], getattr(backend.xp, key)
    got, want = {}, {}
    with np.errstate(invalid="ignore"):
        for axis in (None, 0, 1, -1):
            for keepdims in (False, True):
                name = f"axis={axis}, keepdims={keepdims}"
                got[name] = backend.to_numpy(fast(x, axis=axis, keepdims=keepdims))
                want[name] = backend.to_numpy(generic(x, axis=axis, keepdims=keepdims))
    return FastPathRun(key, "every axis, infinities and NaN", got, want)


def _linear_run(backend: Any, dtype: str, y_shape: tuple[int, ...]) -> FastPathRun:
    from .linear import linear_steps

    rng = np.random.default_rng(1)
    A = backend.asarray(rng.normal(size=(6, 3)), dtype=dtype)
    Y = backend.asarray(rng.normal(size=y_shape), dtype=dtype)
    x = backend.asarray(np.zeros((3, *y_shape[1:])), dtype=dtype)
    step = 2.0 * 0.05 / 6
    fast = backend.fast["linear_steps"](A, A.T, Y, x, step, 25)
    generic = linear_steps(A, A.T, Y, x, step, 25)
    return FastPathRun("linear_steps", f"25 steps, Y shaped {y_shape}",
                       {"result": backend.to_numpy(fast)}, {"result": backend.to_numpy(generic)})
