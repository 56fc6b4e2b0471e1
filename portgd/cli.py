"""The ``portgd`` command line.

User errors (a bad option, a missing file, an unusable backend) print one line on stderr
and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from ._registry import available_backends
from .errors import PortgdError

USER_ERROR = 2


def _cmd_backends(args: argparse.Namespace) -> int:
    rows = [("backend", "usable", "devices", "version", "float64", "reason")]
    for info in available_backends():
        rows.append((
            info.name,
            "yes" if info.usable else "no",
            ",".join(info.devices) or "-",
            info.version or "-",
            {True: "yes", False: "no", None: "-"}[info.float64],
            info.reason or "",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portgd",
        description="Gradient descent and MLPs on NumPy, CuPy, PyTorch or any array-API backend.",
    )
    parser.add_argument("--version", action="version", version=f"portgd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    backends = commands.add_parser("backends", help="list registered backends and their status")
    backends.set_defaults(run=_cmd_backends)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except PortgdError as exc:
        print(f"portgd: error: {exc}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("portgd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
