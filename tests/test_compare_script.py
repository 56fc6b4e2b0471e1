"""benchmarks/compare.py: the rounds driver and a short end-to-end run (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from portgd import bench

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interleaved_warms_up_then_rotates_the_order(compare):
    calls = []

    def contender(name):
        def run():
            calls.append(name)
            return float(len(calls))

        return run

    seconds = compare.interleaved({n: contender(n) for n in "abc"}, repeats=4)
    assert calls == list("abc" "abc" "bca" "cab" "abc")
    # each contender's times in round order, warm-up (calls 1-3) dropped
    assert seconds == {"a": [4.0, 9.0, 11.0, 13.0], "b": [5.0, 7.0, 12.0, 14.0],
                       "c": [6.0, 8.0, 10.0, 15.0]}


def test_hand_written_loop_does_the_math_of_fit(compare):
    """After two epochs on the same batches, the hand-written loop's weight changes agree
    with portgd's to float32 rounding."""
    import portgd

    case = bench.Case("small", (6, 5, 4, 3), "relu", "softmax", 4)
    x, y = bench.synthetic(case, 16)
    initial = list(bench.build(case, "numpy").state_dict().values())
    epoch, hand = compare.hand_written(case, x, y, np)
    epoch()
    epoch()
    model = bench.build(case, "numpy")
    model.fit(x, y, loss=case.loss(), optimizer=portgd.optim.SGD(lr=0.01), epochs=2,
              batch_size=4, verbose=0, seed=0)
    for start, mine, theirs in zip(initial, model.state_dict().values(), hand, strict=True):
        assert np.abs(mine - start).max() > 1e-4  # the weights really moved
        np.testing.assert_allclose(theirs - start, mine - start, rtol=1e-4, atol=1e-7)


def test_a_short_run_reports_every_contender(compare, tmp_path, capsys):
    out = tmp_path / "compare.json"
    assert compare.main(["--threads", "1", "--backend", "numpy", "--case", "784-128-1",
                         "--steps", "2", "--repeats", "2", "--json", str(out),
                         "--markdown"]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["case"] == "784-128-1 sigmoid/bce b128"
    assert set(row["ms_per_step"]) == {"portgd-numpy@cpu", "numpy-hand", "torch-eager-cpu"}
    assert set(row["ratios"]["portgd-numpy@cpu"]) == {"numpy-hand", "torch-eager-cpu"}
    assert all(v > 0 for v in row["ms_per_step"].values())
    assert len(row["rss_mb_per_epoch"]) == 6
    assert row["gflop_per_step"] == pytest.approx(bench.CASES[0].flops_per_sample() * 128 / 1e9)
    table = capsys.readouterr().out
    assert table.count("| 784-128-1 sigmoid/bce b128 |") == 3
