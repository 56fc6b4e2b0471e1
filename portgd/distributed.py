"""Data parallelism over MPI (mpi4py): every process holds a replica of the model.

Run a script under ``mpiexec -n P python script.py`` and pass a :class:`Communicator` to
``fit``::

    from portgd.distributed import Communicator
    model.fit(x, y, ..., distributed=Communicator())   # mpi4py's COMM_WORLD

Each global batch (``batch_size`` samples, drawn in the same order on every rank from the
shared seed) is split into ``P`` contiguous shards of sizes as equal as possible (the first
``B mod P`` ranks take one more). Each rank backpropagates its shard's mean loss, so its
gradient ``g_r`` averages ``n_r`` samples; the global batch's gradient is::

    g = sum_r (n_r / B) * g_r          (B = sum_r n_r, the last short batch included)

which every rank gets from one sum-allreduce of ``(n_r / B) * g_r``. For a loss with
``reduction="sum"`` each ``g_r`` is a sum and its weight is 1; ``fit`` takes the weight from
``Loss.share(n_r, B)``, which covers both. P processes therefore
take the steps of one process with the same global batch, to rounding (the sums run in
another order).

Transport: MPI through mpi4py; portgd writes none of its own. NumPy arrays are the host
format, so their gradients go to MPI directly: one packed buffer per layer, reduced with a
non-blocking ``Iallreduce`` started as soon as backprop has produced the layer's gradients,
so the exchange overlaps the backward pass of the layers below (MPICH progresses it inside
the later MPI calls). Other backends' arrays are staged through the host in one packed
buffer per step: one device-to-host copy, one allreduce, one host-to-device copy. A GPU
path (CUDA-aware MPI, NCCL) is not written: it lands only with a recorded multi-GPU run.

This is a host-I/O module: it uses NumPy, the host format, directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ._registry import backend_of
from .errors import DistributedError, InputError

__all__ = ["Communicator", "GradientAverager", "INSTALL_HINT", "shard"]

INSTALL_HINT = (
    "pip install 'portgd[mpi]' (mpi4py and the MPICH wheel; on a cluster, the site's mpi4py "
    "built against its MPI instead)"
)


def _mpi() -> Any:
    try:
        from mpi4py import MPI  # an optional dependency: loaded when a Communicator is made
    except ImportError as exc:
        raise InputError(f"distributed training needs mpi4py ({exc}); {INSTALL_HINT}") from None
    return MPI


def shard(n: int, rank: int, size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items split ``size`` ways.

    Sizes differ by at most one; the first ``n mod size`` ranks take the extra item.
    """
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class Communicator:
    """The processes of a data-parallel job: rank, size, sums, broadcasts, a barrier.

    Args:
        comm: an mpi4py communicator (default: ``MPI.COMM_WORLD``); on a cluster, the site's
            mpi4py and MPI work the same.
        overlap: start each layer's gradient allreduce as soon as backprop produces it
            (non-blocking, NumPy arrays); False reduces each layer with a blocking call
            (for measuring what the overlap hides).

    Collective methods (every method but :attr:`rank`/:attr:`size`) must be called by every
    rank in the same order, as with MPI itself.
    """

    def __init__(self, comm: Any = None, *, overlap: bool = True) -> None:
        self.MPI = _mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.overlap = bool(overlap)
        #: Seconds of gradient exchange on this rank's steps, and the part spent waiting
        #: at the end of the backward pass (see :class:`GradientAverager`).
        self.comm_s = 0.0
        self.waited_s = 0.0
        #: Whether :meth:`agree` has run: until then no collective has, so a rank that fails
        #: may still compare its failure with the others (:meth:`failed_before_agreeing`).
        self.agreed = False

    @property
    def rank(self) -> int:
        """This process's index, 0 to ``size - 1``; rank 0 prints and writes files."""
        return int(self.comm.Get_rank())

    @property
    def size(self) -> int:
        """The number of processes."""
        return int(self.comm.Get_size())

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size})"

    # -- collectives ------------------------------------------------------------------
    def allreduce(self, x: Any) -> Any:
        """The elementwise sum of ``x`` over all ranks, a new array of ``x``'s backend.

        NumPy arrays go to MPI directly; any other backend's array is staged through the
        host (one copy each way).
        """
        if isinstance(x, np.ndarray):
            out = np.empty_like(x)
            self.comm.Allreduce(np.ascontiguousarray(x), out, op=self.MPI.SUM)
            return out
        return self.staged_sum(backend_of(x), x)

    def staged_sum(self, backend: Any, x: Any, weight: float = 1.0) -> Any:
        """``sum over ranks of weight * x`` for an array ``x`` of ``backend`` (any backend),
        through the host: one device-to-host copy, one allreduce in place, one
        host-to-device copy to an array of ``x``'s dtype."""
        host = _writable(backend.to_numpy(x))
        if weight != 1.0:
            host *= weight
        self.sum_in_place(host)
        return backend.asarray(host, dtype=x.dtype)

    def sum_in_place(self, buffer: np.ndarray) -> np.ndarray:
        """Replace the host array ``buffer`` (contiguous) by its sum over all ranks."""
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return buffer

    def start_sum(self, buffer: np.ndarray) -> Any:
        """Start summing the host array ``buffer`` in place without waiting; returns the
        MPI request (``Test()``, ``Wait()``). ``buffer`` must stay untouched until done."""
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def sum_totals(self, sums: np.ndarray, samples: int) -> tuple[np.ndarray, int]:
        """Per-rank sums (a host vector) and sample counts added over all ranks, in float64."""
        buffer = np.append(np.asarray(sums, dtype=np.float64), float(samples))
        self.sum_in_place(buffer)
        return buffer[:-1], round(float(buffer[-1]))

    def broadcast(self, value: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``value`` (any picklable object) on every rank."""
        return self.comm.bcast(value, root=root)

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        return list(self.comm.allgather(value))

    def barrier(self) -> None:
        """Wait until every rank has arrived here."""
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every process of the job now with exit status ``code`` (MPI_Abort)."""
        self.comm.Abort(code)

    # -- what fit needs ---------------------------------------------------------------
    def shard(self, n: int) -> tuple[int, int]:
        """``[start, stop)`` of this rank's share of ``n`` items; see :func:`shard`."""
        return shard(n, self.rank, self.size)

    @staticmethod
    def raised_everywhere(exc: BaseException) -> BaseException:
        """Mark ``exc`` as raised by every rank alike (decided from data every rank
        shares), so :meth:`fault_guard` lets it propagate instead of ending the job."""
        exc.on_every_rank = True  # type: ignore[attr-defined]
        return exc

    @contextlib.contextmanager
    def agree(self) -> Iterator[None]:
        """Run a block without collectives, then compare its outcome on every rank (one
        allgather): all succeeded -> go on; all raised the same error (type and message:
        a refusal decided from the same arguments and data) -> each raises it, marked as
        raised everywhere; otherwise -> the failure belongs to some ranks only and is raised
        unmarked (the failing ranks' own errors; the others' DistributedError names them),
        so :meth:`fault_guard` ends the job.

        ``fit`` opens every data-parallel run with it (its first collective), so a rank
        that fails before reaching ``fit`` joins the comparison with
        :meth:`failed_before_agreeing`.
        """
        failure: Exception | None = None
        try:
            yield
        except Exception as exc:
            failure = exc
        self._compare(failure)

    def failed_before_agreeing(self, exc: Exception) -> None:
        """For an error raised on this rank before the first :meth:`agree` (the command
        line's checks before ``fit``): take part in the other ranks' first agreement with
        it, then raise it, marked if every rank failed alike. Afterwards: raise it."""
        if self.agreed:
            raise exc
        self._compare(exc)

    def _compare(self, failure: Exception | None) -> None:
        self.agreed = True
        said = self.allgather(None if failure is None
                              else f"{type(failure).__name__}: {failure}")
        failed = [rank for rank, text in enumerate(said) if text is not None]
        if not failed:
            return
        if len(failed) == self.size and len(set(said)) == 1:
            raise self.raised_everywhere(failure)  # type: ignore[arg-type]
        if failure is not None:
            raise failure
        raise DistributedError(f"rank(s) {failed} failed: {said[failed[0]]}")

    def gradient_reducer(self, backend: Any) -> GradientAverager:
        """A fresh :class:`GradientAverager` for one ``fit`` of a model on ``backend``
        (a Backend, resolved once by the caller)."""
        return GradientAverager(self, backend)

    def check_same(self, what: Mapping[str, Any]) -> None:
        """Refuse to start unless every rank passes equal ``what`` (JSON-able values).

        Each entry is compared by a digest; a mismatch raises DistributedError on every
        rank, naming the entries and the ranks that differ from rank 0.
        """
        mine = {key: _digest(value) for key, value in what.items()}
        everyone = self.allgather(mine)
        differing: dict[str, list[int]] = {}
        for rank, theirs in enumerate(everyone):
            for key in sorted(set(theirs) | set(everyone[0])):
                if theirs.get(key) != everyone[0].get(key):
                    differing.setdefault(key, []).append(rank)
        if differing:
            parts = "; ".join(f"{key}: rank(s) {ranks} differ from rank 0"
                              for key, ranks in differing.items())
            raise self.raised_everywhere(DistributedError(
                f"the {self.size} ranks do not start alike: {parts}. Every rank must build "
                f"the same model (same seed), optimizer and fit arguments and load the same "
                f"data; start them from one script with mpiexec."
            ))

    @contextlib.contextmanager
    def fault_guard(self) -> Iterator[None]:
        """End the whole job when this rank fails alone, instead of leaving the others
        waiting in a collective forever.

        An exception that every rank raises alike (marked by portgd: a start-up mismatch,
        a non-finite global loss, the same refusal on every rank found by :meth:`agree`)
        propagates. Any other exception, KeyboardInterrupt
        included, is printed on stderr with this rank's number and the job is ended with
        MPI_Abort (exit status 1 from ``mpiexec``). A killed process is ended by
        ``mpiexec`` itself, which then stops the other ranks.
        """
        try:
            yield
        except BaseException as exc:
            if getattr(exc, "on_every_rank", False):
                raise
            message = str(exc) or "(no message)"
            print(f"portgd: rank {self.rank} of {self.size} failed: {type(exc).__name__}: "
                  f"{message}; ending the whole job", file=sys.stderr, flush=True)
            sys.stdout.flush()
            self.abort(1)
            os._exit(1)  # Abort does not return; this is for a stand-in communicator


def _digest(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        data = json.dumps(value, sort_keys=True, default=repr).encode("utf-8")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class GradientAverager:
    """The :class:`portgd.step.GradientReducer` of data-parallel ``fit``.

    Before each step ``fit`` calls :meth:`begin` with this rank's weight in the global
    batch, ``loss.share(n_r, B)`` (``n_r / B`` for mean reduction, 1 for sum). Each
    layer's gradients are scaled by it while they are packed into one contiguous host
    buffer, which is summed over the ranks: for NumPy arrays with a non-blocking
    ``Iallreduce`` started at once (:meth:`start`) and collected when done (:meth:`ready`,
    :meth:`wait`); for other backends all layers of the step together in :meth:`wait` (one
    host round trip per step). The reduced gradients are views of the
    buffer, shaped and typed as given.

    Time spent here is added to the communicator's counters: ``comm.comm_s`` (packing,
    starting, testing and waiting: everything the exchange costs this rank's step) and
    ``comm.waited_s`` (the part in :meth:`wait`, the exchange the backward pass did not
    hide).
    """

    def __init__(self, comm: Communicator, backend: Any) -> None:
        self.comm = comm
        self.backend = backend
        self.weight = 1.0
        self._pending: list[tuple[int, dict[str, Any], np.ndarray, Any]] = []
        self._staged: list[tuple[int, dict[str, Any]]] = []

    def begin(self, weight: float) -> None:
        """Start a step in which this rank's gradient enters the global one times ``weight``."""
        self.weight = float(weight)

    def start(self, index: int, grads: dict[str, Any]) -> None:
        started = time.perf_counter()
        if not all(isinstance(g, np.ndarray) for g in grads.values()):
            self._staged.append((index, grads))  # another backend: one buffer per step
            return
        buffer = _pack(grads, self.weight)
        request = self.comm.start_sum(buffer) if self.comm.overlap else None
        if request is None:
            self.comm.sum_in_place(buffer)
        self._pending.append((index, grads, buffer, request))
        self.comm.comm_s += time.perf_counter() - started

    def ready(self) -> list[tuple[int, dict[str, Any]]]:
        started = time.perf_counter()
        done = []
        for item in list(self._pending):
            index, grads, buffer, request = item
            if request is None or request.Test():
                self._pending.remove(item)
                done.append((index, _unpack(buffer, grads)))
        self.comm.comm_s += time.perf_counter() - started
        return done

    def wait(self) -> list[tuple[int, dict[str, Any]]]:
        started = time.perf_counter()
        done = []
        for index, grads, buffer, request in self._pending:
            if request is not None:
                request.Wait()
            done.append((index, _unpack(buffer, grads)))
        self._pending = []
        if self._staged:
            done += self._reduce_staged()
        seconds = time.perf_counter() - started
        self.comm.waited_s += seconds
        self.comm.comm_s += seconds
        return done

    def _reduce_staged(self) -> list[tuple[int, dict[str, Any]]]:
        staged, self._staged = self._staged, []
        xp = self.backend.xp
        flat = xp.concat([xp.reshape(g, (-1,)) for _, grads in staged for g in grads.values()])
        reduced = self.comm.staged_sum(self.backend, flat, self.weight)
        out, offset = [], 0
        for index, grads in staged:
            layer = {}
            for key, g in grads.items():
                size = _size(g.shape)
                layer[key] = xp.reshape(reduced[offset:offset + size], tuple(g.shape))
                offset += size
            out.append((index, layer))
        return out


def _writable(host: np.ndarray) -> np.ndarray:
    """``host`` as a contiguous array MPI may write into (a copy only where it is not one:
    JAX, for one, hands out read-only host arrays)."""
    return np.require(host, requirements=["C_CONTIGUOUS", "WRITEABLE"])


def _size(shape: tuple[int, ...]) -> int:
    total = 1
    for n in shape:
        total *= int(n)
    return total


def _pack(grads: dict[str, np.ndarray], weight: float) -> np.ndarray:
    """One contiguous buffer holding ``weight * g`` for every gradient, in key order."""
    first = next(iter(grads.values()))
    buffer = np.empty(sum(g.size for g in grads.values()), dtype=first.dtype)
    offset = 0
    for g in grads.values():
        np.multiply(g.reshape(-1), weight, out=buffer[offset:offset + g.size])
        offset += g.size
    return buffer


def _unpack(buffer: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for key, g in like.items():
        out[key] = buffer[offset:offset + g.size].reshape(g.shape)
        offset += g.size
    return out
