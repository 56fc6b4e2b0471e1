"""Training-throughput benchmarks (``portgd bench``).

Each case trains an MLP with ``Sequential.fit`` — the path users run — on synthetic data
generated in memory, after one warm-up epoch. An epoch is ``steps`` optimizer steps; its
wall time includes the device-side shuffle and the one host read of the loss at the end of
the epoch, and the device is synchronised before the clock stops. The figure reported is the
median over ``repeats`` epochs.

This is a host-side module: it uses NumPy for the synthetic data and the statistics.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import losses, optim
from ._registry import available_backends, get_backend
from .callbacks import Callback
from .errors import InputError
from .model import Sequential, mlp


@dataclass(frozen=True)
class Case:
    """One benchmark shape: layer widths, activations, loss, batch size."""

    name: str
    sizes: tuple[int, ...]
    activation: str
    output: str
    batch_size: int
    large: bool = False  # skipped on CPU backends unless asked for

    @property
    def classes(self) -> int:
        return 2 if self.sizes[-1] == 1 else self.sizes[-1]

    def loss(self) -> losses.Loss:
        if self.output == "sigmoid":
            return losses.BinaryCrossEntropy()
        return losses.CategoricalCrossEntropy(from_logits=False)

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one training step per sample: forward, dW and dx products.

        Forward ``x @ W`` and the weight gradient ``x^T @ dy`` for every Dense layer, and
        the input gradient ``dy @ W^T`` for every layer but the first.
        """
        pairs = list(itertools.pairwise(self.sizes))
        products = sum(3 * a * b for a, b in pairs) - pairs[0][0] * pairs[0][1]
        return 2 * products


CASES: tuple[Case, ...] = (
    Case("784-128-1 sigmoid/bce b128", (784, 128, 1), "sigmoid", "sigmoid", 128),
    Case("784-256-256-10 relu/ce b32", (784, 256, 256, 10), "relu", "softmax", 32),
    Case("784-256-256-10 relu/ce b128", (784, 256, 256, 10), "relu", "softmax", 128),
    Case("784-256-256-10 relu/ce b1024", (784, 256, 256, 10), "relu", "softmax", 1024),
    Case("4096-4096-4096-10 relu/ce b4096", (4096, 4096, 4096, 10), "relu", "softmax", 4096,
         large=True),
)


@dataclass
class Result:
    """One case on one backend: median milliseconds per step and samples per second."""

    case: str
    backend: str
    device: str
    dtype: str
    batch_size: int
    steps: int
    ms_per_step: float
    samples_per_s: float
    gflops: float
    epoch_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EpochTimer(Callback):
    """Wall time of every epoch, with the device synchronised at both ends."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int) -> None:
        self.backend.synchronize()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.backend.synchronize()
        self.seconds.append(time.perf_counter() - self._start)


def synthetic(case: Case, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs uniform in [0, 1) (like scaled pixels) and labels of a random linear teacher."""
    rng = np.random.default_rng(seed)
    x = rng.random((samples, case.sizes[0]), dtype=np.float32)
    teacher = rng.standard_normal((case.sizes[0], case.classes)).astype(np.float32)
    return x, np.argmax((x - 0.5) @ teacher, axis=1)


def build(case: Case, backend: Any, dtype: str = "float32", seed: int = 0) -> Sequential:
    return mlp(case.sizes[0], case.sizes[1:-1], case.sizes[-1], activation=case.activation,
               output=case.output, seed=seed, dtype=dtype, backend=backend)


def run_case(
    case: Case,
    backend: Any,
    *,
    dtype: str = "float32",
    steps: int = 50,
    repeats: int = 5,
    optimizer: str = "sgd",
) -> Result:
    """Time ``repeats`` epochs of ``steps`` steps after one warm-up epoch, in one ``fit``.

    The data is host NumPy, moved to the device once by ``fit``, as a user would pass it.
    """
    backend = get_backend(backend)
    x, y = synthetic(case, case.batch_size * steps)
    model = build(case, backend, dtype)
    timer = EpochTimer(backend)
    model.fit(x, y if case.output == "softmax" else y.reshape(-1, 1), loss=case.loss(),
              optimizer=optim.make_optimizer(optimizer, lr=0.01), epochs=1 + repeats,
              batch_size=case.batch_size, verbose=0, callbacks=[timer])
    seconds = timer.seconds[1:]  # the first epoch warms up allocations, caches, kernels
    median = statistics.median(seconds)
    return Result(
        case=case.name, backend=backend.name, device=backend.device_name, dtype=dtype,
        batch_size=case.batch_size, steps=steps, ms_per_step=1e3 * median / steps,
        samples_per_s=case.batch_size * steps / median,
        gflops=case.flops_per_sample() * case.batch_size * steps / median / 1e9,
        epoch_seconds=seconds,
    )


def select_cases(names: Iterable[str] | None) -> list[Case]:
    if not names:
        return list(CASES)
    for name in names:
        if not any(name in c.name for c in CASES):
            known = "; ".join(c.name for c in CASES)
            raise InputError(f"no benchmark case matches {name!r}; cases: {known}")
    return [c for c in CASES if any(name in c.name for name in names)]


def usable_backends(names: Sequence[str] | None = None) -> list[Any]:
    """The backends to benchmark: those named, or every usable one on its default device."""
    if names:
        return [get_backend(name) for name in names]
    return [get_backend(info.name) for info in available_backends() if info.usable]


def is_gpu(backend: Any) -> bool:
    return backend.device_name.startswith("cuda")


def run(
    backends: Sequence[Any],
    cases: Sequence[Case],
    *,
    large: bool = False,
    dtype: str = "float32",
    steps: int = 50,
    repeats: int = 5,
    optimizer: str = "sgd",
    report: Any = None,
) -> list[Result]:
    """Every case on every backend; large cases only on GPUs unless ``large``."""
    results = []
    for backend in backends:
        for case in cases:
            if case.large and not (large or is_gpu(backend)):
                continue
            result = run_case(case, backend, dtype=dtype, steps=steps, repeats=repeats,
                              optimizer=optimizer)
            results.append(result)
            if report is not None:
                report(result)
    return results


def format_row(result: Result) -> str:
    return (f"{result.case:<34} {result.backend:<17} {result.device:<10} "
            f"{result.ms_per_step:>9.3f} ms/step {result.samples_per_s:>12,.0f} samples/s "
            f"{result.gflops:>8.1f} GFLOP/s")
