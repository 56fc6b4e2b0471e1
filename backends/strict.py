"""array-api-strict: the standard's minimal reference implementation.

It only allows what the standard allows, so it is how the test suite proves that the core
stays portable. Its named devices (``device1``, ``device2``, ``no_float64``) refuse to mix
with each other, which stands in for a GPU in CI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from portgd.errors import BackendUnavailableError

from ._base import Backend, backend_factory, device_string, unknown_device

INSTALL_HINT = "pip install 'portgd[test]' (or pip install array-api-strict)"


class StrictBackend(Backend):
    def to_numpy(self, x: Any) -> np.ndarray:
        host_device = self.xp.__array_namespace_info__().default_device()
        return np.array(x.to_device(host_device), copy=True)


@backend_factory(library="array_api_strict", install_hint=INSTALL_HINT)
def create(device: Any = None) -> Backend:
    """The array_api_strict backend; devices are the library's named devices (``cpu`` too)."""
    try:
        import array_api_strict as xp
    except ImportError as exc:
        raise BackendUnavailableError(
            f"array_api_strict is not installed ({exc}); install it with {INSTALL_HINT}"
        ) from exc
    info = xp.__array_namespace_info__()
    devices = list(info.devices())
    if device is None:
        chosen = info.default_device()
    else:
        wanted = "CPU_DEVICE" if device == "cpu" else device_string(device)
        matches = [d for d in devices if device_string(d) == wanted]
        if not matches:
            raise unknown_device("array_api_strict", device, [device_string(d) for d in devices])
        chosen = matches[0]
    return StrictBackend(
        "array_api_strict",
        xp,
        chosen,
        library="array_api_strict",
        version=xp.__version__,
        array_types=(type(xp.asarray(0)),),
        devices=devices,
    )
