"""portgd against its peers, side by side, in one run and on the same data.

For each MLP shape of ``portgd.bench`` (the 4096-wide one only with --large or a GPU):

- portgd on each requested backend, through ``Sequential.fit``;
- a hand-written loop of exactly the same math in plain NumPy (and in plain CuPy on a GPU):
  the same forward pass, the fused Softmax/Sigmoid cross-entropy gradient, the loss value
  summed on the device every step, SGD updating in place without temporaries, one gather of
  the shuffled data per epoch, and weights at the same memory alignment as portgd's;
- PyTorch eager: ``nn.Linear`` layers, ``F.cross_entropy`` / ``binary_cross_entropy_with_logits``
  on the logits, ``torch.optim.SGD``, the same batches.

Two small cases, where Python rather than the matrix products sets the pace, join them: an
8-16-16-4 model at batch 128 with SGD, and a digits-sized 64-128-64-10 model at batch 32 with
Adam, against a hand-written NumPy Adam loop (in place, as a careful user writes it) and
``torch.optim.Adam``. Their epochs run eight times as many steps.

Every contender gets the same number of threads (BLAS/OpenMP, set with threadpoolctl and
``torch.set_num_threads``): each case runs at the machine's default and at one thread
unless ``--threads`` names the settings. TF32 is off on both sides on a GPU. The contenders run in
rounds, one epoch each per round in a shuffled order, after one warm-up epoch each (see
``interleaved``). The table gives each contender's median epoch time over ``--repeats``
rounds and the median of its per-round ratios to the hand-written loop and to PyTorch. The
script also measures the machine's float32 matmul throughput at each case's shapes (the peak
the fraction refers to) and the resident memory after every portgd epoch.

    python benchmarks/compare.py --markdown
    python benchmarks/compare.py --threads 1 --case b128 --repeats 25
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import portgd
from portgd import bench


@dataclasses.dataclass(frozen=True)
class Case(bench.Case):
    """A ``portgd bench`` case and how compare.py trains it."""

    optimizer: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.01
    step_factor: int = 1  # epochs run step_factor x --steps steps


CASES: tuple[Case, ...] = (
    *(Case(**dataclasses.asdict(case)) for case in bench.CASES),
    Case("8-16-16-4 relu/ce b128", (8, 16, 16, 4), "relu", "softmax", 128, step_factor=8),
    Case("64-128-64-10 relu/ce b32 adam", (64, 128, 64, 10), "relu", "softmax", 32,
         optimizer="adam", lr=0.001, step_factor=8),
)
ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}  # portgd's and torch's defaults


def select_cases(names: list[str] | None) -> list[Case]:
    """The cases whose names contain one of ``names`` (all without names)."""
    if not names:
        return list(CASES)
    unknown = [n for n in names if not any(n in c.name for c in CASES)]
    if unknown:
        raise SystemExit(f"no case matches {unknown}; cases: {[c.name for c in CASES]}")
    return [c for c in CASES if any(n in c.name for n in names)]


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class Memory(portgd.callbacks.Callback):
    """Resident memory after every epoch (flat across epochs means no leak)."""

    def __init__(self) -> None:
        self.rss: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.rss.append(_rss_mb())


def _timed(epoch: Callable[[], None], sync: Callable[[], None]) -> Callable[[], float]:
    """``epoch`` as a callable that returns its wall time, the device synchronised at both ends."""

    def run() -> float:
        sync()
        start = time.perf_counter()
        epoch()
        sync()
        return time.perf_counter() - start

    return run


def interleaved(
    contenders: dict[str, Callable[[], float]], repeats: int, seed: int = 0
) -> dict[str, list[float]]:
    """Epoch times of every contender, measured in rounds.

    One warm-up epoch each, then ``repeats`` rounds in which every contender runs one epoch,
    in an order shuffled anew each round (from ``seed``), so that no contender always runs
    after the same one. A slow stretch of the machine (another process, frequency changes)
    then hits all contenders of a round alike, and the per-round ratios between contenders
    stay meaningful even when absolute times drift.
    """
    names = list(contenders)
    for name in names:
        contenders[name]()
    order = random.Random(seed)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in order.sample(names, len(names)):
            seconds[name].append(contenders[name]())
    return seconds


def median_ratio(seconds: list[float], reference: list[float]) -> float:
    """The median over the rounds of ``seconds[i] / reference[i]`` (the two contenders'
    times in the same round of ``interleaved``)."""
    return statistics.median(a / b for a, b in zip(seconds, reference, strict=True))


def side_by_side(runs: dict[Any, Callable[[], float]], steps: int, repeats: int,
                 reference: Any) -> dict[Any, tuple[float, float]]:
    """``interleaved`` rounds of one epoch of ``steps`` steps per contender: for each, its
    median seconds per step and the median of its per-round ratios to ``reference``."""
    seconds = interleaved(runs, repeats)
    return {name: (statistics.median(t) / steps, median_ratio(t, seconds[reference]))
            for name, t in seconds.items()}


def portgd_epoch(
    case: Case, backend: Any, x: np.ndarray, y: np.ndarray
) -> Callable[[], float]:
    """One epoch of ``Sequential.fit`` per call, timed inside fit (its data setup excluded)."""
    model = bench.build(case, backend)
    optimizer = portgd.optim.make_optimizer(case.optimizer, lr=case.lr)
    timer = bench.EpochTimer(model.backend)
    targets = y if case.output == "softmax" else y.reshape(-1, 1)

    def run() -> float:
        model.fit(x, targets, loss=case.loss(), optimizer=optimizer, epochs=1,
                  batch_size=case.batch_size, verbose=0, callbacks=[timer])
        return timer.seconds[-1]

    return run


# -- hand-written loop: NumPy or CuPy ----------------------------------------------------------
def hand_written(
    case: Case, x: Any, y: Any, xp: Any
) -> tuple[Callable[[], None], list[Any]]:
    """The same math as portgd's fit for ``case``, written out with ``xp`` (numpy or cupy).

    Returns a function that runs one epoch, and the list ``[W0, b0, W1, b1, ...]`` of the
    arrays it updates in place (the batch order is drawn as ``fit(seed=0)`` draws it). The
    update is SGD, or Adam (``portgd.optim.rules.adam_update``'s formula) with the moments
    updated in place.
    """
    # the same initial weights as portgd's model, in its own arrays: on NumPy they start on
    # 64-byte boundaries as portgd's do, where malloc's would start 0, 16, 32 or 48 bytes
    # past one by chance, up to 22% slower at two threads (benchmarks/alignment.py)
    model = bench.build(case, "numpy")
    params = [xp.asarray(v) for v in model.params.values()]
    weights, biases = params[0::2], params[1::2]
    n, bs = x.shape[0], case.batch_size
    relu = case.activation == "relu"
    if case.output == "softmax":
        targets = xp.asarray(np.eye(case.classes, dtype=np.float32)[y])
    else:
        targets = xp.asarray(y.reshape(-1, 1).astype(np.float32))
    data = xp.asarray(x)
    rng = np.random.default_rng(0)
    lr = case.lr
    adam = case.optimizer == "adam"
    beta1, beta2 = ADAM["betas"]
    moments = [(xp.zeros_like(p), xp.zeros_like(p)) for p in params]
    steps = [0]

    def update(p: Any, g: Any, moment: tuple[Any, Any]) -> None:
        if not adam:
            g *= lr  # in place, as a careful hand-written loop would
            p -= g
            return
        m, v = moment
        t = steps[0]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        g *= g
        g *= 1.0 - beta2
        v += g
        denom = xp.sqrt(v)
        denom /= (1.0 - beta2**t) ** 0.5
        denom += ADAM["eps"]
        xp.divide(m, denom, out=denom)
        denom *= lr / (1.0 - beta1**t)
        p -= denom

    def sigmoid(z: Any) -> Any:  # the stable form portgd uses: no overflow in either tail
        return xp.exp(xp.minimum(z, 0.0)) / (1.0 + xp.exp(-xp.abs(z)))

    def epoch() -> None:
        order = xp.asarray(rng.permutation(n))
        xe, te = data[order], targets[order]
        total = xp.zeros((), dtype=xp.float32)
        for start in range(0, n, bs):
            xb, tb = xe[start:start + bs], te[start:start + bs]
            acts, pre = [xb], []
            for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                z = acts[-1] @ w + b
                pre.append(z)
                if i < len(weights) - 1:
                    acts.append(xp.maximum(z, 0) if relu else sigmoid(z))
            z = pre[-1]
            m = z.shape[0]
            if case.output == "softmax":
                shifted = z - z.max(axis=1, keepdims=True)
                e = xp.exp(shifted)
                s = e.sum(axis=1, keepdims=True)
                p = e / s
                total += (xp.log(s[:, 0]) - (tb * shifted).sum(axis=1)).sum() / m
            else:
                p = sigmoid(z)
                total += (xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z))) - tb * z).sum() / m
            d = (p - tb) / m
            steps[0] += 1
            for i in range(len(weights) - 1, -1, -1):
                gw, gb = acts[i].T @ d, d.sum(axis=0)
                if i > 0:
                    d = d @ weights[i].T
                    a = acts[i]
                    d = d * (pre[i - 1] > 0) if relu else d * a * (1 - a)
                update(weights[i], gw, moments[2 * i])
                update(biases[i], gb, moments[2 * i + 1])
        float(total)  # one read per epoch, as portgd's History does

    return epoch, params


# -- PyTorch eager -----------------------------------------------------------------------------
def torch_eager(case: Case, x: np.ndarray, y: np.ndarray, device: str
                ) -> Callable[[], float]:
    """One epoch of PyTorch eager on the same model and batches per call; returns seconds."""
    import torch
    import torch.nn.functional as F

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    widths = case.sizes
    layers: list[Any] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU() if case.activation == "relu" else torch.nn.Sigmoid())
    net = torch.nn.Sequential(*layers).to(device)
    with torch.no_grad():  # the same initial weights as portgd's model
        state = list(bench.build(case, "numpy").state_dict().values())
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        for lin, w, b in zip(linears, state[0::2], state[1::2], strict=True):
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
    if case.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=case.lr, **ADAM)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=case.lr)
    data = torch.from_numpy(x).to(device)
    if case.output == "softmax":
        labels = torch.from_numpy(y).to(device)
    else:
        labels = torch.from_numpy(y.reshape(-1, 1).astype(np.float32)).to(device)
    n, bs = x.shape[0], case.batch_size
    rng = np.random.default_rng(0)

    def epoch() -> None:
        order = torch.from_numpy(rng.permutation(n)).to(device)
        xe, ye = data[order], labels[order]
        total = torch.zeros((), device=device)
        for start in range(0, n, bs):
            out = net(xe[start:start + bs])
            if case.output == "softmax":
                loss = F.cross_entropy(out, ye[start:start + bs])
            else:
                loss = F.binary_cross_entropy_with_logits(out, ye[start:start + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        float(total)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return _timed(epoch, sync)


# -- matmul peak -------------------------------------------------------------------------------
def matmul_gflops(m: int, k: int, n: int, xp: Any = np, sync: Callable[[], None] = lambda: None,
                  seconds: float = 0.5) -> float:
    a = xp.asarray(np.random.default_rng(0).random((m, k), dtype=np.float32))
    b = xp.asarray(np.random.default_rng(1).random((k, n), dtype=np.float32))
    a @ b
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync()
    return 2.0 * m * k * n * count / (time.perf_counter() - start) / 1e9


def case_peak(case: bench.Case, xp: Any = np, sync: Callable[[], None] = lambda: None) -> float:
    """FLOP-weighted matmul throughput of the products one step of ``case`` performs."""
    bs, sizes = case.batch_size, case.sizes
    shapes = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        shapes += [(bs, a, b), (a, bs, b)]  # forward, weight gradient
        if i > 0:
            shapes.append((bs, b, a))  # input gradient
    flops = [2 * m * k * n for m, k, n in shapes]
    seconds = sum(f / (matmul_gflops(*s, xp=xp, sync=sync, seconds=0.2) * 1e9)
                  for f, s in zip(flops, shapes, strict=True))
    return sum(flops) / seconds / 1e9


# -- driver ------------------------------------------------------------------------------------
def _threads(value: str) -> int | None:
    if value == "default":
        return None
    count = int(value)
    if count < 1:
        raise argparse.ArgumentTypeError("--threads takes a positive count or 'default'")
    return count


@contextlib.contextmanager
def thread_count(threads: int | None) -> Any:
    """BLAS/OpenMP (threadpoolctl) and torch limited to ``threads`` inside; None leaves the
    machine's defaults."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch else None
    with threadpool_limits(limits=threads):
        if torch:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(before)


def table_command(
    argv: list[str] | None,
    description: str,
    default_cases: list[str],
    repeats: int,
    columns: list[str],
    rows: Callable[[Case, int, int], list[list[str]]],
    accept: Callable[[Case], str | None] = lambda case: None,
) -> None:
    """The command line of a side-by-side script built on this one (``alignment.py``,
    ``step_overhead.py``): ``--case`` (repeatable), ``--threads`` (repeatable; default: the
    machine's default, then 1), ``--steps``, ``--repeats`` and ``--markdown``. Prints a table
    whose first columns are the case and the threads, then the cells ``rows(case, steps,
    repeats)`` gives for each of its rows. ``accept(case)`` returns why a case cannot be
    measured (a usage error), or None."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--case", action="append",
                        help=f"a case name (part of it); default: {', '.join(default_cases)}")
    parser.add_argument("--threads", type=_threads, action="append", metavar="N|default",
                        help="repeatable; default: the machine's default, then 1")
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved rounds")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    cases = select_cases(args.case or default_cases)
    for case in cases:
        refusal = accept(case)
        if refusal:
            parser.error(refusal)
    header = "| " + " | ".join(["case", "threads", *columns]) + " |"
    print(header if args.markdown else header.replace("|", " ").strip())
    if args.markdown:
        print("|---|---|" + "---:|" * len(columns))
    for threads in args.threads or [None, 1]:
        with thread_count(threads):
            for case in cases:
                for cells in rows(case, args.steps, args.repeats):
                    cells = [case.name, str(threads or "default"), *cells]
                    print(f"| {' | '.join(cells)} |" if args.markdown else "  ".join(cells))


def measure(case: Case, backends: list[Any], args: argparse.Namespace,
            threads: int | None) -> dict[str, Any]:
    """One table row: every contender on ``case`` at ``threads``, interleaved."""
    names = [b.name for b in backends]
    gpu = any(bench.is_gpu(b) for b in backends)
    steps = args.steps * case.step_factor
    x, y = bench.synthetic(case, case.batch_size * steps)
    flop = case.flops_per_sample() * x.shape[0]
    row: dict[str, Any] = {"case": case.name, "threads": threads or "default", "steps": steps}
    cpu_contenders = not case.large or args.large
    contenders: dict[str, Callable[[], float]] = {}
    for backend in backends:
        if cpu_contenders or bench.is_gpu(backend):
            name = f"portgd-{backend.name}@{backend.device_name}"
            contenders[name] = portgd_epoch(case, backend, x, y)
    if "numpy" in names and cpu_contenders:
        contenders["numpy-hand"] = _timed(hand_written(case, x, y, np)[0], lambda: None)
    if "cupy" in names:
        import cupy

        def cupy_sync() -> None:
            cupy.cuda.Device().synchronize()

        contenders["cupy-hand"] = _timed(hand_written(case, x, y, cupy)[0], cupy_sync)
    if not args.no_torch:
        for device in ["cpu"] * cpu_contenders + ["cuda"] * gpu:
            contenders[f"torch-eager-{device}"] = torch_eager(case, x, y, device)
    seconds = interleaved(contenders, args.repeats)
    row["ms_per_step"] = {name: 1e3 * statistics.median(t) / steps
                          for name, t in seconds.items()}
    row["ratios"] = {
        name: {ref: median_ratio(t, seconds[ref])
               for ref in _references(name) if ref in seconds and ref != name}
        for name, t in seconds.items()
    }
    if "numpy" in names and cpu_contenders:
        memory = Memory()
        model = bench.build(case, "numpy")
        model.fit(x, y if case.output == "softmax" else y.reshape(-1, 1), loss=case.loss(),
                  optimizer=case.optimizer, epochs=6, batch_size=case.batch_size, verbose=0,
                  callbacks=[memory])
        row["rss_mb_per_epoch"] = [round(v, 1) for v in memory.rss]
        row["numpy-peak-gflops"] = case_peak(case)
    if "cupy" in names:
        row["cupy-peak-gflops"] = case_peak(case, cupy, cupy_sync)
    row["gflop_per_step"] = flop / steps / 1e9
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=_threads, action="append", default=None,
                        metavar="N|default",
                        help="BLAS/OpenMP/torch threads for every contender (repeatable; "
                             "default: the machine's default, then 1)")
    parser.add_argument("--backend", action="append", default=None,
                        help="portgd backend as NAME or NAME@DEVICE, e.g. torch@cuda:0 "
                             "(repeatable; default: numpy, torch, and cupy if usable)")
    parser.add_argument("--case", action="append", default=None)
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    settings = args.threads or [None, 1]
    if not args.no_torch:
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401  (thread_count sets its threads too)

    specs = args.backend or [n for n in ("numpy", "torch", "cupy")
                             if {i.name: i for i in portgd.available_backends()}[n].usable]
    backends = [portgd.get_backend(*spec.split("@", 1)) for spec in specs]
    gpu = any(bench.is_gpu(b) for b in backends)
    cases = [c for c in select_cases(args.case) if not c.large or args.large or gpu]
    rows = []
    for threads in settings:
        with thread_count(threads):
            for case in cases:
                row = measure(case, backends, args, threads)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    machine = {
        "python": platform.python_version(), "numpy": np.__version__,
        "processor": platform.processor() or platform.machine(),
        "threads": ["default" if t is None else t for t in settings],
    }
    try:
        from threadpoolctl import threadpool_info

        machine["threadpools"] = [
            {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for info in threadpool_info()
        ]
    except ImportError:
        pass
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=2)
    if args.markdown:
        print(markdown(rows))
    return 0


def _gpu_side(name: str) -> bool:
    return "@cuda" in name or name.startswith("cupy") or name.endswith("cuda")


def _references(name: str) -> tuple[str, str]:
    """The hand-written loop and the PyTorch eager run that ``name`` is compared with."""
    return ("cupy-hand", "torch-eager-cuda") if _gpu_side(name) else (
        "numpy-hand", "torch-eager-cpu")


def markdown(rows: list[dict[str, Any]]) -> str:
    """ms/step per contender, per-round median ratios to the hand-written loop and PyTorch,
    GFLOP/s and the fraction of the matmul peak."""
    lines = ["| case | threads | contender | ms/step | vs hand-written | vs torch eager | "
             "GFLOP/s | % of matmul peak |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        for name, ms in row["ms_per_step"].items():
            ratios = row["ratios"][name]
            peak = row.get("cupy-peak-gflops" if _gpu_side(name) else "numpy-peak-gflops")
            gflops = row["gflop_per_step"] / (ms / 1e3)
            cells = [row["case"], str(row["threads"]), name, f"{ms:.3f}"]
            cells += [f"{ratios[ref]:.3f}x" if ref in ratios else "-" for ref in _references(name)]
            cells += [f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%" if peak else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
