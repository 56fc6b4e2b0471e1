"""The backend registry and backend selection.

The registry maps names to lazy factories ``create(device=None) -> Backend``. Built-in and
third-party backends arrive the same way: through the ``portgd.backends`` entry-point group
or :func:`register_backend`. Nothing is imported until a backend is asked for.

Selection, strongest first: an explicit ``backend=`` argument; :func:`use_backend`
(a context variable, so threads and async tasks do not leak into each other);
:func:`set_backend`; the ``PORTGD_BACKEND`` / ``PORTGD_DEVICE`` environment variables;
``numpy`` on the CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from .errors import BackendError, BackendNotFoundError, BackendUnavailableError

if TYPE_CHECKING:
    from portgd.backends import Backend

ENTRY_POINT_GROUP = "portgd.backends"
DEFAULT_BACKEND = "numpy"

#: Short names accepted wherever a backend name is.
ALIASES = {"strict": "array_api_strict", "cpu": "numpy", "gpu": "cupy"}

Factory = Callable[..., "Backend"]


@dataclass(frozen=True)
class BackendInfo:
    """What :func:`available_backends` knows of one registered backend."""

    name: str
    installed: bool
    usable: bool
    reason: str | None = None
    devices: tuple[str, ...] = ()
    version: str | None = None
    float64: bool | None = None
    install_hint: str | None = None


@dataclass
class _Registry:
    factories: dict[str, Factory] = field(default_factory=dict)
    instances: dict[tuple[str, str], Backend] = field(default_factory=dict)
    entry_points_loaded: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)


_registry = _Registry()
_context_choice: contextvars.ContextVar[tuple[str, Any] | None] = contextvars.ContextVar(
    "portgd_backend", default=None
)
_global_choice: tuple[str, Any] | None = None


def register_backend(name: str, factory: Factory, *, replace: bool = False) -> None:
    """Register ``factory(device=None) -> Backend`` under ``name``.

    The factory is called lazily, once per device. It may carry the attributes ``library``
    (import name of the array library) and ``install_hint`` (how to install it); see
    :func:`portgd.backends.backend_factory`. Registering a taken name raises ValueError
    unless ``replace=True``.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"backend name must be a non-empty string, got {name!r}")
    with _registry.lock:
        _load_entry_points()
        if name in _registry.factories and not replace:
            raise ValueError(
                f"a backend named {name!r} is already registered; pass replace=True to replace it"
            )
        _registry.factories[name] = factory
        for key in [k for k in _registry.instances if k[0] == name]:
            del _registry.instances[key]
        _owner_cache.clear()
        _namespaces.clear()


def _load_entry_points() -> None:
    if _registry.entry_points_loaded:
        return
    _registry.entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _registry.factories:
            _registry.factories[ep.name] = _LazyEntryPoint(ep)


class _LazyEntryPoint:
    """A factory that imports its entry point's module only when first needed."""

    def __init__(self, ep: Any) -> None:
        self.ep = ep
        self._loaded: Factory | None = None

    def load(self) -> Factory:
        if self._loaded is None:
            self._loaded = self.ep.load()
        return self._loaded

    def __call__(self, device: Any = None) -> Backend:
        return self.load()(device)


def _metadata(factory: Factory, attr: str) -> Any:
    target = factory.load() if isinstance(factory, _LazyEntryPoint) else factory
    return getattr(target, attr, None)


def backend_names() -> list[str]:
    """The names of every registered backend, sorted."""
    with _registry.lock:
        _load_entry_points()
        return sorted(_registry.factories)


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases; BackendNotFoundError if none."""
    names = backend_names()
    if name in names:
        return name
    if ALIASES.get(name) in names:
        return ALIASES[name]
    aliases = ", ".join(f"{a} -> {t}" for a, t in ALIASES.items())
    raise BackendNotFoundError(
        f"no backend named {name!r}; registered backends: {', '.join(names)} "
        f"(aliases: {aliases}). Third-party backends register through the "
        f"{ENTRY_POINT_GROUP!r} entry-point group or portgd.register_backend()."
    )


def load_backend(name: str, device: Any = None) -> Backend:
    """The Backend ``name`` on ``device`` (created once, then cached)."""
    from portgd.backends._base import device_string

    name = canonical_name(name)
    key = (name, "" if device is None else device_string(device))
    with _registry.lock:
        cached = _registry.instances.get(key)
        if cached is not None:
            return cached
        factory = _registry.factories[name]
    try:
        backend = factory(device)
    except ImportError as exc:
        hint = _metadata(factory, "install_hint")
        raise BackendUnavailableError(
            f"backend {name!r} cannot be imported ({exc})"
            + (f"; install it with {hint}" if hint else "")
        ) from exc
    with _registry.lock:
        _registry.instances[key] = backend
        _registry.instances.setdefault((name, backend.device_name), backend)
    return backend


def _probe(name: str) -> BackendInfo:
    factory = _registry.factories[name]
    library = _metadata(factory, "library")
    hint = _metadata(factory, "install_hint")
    installed = library is None or importlib.util.find_spec(library) is not None
    if not installed:
        reason = f"{library} is not installed" + (f"; install it with {hint}" if hint else "")
        return BackendInfo(name, False, False, reason, install_hint=hint)
    try:
        backend = load_backend(name)
    except BackendUnavailableError as exc:
        return BackendInfo(name, True, False, str(exc), install_hint=hint)
    except Exception as exc:  # a third-party factory may fail any way; report, don't crash
        return BackendInfo(name, True, False, f"{type(exc).__name__}: {exc}", install_hint=hint)
    return BackendInfo(
        name,
        True,
        True,
        devices=tuple(backend.devices()),
        version=backend.version,
        float64=backend.supports("float64"),
        install_hint=hint,
    )


def available_backends() -> list[BackendInfo]:
    """One record per registered backend: installed, usable (and why not), devices, version.

    Probing creates each usable backend once on its default device; CuPy's probe runs in
    a child process with a time limit, so this cannot hang on a broken GPU driver.
    """
    return [_probe(name) for name in backend_names()]


def backend_of(x: Any) -> Backend:
    """The registered Backend whose library and device hold the array ``x``.

    Every registered backend whose library is imported is asked :meth:`Backend.owns`;
    if none claims ``x``, a backend whose namespace ``xp`` is the one array-api-compat
    detects for ``x`` is taken. Module and type names are never matched. Host data (NumPy
    arrays, Python numbers and lists) belongs to the ``numpy`` backend. When several
    backends own the same arrays (a plugin over NumPy, say), the one named after its
    library wins, then the active backend, then the first by name. The device comes from
    the owner's :meth:`Backend.device_of`.
    """
    from portgd.backends._base import is_host_array, is_host_data

    if is_host_data(x) and not is_host_array(x):
        return load_backend(DEFAULT_BACKEND)
    names = _owners(x)
    if len(names) == 1:
        name = names[0]
    else:
        active = _current_choice()[0]
        named = [n for n in names if load_backend(n).library == n]
        name = (named or [n for n in names if n == active] or list(names))[0]
    return load_backend(name, load_backend(name).device_of(x))


_owner_cache: dict[type, tuple[str, ...]] = {}


def _owners(x: Any) -> tuple[str, ...]:
    """The names of the backends that own arrays of ``type(x)`` (cached per type).

    BackendNotFoundError when none does; its message names every backend that could
    have been asked but cannot run here, with the reason.
    """
    kind = type(x)
    names = _owner_cache.get(kind)
    if names and all(n in _registry.factories for n in names):
        return names
    candidates: list[tuple[str, Backend]] = []
    failed: dict[str, str] = {}
    for name in backend_names():
        try:
            backend = _probe_instance(name)
        except BackendError as exc:  # cannot run here: keep why, for the error below
            failed[name] = str(exc)
            continue
        if backend is not None:
            candidates.append((name, backend))
    owners = tuple(n for n, b in candidates if b.owns(x))
    if not owners:  # array-api-compat's namespace detection
        owners = tuple(n for n, b in candidates if b.same_namespace(x))
    if not owners:
        raise BackendNotFoundError(_not_owned(x, failed))
    _owner_cache[kind] = owners
    return owners


def _probe_instance(name: str) -> Backend | None:
    """The backend ``name`` on its default device, if it could hold an array that exists.

    A factory that names its library is skipped (None) while that library is not imported:
    no array of it can exist yet. A backend that cannot run here raises its
    :class:`~portgd.errors.BackendError` (BackendUnavailableError, DeviceNotFoundError, ...);
    any other exception is a bug in the factory and propagates unchanged.
    """
    library = _metadata(_registry.factories[name], "library")
    if library is not None and library not in sys.modules:
        return None
    return load_backend(name)


def _not_owned(x: Any, failed: dict[str, str]) -> str:
    from portgd.backends._base import array_namespace_of

    kind = f"{type(x).__module__}.{type(x).__name__}"
    xp = array_namespace_of(x)
    what = (f"arrays of type {kind} (array-API namespace {xp.__name__})" if xp is not None
            else f"objects of type {kind}, which are not arrays of the array API standard")
    reasons = "".join(f" Backend {name!r} could not be created here: {reason}."
                      for name, reason in sorted((n, r.rstrip(".")) for n, r in failed.items()))
    register = ("If one of those is meant for these arrays, fix what stops it; otherwise "
                "register" if failed else "Register")
    return (
        f"no usable registered backend handles {what}; registered backends: "
        f"{', '.join(backend_names())}.{reasons} {register} one for its library with "
        f"portgd.register_backend() (docs/backends.md, 'Writing a backend')."
    )


_namespaces: dict[type, Any] = {}


def namespace_of(x: Any) -> Any:
    """The array-API namespace of the backend that holds ``x`` (cached per array type)."""
    xp = _namespaces.get(type(x))
    if xp is None:
        xp = _namespaces[type(x)] = backend_of(x).xp
    return xp


def device_of(x: Any) -> Any:
    """The device holding the array ``x``, as its backend reports it (never ``x.device``)."""
    return backend_of(x).device


def to_numpy(x: Any) -> Any:
    """A host NumPy array holding the values of ``x``, an array of any registered backend."""
    return backend_of(x).to_numpy(x)


def _env_choice() -> tuple[str, Any]:
    name = os.environ.get("PORTGD_BACKEND") or DEFAULT_BACKEND
    device = os.environ.get("PORTGD_DEVICE") or None
    return name, device


def _current_choice() -> tuple[str, Any]:
    return _context_choice.get() or _global_choice or _env_choice()


def get_backend(name: str | Backend | None = None, device: Any = None) -> Backend:
    """The Backend to use: ``name``/``device`` if given, else the active selection.

    With only ``device`` given, the active backend is used on that device.
    """
    from portgd.backends import Backend

    if isinstance(name, Backend):
        return name if device is None else load_backend(name.name, device)
    if name is None:
        chosen, chosen_device = _current_choice()
        return load_backend(chosen, chosen_device if device is None else device)
    return load_backend(name, device)


def set_backend(name: str, device: Any = None) -> Backend:
    """Make ``name`` on ``device`` the process-wide default; returns that Backend.

    The backend is loaded first, so a bad name or device raises here and changes nothing.
    """
    global _global_choice
    backend = load_backend(name, device)
    _global_choice = (backend.name, device)
    return backend


@contextlib.contextmanager
def use_backend(name: str, device: Any = None) -> Iterator[Backend]:
    """Use ``name`` on ``device`` inside a ``with`` block (this thread or task only)."""
    backend = load_backend(name, device)
    token = _context_choice.set((backend.name, device))
    try:
        yield backend
    finally:
        _context_choice.reset(token)


def _reset_for_tests() -> None:
    """Forget set_backend's choice and cached instances (test isolation)."""
    global _global_choice
    _global_choice = None
    with _registry.lock:
        _registry.instances.clear()
        _owner_cache.clear()
        _namespaces.clear()
