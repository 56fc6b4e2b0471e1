"""The seed linear system (10,000 gradient steps) on the dask backend of docs/backends.md.

Run: ``python benchmarks/lazy_seed.py [ITERS]``. Prints the wall time, the first and last
loss, and the task count of the result's graph (bounded by the lazy hook). Timing lives
here, never in a test's assertion.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import portgd

DOC = Path(__file__).resolve().parent.parent / "docs" / "backends.md"
BLOCK = re.compile(r"<!-- docs-test: dask-backend -->\n```python\n(.*?)^```$", re.S | re.M)


def main(iters: int = 10_000) -> None:
    (source,) = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    exec(compile(source, str(DOC), "exec"), {"__name__": "dask_backend"})
    A, Y = [[5, 1, -1], [2, -1, 1], [1, 3, -2]], [1, 4, 0]
    start = time.perf_counter()
    result = portgd.solve_linear(A, Y, iters=iters, log_every=max(iters // 10, 1),
                                 backend="dask")
    seconds = time.perf_counter() - start
    print(f"dask solve_linear {iters} steps: {seconds:.2f} s, first loss {result.losses[0]!r}, "
          f"final {result.losses[-1]:.3g}, graph {len(result.x.__dask_graph__())} tasks")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
