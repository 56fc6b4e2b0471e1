"""benchmarks/step_overhead.py: a short run and its refusals (no timing asserted)."""

from __future__ import annotations

import pytest
from helpers import benchmark_script


@pytest.fixture(scope="module")
def overhead():
    yield from benchmark_script("step_overhead")


def test_a_short_run_prints_every_contender_against_the_direct_loop(overhead, capsys):
    overhead.main(["--case", "8-16-16-4", "--threads", "1", "--steps", "3", "--repeats", "1",
                   "--markdown"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| case | threads | contender | us/step | vs direct |",
                         "|---|---|---:|---:|---:|"]
    rows = [line.strip("| ").split(" | ") for line in lines[2:]]
    assert [row[2] for row in rows] == ["direct", "step", "fit"]
    assert rows[0][4] == "1.000x"
    assert all(row[:2] == ["8-16-16-4 relu/ce b128", "1"] for row in rows)
    assert all(float(row[3]) > 0 for row in rows)


def test_adam_cases_are_refused(overhead, capsys):
    with pytest.raises(SystemExit):
        overhead.main(["--case", "adam", "--steps", "2", "--repeats", "1"])
    assert "pick SGD cases" in capsys.readouterr().err
