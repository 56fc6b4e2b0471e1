"""Data-parallel scaling of ``fit(distributed=...)``: what docs/scaling.md reports.

Two modes:

``python benchmarks/scaling.py worker --widths 784,256,256,10 --batch 256 [...]``
    one measurement, in one process or under ``mpiexec -n P`` (``--distributed``); rank 0
    prints one JSON line: the median epoch time (after a warm-up epoch), the gradient
    exchange per step (``comm_ms``: packing, starting, testing, waiting; ``waited_ms``: the
    part left at the end of the backward pass), and a blocking ``Allreduce`` of the whole
    gradient alone (``allreduce_ms``, median of 30) for the cost model.

``python benchmarks/scaling.py run [--quick]``
    the table of docs/scaling.md: for each model, 1 process x 1 and x 2 threads against
    2 processes x 1 thread, the same global batch (strong scaling) and twice the batch
    (weak scaling, the same samples per rank), with and without the overlap. It prints the
    load averages of ``/proc/loadavg`` before and after: on a shared machine they say how
    much the numbers can be trusted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import portgd
from portgd.callbacks import Callback
from portgd.losses import CategoricalCrossEntropy


class _EpochTimer(Callback):
    """Epoch times; the exchange counters restart after the warm-up epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int) -> None:
        if epoch == 1 and self.distributed is not None:
            self.distributed.comm_s = self.distributed.waited_s = 0.0
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def worker(args: argparse.Namespace) -> None:
    comm = None
    if args.distributed:
        from portgd.distributed import Communicator

        comm = Communicator(overlap=not args.no_overlap)
    widths = [int(w) for w in args.widths.split(",")]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, widths[0])).astype(np.float32)
    labels = rng.integers(0, widths[-1], size=args.samples)
    model = portgd.mlp(widths[0], widths[1:-1], widths[-1], output="softmax", seed=0,
                       dtype="float32", backend=args.backend)
    timer = _EpochTimer()
    model.fit(x, labels, loss=CategoricalCrossEntropy(from_logits=False),
              optimizer=portgd.optim.SGD(lr=0.01), epochs=args.epochs + 1,
              batch_size=args.batch, verbose=0, callbacks=[timer], distributed=comm)
    steps = -(-args.samples // args.batch)
    result = {
        "widths": args.widths, "backend": args.backend,
        "ranks": 1 if comm is None else comm.size,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "global_batch": args.batch, "overlap": None if comm is None else comm.overlap,
        "epoch_s": statistics.median(timer.seconds[1:]),
        "best_epoch_s": min(timer.seconds[1:]), "steps": steps,
    }
    result["step_ms"] = 1e3 * result["epoch_s"] / steps
    result["best_step_ms"] = 1e3 * result["best_epoch_s"] / steps
    if comm is not None:
        epochs_steps = args.epochs * steps
        result["comm_ms"] = 1e3 * comm.comm_s / epochs_steps
        result["waited_ms"] = 1e3 * comm.waited_s / epochs_steps
        buffer = np.ones(model.num_parameters(), dtype=np.float32)
        result["allreduce_ms"] = _allreduce_ms(comm, buffer)
        result["allreduce_8_bytes_ms"] = _allreduce_ms(comm, np.ones(2, dtype=np.float32))
        result["gradient_bytes"] = buffer.nbytes
        if comm.rank != 0:
            return
    print(json.dumps(result), flush=True)


def _allreduce_ms(comm, buffer: np.ndarray, repeats: int = 30) -> float:
    """Least time of a blocking sum-Allreduce of ``buffer``, each after a barrier: on a
    shared machine the least is the one in which neither rank was descheduled."""
    times = []
    for _ in range(repeats):
        comm.barrier()
        started = time.perf_counter()
        comm.sum_in_place(buffer)
        times.append(time.perf_counter() - started)
    return 1e3 * min(times)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def run(args: argparse.Namespace) -> None:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec")
    samples = 1024 if args.quick else 4096
    epochs = 1 if args.quick else 5
    models = ["64,32,10"] if args.quick else ["784,256,256,10", "784,1024,1024,10"]
    batch = 64 if args.quick else 256
    print(f"load average before: {_loadavg()}", flush=True)
    rows = []
    for widths in models:
        configs = [  # (processes, threads, global batch, overlap)
            (1, 1, batch, None), (1, 2, batch, None),
            (2, 1, batch, True), (2, 1, batch, False),
            (1, 1, 2 * batch, None), (2, 1, 2 * batch, True),
        ]
        for processes, threads, global_batch, overlap in configs:
            command = [sys.executable, __file__, "worker", "--widths", widths, "--batch",
                       str(global_batch), "--samples", str(samples), "--epochs", str(epochs)]
            if processes > 1:
                command = [mpiexec, "-n", str(processes), *command, "--distributed"]
                if not overlap:
                    command.append("--no-overlap")
            env = {**os.environ, "OMP_NUM_THREADS": str(threads),
                   "OPENBLAS_NUM_THREADS": str(threads)}
            done = subprocess.run(command, capture_output=True, text=True, env=env,
                                  check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"load average after: {_loadavg()}", flush=True)
    print()
    print("| model | processes x threads | global batch | overlap | ms/step median (best) | "
          "exchange ms/step | left at the end ms/step | Allreduce alone ms (8 B) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        exchange = ("-" if r["ranks"] == 1 else f"{r['comm_ms']:.2f} | {r['waited_ms']:.2f} | "
                    f"{r['allreduce_ms']:.3f} ({r['allreduce_8_bytes_ms']:.3f})")
        if r["ranks"] == 1:
            exchange = "- | - | -"
        print(f"| {r['widths']} | {r['ranks']} x {r['threads']} | {r['global_batch']} | "
              f"{'-' if r['overlap'] is None else ('yes' if r['overlap'] else 'no')} | "
              f"{r['step_ms']:.2f} ({r['best_step_ms']:.2f}) | {exchange} |")


#: (name, bandwidth in bytes/s, latency per message in s). The first row is this VM's MPICH
#: over shared memory, fitted to the best 2-rank Allreduce times of docs/scaling.md (8 bytes
#: in 0.002-0.003 ms: two latencies; 1.08 MB in 0.134 ms and 7.45 MB in 0.716 ms: 8-10 GB/s);
#: the others are typical published figures.
INTERCONNECTS = [
    ("shared memory, this VM (measured)", 8e9, 1.5e-6),
    ("10 Gb Ethernet, TCP", 1.25e9, 25e-6),
    ("InfiniBand HDR 200 Gb/s", 25e9, 1.5e-6),
]


def ring_allreduce_s(ranks: int, nbytes: float, bandwidth: float, latency: float,
                     allreduces: int = 1) -> float:
    """The ring allreduce cost model of one step that sums ``nbytes`` in ``allreduces``
    separate allreduces: ``2 (p-1)/p * bytes / bandwidth + allreduces * 2 (p-1) * latency``
    (each allreduce is a reduce-scatter and an all-gather of ``p - 1`` messages; the bytes
    are split between the allreduces, the latencies add up)."""
    if ranks == 1:
        return 0.0
    return (2 * (ranks - 1) / ranks * nbytes / bandwidth
            + allreduces * 2 * (ranks - 1) * latency)


def cost_model(args: argparse.Namespace) -> None:
    """Per-step compute and exchange at 8, 64 and 512 ranks, nothing overlapped.

    Strong scaling: the global batch ``B`` is fixed, each rank computes ``B / p`` samples.
    Weak scaling: each rank computes ``B`` samples (the global batch grows to ``p B``).
    Compute per sample is the measured one-process figure (small per-rank batches are in
    truth less efficient than that, so the strong-scaling figures are optimistic).
    """
    widths = [int(w) for w in args.widths.split(",")]
    params = sum(a * b + b for a, b in itertools.pairwise(widths))
    nbytes = 4 * params  # float32 gradients
    compute = args.per_sample_us * 1e-6 * args.batch
    allreduces = len(widths) - 1  # the NumPy path: one Iallreduce per Dense layer
    print(f"{args.widths}: {params} parameters, {nbytes / 1e6:.2f} MB of float32 gradients "
          f"in {allreduces} allreduces per step (one per layer); one process: "
          f"{1e3 * compute:.2f} ms per step of {args.batch} samples")
    print()
    print("| interconnect | ranks | exchange ms | strong: compute ms | strong: speed-up "
          "(efficiency) | weak: efficiency |")
    print("|---|---|---|---|---|---|")
    for name, bandwidth, latency in INTERCONNECTS:
        for ranks in (8, 64, 512):
            exchange = ring_allreduce_s(ranks, nbytes, bandwidth, latency, allreduces)
            strong = compute / (compute / ranks + exchange)
            weak = compute / (compute + exchange)
            print(f"| {name} | {ranks} | {1e3 * exchange:.3f} | {1e3 * compute / ranks:.3f} | "
                  f"{strong:.1f}x ({strong / ranks:.0%}) | {weak:.0%} |")


def staging(args: argparse.Namespace) -> None:
    """The host staging of a non-NumPy backend, without MPI: concatenating a model's
    gradients on the device, one copy to the host and one back (best of 30, in ms)."""
    widths = [int(w) for w in args.widths.split(",")]
    backend = portgd.get_backend(args.backend)
    xp = backend.xp
    rng = np.random.default_rng(0)
    grads = [backend.asarray(rng.normal(size=shape).astype(np.float32))
             for a, b in itertools.pairwise(widths) for shape in ((a, b), (b,))]
    times = []
    for _ in range(30):
        started = time.perf_counter()
        flat = xp.concat([xp.reshape(g, (-1,)) for g in grads])
        host = np.ascontiguousarray(backend.to_numpy(flat))
        back = backend.asarray(host)
        backend.synchronize()
        times.append(time.perf_counter() - started)
    assert back.shape == flat.shape
    print(json.dumps({"widths": args.widths, "backend": args.backend,
                      "bytes": int(host.nbytes), "staging_ms": 1e3 * min(times)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="mode", required=True)
    one = commands.add_parser("worker")
    one.add_argument("--widths", default="784,256,256,10")
    one.add_argument("--batch", type=int, default=256)
    one.add_argument("--samples", type=int, default=4096)
    one.add_argument("--epochs", type=int, default=3)
    one.add_argument("--backend", default="numpy", help="numpy goes to MPI directly; "
                     "any other backend is staged through the host once per step")
    one.add_argument("--distributed", action="store_true")
    one.add_argument("--no-overlap", action="store_true")
    table = commands.add_parser("run")
    table.add_argument("--quick", action="store_true", help="a tiny model: checks the script")
    model = commands.add_parser("model")
    model.add_argument("--widths", default="784,256,256,10")
    model.add_argument("--batch", type=int, default=256, help="global batch")
    model.add_argument("--per-sample-us", type=float, required=True,
                       help="measured compute per sample and step, one process, microseconds")
    stage = commands.add_parser("staging")
    stage.add_argument("--widths", default="784,256,256,10")
    stage.add_argument("--backend", default="torch")
    args = parser.parse_args()
    {"worker": worker, "run": run, "model": cost_model, "staging": staging}[args.mode](args)


if __name__ == "__main__":
    main()
