"""portgd train started by an MPI launcher without --distributed says so (F3)."""

from __future__ import annotations

import pytest

from portgd._launcher import LAUNCHER_VARIABLES, launched_as
from portgd.cli import main

WARNING = ("portgd: warning: started by an MPI launcher as 2 processes without --distributed: "
           "each process trains its own copy and writes the same files; add --distributed to "
           "train one model with all of them")


@pytest.mark.parametrize("environ,expected", [
    ({}, (0, 1)),
    ({"PMI_SIZE": "2", "PMI_RANK": "1"}, (1, 2)),  # MPICH, Intel MPI
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"}, (3, 4)),  # Open MPI
    ({"MV2_COMM_WORLD_SIZE": "3", "MV2_COMM_WORLD_RANK": "0"}, (0, 3)),  # MVAPICH
    ({"PMI_SIZE": "1", "PMI_RANK": "0"}, (0, 1)),  # mpiexec -n 1
    ({"PMI_SIZE": "2"}, (0, 2)),  # no rank: counted as rank 0
    ({"PMI_SIZE": "two", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, (1, 2)),
    ({"PMI_SIZE": "0"}, (0, 1)),
])
def test_launched_as_reads_the_launchers_variables(environ, expected):
    assert launched_as(environ) == expected


def _clear(monkeypatch):
    for names in LAUNCHER_VARIABLES:
        for name in names:
            monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("rank,size,warned", [(0, 2, True), (1, 2, False), (0, 1, False)])
def test_train_without_distributed_under_a_launcher_warns_once_from_rank_0(
        monkeypatch, capsys, rank, size, warned):
    _clear(monkeypatch)
    monkeypatch.setenv("PMI_SIZE", str(size))
    monkeypatch.setenv("PMI_RANK", str(rank))
    assert main(["train", "--epochs", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ([WARNING] if warned else [])
    assert captured.out.startswith("portgd ") and " on numpy cpu; " in captured.out


def test_no_launcher_no_warning(monkeypatch, capsys):
    _clear(monkeypatch)
    assert main(["train", "--epochs", "1", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
