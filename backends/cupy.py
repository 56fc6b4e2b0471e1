"""CuPy on a CUDA GPU, through array-api-compat's cupy namespace.

CuPy imports on machines without a GPU and fails only at the first allocation, so before
anything touches the GPU in this process a child process tries one allocation. The child
has a time limit, so a broken driver cannot hang the caller; its verdict is cached.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import subprocess
import sys
from typing import Any

import numpy as np

from portgd.errors import BackendUnavailableError

from ._base import Backend, backend_factory, unknown_device

INSTALL_HINT = "pip install 'portgd[cuda12]' (CUDA 12) or 'portgd[cuda13]' (CUDA 13)"
PROBE_TIMEOUT_S = 60.0

_PROBE = """
import json, cupy
n = cupy.cuda.runtime.getDeviceCount()
float(cupy.arange(3, dtype=cupy.float32).sum())
print(json.dumps({"count": n, "version": cupy.__version__}))
"""


@functools.cache
def _verdict() -> tuple[int, str] | BackendUnavailableError:
    try:
        return _run_probe()
    except BackendUnavailableError as exc:
        return exc


def probe() -> tuple[int, str]:
    """(number of usable CUDA devices, cupy version), or BackendUnavailableError why not.

    Runs once per process; the verdict, a failure included, is kept
    (``probe.cache_clear()`` forgets it).
    """
    verdict = _verdict()
    if isinstance(verdict, BackendUnavailableError):
        raise verdict
    return verdict


probe.cache_clear = _verdict.cache_clear  # type: ignore[attr-defined]


def _run_probe() -> tuple[int, str]:
    if importlib.util.find_spec("cupy") is None:
        raise BackendUnavailableError(f"cupy is not installed; install it with {INSTALL_HINT}")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise BackendUnavailableError(
            f"cupy is installed but its first GPU allocation did not finish within "
            f"{PROBE_TIMEOUT_S:.0f} s; check the NVIDIA driver with nvidia-smi"
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        reason = "no CUDA device is visible" if "NoDevice" in last or "no CUDA" in last else (
            "it cannot use the GPU")
        raise BackendUnavailableError(
            f"cupy is installed but {reason} ({last.strip()}). On a machine with an NVIDIA "
            f"GPU check nvidia-smi and that the cupy-cudaXXx package matches the CUDA version."
        )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return found["count"], found["version"]


class CupyBackend(Backend):
    """Device names come from ``device_string``, which reads ``cupy.cuda.Device.id``."""

    def __init__(self, cupy: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cupy = cupy

    def to_numpy(self, x: Any) -> np.ndarray:
        with self.device:
            return self._cupy.asnumpy(x)

    def _from_host(self, host: np.ndarray, copy: bool | None) -> Any:
        with self.device:
            return super()._from_host(host, copy)

    def synchronize(self) -> None:
        self.device.synchronize()

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        return self.device


def _device_index(device: Any) -> int | None:
    if device is None or device in ("cuda", "gpu"):
        return 0
    if isinstance(device, int) and not isinstance(device, bool):
        return device
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    index = getattr(device, "id", None)
    return index if isinstance(index, int) else None


@backend_factory(library="cupy", install_hint=INSTALL_HINT)
def create(device: Any = None) -> Backend:
    """The cupy backend on ``"cuda:N"``, ``"cuda"``/``"gpu"`` (device 0) or an int N."""
    count, version = probe()
    index = _device_index(device)
    names = [f"cuda:{i}" for i in range(count)]
    if index is None or not 0 <= index < count:
        raise unknown_device("cupy", device, names)
    import array_api_compat.cupy as xp
    import cupy

    devices = [cupy.cuda.Device(i) for i in range(count)]
    return CupyBackend(
        cupy,
        "cupy",
        xp,
        devices[index],
        library="cupy",
        version=version,
        array_types=(cupy.ndarray,),
        devices=devices,
    )
