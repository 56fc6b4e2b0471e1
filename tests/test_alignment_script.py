"""benchmarks/alignment.py: weights placed at each offset, and a short run (no timing asserted)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import benchmark_script


@pytest.fixture(scope="module")
def alignment():
    yield from benchmark_script("alignment")


@pytest.mark.parametrize("offset", [0, 16, 32, 48])
def test_at_offset_places_a_copy_that_many_bytes_past_a_boundary(alignment, offset):
    x = np.arange(35, dtype=np.float32).reshape(5, 7)
    placed = alignment.at_offset(x, offset)
    assert placed.ctypes.data % 64 == offset
    np.testing.assert_array_equal(placed, x)
    assert placed.dtype == x.dtype and not np.shares_memory(placed, x)


def test_the_placed_model_has_the_initial_weights_at_the_offset(alignment):
    case = alignment.compare.select_cases(["8-16-16-4"])[0]
    reference = alignment.bench.build(case, "numpy").state_dict()
    for offset in alignment.OFFSETS:
        model = alignment.placed_model(case, offset)
        assert {name: p.ctypes.data % 64 for name, p in model.params.items()} == dict.fromkeys(
            reference, offset)
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(value, reference[name])


def test_a_short_run_prints_one_row_per_offset(alignment, capsys):
    alignment.main(["--case", "8-16-16-4", "--threads", "1", "--steps", "2", "--repeats", "1",
                    "--markdown"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| case | threads | weights at | ms/step | vs offset 0 |"
    rows = [line.split(" | ") for line in lines[2:]]
    assert [row[2] for row in rows] == ["0 bytes", "16 bytes", "32 bytes", "48 bytes"]
    assert rows[0][4] == "1.000x |"
    assert all(row[1] == "1" and row[0] == "| 8-16-16-4 relu/ce b128" for row in rows)
