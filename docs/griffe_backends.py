"""Griffe extension for the API reference (loaded by mkdocs.yml).

Two things the docstrings and the package layout need:

- ``portgd.backends`` is installed from the folder ``backends/`` at the repository root (the
  setuptools ``package-dir`` mapping in pyproject.toml). Griffe's static analysis only looks
  for submodules inside ``portgd/``, so this extension visits ``backends/*.py`` and attaches
  the result to ``portgd`` as its ``backends`` member.
- Docstrings use Sphinx roles (``:func:`load```) and reST literal-block markers (``text::``).
  Markdown would show them verbatim, so roles become inline code and ``::`` becomes ``:``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

BACKENDS = Path(__file__).resolve().parent.parent / "backends"
ROLE = re.compile(r":(?:func|class|meth|data|mod|attr|exc|obj):`~?([^`]+)`")
LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)


class MountBackends(griffe.Extension):
    """Mount ``backends/`` as ``portgd.backends``; turn reST markup into Markdown."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "portgd" or "backends" in pkg.members:
            return
        package = self._visit("backends", BACKENDS / "__init__.py", pkg, loader)
        for path in sorted(BACKENDS.glob("*.py")):
            if path.name != "__init__.py":
                self._visit(path.stem, path, package, loader)

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = ROLE.sub(r"`\1`", obj.docstring.value)
            obj.docstring.value = LITERAL_MARKER.sub(":", text)

    @staticmethod
    def _visit(
        name: str, path: Path, parent: griffe.Module, loader: griffe.GriffeLoader
    ) -> griffe.Module:
        module = griffe.visit(
            name,
            filepath=path,
            code=path.read_text(encoding="utf-8"),
            parent=parent,
            docstring_parser=loader.docstring_parser,
            docstring_options=loader.docstring_options,
            extensions=loader.extensions,
            lines_collection=loader.lines_collection,
            modules_collection=loader.modules_collection,
        )
        parent.set_member(name, module)
        return module
