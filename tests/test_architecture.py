"""The import direction of DESIGN.md ("Which way imports run"), checked on the source.

Imports run from the product surface down to the math, never back up: the optimizer knows
name-keyed dicts, not the model; the model does not know the training loop; and no circle
of imports exists, not even one hidden behind an import inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import portgd

ROOT = Path(portgd.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["portgd", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _targets(node: ast.AST, importer: str) -> list[str]:
    """The portgd modules an Import/ImportFrom node loads (packages resolved to modules)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            package = importer if MODULES[importer].name == "__init__.py" else importer.rsplit(
                ".", 1)[0]
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        names = [module] + [f"{module}.{alias.name}" for alias in node.names]
    found = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name.startswith("portgd") and name != importer:
            found.append(name)
    return sorted(set(found))


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(imports run at import time, imports inside functions); TYPE_CHECKING blocks skipped."""
    tree = ast.parse(MODULES[module].read_text())
    top: set[str] = set()
    inner: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            (inner if in_function else top).update(_targets(node, module))
        nested = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, nested)

    visit(tree, False)
    return top, inner


GRAPH = {module: _imports(module) for module in MODULES}


def _edges(module: str, with_inner: bool) -> set[str]:
    top, inner = GRAPH[module]
    edges = top | inner if with_inner else set(top)
    # importing portgd.x.y from outside portgd.x runs the package portgd.x first
    packages = {e.rsplit(".", 1)[0] for e in edges if e.count(".") > 1}
    return edges | {p for p in packages if not module.startswith(p + ".") and module != p}


def test_the_checker_reads_imports():
    top = GRAPH["portgd.training"][0]
    assert {"portgd.model", "portgd.optim", "portgd.step"} <= top
    assert "portgd.checkpoint" in GRAPH["portgd.callbacks"][1]  # the lazy save import
    assert "portgd.optim.rules" in GRAPH["portgd.optim.optimizers"][0]


def test_no_import_circle_even_through_imports_inside_functions():
    # The package root re-exports everything; a module importing it for a name
    # (``from . import __version__``) is a leaf use, not a layer, so it is left out.
    circles = {m for m in MODULES if m != "portgd" and m in _reachable(m)}
    assert sorted(circles) == []


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in _edges(todo.pop(), True) - {"portgd"}:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_optimizer_does_not_know_the_model_or_the_training_loop():
    above = {"portgd.model", "portgd.training", "portgd.step", "portgd.checkpoint",
             "portgd.callbacks", "portgd.distributed", "portgd.layers", "portgd.cli"}
    for module in MODULES:
        if module.startswith("portgd.optim"):
            assert _reachable(module) & above == set(), module


def test_the_model_does_not_know_what_trains_it():
    above = {"portgd.training", "portgd.step", "portgd.optim", "portgd.checkpoint",
             "portgd.callbacks", "portgd.distributed", "portgd.cli"}
    assert _reachable("portgd.model") & above == set()
