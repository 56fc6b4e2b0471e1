"""The Backend contract and its generic implementation for array-API libraries.

A :class:`Backend` binds one array namespace ``xp`` to one device. The core of portgd
receives ``xp`` from a Backend and calls only functions of the array API standard on it;
everything that touches a concrete library (host transfers, device names, dtype lookup,
synchronisation) lives here and in the per-library modules beside this one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from portgd.errors import (
    BackendMismatchError,
    DeviceNotFoundError,
    DTypeNotSupportedError,
    InputError,
)

#: dtype names portgd knows how to look up in a namespace.
DTYPE_NAMES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
)  # fmt: skip

FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


def is_host_data(x: Any) -> bool:
    """Whether ``x`` is host data: a NumPy array or scalar, a Python number or a list."""
    return isinstance(x, (np.ndarray, np.generic, int, float, bool, list, tuple))


def is_host_array(x: Any) -> bool:
    """Whether ``x`` is a host array: host data with a shape (a NumPy array or scalar,
    subclasses included; not a Python number or list)."""
    return is_host_data(x) and hasattr(x, "shape")


def array_namespace_of(x: Any) -> Any:
    """The array-API namespace of ``x`` as array-api-compat detects it; None for non-arrays.

    This is how the registry recognises arrays that no backend's :meth:`Backend.owns`
    claims (a backend registered without ``array_types``, say).
    """
    import array_api_compat

    if not array_api_compat.is_array_api_obj(x):
        return None
    try:
        return array_api_compat.array_namespace(x)
    except TypeError:
        return None


def array_device(x: Any) -> Any:
    """The device of the array ``x`` through the array API (``array_api_compat.device``).

    Works for libraries whose arrays carry no ``.device`` attribute (NumPy < 2, dask).
    """
    import array_api_compat

    return array_api_compat.device(x)


class Backend:
    """One array library on one device.

    Attributes:
        name: registry name (``"numpy"``, ``"torch"``, ...).
        xp: the array-API namespace all math goes through.
        device: the library's device object; arrays are created there.
        library: the import name of the array library.
        version: the library's version string.
        host: the host array library (NumPy), for host-side draws and I/O.
        fast: fast paths keyed by operation name; see :meth:`op`.
    """

    host = np

    #: Lazy libraries (dask): the core calls :meth:`materialize` on what it holds at least
    #: every this many training steps, evaluation batches or solve_linear iterations, and
    #: where it reads from the host anyway. None (eager libraries): never.
    materialize_every: int | None = None

    def __init__(
        self,
        name: str,
        xp: Any,
        device: Any,
        *,
        library: str,
        version: str,
        array_types: tuple[type, ...] = (),
        devices: Sequence[Any] = (),
    ) -> None:
        self.name = name
        self.xp = xp
        self.device = device
        self.library = library
        self.version = version
        self._array_types = array_types
        self._devices = tuple(devices) or (device,)
        self.fast: dict[str, Callable[..., Any]] = {}
        self._dtype_table: dict[str, Any] | None = None
        self._own_namespace: Any = None

    # -- identity ---------------------------------------------------------------------
    @property
    def device_name(self) -> str:
        """The device as a string a user can pass back as ``device=``."""
        return device_string(self.device)

    def devices(self) -> list[str]:
        """The names of every device this library offers here."""
        return [device_string(d) for d in self._devices]

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device_name!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Backend)
            and other.name == self.name
            and other.device_name == self.device_name
        )

    def __hash__(self) -> int:
        return hash((self.name, self.device_name))

    # -- dtypes -----------------------------------------------------------------------
    def _namespace_dtypes(self) -> dict[str, Any]:
        """``{name: dtype}`` for every dtype this backend and device support (cached)."""
        if self._dtype_table is None:
            info = self.xp.__array_namespace_info__()
            self._dtype_table = dict(info.dtypes(device=self.device))
        return self._dtype_table

    def dtype(self, spec: Any) -> Any:
        """The namespace's dtype object for a name (``"float32"``) or any dtype object.

        Raises DTypeNotSupportedError when this backend or device has no such dtype.
        """
        name = dtype_name(spec)
        supported = self._namespace_dtypes()
        found = supported.get(name)
        if found is not None:
            return found
        if name not in DTYPE_NAMES:
            raise InputError(f"unknown dtype {spec!r}; use one of {', '.join(FLOAT_NAMES)}")
        raise DTypeNotSupportedError(self._missing_dtype(name, supported),
                                     tuple(n for n in FLOAT_NAMES if n in supported))

    def _missing_dtype(self, name: str, supported: dict[str, Any]) -> str:
        """What to say when dtype ``name`` does not exist here (a subclass may add how to
        switch it on)."""
        where = f"{self.name} on device {self.device_name!r} does not support {name}"
        floats = [n for n in FLOAT_NAMES if n in supported]
        if name in FLOAT_NAMES and floats:
            return (f"{where}; it supports {', '.join(floats)}. Use dtype={floats[-1]!r} or "
                    f"another device.")
        return f"{where}; its dtypes are {', '.join(supported)}. Use another device or backend."

    def supports(self, dtype: Any) -> bool:
        """Whether this backend and device can hold arrays of ``dtype``."""
        return dtype_name(dtype) in self._namespace_dtypes()

    @property
    def index_dtype(self) -> Any:
        """The integer dtype for indices and class labels: int64 where it exists, else int32."""
        supported = self._namespace_dtypes()
        return supported.get("int64", supported.get("int32"))

    def check_index_range(self, low: int, high: int, what: str = "indices") -> None:
        """Raise InputError unless ``low..high`` fits :attr:`index_dtype`."""
        name = dtype_name(self.index_dtype)
        bound = 2 ** (int(name.removeprefix("int")) - 1)
        if low < -bound or high >= bound:
            raise InputError(
                f"{what} range from {low} to {high}, beyond {name}, the widest integer "
                f"dtype of {self.name} on device {self.device_name!r}; use a backend or "
                f"device with int64"
            )

    # -- arrays -----------------------------------------------------------------------
    @staticmethod
    def is_host(x: Any) -> bool:
        """Whether ``x`` is host data (NumPy array or scalar, Python number or list)."""
        return is_host_data(x)

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's library (on any device).

        The generic answer checks ``array_types``; without them, :meth:`same_namespace`.
        """
        if self._array_types:
            return isinstance(x, self._array_types)
        return self.same_namespace(x)

    def same_namespace(self, x: Any) -> bool:
        """Whether array-api-compat detects for ``x`` the namespace it detects for this
        backend's own arrays (array-api-compat may wrap ``xp``, so ``xp`` itself is not
        what to compare with)."""
        mine = self._own_namespace
        if mine is None:
            own = self._from_host(np.zeros(1, dtype=np.float32), None)
            mine = self._own_namespace = array_namespace_of(own)
        found = array_namespace_of(x)
        return found is not None and found is mine

    def device_of(self, x: Any) -> Any:
        """The device of one of this backend's arrays (``array_api_compat.device``)."""
        return array_device(x)

    def holds(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend on its device."""
        if not self.owns(x):
            return False
        device = self.device_of(x)
        return device is self.device or device == self.device or self.same_device(
            device, self.device)

    def check(self, x: Any, what: str = "array") -> None:
        """Raise BackendMismatchError unless ``x`` is an array on this backend and device."""
        if self.holds(x):
            return
        if self.owns(x):
            found = f"{self.name} on device {device_string(self.device_of(x))!r}"
        else:
            found = f"a {type(x).__module__}.{type(x).__name__}"
        raise BackendMismatchError(
            f"{what} is {found}, but this model runs on {self.name} on device "
            f"{self.device_name!r}. Move the model with model.to(...) or convert the "
            f"array with portgd.to_numpy(x) and pass the host array instead."
        )

    def same_device(self, a: Any, b: Any) -> bool:
        return device_string(a) == device_string(b)

    def asarray(self, x: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        """An array on this backend and device from host data or one of its own arrays.

        Host data (NumPy arrays, Python numbers and lists) is transferred. An array of
        another library, or of this library on another device, raises
        BackendMismatchError: portgd never moves data between devices silently.
        Integer or boolean data asked for as a float dtype is cast by NumPy (exact up to
        2**24 in float32 and 2**53 in float64); complex data is never silently made real.
        Host data of a dtype this backend or device lacks (int64 on a device without
        64-bit types) raises DTypeNotSupportedError instead of being narrowed silently.
        ``copy=True`` always returns a new array (the default may share host memory).
        """
        xp_dtype = None if dtype is None else self.dtype(dtype)
        if not is_host_data(x):
            self.check(x)
            if xp_dtype is not None and x.dtype != xp_dtype:
                return self.xp.astype(x, xp_dtype)
            return self.xp.asarray(x, copy=True) if copy else x
        host = np.asarray(x)
        if host.dtype == object:
            raise InputError(f"cannot make an array from {type(x).__name__} of mixed objects")
        if host.dtype.kind not in "biufc":
            raise InputError(f"cannot make a numeric array from data of dtype {host.dtype}")
        if host.dtype.kind == "c" and dtype is not None and dtype_name(xp_dtype) in FLOAT_NAMES:
            raise InputError(
                f"cannot convert complex data to {dtype_name(xp_dtype)} without losing the "
                f"imaginary part; pass real data (x.real) if that is what you mean"
            )
        if dtype is not None:
            host = host.astype(dtype_name(xp_dtype), copy=False)
        else:
            self.dtype(host.dtype.name)  # a width this device lacks is an error, not a cast
        return self._from_host(host, copy)

    def _from_host(self, host: np.ndarray, copy: bool | None) -> Any:
        return self.xp.asarray(host, device=self.device, copy=copy)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy copy of ``x`` (the only road from the device to the host).

        Always a copy, never a view, also on the CPU: later updates to ``x`` (in-place fast
        paths included) do not show through.
        """
        return np.array(x, copy=True)

    def synchronize(self) -> None:
        """Wait until queued device work has finished (a no-op on synchronous libraries)."""

    def materialize(self, tree: Any) -> Any:
        """``tree`` (arrays in nested dicts, lists and tuples) with its pending work done.

        The lazy-library hook: a lazy backend computes the arrays' task graphs once (dask:
        ``persist``) and returns arrays that hold their values, with the same structure,
        so graphs and memory stay bounded over a long run. The core calls it only when
        :attr:`materialize_every` is set. The generic backend is eager: ``tree`` as is.
        """
        return tree

    def due(self, count: int) -> bool:
        """Whether ``count`` steps call for :meth:`materialize` (a multiple of
        :attr:`materialize_every`)."""
        every = self.materialize_every
        return every is not None and count % every == 0

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which this backend's device is the library's current device."""
        return contextlib.nullcontext()

    def rng(self, seed: int | None) -> np.random.Generator:
        """The host random generator every backend draws from, so draws are bit-identical."""
        return np.random.default_rng(seed)

    # -- fast paths -------------------------------------------------------------------
    def op(self, name: str, generic: Callable[..., Any]) -> Callable[..., Any]:
        """The fast path registered under ``name``, or the generic array-API ``generic``."""
        return self.fast.get(name, generic)


def dtype_name(spec: Any) -> str:
    """The standard name of a dtype given as a name or as any library's dtype object."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, type) and issubclass(spec, np.generic):
        return np.dtype(spec).name
    name = getattr(spec, "name", None)
    if isinstance(name, str):
        return name
    return str(spec).rsplit(".", 1)[-1]


def device_string(device: Any) -> str:
    """A device as the string a user would type (``"cpu"``, ``"cuda:0"``, ``"device1"``)."""
    if isinstance(device, str):
        return device
    name = getattr(device, "_device", None)  # array_api_strict.Device keeps its name here
    if isinstance(name, str):
        return name
    cuda_id = getattr(device, "id", None)  # cupy.cuda.Device
    if isinstance(cuda_id, int) and type(device).__module__.startswith("cupy"):
        return f"cuda:{cuda_id}"
    return str(device)


def unknown_device(backend: str, spec: Any, devices: Sequence[str]) -> DeviceNotFoundError:
    """The error for a device specifier that matches none of ``devices``."""
    listed = ", ".join(repr(d) for d in devices) or "none"
    return DeviceNotFoundError(
        f"{backend} has no device {spec!r}; devices here: {listed}."
    )


def backend_factory(
    *, library: str | None = None, install_hint: str | None = None
) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Mark a ``create(device=None) -> Backend`` function with registry metadata.

    ``library`` is the import name of the array library (the registry checks that it is
    installed without importing it); ``install_hint`` is the command that installs it.
    """

    def mark(create: Callable[..., Backend]) -> Callable[..., Backend]:
        create.library = library  # type: ignore[attr-defined]
        create.install_hint = install_hint  # type: ignore[attr-defined]
        return create

    return mark
