"""DESIGN.md's one rule: only backends/ (and host-I/O modules) import a concrete array library."""

from __future__ import annotations

import ast
from pathlib import Path

import portgd

CONCRETE = {"numpy", "cupy", "torch", "jax", "jaxlib", "array_api_strict", "array_api_compat"}
# Host-side I/O reads and writes NumPy, the host format (DESIGN.md, "The one rule").
# modules and packages
HOST_IO = {"checkpoint.py", "_npz.py", "datasets", "cli.py", "bench.py", "distributed.py",
           "_predictions.py"}
HOST_IO.add("sklearn.py")  # scikit-learn estimators: NumPy is the host format there
CORE = Path(portgd.__file__).parent


def forbidden_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in CONCRETE]
    return found


def test_core_imports_no_array_library():
    offenders = {
        str(path.relative_to(CORE)): forbidden_imports(path.read_text())
        for path in sorted(CORE.rglob("*.py"))
        if path.relative_to(CORE).parts[0] not in HOST_IO
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_checker_sees_imports():
    assert forbidden_imports("import numpy as np") == ["numpy"]
    assert forbidden_imports("from torch.nn import Linear") == ["torch.nn"]
    assert forbidden_imports("import cupy.cuda, os") == ["cupy.cuda"]
    assert forbidden_imports("from .backends import numpy") == []
    assert forbidden_imports("import numpyro") == []


def test_backends_package_is_installed_under_portgd():
    import portgd.backends

    assert Path(portgd.backends.__file__).parent.name == "backends"
    assert portgd.backends.__name__ == "portgd.backends"
