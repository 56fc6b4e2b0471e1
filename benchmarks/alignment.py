"""What a parameter's address costs: one model trained with its weights at each offset from a
64-byte boundary, side by side.

portgd's NumPy backend stores every parameter on a 64-byte boundary (the ``"parameter"``
fast path in ``backends/numpy_fast.py``); malloc, which gives a hand-written loop its
arrays, aligns to 16 bytes, so a weight matrix starts 0, 16, 32 or 48 bytes past a boundary
by chance. This script builds one model per offset (the same initial weights, copied to that
offset), trains them in interleaved rounds (``compare.interleaved``: one epoch each per round,
shuffled order) and prints each offset's median time per step and the median of its
per-round ratios to offset 0, at the machine's default thread count and at one thread.

    python benchmarks/alignment.py --markdown
    python benchmarks/alignment.py --case b128 --threads default --repeats 25
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # the sibling script: cases, rounds, thread limits

from portgd import bench

OFFSETS = (0, 16, 32, 48)


def at_offset(x: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``x`` whose data starts ``offset`` bytes past a 64-byte boundary."""
    block = np.empty(x.nbytes + 128, dtype=np.uint8)
    start = -block.ctypes.data % 64 + offset
    placed = block[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    placed[...] = x
    return placed


def placed_model(case: compare.Case, offset: int) -> Any:
    """``case``'s model on NumPy with every parameter ``offset`` bytes past a boundary."""
    model = bench.build(case, "numpy")
    for layer in model.layers:
        layer.params = {name: at_offset(p, offset) for name, p in layer.params.items()}
    return model


def contender(case: compare.Case, x: np.ndarray, y: np.ndarray, offset: int) -> Any:
    """One epoch of ``fit`` per call on a model whose parameters sit at ``offset``."""
    model = placed_model(case, offset)
    optimizer = compare.portgd.optim.make_optimizer(case.optimizer, lr=case.lr)
    timer = bench.EpochTimer(model.backend)

    def run() -> float:
        model.fit(x, y, loss=case.loss(), optimizer=optimizer, epochs=1,
                  batch_size=case.batch_size, verbose=0, callbacks=[timer])
        return timer.seconds[-1]

    return run


def measure(case: compare.Case, steps: int, repeats: int) -> dict[int, tuple[float, float]]:
    """Per offset: seconds per step and the ratio to offset 0 (``compare.side_by_side``)."""
    x, y = bench.synthetic(case, case.batch_size * steps)
    runs = {offset: contender(case, x, y, offset) for offset in OFFSETS}
    return compare.side_by_side(runs, steps, repeats, reference=0)


def main(argv: list[str] | None = None) -> None:
    def rows(case: compare.Case, steps: int, repeats: int) -> list[list[str]]:
        return [[f"{offset} bytes", f"{per_step * 1e3:.3f}", f"{ratio:.3f}x"]
                for offset, (per_step, ratio) in measure(case, steps, repeats).items()]

    compare.table_command(argv, __doc__.split("\n\n")[0],
                          ["256-10 relu/ce b32", "256-10 relu/ce b128"], 15,
                          ["weights at", "ms/step", "vs offset 0"], rows)


if __name__ == "__main__":
    main()
