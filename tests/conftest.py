"""The test harness: a ``backend`` fixture that runs a test on every backend of the registry.

CPU cases always run: numpy, array_api_strict on its default device, on ``device1`` (which
refuses to mix with the default device, so it stands in for a GPU) and on ``no_x64`` (no
int64 or float64), torch on the CPU, and jax with its default settings (x64 mode off, so
32-bit types only, and immutable arrays).
GPU cases (cupy, torch cuda) carry the ``gpu`` mark and are skipped with the probe's reason
when no CUDA device is usable.
"""

from __future__ import annotations

import os

# scikit-learn's array-API dispatch (tests/test_sklearn*.py) needs SciPy's array-API mode,
# which SciPy reads once, at import; without it scikit-learn skips its array-API checks.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest

import portgd
from portgd import _registry

# (id, backend name, device, needs a GPU)
BACKEND_CASES = [
    ("numpy", "numpy", None, False),
    ("strict", "array_api_strict", None, False),
    ("strict-device1", "array_api_strict", "device1", False),
    ("strict-no_x64", "array_api_strict", "no_x64", False),
    ("torch-cpu", "torch", "cpu", False),
    ("jax", "jax", None, False),
    ("cupy", "cupy", "cuda:0", True),
    ("torch-cuda", "torch", "cuda:0", True),
]


def _param(case_id: str, name: str, device: str | None, gpu: bool):
    marks = [pytest.mark.gpu] if gpu else []
    return pytest.param((name, device, gpu), id=case_id, marks=marks)


BACKEND_PARAMS = [_param(*case) for case in BACKEND_CASES]


#: Set by benchmarks/gpu_check.sh: a GPU case that cannot run fails instead of skipping.
REQUIRE_GPU = os.environ.get("PORTGD_REQUIRE_GPU") == "1"


def load_or_skip(name: str, device: str | None, gpu: bool = False) -> portgd.backends.Backend:
    """The backend, or a skip carrying the reason it cannot be used here."""
    try:
        return portgd.get_backend(name, device)
    except portgd.BackendError as exc:
        message = f"{name} on {device or 'default device'} not usable here: {exc}"
        if gpu and REQUIRE_GPU:
            pytest.fail(f"PORTGD_REQUIRE_GPU=1 but {message}")
        pytest.skip(message)


def pytest_report_header(config):
    """One line per GPU case: whether it runs here, and the probe's reason when not."""
    lines = []
    for case_id, name, device, gpu in BACKEND_CASES:
        if not gpu:
            continue
        try:
            portgd.get_backend(name, device)
            lines.append(f"portgd {case_id}: usable, the gpu-marked cases run")
        except portgd.BackendError as exc:
            lines.append(f"portgd {case_id}: skipped ({exc})")
    return lines


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Every backend of the registry in turn (GPU cases only where a GPU is usable)."""
    return load_or_skip(*request.param)


@pytest.fixture
def numpy_backend():
    return portgd.get_backend("numpy")


@pytest.fixture(autouse=True)
def _isolated_selection(monkeypatch):
    """No test sees another test's set_backend() or PORTGD_* environment variables."""
    monkeypatch.delenv("PORTGD_BACKEND", raising=False)
    monkeypatch.delenv("PORTGD_DEVICE", raising=False)
    yield
    _registry._global_choice = None
