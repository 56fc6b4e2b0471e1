"""Shared test helpers: finite differences and host conversion."""

from __future__ import annotations

import ast

import numpy as np

EPS = 1e-6


def numeric_grad(f, x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central differences of the scalar function ``f`` at the host float64 array ``x``."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + eps
        up = f(x)
        x[index] = saved - eps
        down = f(x)
        x[index] = saved
        grad[index] = (up - down) / (2 * eps)
    return grad


def float64_or_skip(backend):
    import pytest

    if not backend.supports("float64"):
        pytest.skip(f"{backend} has no float64")


def widest_float(backend) -> str:
    """``"float64"`` where the backend and device have it, else ``"float32"``."""
    return "float64" if backend.supports("float64") else "float32"


def modules_loaded_by(statement: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are in ``sys.modules`` after ``statement`` runs in a new interpreter."""
    import subprocess
    import sys

    code = f"import sys; {statement}; print(sorted(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout)


def benchmark_script(name: str):
    """``benchmarks/<name>.py`` imported as a module (a generator for a pytest fixture):
    afterwards the module, the ``compare`` module it may import, and the folder it puts on
    ``sys.path`` are gone again."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]
        if name != "compare":
            sys.modules.pop("compare", None)
        if str(path.parent) in sys.path:
            sys.path.remove(str(path.parent))
