"""Every public entry point with a backend registered at run time for an unknown library.

The library is JAX with the built-in jax backend hidden, so portgd knows nothing of it: the
factory carries no ``library`` metadata, the Backend no ``array_types``, its arrays live in a
module (``jaxlib``) named unlike the import name, are immutable, and have no 64-bit types.
The registry can only recognise them by asking the backends and, as here, by
array-api-compat's namespace detection. Each check compares numbers with the numpy backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import _registry, datasets, losses, metrics, optim
from portgd.backends import Backend
from portgd.model import mlp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

NAME = "unheard"
TOL = 1e-5  # float32, relative to the largest magnitude (tests/tolerances.py)


def create(device=None):
    return Backend(NAME, jnp, jax.devices("cpu")[0], library="jax", version=jax.__version__)


@pytest.fixture
def unheard(monkeypatch):
    """The run-time backend, with the built-in jax backend out of the registry."""
    portgd.backend_names()  # the entry points are loaded, then copied without jax
    factories = {k: v for k, v in _registry._registry.factories.items() if k != "jax"}
    monkeypatch.setattr(_registry._registry, "factories", factories)
    monkeypatch.setattr(_registry._registry, "instances", {})
    monkeypatch.setattr(_registry, "_owner_cache", {})
    monkeypatch.setattr(_registry, "_namespaces", {})
    portgd.register_backend(NAME, create)
    return portgd.get_backend(NAME)


def close(got, want, tol=TOL):
    want = np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want))), 1e-30) if want.size else 1.0
    assert np.max(np.abs(np.asarray(got, dtype=np.float64) - want)) <= tol * scale


def test_backend_of_to_numpy_and_namespace(unheard):
    x = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
    assert type(x).__module__.split(".")[0] != "jax"  # no module name to match
    assert portgd.backend_of(x) is unheard
    assert _registry.namespace_of(x) is jnp
    np.testing.assert_array_equal(portgd.to_numpy(x), [[1.0, 2.0], [3.0, 4.0]])
    assert unheard.holds(x) and unheard.index_dtype == jnp.int32


def test_an_object_no_backend_owns_is_named_with_its_namespace(unheard, monkeypatch):
    monkeypatch.setattr(_registry._registry, "factories",
                        {k: v for k, v in _registry._registry.factories.items() if k != NAME})
    with pytest.raises(portgd.BackendNotFoundError, match=r"namespace jax\.numpy.*register"):
        portgd.backend_of(jnp.ones(2))
    with pytest.raises(portgd.BackendNotFoundError, match="not arrays of the array API"):
        portgd.backend_of(object())


def test_solve_linear_with_its_arrays(unheard):
    A, Y = [[5.0, 1.0, -1.0], [2.0, -1.0, 1.0], [1.0, 3.0, -2.0]], [1.0, 4.0, 0.0]
    result = portgd.solve_linear(jnp.asarray(A), jnp.asarray(Y), dtype="float32")
    reference = portgd.solve_linear(A, Y, dtype="float32", backend="numpy")
    assert portgd.backend_of(result.x) is unheard
    close(portgd.to_numpy(result.x), portgd.to_numpy(reference.x))
    close(result.losses, reference.losses)


def test_optimizer_step_losses_and_metrics(unheard):
    rng = np.random.default_rng(0)
    p = {"w": rng.normal(size=(3, 2)).astype(np.float32)}
    g = {"w": rng.normal(size=(3, 2)).astype(np.float32)}
    got = optim.Adam(lr=0.1).step({"w": jnp.asarray(p["w"])}, {"w": jnp.asarray(g["w"])})
    want = optim.Adam(lr=0.1).step(p, g)
    assert portgd.backend_of(got["w"]) is unheard
    close(portgd.to_numpy(got["w"]), want["w"])
    yhat = rng.random(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0, 2], dtype=np.int32)
    value, grad = losses.MSE()(jnp.asarray(yhat), jnp.asarray(yhat * 0.5))
    want_value, want_grad = losses.MSE()(yhat, yhat * 0.5)
    close(portgd.to_numpy(value), want_value)
    close(portgd.to_numpy(grad), want_grad)
    ce = losses.CategoricalCrossEntropy(from_logits=False)
    close(portgd.to_numpy(ce.value(jnp.asarray(yhat), jnp.asarray(labels))),
          ce.value(yhat, labels.astype(np.int64)))
    accuracy = metrics.get("accuracy").bind(jnp, 0.5, False)
    hits = accuracy.batch_sum(jnp.asarray(yhat), jnp.asarray(labels))
    assert float(portgd.to_numpy(hits)) == float(np.sum(np.argmax(yhat, axis=1) == labels))


def test_datasets_splits_and_scalers(unheard):
    data = datasets.digits((0, 1), backend=NAME)
    reference = datasets.digits((0, 1), backend="numpy")
    assert portgd.backend_of(data.X) is unheard and data.y.dtype == jnp.int32
    train, test = data.split(0.25, seed=0, stratify=True)
    ref_train, ref_test = reference.split(0.25, seed=0, stratify=True)
    np.testing.assert_array_equal(portgd.to_numpy(test.y), ref_test.y)
    np.testing.assert_array_equal(portgd.to_numpy(train.X), ref_train.X)
    parts = datasets.train_test_split(data.X, data.y, test_size=0.5, seed=1)
    ref_parts = datasets.train_test_split(reference.X, reference.y, test_size=0.5, seed=1)
    for part, ref in zip(parts, ref_parts, strict=True):
        np.testing.assert_array_equal(portgd.to_numpy(part), ref)
    scaler = datasets.Standardizer().fit(train.X)
    scaled = scaler.transform(test.X)
    close(portgd.to_numpy(scaled), datasets.Standardizer().fit(ref_train.X).transform(ref_test.X))
    close(portgd.to_numpy(scaler.inverse_transform(scaled)), ref_test.X)
    synthetic = datasets.load("synthetic", backend=NAME)
    assert portgd.backend_of(synthetic.y) is unheard


def test_fit_evaluate_predict_save_and_load(unheard, tmp_path):
    def train(backend):
        data = datasets.digits(backend=backend)
        train, test = data.split(0.25, seed=0, stratify=True)
        model = mlp(64, [16], 10, output="softmax", seed=0, backend=backend)
        opt = optim.Adam(lr=0.01)
        history = model.fit(train.X, train.y, loss=losses.CategoricalCrossEntropy(
            from_logits=False), optimizer=opt, epochs=2,
                            batch_size=64, verbose=0, seed=0, metrics=["accuracy"])
        scores = model.evaluate(test.X, test.y, metrics=["accuracy"])
        return model, opt, history, scores, model.predict(test.X[:5])

    model, opt, history, scores, predicted = train(NAME)
    ref_model, _, ref_history, ref_scores, ref_predicted = train("numpy")
    close(history["loss"], ref_history["loss"])
    assert scores["accuracy"] == ref_scores["accuracy"]
    close(scores["loss"], ref_scores["loss"])
    assert portgd.backend_of(predicted) is unheard
    close(portgd.to_numpy(predicted), ref_predicted)
    for name, value in model.state_dict().items():
        close(value, ref_model.state_dict()[name])
    path = portgd.save(tmp_path / "unheard.npz", model, opt)
    for target in (NAME, "numpy"):
        loaded = portgd.load(path, backend=target)
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(loaded.model.state_dict()[name], value)
    back = portgd.load(portgd.save(tmp_path / "numpy.npz", ref_model), backend=NAME)
    assert back.model.backend is unheard
