"""An in-process stand-in for an mpi4py communicator: the ranks of a job as threads.

``run_ranks(size, work)`` calls ``work(comm)`` on ``size`` threads at once, each with a
:class:`ThreadComm` of that rank, and returns each rank's result (or raises the first rank's
exception). It implements the calls :class:`portgd.distributed.Communicator` makes
(``Allreduce``/``Iallreduce`` sums, ``bcast``, ``allgather``, ``Barrier``, ``Abort``), so
``fit(distributed=Communicator(ThreadComm...))`` runs its whole data-parallel path in one
process, where a mutation run (tools/mutation.py) can see it; tests/test_distributed.py
runs the same code under a real ``mpiexec``.

Collectives complete when every rank has called them (``Iallreduce`` too, though its
request reports completion only from its second ``Test()``). Sums add the ranks' buffers in
rank order. ``Abort`` breaks the group's barrier, so the other ranks fail instead of waiting
(an exception that leaves a rank's ``work`` without ``Abort`` leaves the others waiting up to
``TIMEOUT_S``, after which the barrier is broken for all).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

TIMEOUT_S = 30.0


class Aborted(RuntimeError):
    """``Abort(code)`` on a thread rank: raised instead of ending the process."""

    def __init__(self, code: int) -> None:
        super().__init__(f"MPI_Abort({code})")
        self.code = code


class _Barrier:
    """A cyclic barrier whose release is final: a rank released from a collective returns
    even if another rank breaks the barrier right after (``threading.Barrier`` would raise
    in the released rank then)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.generation = 0
        self.broken = False
        self.cond = threading.Condition()

    def wait(self) -> None:
        with self.cond:
            if self.broken:
                raise threading.BrokenBarrierError
            generation = self.generation
            self.arrived += 1
            if self.arrived == self.parties:
                self.arrived = 0
                self.generation += 1
                self.cond.notify_all()
                return
            if not self.cond.wait_for(
                    lambda: self.generation != generation or self.broken, TIMEOUT_S):
                self.broken = True  # the ranks still to come fail at once, not after 30 s
                self.cond.notify_all()
                raise TimeoutError(f"a collective waited {TIMEOUT_S} s for the other ranks")
            if self.generation == generation:
                raise threading.BrokenBarrierError

    def abort(self) -> None:
        with self.cond:
            self.broken = True
            self.cond.notify_all()


class _Group:
    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = _Barrier(size)
        self.lock = threading.Lock()
        #: the values of collective number k (each rank counts its calls), until all read
        self.values: dict[int, list[Any]] = {}
        self.reads: dict[int, int] = {}


class _Request:
    """The request of a collective that has completed but, like a real one in flight, says
    so only from its second ``Test()`` (so ``fit`` also meets requests not yet done)."""

    def __init__(self) -> None:
        self.tests = 0

    def Test(self) -> bool:  # mpi4py's method names
        self.tests += 1
        return self.tests > 1

    def Wait(self) -> None:
        return None


class ThreadComm:
    """Rank ``rank`` of a :class:`_Group` of threads, with mpi4py's method names."""

    def __init__(self, group: _Group, rank: int) -> None:
        from mpi4py import MPI

        self._group = group
        self._rank = rank
        self._calls = 0
        self._in_place = MPI.IN_PLACE
        self.aborted: int | None = None

    def Get_rank(self) -> int:
        return self._rank

    def Get_size(self) -> int:
        return self._group.size

    def allgather(self, value: Any) -> list[Any]:
        group, call = self._group, self._calls
        self._calls += 1
        with group.lock:
            group.values.setdefault(call, [None] * group.size)[self._rank] = value
        group.barrier.wait()
        with group.lock:
            everyone = list(group.values[call])
            group.reads[call] = group.reads.get(call, 0) + 1
            if group.reads[call] == group.size:
                del group.values[call], group.reads[call]
        return everyone

    def bcast(self, value: Any, root: int = 0) -> Any:
        return self.allgather(value)[root]

    def Barrier(self) -> None:
        self.allgather(None)

    def Allreduce(self, sendbuf: Any, recvbuf: np.ndarray, op: Any = None) -> None:
        mine = recvbuf if sendbuf is self._in_place else sendbuf
        buffers = self.allgather(np.array(mine, copy=True))
        total = buffers[0].copy()
        for other in buffers[1:]:
            total += other
        recvbuf[...] = total

    def Iallreduce(self, sendbuf: Any, recvbuf: np.ndarray, op: Any = None) -> _Request:
        self.Allreduce(sendbuf, recvbuf, op)
        return _Request()

    def Abort(self, code: int = 1) -> None:
        self.aborted = code
        self._group.barrier.abort()
        raise Aborted(code)


def run_ranks(size: int, work: Callable[[ThreadComm], Any]) -> list[Any]:
    """``[work(comm of rank r) for r in range(size)]``, the ranks running at once.

    If a rank raises, the exception of the lowest failing rank is raised here (:func:`outcomes`
    gives every rank's).
    """
    results, errors = outcomes(size, work)
    failed = [rank for rank in range(size) if errors[rank] is not None]
    if failed:
        raise errors[failed[0]]
    return results


def outcomes(size: int, work: Callable[[ThreadComm], Any]
             ) -> tuple[list[Any], list[BaseException | None]]:
    """Every rank's result and exception (None where there is none)."""
    group = _Group(size)
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def body(rank: int) -> None:
        try:
            results[rank] = work(ThreadComm(group, rank))
        except BaseException as exc:
            errors[rank] = exc

    threads = [threading.Thread(target=body, args=(rank,), name=f"rank {rank}")
               for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 2)
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError("a thread rank did not finish")
    return results, errors
