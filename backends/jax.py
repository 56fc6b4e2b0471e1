"""JAX on its CPU (or GPU) devices; ``jax.numpy`` implements the array API itself.

JAX arrays are immutable and 32-bit unless JAX's x64 mode is on: then, and only then, this
backend offers float64 and int64. The mode is JAX's process-wide switch and is read each
time a dtype is looked up, so switching it on after importing portgd works.

JAX dispatches asynchronously and has no device-wide wait, so ``synchronize`` stays the
generic no-op; ``to_numpy`` waits for the array it reads.
"""

from __future__ import annotations

from typing import Any

from portgd.errors import BackendUnavailableError

from ._base import Backend, backend_factory, device_string, unknown_device

INSTALL_HINT = "pip install 'portgd[jax]'"
X64_HINT = (
    "JAX's x64 mode is off, so it has no 64-bit types. Switch it on before creating "
    "arrays, with jax.config.update('jax_enable_x64', True) or the environment variable "
    "JAX_ENABLE_X64=1"
)
_WIDE = ("float64", "int64", "uint64", "complex128")


class JaxBackend(Backend):
    def __init__(self, jax: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jax = jax
        self._x64: bool | None = None

    def _namespace_dtypes(self) -> dict[str, Any]:
        x64 = bool(self._jax.config.jax_enable_x64)
        if x64 is not self._x64:  # the switch moved: look the dtypes up again
            self._dtype_table, self._x64 = None, x64
        return super()._namespace_dtypes()

    def _missing_dtype(self, name: str, supported: dict[str, Any]) -> str:
        message = super()._missing_dtype(name, supported)
        if name in _WIDE and not self._x64:
            message = f"{message.rstrip('.')}, or: {X64_HINT}."
        return message


def _platform_devices(jax: Any, platform: str) -> list[Any]:
    try:
        return list(jax.devices(platform))
    except RuntimeError:  # no such platform on this machine
        return []


def _choose(jax: Any, device: Any, devices: list[Any]) -> Any:
    if device is None:
        return devices[0]
    if isinstance(device, int) and not isinstance(device, bool):
        return devices[device] if 0 <= device < len(devices) else None
    if not isinstance(device, str):
        return device if device in devices else None
    platform, _, index = device.partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)
    on_platform = [d for d in devices if d.platform == platform
                   or (platform == "gpu" and d.platform in ("cuda", "rocm"))]
    if not index:
        return on_platform[0] if on_platform else None
    matches = [d for d in on_platform if str(d.id) == index]
    return matches[0] if matches else None


@backend_factory(library="jax", install_hint=INSTALL_HINT)
def create(device: Any = None) -> Backend:
    """The jax backend on ``"cpu"`` (or ``"cpu:N"``), ``"gpu"``/``"cuda:N"``, an int N or a
    ``jax.Device``; the default is JAX's default device."""
    try:
        import jax
        import jax.numpy as xp
    except ImportError as exc:
        raise BackendUnavailableError(
            f"jax is not installed ({exc}); install it with {INSTALL_HINT}"
        ) from exc
    devices = list(jax.devices())
    if devices[0].platform != "cpu":
        devices += _platform_devices(jax, "cpu")
    chosen = _choose(jax, device, devices)
    if chosen is None:
        raise unknown_device("jax", device, [device_string(d) for d in devices])
    return JaxBackend(
        jax,
        "jax",
        xp,
        chosen,
        library="jax",
        version=jax.__version__,
        array_types=(jax.Array,),
        devices=devices,
    )
