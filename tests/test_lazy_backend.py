"""A lazy library (dask.array) through the backend of docs/backends.md, "Writing a backend".

The block is read from the page and run, so the documented backend is the tested one. Its
hook (``materialize`` = ``dask.persist`` every 25 steps and at host reads) must keep task
graphs bounded in ``fit``, ``evaluate``, ``solve_linear`` and the optimizers, and the numbers
must be NumPy's: solve_linear in float64 bit for bit, the digits MLP in float32 within the
tolerance table.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from tolerances import TOLERANCE

import portgd
from portgd import _registry, datasets, optim
from portgd.model import mlp
from portgd.testing import fast_path_runs

dask = pytest.importorskip("dask")
pytest.importorskip("dask.array")

DOC = Path(__file__).resolve().parent.parent / "docs" / "backends.md"
BLOCK = re.compile(r"<!-- docs-test: dask-backend -->\n```python\n(.*?)^```$", re.S | re.M)
A = [[5, 1, -1], [2, -1, 1], [1, 3, -2]]
Y = [1, 4, 0]


def documented_backend() -> str:
    (source,) = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    return source


@pytest.fixture
def lazy(monkeypatch):
    """The documented dask backend, registered for one test; counts calls of the hook."""
    portgd.backend_names()
    monkeypatch.setattr(_registry._registry, "factories", dict(_registry._registry.factories))
    monkeypatch.setattr(_registry._registry, "instances", {})
    monkeypatch.setattr(_registry, "_owner_cache", {})
    monkeypatch.setattr(_registry, "_namespaces", {})
    namespace: dict[str, object] = {"__name__": "dask_backend"}
    exec(compile(documented_backend(), str(DOC), "exec"), namespace)
    backend = portgd.get_backend("dask")
    calls = []
    materialize = backend.materialize

    def counted(tree):
        calls.append(1)
        return materialize(tree)

    monkeypatch.setattr(backend, "materialize", counted)
    backend.calls = calls
    return backend


def graph_size(x) -> int:
    return len(x.__dask_graph__())


def test_the_documented_backend_is_complete_in_at_most_30_lines():
    assert len(documented_backend().strip().splitlines()) <= 30


def test_its_arrays_are_recognised_by_namespace(lazy):
    x = lazy.asarray([[1.0, 2.0]], dtype="float32")
    assert portgd.backend_of(x) is lazy and lazy.holds(x)
    np.testing.assert_array_equal(portgd.to_numpy(x), [[1.0, 2.0]])
    with pytest.raises(portgd.DeviceNotFoundError, match="devices here: 'cpu'"):
        portgd.get_backend("dask", "gpu")


def test_solve_linear_is_numpys_and_its_graph_stays_bounded(lazy):
    iters = 300
    result = portgd.solve_linear(A, Y, iters=iters, log_every=100, backend="dask")
    reference = portgd.solve_linear(A, Y, iters=iters, log_every=100, backend="numpy")
    assert result.losses == reference.losses  # float64 bit for bit
    np.testing.assert_array_equal(lazy.to_numpy(result.x), reference.x)
    assert len(lazy.calls) == iters // lazy.materialize_every
    # at most the iterations since the last persist are pending: 5 tasks per iteration
    assert graph_size(result.x) <= 5 * lazy.materialize_every


def test_the_digits_mlp_trains_as_on_numpy(lazy):
    def train(backend):
        data = datasets.digits((0, 1), backend=backend)
        train, test = data.split(0.25, seed=0, stratify=True)
        model = mlp(64, [32], 1, output="sigmoid", seed=0, backend=backend)
        opt = optim.Adam(lr=0.01)
        history = model.fit(train.X, train.y, loss="bce", optimizer=opt, epochs=3,
                            batch_size=32, verbose=0, seed=1)
        scores = model.evaluate(test.X, test.y, metrics=["accuracy"], batch_size=3)
        return model, opt, history["loss"], scores

    model, opt, losses, scores = train("dask")
    ref_model, _, ref_losses, ref_scores = train("numpy")
    assert scores["accuracy"] >= 0.98 and scores["accuracy"] == ref_scores["accuracy"]
    tol = TOLERANCE["float32"]
    np.testing.assert_allclose(losses, ref_losses, rtol=tol, atol=0)
    for name, ref in ref_model.state_dict().items():
        got = model.state_dict()[name]
        assert np.max(np.abs(got - ref)) <= tol * np.max(np.abs(ref)), name
    # 9 steps an epoch: persisted at each epoch's end; 30 evaluation batches: once, at 25
    for array in (*model.params.values(), *(v for e in opt.state.values() for v in e.values())):
        assert graph_size(array) == 1
    assert len(lazy.calls) == 3 + 1


def test_optimizer_step_keeps_its_state_bounded(lazy):
    rng = np.random.default_rng(0)
    params = {"w": lazy.asarray(rng.normal(size=(4, 3)), dtype="float32")}
    opt = optim.Adam(lr=0.01)
    for _ in range(60):
        params = opt.step(params, {"w": params["w"] * 0.5})
    assert len(lazy.calls) == 60 // lazy.materialize_every
    pending = 60 % lazy.materialize_every
    assert graph_size(params["w"]) <= 1 + 20 * pending
    assert all(graph_size(v) <= 1 + 20 * pending for v in opt.state["w"].values())



def _fast_path():
    """benchmarks/lazy_seed.py's "linear_steps" fast path for dask (one copy of it)."""
    path = DOC.parent.parent / "benchmarks" / "lazy_seed.py"
    spec = importlib.util.spec_from_file_location("lazy_seed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dask_linear_steps


def test_the_seed_example_with_a_fast_path_is_numpys_bit_for_bit(lazy, monkeypatch):
    monkeypatch.setitem(lazy.fast, "linear_steps", _fast_path())
    result = portgd.solve_linear(A, Y, backend="dask")  # the seed example: 10,000 steps
    reference = portgd.solve_linear(A, Y, backend="numpy")
    assert result.losses == reference.losses
    assert result.losses[0] == 5.666666666666667
    np.testing.assert_array_equal(lazy.to_numpy(result.x), reference.x)
    assert len(lazy.calls) == 10_000 // lazy.materialize_every
    assert graph_size(result.x) == 1


def test_the_dask_linear_steps_fast_path_passes_the_conformance_comparison(lazy, monkeypatch):
    monkeypatch.setitem(lazy.fast, "linear_steps", _fast_path())
    runs = fast_path_runs(lazy, "linear_steps", "float64")
    assert len(runs) == 2
    assert [run.mismatches(0.0) for run in runs] == [[], []]
