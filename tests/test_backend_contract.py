"""The Backend contract of DESIGN.md, checked on every backend of the fixture."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import widest_float

import portgd


def test_asarray_from_host_lands_on_the_device(backend):
    host = np.arange(6, dtype=np.float64).reshape(2, 3)
    x = backend.asarray(host, dtype="float32")
    assert backend.owns(x)
    assert backend.same_device(backend.device_of(x), backend.device)
    assert x.dtype == backend.dtype("float32")
    np.testing.assert_array_equal(backend.to_numpy(x), host.astype(np.float32))


def test_asarray_of_own_array_is_not_copied(backend):
    x = backend.asarray([1.0, 2.0], dtype="float32")
    assert backend.asarray(x) is x
    wide = widest_float(backend)
    assert backend.asarray(x, dtype=wide).dtype == backend.dtype(wide)


def test_integers_become_floats_exactly(backend):
    x = backend.asarray(np.array([1, 2, 2**24], dtype=np.int64), dtype=widest_float(backend))
    np.testing.assert_array_equal(backend.to_numpy(x), [1.0, 2.0, 2.0**24])


def test_index_dtype_is_the_widest_integer(backend):
    expected = "int64" if backend.supports("int64") else "int32"
    assert backend.index_dtype == backend.dtype(expected)
    backend.check_index_range(0, 2**31 - 1)
    if expected == "int32":
        with pytest.raises(portgd.InputError, match="beyond int32"):
            backend.check_index_range(0, 2**31, "labels")


def test_host_data_of_a_missing_width_is_refused_not_narrowed(backend):
    if backend.supports("int64"):
        pytest.skip(f"{backend} has int64")
    with pytest.raises(portgd.DTypeNotSupportedError, match="int64"):
        backend.asarray(np.arange(3, dtype=np.int64))


def test_rng_is_the_same_host_stream_everywhere(backend):
    a = backend.rng(7).standard_normal(5)
    b = portgd.get_backend("numpy").rng(7).standard_normal(5)
    np.testing.assert_array_equal(a, b)


def test_array_of_another_device_is_an_error_naming_both():
    device1 = portgd.get_backend("array_api_strict", "device1")
    default = portgd.get_backend("array_api_strict")
    x = default.asarray([1.0, 2.0])
    with pytest.raises(portgd.BackendMismatchError) as err:
        device1.asarray(x)
    message = str(err.value)
    assert "CPU_DEVICE" in message and "device1" in message and "model.to" in message


def test_array_of_another_library_is_an_error_naming_both():
    torch = pytest.importorskip("torch")
    numpy_backend = portgd.get_backend("numpy")
    with pytest.raises(portgd.BackendMismatchError) as err:
        numpy_backend.asarray(torch.ones(2))
    assert "torch.Tensor" in str(err.value) and "numpy" in str(err.value)


def test_non_numeric_data_is_rejected(numpy_backend):
    with pytest.raises(portgd.InputError):
        numpy_backend.asarray(["a", "b"])


def test_fast_path_lookup_falls_back_to_generic(numpy_backend):
    def generic(x):
        return x

    assert numpy_backend.op("no-such-op", generic) is generic


def test_synchronize_and_activate_are_callable(backend):
    backend.synchronize()
    with backend.activate():
        pass


def test_devices_are_listed(backend):
    assert backend.device_name in backend.devices()
    assert portgd.get_backend(backend.name, backend.device_name) == backend


def test_device_string_names_cupy_devices_without_cupy():
    from portgd.backends._base import device_string

    class FakeCupyDevice:  # cupy.cuda.Device carries its index in .id
        id = 3

    FakeCupyDevice.__module__ = "cupy.cuda.device"
    assert device_string(FakeCupyDevice()) == "cuda:3"
    assert device_string("device1") == "device1"
