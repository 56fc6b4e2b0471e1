"""The seed linear system (10,000 gradient steps) on the dask backend of docs/backends.md.

Run: ``python benchmarks/lazy_seed.py [ITERS]``. Prints, for the generic path (five dask
operations a step) and with the ``"linear_steps"`` fast path below (a block of plain steps as
one dask task), the wall time, the first and last loss, and the task count of the result's
graph (bounded by the lazy hook). Timing lives here, never in a test's assertion;
tests/test_lazy_backend.py checks the fast path's numbers.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import portgd

DOC = Path(__file__).resolve().parent.parent / "docs" / "backends.md"
BLOCK = re.compile(r"<!-- docs-test: dask-backend -->\n```python\n(.*?)^```$", re.S | re.M)


def dask_linear_steps(A, At, Y, x, step, count):
    """The "linear_steps" fast path for dask: ``count`` plain steps as one task on the
    chunks' NumPy arrays (the same operations, so the same numbers)."""
    import dask
    import dask.array as da

    if count == 0:
        return x

    def run(a, y, x0):
        x, at = x0, a.T
        for _ in range(count):
            x = x - step * (at @ (a @ x - y))
        return x

    return da.from_delayed(dask.delayed(run)(A, Y, x), shape=x.shape, dtype=x.dtype)


def register() -> None:
    """Run the documented backend block (registers "dask")."""
    (source,) = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    exec(compile(source, str(DOC), "exec"), {"__name__": "dask_backend"})


def main(iters: int = 10_000) -> None:
    register()
    backend = portgd.get_backend("dask")
    A, Y = [[5, 1, -1], [2, -1, 1], [1, 3, -2]], [1, 4, 0]
    for label, fast in (("generic", None), ("fast path", dask_linear_steps)):
        backend.fast.pop("linear_steps", None)
        if fast is not None:
            backend.fast["linear_steps"] = fast
        start = time.perf_counter()
        result = portgd.solve_linear(A, Y, iters=iters, log_every=max(iters // 10, 1),
                                     backend="dask")
        seconds = time.perf_counter() - start
        print(f"dask solve_linear {iters} steps, {label}: {seconds:.2f} s, first loss "
              f"{result.losses[0]!r}, final {result.losses[-1]:.3g}, "
              f"graph {len(result.x.__dask_graph__())} tasks")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
