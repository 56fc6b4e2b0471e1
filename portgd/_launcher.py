"""What an MPI launcher (``mpiexec``, ``mpirun``, ``srun``) told this process, from its
environment variables alone: no MPI library is imported or initialised.

``portgd train`` without ``--distributed`` uses it to notice that it was started as one of
several processes, each of which would train its own copy of the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: (world size, rank) variables: MPICH/Intel MPI (PMI), Open MPI, MVAPICH
LAUNCHER_VARIABLES = (
    ("PMI_SIZE", "PMI_RANK"),
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"),
)


def launched_as(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(rank, size)`` of this process as an MPI launcher set them; ``(0, 1)`` without one.

    The first pair of :data:`LAUNCHER_VARIABLES` whose size is a whole number is used; a
    missing or malformed rank counts as 0.
    """
    env = os.environ if environ is None else environ
    for size_name, rank_name in LAUNCHER_VARIABLES:
        size, rank = env.get(size_name, "").strip(), env.get(rank_name, "0").strip()
        if size.isdigit() and int(size) >= 1:
            return (int(rank) if rank.isdigit() else 0), int(size)
    return 0, 1
