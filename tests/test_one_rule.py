"""DESIGN.md's one rule: only backends/ (and host-I/O modules) import a concrete array library."""

from __future__ import annotations

import ast
from pathlib import Path

import portgd

CONCRETE = {"numpy", "cupy", "torch", "jax", "jaxlib", "array_api_strict", "array_api_compat"}
# Host-side I/O reads and writes NumPy, the host format (DESIGN.md, "The one rule").
# modules and packages
HOST_IO = {"checkpoint.py", "io", "datasets", "cli.py", "bench.py", "distributed.py"}
HOST_IO.add("sklearn.py")  # scikit-learn estimators: NumPy is the host format there
HOST_IO |= {"check.py", "testing.py"}  # compare backends' results on the host (issue 10)
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


# -- no assumed widths (issue 10) ----------------------------------------------------------
WIDE = {"int64", "float64"}


def _names_xp(node: ast.AST) -> bool:
    """Whether ``node`` is ``xp`` or an attribute chain ending in ``.xp``."""
    return (isinstance(node, ast.Name) and node.id == "xp") or (
        isinstance(node, ast.Attribute) and node.attr == "xp")


def _wide(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value in WIDE


def hard_coded_widths(source: str) -> list[str]:
    """``xp.int64``/``xp.float64``, ``dtype="int64"``/``dtype="float64"`` in calls, and
    those names assigned to a variable (``wide = "int64"``, later passed as ``dtype=wide``).

    Defaults a caller can change (``def f(dtype="float64")``) are not calls, so they pass;
    so does a width chosen by what the backend supports
    (``"int64" if backend.supports("int64") else "int32"``).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in WIDE and _names_xp(node.value):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and _wide(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found.append(f"line {node.lineno}: {', '.join(map(ast.unparse, targets))} = "
                         f"{node.value.value!r}")
        elif isinstance(node, ast.Call):
            found += [
                f"line {node.lineno}: dtype={kw.value.value!r}"
                for kw in node.keywords
                if kw.arg == "dtype" and isinstance(kw.value, ast.Constant)
                and kw.value.value in WIDE
            ]
    return found


def test_core_assumes_no_integer_or_float_width():
    offenders = {
        str(path.relative_to(CORE)): hard_coded_widths(path.read_text())
        for path in sorted(CORE.rglob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_width_checker_sees_hard_coded_widths():
    assert hard_coded_widths("y = xp.astype(y, xp.int64)") == ["line 1: xp.int64"]
    assert hard_coded_widths("z = self.xp.zeros(3, dtype=self.xp.float64)") == [
        "line 1: self.xp.float64"]
    assert hard_coded_widths("i = backend.asarray(order, dtype='int64')") == [
        "line 1: dtype='int64'"]
    assert hard_coded_widths("def solve(A, dtype='float64'):\n    pass") == []
    assert hard_coded_widths("h = np.zeros(3, dtype=np.int64)") == []
    assert hard_coded_widths("i = backend.asarray(order, dtype=backend.index_dtype)") == []


def test_the_width_checker_sees_widths_assigned_to_variables():
    assert hard_coded_widths("wide = 'int64'\ni = backend.asarray(order, dtype=wide)") == [
        "line 1: wide = 'int64'"]
    assert hard_coded_widths("self.kind: str = 'float64'") == ["line 1: self.kind = 'float64'"]
    assert hard_coded_widths("if (d := 'float64'):\n    pass") == ["line 1: d = 'float64'"]
    assert hard_coded_widths("a = b = 'int64'") == ["line 1: a, b = 'int64'"]
    assert hard_coded_widths(
        "wide = 'int64' if backend.supports('int64') else 'int32'") == []
    assert hard_coded_widths("name = 'float32'") == []
