"""The backend conformance suite, packaged for backend authors.

Run it against a registered backend with one command::

    PORTGD_BACKEND=dask python -m pytest -p my_backend --pyargs portgd.testing

``PORTGD_BACKEND`` names the backend (``PORTGD_DEVICE`` picks a device); ``-p my_backend``
imports the module that registers it, and is not needed for an installed plugin (entry
point). The checks: the registry recognises the backend's arrays (``owns``,
``portgd.backend_of``), devices and dtypes answer consistently, host transfers are copies,
the lazy hook keeps structure and values, fast paths are callables, checkpoints move to and
from NumPy, and the seed linear system and a small MLP stay within the tolerance table of
:mod:`portgd.check` in every float dtype the backend has. pytest is needed only here;
portgd itself does not import this module.

Inside another test suite, define a ``conformance_backend`` fixture that returns the Backend
and import the ``test_*`` functions from here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

import portgd

from . import check

__all__ = [
    "conformance_backend",
    "test_backend_of_and_owns_recognise_its_arrays",
    "test_checkpoints_move_to_and_from_numpy",
    "test_devices_are_consistent",
    "test_dtypes_are_consistent",
    "test_fast_paths_are_callables",
    "test_materialize_keeps_structure_and_values",
    "test_mlp_within_tolerance",
    "test_rng_is_the_shared_host_stream",
    "test_seed_linear_system_within_tolerance",
    "test_to_numpy_is_a_copy",
]


@pytest.fixture(scope="module")
def conformance_backend() -> Any:
    """The Backend named by ``PORTGD_BACKEND`` (and ``PORTGD_DEVICE``)."""
    name = os.environ.get("PORTGD_BACKEND")
    if not name:
        pytest.fail("set PORTGD_BACKEND to the backend to check (PORTGD_DEVICE for a device)")
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


def test_fast_paths_are_callables(conformance_backend: Any) -> None:
    for name, function in conformance_backend.fast.items():
        assert isinstance(name, str) and callable(function), name


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
