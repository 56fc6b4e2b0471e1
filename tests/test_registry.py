"""The registry: lazy import, records, entry points, run-time registration, errors."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from helpers import modules_loaded_by

import portgd
from portgd import _registry
from portgd.backends import Backend


def test_import_portgd_imports_no_optional_library():
    libraries = ("numpy", "torch", "cupy", "array_api_strict", "array_api_compat", "jax")
    assert modules_loaded_by("import portgd; portgd.backend_names()", libraries) == []


def test_builtins_are_registered_through_entry_points():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="portgd.backends")}
    assert {"numpy", "cupy", "torch", "array_api_strict"} <= names
    assert {"numpy", "cupy", "torch", "array_api_strict"} <= set(portgd.backend_names())


def test_available_backends_records():
    records = {info.name: info for info in portgd.available_backends()}
    numpy_info = records["numpy"]
    assert numpy_info.installed and numpy_info.usable and numpy_info.reason is None
    assert numpy_info.devices == ("cpu",)
    assert numpy_info.version == np.__version__
    assert numpy_info.float64 is True
    strict = records["array_api_strict"]
    assert strict.usable and "device1" in strict.devices and "no_float64" in strict.devices
    torch_info = records["torch"]
    assert torch_info.usable and "cpu" in torch_info.devices


def test_cupy_record_says_why_it_is_not_usable():
    info = {i.name: i for i in portgd.available_backends()}["cupy"]
    if info.usable:
        pytest.skip("cupy is usable on this machine")
    assert info.reason
    assert "cupy" in info.reason
    assert "pip install" in info.reason or "CUDA" in info.reason or "GPU" in info.reason


def test_unknown_backend_lists_registered_names():
    with pytest.raises(portgd.BackendNotFoundError) as err:
        portgd.get_backend("tensorflow")
    message = str(err.value)
    assert "'tensorflow'" in message
    for name in ("numpy", "torch", "cupy", "array_api_strict"):
        assert name in message
    assert isinstance(err.value, portgd.PortgdError)


def test_aliases():
    assert portgd.get_backend("strict").name == "array_api_strict"
    assert portgd.get_backend("cpu").name == "numpy"


def test_unusable_backend_gives_reason_and_install_hint(monkeypatch):
    from portgd.backends import cupy as cupy_backend

    cupy_backend.probe.cache_clear()
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    try:
        with pytest.raises(portgd.BackendUnavailableError) as err:
            cupy_backend.create()
    finally:
        cupy_backend.probe.cache_clear()
    assert "pip install 'portgd[cuda12]'" in str(err.value)


def test_cupy_probe_cannot_hang(monkeypatch):
    from portgd.backends import cupy as cupy_backend

    cupy_backend.probe.cache_clear()
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    monkeypatch.setattr(cupy_backend, "_PROBE", "import time; time.sleep(30)")
    monkeypatch.setattr(cupy_backend, "PROBE_TIMEOUT_S", 0.5)
    try:
        with pytest.raises(portgd.BackendUnavailableError, match="did not finish within"):
            cupy_backend.probe()
    finally:
        cupy_backend.probe.cache_clear()


def test_cupy_probe_reports_the_driver_error(monkeypatch):
    from portgd.backends import cupy as cupy_backend

    cupy_backend.probe.cache_clear()
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    failing = (
        "import sys; sys.stderr.write('cupy_backends.cuda.api.runtime.CUDARuntimeError: "
        "cudaErrorNoDevice: no CUDA-capable device is detected\\n'); sys.exit(1)"
    )
    monkeypatch.setattr(cupy_backend, "_PROBE", failing)
    try:
        with pytest.raises(portgd.BackendUnavailableError) as err:
            cupy_backend.probe()
    finally:
        cupy_backend.probe.cache_clear()
    assert "no CUDA device is visible" in str(err.value)
    assert "cudaErrorNoDevice" in str(err.value)


def test_unknown_device_lists_devices():
    with pytest.raises(portgd.DeviceNotFoundError) as err:
        portgd.get_backend("array_api_strict", "device9")
    assert "device9" in str(err.value) and "device1" in str(err.value)
    with pytest.raises(portgd.DeviceNotFoundError, match="'cpu'"):
        portgd.get_backend("numpy", "cuda:0")
    with pytest.raises(portgd.DeviceNotFoundError, match=r"torch\.cuda\.is_available"):
        portgd.get_backend("torch", "cuda:7")


def test_unsupported_dtype_says_what_exists():
    backend = portgd.get_backend("array_api_strict", "no_float64")
    assert not backend.supports("float64")
    with pytest.raises(portgd.DTypeNotSupportedError) as err:
        backend.dtype("float64")
    assert "float32" in str(err.value) and "no_float64" in str(err.value)
    with pytest.raises(portgd.InputError, match="unknown dtype"):
        backend.dtype("float65")


def test_dtype_accepts_names_and_objects(backend):
    f32 = backend.dtype("float32")
    assert backend.dtype(f32) == f32
    assert backend.dtype(np.float32) == f32
    assert backend.dtype(np.dtype("float32")) == f32


def test_register_backend_at_run_time():
    calls = []

    def create(device=None):
        calls.append(device)
        base = portgd.get_backend("numpy")
        return Backend("mine", base.xp, "cpu", library="numpy", version="1",
                       array_types=(np.ndarray,))

    portgd.register_backend("mine", create)
    try:
        assert "mine" in portgd.backend_names()
        assert calls == []  # lazy: nothing created at registration
        assert portgd.get_backend("mine").name == "mine"
        assert portgd.get_backend("mine") is portgd.get_backend("mine")
        assert calls == [None]
        with pytest.raises(ValueError, match="already registered"):
            portgd.register_backend("mine", create)
        portgd.register_backend("mine", create, replace=True)
    finally:
        _registry._registry.factories.pop("mine", None)
        _registry._registry.instances.pop(("mine", ""), None)
        _registry._registry.instances.pop(("mine", "cpu"), None)


def test_a_failing_third_party_factory_is_reported_not_raised():
    def broken(device=None):
        raise RuntimeError("driver exploded")

    portgd.register_backend("broken", broken)
    try:
        info = {i.name: i for i in portgd.available_backends()}["broken"]
        assert not info.usable and "driver exploded" in info.reason
    finally:
        _registry._registry.factories.pop("broken")


def test_selection_order(monkeypatch):
    assert portgd.get_backend().name == "numpy"
    monkeypatch.setenv("PORTGD_BACKEND", "array_api_strict")
    monkeypatch.setenv("PORTGD_DEVICE", "device1")
    assert portgd.get_backend() == portgd.get_backend("array_api_strict", "device1")
    portgd.set_backend("torch")
    assert portgd.get_backend().name == "torch"
    with portgd.use_backend("array_api_strict", "device2") as inner:
        assert portgd.get_backend() is inner
        assert inner.device_name == "device2"
    assert portgd.get_backend().name == "torch"
    assert portgd.get_backend("numpy").name == "numpy"


def test_set_backend_with_bad_name_changes_nothing():
    portgd.set_backend("torch")
    with pytest.raises(portgd.BackendNotFoundError):
        portgd.set_backend("nope")
    assert portgd.get_backend().name == "torch"


def test_use_backend_restores_on_exception():
    with pytest.raises(KeyError), portgd.use_backend("torch"):
        assert portgd.get_backend().name == "torch"
        raise KeyError("boom")
    assert portgd.get_backend().name == "numpy"


def test_use_backend_does_not_leak_across_threads():
    seen = {}
    entered = threading.Event()
    release = threading.Event()

    def inside():
        with portgd.use_backend("torch"):
            entered.set()
            release.wait(5)
            seen["inside"] = portgd.get_backend().name

    worker = threading.Thread(target=inside)
    worker.start()
    entered.wait(5)
    seen["outside"] = portgd.get_backend().name
    release.set()
    worker.join()
    assert seen == {"inside": "torch", "outside": "numpy"}


def test_use_backend_does_not_leak_across_async_tasks():
    async def task(name, delay):
        with portgd.use_backend(name):
            await asyncio.sleep(delay)
            return portgd.get_backend().name

    async def both():
        return await asyncio.gather(task("torch", 0.02), task("array_api_strict", 0.01))

    assert asyncio.run(both()) == ["torch", "array_api_strict"]


def test_backend_of_and_to_numpy(backend):
    x = backend.asarray([[1.0, 2.0], [3.0, 4.0]], dtype="float32")
    assert portgd.backend_of(x) == backend
    host = portgd.to_numpy(x)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    np.testing.assert_array_equal(host, [[1.0, 2.0], [3.0, 4.0]])


def test_cupy_probe_verdict_is_kept_also_when_it_fails(monkeypatch):
    from portgd.backends import cupy as cupy_backend

    calls = []

    def failing():
        calls.append(1)
        raise portgd.BackendUnavailableError("no GPU")

    cupy_backend.probe.cache_clear()
    monkeypatch.setattr(cupy_backend, "_run_probe", failing)
    try:
        for _ in range(3):
            with pytest.raises(portgd.BackendUnavailableError, match="no GPU"):
                cupy_backend.probe()
    finally:
        cupy_backend.probe.cache_clear()
    assert calls == [1]


def test_backend_of_prefers_the_builtin_over_a_plugin_of_the_same_library():
    def create(device=None):
        return Backend("anumpy", np, "cpu", library="numpy", version="1",
                       array_types=(np.ndarray,))

    create.library = "numpy"
    portgd.register_backend("anumpy", create)
    try:
        assert portgd.backend_of(np.ones(2)).name == "numpy"
        with portgd.use_backend("anumpy"):
            assert portgd.backend_of(np.ones(2)).name == "numpy"
    finally:
        _registry._registry.factories.pop("anumpy")
        _registry._registry.instances.pop(("anumpy", ""), None)
        _registry._registry.instances.pop(("anumpy", "cpu"), None)


class _Unclaimed:
    """An object of a type no built-in backend owns (stands for another library's array)."""


def test_backend_of_names_each_backend_that_cannot_run_and_why():
    def unavailable(device=None):
        raise portgd.BackendUnavailableError("mylib is installed but no accelerator is visible")

    portgd.register_backend("mylib", unavailable)
    try:
        with pytest.raises(portgd.BackendNotFoundError) as err:
            portgd.backend_of(_Unclaimed())
    finally:
        _registry._registry.factories.pop("mylib")
    message = str(err.value)
    assert ("Backend 'mylib' could not be created here: mylib is installed but no accelerator "
            "is visible.") in message
    assert "fix what stops it" in message


def test_backend_of_lets_a_factory_bug_propagate():
    def buggy(device=None):
        raise ZeroDivisionError("plugin bug in create()")

    portgd.register_backend("buggy", buggy)
    try:
        with pytest.raises(ZeroDivisionError, match="plugin bug"):
            portgd.backend_of(_Unclaimed())
    finally:
        _registry._registry.factories.pop("buggy")
