"""Run under ``mpiexec -n P python tests/mpi_worker.py SCENARIO OUTDIR`` by test_distributed.py.

Every scenario trains on the same data as the single-process reference in
test_distributed.py (``CASES``, ``data``, ``train``) and writes what the test compares.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import distributed_cases as cases  # tests/ is sys.path[0] when run as a script
import numpy as np

import portgd
from portgd.callbacks import Callback, ModelCheckpoint
from portgd.distributed import Communicator


def _save(out: Path, name: str, comm: Communicator, model, history) -> None:
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    for key, values in history.history.items():
        arrays[f"log/{key}"] = np.asarray(values, dtype=np.float64)
    np.savez(out / f"{name}-rank{comm.rank}.npz", **arrays)


def equivalence(out: Path, comm: Communicator) -> None:
    """Every case of cases.CASES, data-parallel."""
    for name in cases.CASES:
        model, history = cases.train(name, distributed=comm)
        _save(out, name, comm, model, history)


def resume_save(out: Path, comm: Communicator) -> None:
    """Two of three epochs with a checkpoint after each (rank 0 writes)."""
    cases.train("adam", distributed=comm, epochs=2,
                callbacks=[ModelCheckpoint(out / "ckpt-{epoch}.npz")])
    assert (out / "ckpt-2.npz").is_file()  # every rank sees the file once fit returns


def resume_load(out: Path, comm: Communicator) -> None:
    """The third epoch from the checkpoint another rank count wrote."""
    model, history = cases.resume(out / "ckpt-2.npz", distributed=comm)
    _save(out, "resumed", comm, model, history)


def mismatches(out: Path, comm: Communicator) -> None:
    """Start-up checks: each refusal is raised on every rank alike."""
    said = {}
    for what in ("seed", "lr", "batch_size", "data", "too_many_ranks"):
        try:
            cases.mismatched(what, comm)
        except portgd.DistributedError as exc:
            said[what] = str(exc)
        else:
            said[what] = "accepted"
    (out / f"mismatches-rank{comm.rank}.json").write_text(json.dumps(said))


def collectives(out: Path, comm: Communicator) -> None:
    """The Communicator's own methods, on NumPy and on a staged backend."""
    import array_api_strict as xp

    mine = np.arange(3.0) * (comm.rank + 1)
    staged = comm.allreduce(xp.asarray(mine))
    comm.barrier()
    found = {
        "numpy": comm.allreduce(mine).tolist(),
        "strict": np.asarray(staged).tolist(),
        "strict_type": type(staged).__module__.split(".")[0],
        "broadcast": comm.broadcast({"from": comm.rank}),
        "allgather": comm.allgather(comm.rank * 10),
        "size": comm.size,
    }
    (out / f"collectives-rank{comm.rank}.json").write_text(json.dumps(found))


class _Fail(Callback):
    def __init__(self, rank: int, how: str) -> None:
        self.rank, self.how = rank, how

    def on_epoch_end(self, epoch, logs):
        if self.distributed.rank != self.rank:
            return
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("injected failure")


def fault(out: Path, comm: Communicator, how: str) -> None:
    cases.train("sgd", distributed=comm, epochs=50, callbacks=[_Fail(1, how)])


def cli_one_rank(out: Path) -> None:
    """`portgd train --distributed` where only rank 1's --save is refused before fit."""
    from portgd.cli import main as cli

    rank = Communicator().rank
    save = "/proc/portgd-refused.npz" if rank == 1 else str(out / "fine.npz")
    sys.exit(cli(["train", "--distributed", "--epochs", "1", "--quiet", "--save", save]))


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    if scenario == "cli_one_rank":
        return cli_one_rank(out)
    comm = Communicator(overlap=os.environ.get("PORTGD_TEST_OVERLAP", "1") == "1")
    if scenario == "equivalence":
        equivalence(out, comm)
    elif scenario == "equivalence+resume_save":
        equivalence(out, comm)
        resume_save(out, comm)
    elif scenario == "equivalence+resume_load":
        equivalence(out, comm)
        resume_load(out, comm)
    elif scenario == "mismatches":
        collectives(out, comm)
        mismatches(out, comm)
    elif scenario in ("exception", "kill"):
        fault(out, comm, scenario)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
