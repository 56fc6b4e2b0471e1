"""Data-parallel training over MPI: real ``mpiexec`` runs against the single-process run.

Each test launches ``mpiexec -n P python tests/mpi_worker.py SCENARIO OUT`` (2 ranks, and 3
for uneven shards) and compares what the ranks wrote with the same training in this process
(tests/distributed_cases.py). The figure of merit is the one of issue 11: float64 parameters
within 1e-10 relative after three epochs, for every optimizer, clipping and schedule.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import distributed_cases as cases
import numpy as np
import pytest

import portgd
from portgd.distributed import shard

mpi4py = pytest.importorskip("mpi4py", reason="the mpi extra (mpi4py, mpich) is not installed")

HERE = Path(__file__).parent
WORKER = HERE / "mpi_worker.py"
RTOL = 1e-10  # relative to the largest magnitude of each parameter array or log series


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel's, in a venv
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec: pip install 'portgd[mpi]'")
    return found


def launch(ranks: int, scenario: str, out: Path, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [_mpiexec(), "-n", str(ranks), sys.executable, str(WORKER), scenario, str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=environment)


def _check(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"mpiexec failed ({done.returncode}):\n{done.stderr[-4000:]}"


def _read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _reference(name: str) -> dict[str, np.ndarray]:
    model, history = cases.train(name)
    found = {f"param/{k}": v for k, v in model.state_dict().items()}
    found.update({f"log/{k}": np.asarray(v) for k, v in history.history.items()})
    return found


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    assert got.keys() == want.keys(), where
    for key, value in want.items():
        scale = float(np.max(np.abs(value)))
        error = float(np.max(np.abs(got[key] - value)))
        assert error <= RTOL * scale, f"{where} {key}: max error {error:.3g}, scale {scale:.3g}"


def assert_ranks_identical(out: Path, name: str, ranks: int) -> dict[str, np.ndarray]:
    first = _read(out / f"{name}-rank0.npz")
    for rank in range(1, ranks):
        other = _read(out / f"{name}-rank{rank}.npz")
        for key, value in first.items():
            np.testing.assert_array_equal(other[key], value, err_msg=f"{name} rank {rank} {key}")
    return first


def test_shards_cover_the_batch_in_order_with_sizes_differing_by_at_most_one():
    for n in (1, 6, 16, 17):
        for size in range(1, n + 1):
            bounds = [shard(n, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.fixture(scope="module")
def references():
    return {name: _reference(name) for name in cases.CASES}


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """The 2-rank run of every case, which also trains two of three epochs and writes the
    checkpoint ckpt-2.npz that the 3-rank test resumes from (made here, so either test runs
    alone)."""
    out = tmp_path_factory.mktemp("mpi2")
    _check(launch(2, "equivalence+resume_save", out))
    return out


def test_two_ranks_equal_one_process(two_rank_run, references):
    """Every optimizer, clipping, schedule, sum reduction and Dropout on 2 ranks."""
    for name in cases.CASES:
        got = assert_ranks_identical(two_rank_run, name, 2)
        assert_close(got, references[name], f"2 ranks, {name}")


def test_three_ranks_equal_one_process_and_resume_what_two_ranks_wrote(two_rank_run,
                                                                       tmp_path, references):
    """3 ranks shard 16 as 6/5/5, the short batch of 6 as 2/2/2, and the 18 validation
    samples as 6/6/6. The third epoch resumes, on 3 ranks and on one process, from the
    checkpoint the 2-rank run wrote after epoch 2."""
    shutil.copy(two_rank_run / "ckpt-2.npz", tmp_path / "ckpt-2.npz")
    _check(launch(3, "equivalence+resume_load", tmp_path))
    for name in cases.CASES:
        got = assert_ranks_identical(tmp_path, name, 3)
        assert_close(got, references[name], f"3 ranks, {name}")
    resumed = assert_ranks_identical(tmp_path, "resumed", 3)
    uninterrupted = references["adam"]
    for key in [k for k in uninterrupted if k.startswith("param/")]:
        assert_close({key: resumed[key]}, {key: uninterrupted[key]}, "2 -> 3 ranks")
    for key in [k for k in resumed if k.startswith("log/")]:  # epoch 3 only
        assert_close({key: resumed[key]}, {key: uninterrupted[key][-1:]}, "2 -> 3 ranks")
    # and on one process, without MPI
    model, _ = cases.resume(tmp_path / "ckpt-2.npz")
    for key, value in model.state_dict().items():
        assert_close({key: value}, {key: uninterrupted[f"param/{key}"]}, "2 -> 1 rank")


def test_a_mismatch_or_too_many_ranks_is_refused_on_every_rank(tmp_path):
    """(The same launch checks the Communicator's collectives first.)"""
    _check(launch(2, "mismatches", tmp_path))
    for rank in (0, 1):
        found = json.loads((tmp_path / f"collectives-rank{rank}.json").read_text())
        assert found == {"numpy": [0.0, 3.0, 6.0], "strict": [0.0, 3.0, 6.0],
                         "strict_type": "array_api_strict", "broadcast": {"from": 0},
                         "allgather": [0, 10], "size": 2}
        said = json.loads((tmp_path / f"mismatches-rank{rank}.json").read_text())
        assert "the parameters: rank(s) [1] differ from rank 0" in said["seed"]
        assert "the optimizer: rank(s) [1] differ from rank 0" in said["lr"]
        assert "the fit arguments: rank(s) [1] differ from rank 0" in said["batch_size"]
        assert "the data values: rank(s) [1] differ from rank 0" in said["data"]
        assert "2 ranks cannot share a global batch of 1 samples" in said["too_many_ranks"]


@pytest.mark.parametrize("how", ["exception", "kill"])
def test_a_failing_rank_ends_the_whole_job_instead_of_hanging(how, tmp_path):
    """Rank 1 fails at the end of epoch 1 of 50 while rank 0 waits in an allreduce: the job
    ends because of that rank (its message, or mpiexec's report of the killed process), not
    because the subprocess timeout of this test ran out."""
    done = launch(2, how, tmp_path, timeout=60)
    if how == "exception":  # fault_guard: the rank's one line, then MPI_Abort(1)
        assert done.returncode == 1, done.stderr[-3000:]
        assert ("portgd: rank 1 of 2 failed: RuntimeError: injected failure; ending the "
                "whole job") in done.stderr
        assert "rank 0 of 2 failed" not in done.stderr
    else:  # mpiexec noticed the SIGKILL and passes its status on
        assert done.returncode == 9, done.stderr[-3000:]
        assert "Killed (signal 9)" in done.stdout + done.stderr


def _portgd_train(ranks: int, *options: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "portgd", "train",
               "--distributed", "--quiet", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("options,status,message", [
    (["--lr", "1e3", "--epochs", "3", "--optimizer", "sgd"], 3,
     "portgd: error: training diverged in epoch 1: "),
    (["--save", "/proc/portgd-refused.npz"], 2,
     "portgd: error: --save /proc/portgd-refused.npz: cannot create files in /proc"),
    (["--batch-size", "100000"], 2,
     "portgd: error: --batch-size 100000 is larger than the 288 training samples"),
], ids=["diverges", "save-refused", "batch-too-large"])
def test_an_error_every_rank_raises_alike_is_one_line_and_the_usual_exit_status(
        options, status, message, tmp_path):
    """As without --distributed: divergence exits 3 and a refused argument 2, with one
    line from rank 0, not an MPI_Abort per rank."""
    done = _portgd_train(2, *options, cwd=tmp_path)
    assert done.returncode == status, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr[-3000:]
    assert "Abort" not in done.stderr


def test_a_refusal_on_one_rank_only_ends_the_job_naming_that_rank(tmp_path):
    done = launch(2, "cli_one_rank", tmp_path)
    assert done.returncode not in (0, 2, 3), done.stderr[-3000:]
    # Both ranks abort: whichever MPI_Abort lands first prints. Rank 1 says "rank 1 of 2
    # failed: <its error>", rank 0 "rank(s) [1] failed: <rank 1's error>"; either names the
    # failing rank and carries its message.
    refused = "InputError: --save /proc/portgd-refused.npz: cannot create files in /proc"
    assert re.search(r"portgd: rank (1 of 2 failed|0 of 2 failed: DistributedError: "
                     r"rank\(s\) \[1\] failed): " + re.escape(refused), done.stderr), (
        done.stderr[-3000:])
    assert not (tmp_path / "fine.npz").exists()


def test_without_mpi4py_the_error_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mpi(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpi)
    from portgd.distributed import Communicator

    with pytest.raises(portgd.InputError, match=r"pip install 'portgd\[mpi\]'"):
        Communicator()


@pytest.mark.parametrize("extra", [[], ["--dropout", "0.2"]], ids=["plain", "dropout"])
def test_portgd_train_distributed_equals_portgd_train(extra, tmp_path, capsys):
    """Issue 11's "done" check: `mpiexec -n 2 portgd train --distributed --dtype float64`
    gives the held-out loss and parameters of `portgd train --dtype float64` to 1e-10
    (with Dropout too: the ranks draw the global batch's masks)."""
    from portgd.cli import main

    options = ["train", "--dtype", "float64", "--epochs", "3", "--json", "--quiet", *extra]
    assert main([*options, "--save", str(tmp_path / "one.npz")]) == 0
    one = json.loads(capsys.readouterr().out)
    command = [_mpiexec(), "-n", "2", sys.executable, "-m", "portgd", *options, "--distributed",
               "--save", str(tmp_path / "two.npz")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    _check(done)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, "only rank 0 prints"
    two = json.loads(lines[0])
    for key in ("test_loss", "train_loss", "test_accuracy"):
        assert abs(two[key] - one[key]) <= RTOL * abs(one[key]), key
    saved = {name: _read(tmp_path / name) for name in ("one.npz", "two.npz")}
    params = [k for k in saved["one.npz"] if k.startswith("param/")]
    assert params
    assert_close({k: saved["two.npz"][k] for k in params}, {k: saved["one.npz"][k] for k in params},
                 "portgd train --distributed")



def test_mpiexec_without_distributed_warns_once_and_the_header_counts_ranks():
    """Forgetting --distributed under mpiexec: one warning line (rank 0's), each rank trains
    its own copy; with --distributed the header says how many ranks train one model."""
    options = [sys.executable, "-m", "portgd", "train", "--epochs", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    alone = subprocess.run([_mpiexec(), "-n", "2", *options], capture_output=True, text=True,
                           timeout=120, env=env)
    _check(alone)
    warnings = [line for line in alone.stderr.splitlines() if "warning" in line]
    assert warnings == ["portgd: warning: started by an MPI launcher as 2 processes without "
                        "--distributed: each process trains its own copy and writes the same "
                        "files; add --distributed to train one model with all of them"]
    assert alone.stdout.count(" on numpy cpu; ") == 2  # two independent runs
    together = subprocess.run([_mpiexec(), "-n", "2", *options, "--distributed"],
                              capture_output=True, text=True, timeout=120, env=env)
    _check(together)
    assert "warning" not in together.stderr
    header = together.stdout.splitlines()[0]
    assert " (288 train, 72 test, 64 features) on 2 ranks of numpy cpu; " in header

SCALING_DOC = HERE.parent / "docs" / "scaling.md"
SCALING_SCRIPT = HERE.parent / "benchmarks" / "scaling.py"


def _model_blocks() -> list[tuple[list[str], str]]:
    """(arguments, printed output) of every ``$ python benchmarks/scaling.py model`` block."""
    text = SCALING_DOC.read_text(encoding="utf-8")
    found = []
    for block in text.split("```text\n")[1:]:
        body = block.split("```", 1)[0]
        first, _, rest = body.partition("\n")
        if first.startswith("$ python benchmarks/scaling.py model"):
            found.append((first.split()[3:], rest))
    return found


def test_the_cost_model_tables_of_scaling_md_are_what_the_script_prints():
    blocks = _model_blocks()
    assert blocks, "docs/scaling.md shows no cost-model run"
    for arguments, shown in blocks:
        done = subprocess.run([sys.executable, str(SCALING_SCRIPT), *arguments],
                              capture_output=True, text=True, check=True)
        assert done.stdout.strip() == shown.strip(), arguments


def test_the_scaling_benchmark_runs(tmp_path):
    """`benchmarks/scaling.py run --quick`: every configuration of the measured table, on a
    tiny model (timings are not asserted; docs/scaling.md reports them)."""
    done = subprocess.run([sys.executable, str(SCALING_SCRIPT), "run", "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [(r["ranks"], r["threads"], r["global_batch"], r["overlap"]) for r in rows] == [
        (1, 1, 64, None), (1, 2, 64, None), (2, 1, 64, True), (2, 1, 64, False),
        (1, 1, 128, None), (2, 1, 128, True)]
    assert all(r["step_ms"] > 0 for r in rows)
    assert all(r["comm_ms"] >= r["waited_ms"] >= 0 for r in rows if r["ranks"] > 1)


def test_the_staging_measurement_runs():
    done = subprocess.run([sys.executable, str(SCALING_SCRIPT), "staging", "--backend",
                           "array_api_strict", "--widths", "8,4,2"],
                          capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    assert found["bytes"] == 4 * (8 * 4 + 4 + 4 * 2 + 2) and found["staging_ms"] > 0


def test_host_buffers_handed_to_mpi_are_writable_and_contiguous():
    """Staging writes the sum into the host copy: a read-only array (JAX gives those) or a
    strided view is copied first; a writable contiguous one is used as it is."""
    from portgd.distributed import _writable

    frozen = np.arange(4.0)
    frozen.flags.writeable = False
    assert _writable(frozen).flags.writeable and _writable(frozen) is not frozen
    strided = np.arange(8.0)[::2]
    assert _writable(strided).flags.c_contiguous
    plain = np.arange(4.0)
    assert _writable(plain) is plain


STAGED_STEP = """
import array_api_strict as xp
import portgd
import portgd.distributed as distributed

comm = distributed.Communicator()  # one process: the sum over ranks is the array itself
reducer = comm.gradient_reducer(portgd.get_backend("array_api_strict"))


def looked_up(x):
    raise AssertionError("a training step looked its backend up")


distributed.backend_of = looked_up
reducer.begin(0.5)
reducer.start(2, {"weight": xp.asarray([[1.0, 2.0], [3.0, 4.0]]), "bias": xp.asarray([6.0])})
(index, grads), = reducer.wait()
assert index == 2, index
assert grads["weight"].shape == (2, 2) and grads["weight"].dtype == xp.float64
assert xp.all(grads["weight"] == xp.asarray([[0.5, 1.0], [1.5, 2.0]]))
assert xp.all(grads["bias"] == xp.asarray([3.0]))
print("ok")
"""


def test_the_staged_reducer_uses_the_backend_fit_resolved_once():
    """fit hands the model's Backend to gradient_reducer; a staged step (here
    array_api_strict) scales, sums and unpacks without looking the backend up again."""
    done = subprocess.run([sys.executable, "-c", STAGED_STEP], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
