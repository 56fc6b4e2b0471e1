"""benchmarks/sklearn_compare.py: equal settings on both sides and a quick end-to-end run
(no timing asserted: timing belongs in the benchmark itself)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sklearn_compare.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("sklearn_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sklearn_compare"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["sklearn_compare"]


def test_both_estimators_get_the_same_settings(script):
    digits = script.problems(quick=True)[0]
    sk, ours = script.estimators(digits, "numpy", alpha=1e-4).values()
    shared = ("hidden_layer_sizes", "solver", "batch_size", "learning_rate_init", "max_iter",
              "tol", "n_iter_no_change", "shuffle", "random_state", "beta_1", "beta_2",
              "epsilon")
    assert {k: sk.get_params()[k] for k in shared} == {k: ours.get_params()[k] for k in shared}
    # the same L2 step: scikit-learn divides alpha by the batch, portgd by the training set
    n = digits.data[0].shape[0]
    assert ours.alpha / n == pytest.approx(sk.alpha / digits.batch_size)


def test_quick_run_prints_one_row_per_problem(script, capsys):
    assert script.main(["--quick", "--rounds", "1", "--threads", "1", "--markdown"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "problem" not in line]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"\d+\.\d\dx", cells[5])
        assert 0.0 <= float(cells[7]) <= 1.0 or cells[0].startswith("friedman")
