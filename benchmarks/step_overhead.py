"""What portgd's step machinery costs: ``fit`` against the same layer calls in a plain loop.

Three contenders train copies of one model on the same batches (SGD cases of compare.py):

- ``direct``: a plain loop over the model's own layers, its fused loss and the backend's
  in-place SGD rule, with no ``Sequential`` wrappers, no ``TrainingStep`` and no optimizer
  bookkeeping: the floor for portgd's layers;
- ``step``: what ``fit`` runs per batch (``model.forward``, a ``TrainingStep``,
  ``model.loss_and_backward``, ``step.finish()``), with the loss summed on the device;
- ``fit``: ``Sequential.fit``, one epoch per call.

They run in interleaved rounds (``compare.interleaved``); the table gives each one's median
time per step and the median of its per-round ratios to ``direct``, at the machine's default
thread count and at one thread.

    python benchmarks/step_overhead.py --markdown
    python benchmarks/step_overhead.py --case 8-16-16-4 --threads 1 --repeats 31
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # the sibling script: cases, rounds, thread limits

import portgd
from portgd import bench
from portgd.step import TrainingStep

CONTENDERS = ("direct", "step", "fit")


def contender(kind: str, case: compare.Case, x: np.ndarray, y: np.ndarray) -> Any:
    """One epoch per call of ``kind`` on a fresh copy of ``case``'s model; returns seconds."""
    if kind == "fit":
        return compare.portgd_epoch(case, "numpy", x, y)
    model = bench.build(case, "numpy")
    optimizer = portgd.optim.SGD(lr=case.lr)
    loss = case.loss()  # from_logits=False: the fused pair with the last activation
    data = model.input(x)
    targets = np.eye(case.classes, dtype=np.float32)[y]
    rng = np.random.default_rng(0)
    layers, last = model.layers, model.layers[-1]
    rule = model.backend.fast["sgd:inplace"]
    hp = {"lr": case.lr, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
          "nesterov": False}

    def direct_step(xb: Any, yb: Any) -> Any:
        h = xb
        for layer in layers:
            h = layer.forward(h)
        value, d = loss.fused_with_layer(last, yb, np)
        for i in range(len(layers) - 2, -1, -1):
            layer = layers[i]
            d = layer.backward(d) if i else layer.backward(d, need_input_grad=False)
            if layer.grads:
                for key, g in layer.grads.items():
                    rule(layer.params[key], g, {}, hp, 1, xp=np, may_overwrite_grad=True)
                layer.grads = {}
        return value

    def fit_step(xb: Any, yb: Any) -> Any:
        yhat = model.forward(xb, training=True)
        step = TrainingStep(model, optimizer)
        value = model.loss_and_backward(yhat, yb, loss, after_layer=step)
        step.finish()
        return value

    one_step = direct_step if kind == "direct" else fit_step

    def run() -> float:
        start = time.perf_counter()
        order = rng.permutation(len(data))
        xe, ye = data[order], targets[order]
        total = np.zeros((), dtype=np.float32)
        for first in range(0, len(data), case.batch_size):
            batch = slice(first, first + case.batch_size)
            total = total + one_step(xe[batch], ye[batch])
        float(total)
        return time.perf_counter() - start

    return run


def measure(case: compare.Case, steps: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Per contender: seconds per step and the ratio to ``direct`` (``compare.side_by_side``)."""
    x, y = bench.synthetic(case, case.batch_size * steps)
    runs = {kind: contender(kind, case, x, y) for kind in CONTENDERS}
    return compare.side_by_side(runs, steps, repeats, reference="direct")


def main(argv: list[str] | None = None) -> None:
    def rows(case: compare.Case, steps: int, repeats: int) -> list[list[str]]:
        return [[kind, f"{per_step * 1e6:.1f}", f"{ratio:.3f}x"]
                for kind, (per_step, ratio) in measure(case, steps, repeats).items()]

    def accept(case: compare.Case) -> str | None:
        if case.optimizer == "sgd" and case.output == "softmax":
            return None
        return ("the direct loop calls the SGD rule and the fused Softmax loss: pick SGD "
                "cases with a softmax output")

    compare.table_command(argv, __doc__.split("\n\n")[0],
                          ["256-10 relu/ce b32", "256-10 relu/ce b128", "8-16-16-4"], 21,
                          ["contender", "us/step", "vs direct"], rows, accept)


if __name__ == "__main__":
    main()
