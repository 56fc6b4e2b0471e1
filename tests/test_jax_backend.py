"""The built-in jax backend: x64 mode, devices, the backends table, checkpoints both ways.

The whole backend-parametrised suite runs on jax through the ``backend`` fixture with JAX's
default settings (x64 off: 32-bit types only). This file adds what is particular to jax:
float64 exists only while JAX's x64 mode is on, and the error says how to switch it on.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOLERANCE

import portgd
from portgd import optim
from portgd.cli import main
from portgd.losses import CategoricalCrossEntropy
from portgd.model import mlp

jax = pytest.importorskip("jax")

A = [[5, 1, -1], [2, -1, 1], [1, 3, -2]]
Y = [1, 4, 0]
_data = np.random.default_rng(0)
X = _data.normal(size=(120, 5))
LABELS = np.argmax(X @ _data.normal(size=(5, 3)), axis=1)


@pytest.fixture
def x64():
    """JAX's x64 mode on for one test, then back to what it was."""
    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        yield portgd.get_backend("jax")
    finally:
        jax.config.update("jax_enable_x64", before)


def test_without_x64_float64_is_refused_with_the_switch_named():
    backend = portgd.get_backend("jax")
    assert not jax.config.jax_enable_x64
    assert not backend.supports("float64") and backend.supports("float32")
    assert backend.index_dtype == backend.dtype("int32")
    switch = r"jax\.config\.update\('jax_enable_x64', True\).*JAX_ENABLE_X64=1"
    with pytest.raises(portgd.DTypeNotSupportedError, match=switch):
        mlp(3, [4], 1, dtype="float64", backend="jax")
    with pytest.raises(portgd.DTypeNotSupportedError, match=switch):
        portgd.solve_linear(A, Y, backend="jax")  # float64 is solve_linear's default
    with pytest.raises(portgd.DTypeNotSupportedError, match="int64"):
        backend.asarray(np.arange(3))  # host int64 is refused, never narrowed silently


def test_with_x64_the_seed_example_matches_numpy_float64(x64):
    assert x64.supports("float64") and x64.index_dtype == x64.dtype("int64")
    reference = portgd.solve_linear(A, Y, iters=2000, log_every=500, backend="numpy")
    result = portgd.solve_linear(A, Y, iters=2000, log_every=500, backend="jax")
    assert result.x.dtype == x64.dtype("float64")
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)
    np.testing.assert_allclose(x64.to_numpy(result.x), portgd.to_numpy(reference.x), rtol=1e-12)


def test_with_x64_an_mlp_trains_as_numpy_float64(x64):
    def train(backend):
        model = mlp(5, [8], 3, output="softmax", seed=3, dtype="float64", backend=backend)
        history = model.fit(X, LABELS, loss=CategoricalCrossEntropy(from_logits=False),
                            optimizer=optim.Adam(lr=0.01), epochs=2, batch_size=24,
                            verbose=0, seed=1)
        return model.state_dict(), history["loss"]

    ref_params, ref_losses = train("numpy")
    params, losses = train("jax")
    tol = TOLERANCE["float64"]
    for name, ref in ref_params.items():
        assert params[name].dtype == np.float64
        assert np.max(np.abs(params[name] - ref)) <= tol * np.max(np.abs(ref)), name
    np.testing.assert_allclose(losses, ref_losses, rtol=tol, atol=0)


@pytest.mark.parametrize("spec", [None, "cpu", "cpu:0", 0])
def test_device_specifiers(spec):
    backend = portgd.get_backend("jax", spec)
    assert backend.device_name == "cpu:0"
    assert backend.devices()[0] == "cpu:0"
    assert portgd.get_backend("jax", jax.devices("cpu")[0]) == backend


def test_a_missing_device_lists_the_devices():
    with pytest.raises(portgd.DeviceNotFoundError, match=r"jax has no device 'gpu'.*'cpu:0'"):
        portgd.get_backend("jax", "gpu")


def test_portgd_backends_lists_jax(capsys):
    assert main(["backends"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["jax"][:5] == ["jax", "yes", "cpu:0", jax.__version__, "no"]


def test_checkpoints_move_from_jax_to_every_backend(tmp_path, backend):
    model = mlp(5, [8], 3, output="softmax", seed=3, backend="jax")
    opt = optim.Adam(lr=0.01)
    model.fit(X, LABELS, loss=CategoricalCrossEntropy(from_logits=False), optimizer=opt,
              epochs=1, batch_size=24, verbose=0)
    path = portgd.save(tmp_path / "jax.npz", model, opt)
    loaded = portgd.load(path, backend=backend)
    assert loaded.model.backend == backend
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.model.state_dict()[name], value)
    saved = opt.state_dict()["state"]
    for name, entry in loaded.optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(value, saved[name][key])
