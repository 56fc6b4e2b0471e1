"""``portgd check``: how far each backend's numbers are from the NumPy float64 reference.

Two cases run on every backend named (default: every usable one, on its default device):
the seed linear system (``solve_linear`` on the worked 3x3 example, 2,000 steps) and a small
MLP (10-16-12-3, tanh, softmax, Adam with AMSGrad, 50 steps). Each runs in float64 and in
float32 where the backend has them and is compared with the NumPy float64 run. The
divergence of a result ``r`` from the reference ``ref`` is ``max|r - ref| / max|ref|`` over
every parameter tensor and the recorded losses; it must stay within :data:`TOLERANCE`, the
table of docs/numerics.md. This is what to run on a new GPU machine or after writing a
backend; the exit status says whether every backend is within tolerance.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._registry import available_backends, get_backend
from .errors import PortgdError

TOLERANCE = {"float64": 1e-13, "float32": 1e-5}
"""The largest divergence from the NumPy float64 reference each dtype may show (measured
values and margins: docs/numerics.md); the conformance suite holds fast paths to it too."""

A = [[5, 1, -1], [2, -1, 1], [1, 3, -2]]
Y = [1, 4, 0]
_data = np.random.default_rng(0)
X = _data.normal(size=(200, 10))
LABELS = np.argmax(X @ _data.normal(size=(10, 3)), axis=1)


@dataclass(frozen=True)
class Divergence:
    """One case on one backend in one dtype, against the NumPy float64 reference."""

    backend: str
    case: str
    dtype: str
    divergence: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.divergence <= self.tolerance


def _relative(got: Any, ref: Any) -> float:
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    scale = float(np.max(np.abs(ref)))
    return float(np.max(np.abs(got - ref))) / (scale if scale > 0 else 1.0)


def seed_system(backend: Any, dtype: str) -> tuple[list[Any], list[float]]:
    """The arrays and losses of the seed linear system (2,000 steps, log every 500)."""
    from .linear import solve_linear

    result = solve_linear(A, Y, iters=2000, log_every=500, backend=backend, dtype=dtype)
    return [get_backend(backend).to_numpy(result.x)], result.losses


def small_mlp(backend: Any, dtype: str) -> tuple[list[Any], list[float]]:
    """The parameters and epoch losses of the small MLP (10 epochs of 5 batches)."""
    from .losses import CategoricalCrossEntropy
    from .model import mlp
    from .optim import Adam

    model = mlp(10, [16, 12], 3, activation="tanh", output="softmax", seed=1, dtype=dtype,
                backend=backend)
    history = model.fit(X, LABELS, loss=CategoricalCrossEntropy(from_logits=False),
                        optimizer=Adam(lr=0.005, amsgrad=True), epochs=10, batch_size=40,
                        verbose=0, seed=2)
    state = model.state_dict()
    return [state[name] for name in sorted(state)], list(history["loss"])


CASES = {"seed linear system": seed_system, "mlp 10-16-12-3 adam": small_mlp}


@functools.cache
def _reference(case: str) -> tuple[list[Any], list[float]]:
    return CASES[case](get_backend("numpy"), "float64")


def divergence(backend: Any, case: str, dtype: str) -> float:
    """The divergence of ``case`` on ``backend`` in ``dtype`` from the NumPy float64 run."""
    arrays, losses = CASES[case](backend, dtype)
    ref_arrays, ref_losses = _reference(case)
    parts = [_relative(a, r) for a, r in zip(arrays, ref_arrays, strict=True)]
    return max([*parts, _relative(losses, ref_losses)])


def check(backend: Any) -> list[Divergence]:
    """Every case in every float dtype the backend has (float64, float32)."""
    label = f"{backend.name}:{backend.device_name}"
    with backend.activate():
        return [
            Divergence(label, case, dtype, divergence(backend, case, dtype), TOLERANCE[dtype])
            for dtype in ("float64", "float32") if backend.supports(dtype)
            for case in CASES
        ]


def resolve(specs: Sequence[str]) -> list[Any]:
    """Backends from ``NAME[:DEVICE]`` strings; none given: every usable backend."""
    if not specs:
        return [get_backend(info.name) for info in available_backends() if info.usable]
    backends = []
    for spec in specs:
        name, _, device = spec.partition(":")
        backends.append(get_backend(name, device or None))
    return backends


def report(rows: Sequence[Divergence]) -> list[str]:
    """The table ``portgd check`` prints, one line per row."""
    table = [("backend", "case", "dtype", "divergence", "tolerance", "")]
    table += [(r.backend, r.case, r.dtype, f"{r.divergence:.2e}", f"{r.tolerance:.0e}",
               "ok" if r.ok else "EXCEEDED") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in table]


def _command(args: argparse.Namespace) -> int:
    rows = [row for backend in resolve(args.backends) for row in check(backend)]
    for line in report(rows):
        print(line)
    bad = [r for r in rows if not r.ok]
    if bad:
        raise PortgdError(
            f"{len(bad)} of {len(rows)} results exceed the tolerance, first {bad[0].backend} "
            f"{bad[0].case} {bad[0].dtype} ({bad[0].divergence:.2e} > {bad[0].tolerance:.0e}); "
            f"docs/numerics.md lists the measured divergences"
        )
    return 0


def add_parser(commands: Any, formatter: Any) -> None:
    """The ``check`` subcommand (cli.py calls this while building its parser)."""
    parser = commands.add_parser(
        "check", formatter_class=formatter,
        help="compare backends with the NumPy float64 reference against the tolerances")
    parser.add_argument("backends", nargs="*", metavar="BACKEND[:DEVICE]",
                        help="backends to check (default: every usable backend)")
    parser.set_defaults(run=_command)
