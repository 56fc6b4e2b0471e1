"""benchmarks/compare.py: the rounds driver and a short end-to-end run (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from portgd import bench

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_interleaved_warms_up_then_runs_each_contender_once_per_round(compare):
    calls = []

    def contender(name):
        def run():
            calls.append(name)
            return float(len(calls))  # the "time" is the call's position

        return run

    names = list("abcd")
    seconds = compare.interleaved({n: contender(n) for n in names}, repeats=6)
    assert calls[:4] == names  # warm-up, not reported
    rounds = [calls[i:i + 4] for i in range(4, len(calls), 4)]
    assert len(rounds) == 6 and all(sorted(r) == names for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    for name in names:
        assert seconds[name] == [float(4 + 4 * k + r.index(name) + 1)
                                 for k, r in enumerate(rounds)]


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.01), ("adam", 0.001)])
def test_hand_written_loop_does_the_math_of_fit(compare, optimizer, lr):
    """After two epochs on the same batches, the hand-written loop's weight changes agree
    with portgd's to float32 rounding, for SGD and for Adam."""
    import portgd

    case = compare.Case("small", (6, 5, 4, 3), "relu", "softmax", 4, optimizer=optimizer,
                        lr=lr)
    x, y = bench.synthetic(case, 16)
    initial = list(bench.build(case, "numpy").state_dict().values())
    epoch, hand = compare.hand_written(case, x, y, np)
    epoch()
    epoch()
    model = bench.build(case, "numpy")
    model.fit(x, y, loss=case.loss(), optimizer=portgd.optim.make_optimizer(optimizer, lr=lr),
              epochs=2, batch_size=4, verbose=0, seed=0)
    for start, mine, theirs in zip(initial, model.state_dict().values(), hand, strict=True):
        assert np.abs(mine - start).max() > 1e-4  # the weights really moved
        np.testing.assert_allclose(theirs - start, mine - start, rtol=1e-4, atol=1e-7)


def test_the_small_cases_are_offered(compare):
    """The Python-bound cases of issue 14 (SGD on 8-16-16-4, Adam on 64-128-64-10)."""
    small, digits = compare.select_cases(["8-16-16-4", "64-128-64-10"])
    assert (small.sizes, small.batch_size, small.optimizer) == ((8, 16, 16, 4), 128, "sgd")
    assert (digits.sizes, digits.batch_size, digits.optimizer) == ((64, 128, 64, 10), 32, "adam")
    assert len(compare.select_cases(None)) == len(bench.CASES) + 2


def test_a_short_run_reports_every_contender(compare, tmp_path, capsys):
    out = tmp_path / "compare.json"
    torch = importlib.util.find_spec("torch") is not None  # not part of the test extra
    args = ["--threads", "1", "--backend", "numpy", "--case", "784-128-1", "--steps", "2",
            "--repeats", "2", "--json", str(out), "--markdown"]
    assert compare.main(args + ([] if torch else ["--no-torch"])) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["case"] == "784-128-1 sigmoid/bce b128" and row["threads"] == 1
    eager = {"torch-eager-cpu"} if torch else set()
    assert set(row["ms_per_step"]) == {"portgd-numpy@cpu", "numpy-hand"} | eager
    assert set(row["ratios"]["portgd-numpy@cpu"]) == {"numpy-hand"} | eager
    assert all(v > 0 for v in row["ms_per_step"].values())
    assert len(row["rss_mb_per_epoch"]) == 6
    assert row["gflop_per_step"] == pytest.approx(bench.CASES[0].flops_per_sample() * 128 / 1e9)
    table = capsys.readouterr().out
    assert table.count("| 784-128-1 sigmoid/bce b128 | 1 |") == len(row["ms_per_step"])
