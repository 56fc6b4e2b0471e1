"""Dropout and GELU: finite-difference gradients, torch parity, and Dropout's training mode."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from helpers import float64_or_skip, numeric_grad

import portgd
from portgd import Sequential
from portgd.cli import main
from portgd.layers import GELU, Dropout, erfc_nonnegative, normal_cdf

RTOL, ATOL = 1e-6, 1e-8  # central differences with eps=1e-6 in float64, as test_gradients


def built(backend, layer):
    Sequential([layer], seed=3, dtype="float64", backend=backend)
    return layer


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_input_gradient(backend, approximate):
    float64_or_skip(backend)
    layer = built(backend, GELU(approximate))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)) * 2
    dout = rng.normal(size=(4, 5))

    def scalar(xh):
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(xh))) * dout))

    layer.forward(backend.asarray(x))
    analytic = backend.to_numpy(layer.backward(backend.asarray(dout)))
    np.testing.assert_allclose(analytic, numeric_grad(scalar, x), rtol=RTOL, atol=ATOL)


def test_erfc_to_float64_precision():
    """Relative error below 1e-15 wherever erfc is a normal float64 number (a <= 26.5)."""
    xp = portgd.get_backend("numpy").xp
    a = np.concatenate([np.linspace(0, 26.5, 26501), np.geomspace(1e-12, 1, 500)])
    exact = np.array([math.erfc(v) for v in a])
    np.testing.assert_allclose(erfc_nonnegative(xp, a), exact, rtol=1e-15, atol=0)
    assert np.all(erfc_nonnegative(xp, np.array([28.0, 40.0, np.inf])) == 0.0)


def test_normal_cdf_against_math_erfc():
    xp = portgd.get_backend("numpy").xp
    x = np.concatenate([np.linspace(-37, 37, 7401), [-np.inf, np.inf]])
    z = x * (-1.0 / math.sqrt(2.0))  # as normal_cdf rounds it
    exact = np.array([0.5 * math.erfc(v) for v in z])
    np.testing.assert_allclose(normal_cdf(xp, x), exact, rtol=1e-15, atol=1e-300)


@pytest.mark.parametrize("approximate,atol", [("none", 1e-15), ("tanh", 1e-14)])
def test_gelu_matches_torch(approximate, atol):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=200) * 3, [-30.0, -8.0, 0.0, 8.0, 30.0]])[None, :]
    dout = rng.normal(size=x.shape)
    for name in ("numpy", "torch"):
        layer = built(name, GELU(approximate))
        backend = portgd.get_backend(name)
        y = backend.to_numpy(layer.forward(backend.asarray(x)))
        dx = backend.to_numpy(layer.backward(backend.asarray(dout)))
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.gelu(tx, approximate=approximate)
        ty.backward(torch.tensor(dout))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=atol)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=max(atol, 1e-15) * 10)


def test_dropout_gradient_with_the_mask_of_the_forward(backend):
    float64_or_skip(backend)
    layer = built(backend, Dropout(0.4))
    layer.training = True
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 7))
    dout = rng.normal(size=(6, 7))

    def scalar(xh):
        layer._rng = np.random.default_rng(11)  # the same mask every evaluation
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(xh))) * dout))

    scalar(x)
    analytic = backend.to_numpy(layer.backward(backend.asarray(dout)))
    np.testing.assert_allclose(analytic, numeric_grad(scalar, x), rtol=RTOL, atol=ATOL)
    kept = analytic != 0
    np.testing.assert_allclose(analytic[kept], dout[kept] / 0.6, rtol=1e-15)


def test_dropout_matches_torch_with_the_same_mask():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, dout = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
    layer = built("torch", Dropout(0.25))
    backend = portgd.get_backend("torch")
    layer.training = True
    model_rng = copy.deepcopy(layer._rng)  # the model's generator, as the layer finds it
    y = backend.to_numpy(layer.forward(backend.asarray(x)))
    dx = backend.to_numpy(layer.backward(backend.asarray(dout)))
    keep = model_rng.random((8, 5)) >= 0.25
    tx = torch.tensor(x, requires_grad=True)
    scale = torch.tensor(keep, dtype=torch.float64) * (1 / (1 - 0.25))  # torch's scaling
    ty = tx * scale
    ty.backward(torch.tensor(dout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())
    layer.training = False  # as torch's F.dropout(training=False): the identity
    same = backend.to_numpy(layer.forward(backend.asarray(x)))
    np.testing.assert_array_equal(same, torch.nn.functional.dropout(
        torch.tensor(x), 0.25, training=False).numpy())


def test_dropout_keeps_about_one_minus_rate():
    layer = built("numpy", Dropout(0.3))
    layer.training = True
    y = layer.forward(np.ones((200, 500)))
    kept = np.count_nonzero(y) / y.size
    assert abs(kept - 0.7) < 0.005  # 100000 draws: the standard error is 0.0014
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7])


def test_every_backend_draws_the_same_masks():
    outputs = []
    for name, device in (("numpy", None), ("array_api_strict", "device1"), ("torch", "cpu")):
        pytest.importorskip(name)
        model = portgd.mlp(6, [9], 2, dropout=0.5, seed=4, dtype="float64", backend=name,
                           device=device)
        x = np.random.default_rng(5).normal(size=(7, 6))
        outputs.append(model.backend.to_numpy(model.forward(model.input(x), training=True)))
    for other in outputs[1:]:
        np.testing.assert_allclose(other, outputs[0], rtol=1e-12)


def test_fit_drops_units_but_predict_and_evaluate_do_not():
    x = np.random.default_rng(6).normal(size=(64, 6))
    y = (x[:, 0] > 0).astype(np.int64)
    model = portgd.mlp(6, [32], 1, output="sigmoid", dropout=0.5, seed=0)
    plain = portgd.mlp(6, [32], 1, output="sigmoid", seed=0)
    np.testing.assert_array_equal(model.predict(x), plain.predict(x))  # same weights, no drop
    assert not np.array_equal(model.forward(model.input(x), training=True), model.predict(x))
    state = model.rng.bit_generator.state
    model.fit(x, y, loss="bce", epochs=1, batch_size=16, verbose=0, shuffle=False)
    assert model.rng.bit_generator.state != state  # the masks came from the model's generator
    plain.fit(x, y, loss="bce", epochs=1, batch_size=16, verbose=0, shuffle=False)
    assert not np.array_equal(model.predict(x), plain.predict(x))  # dropout changed training
    assert all(not layer.training for layer in model.layers)
    first = model.evaluate(x, y, loss="bce")
    assert model.evaluate(x, y, loss="bce") == first  # deterministic: no dropout
    np.testing.assert_array_equal(model.predict(x), model.predict(x))


def test_dropout_training_resumes_bit_identically(tmp_path):
    x = np.random.default_rng(7).normal(size=(48, 4))
    y = (x[:, 1] > 0).astype(np.int64)

    def fresh():
        return portgd.mlp(4, [8], 1, output="sigmoid", dropout=0.3, activation="gelu", seed=2)

    straight = fresh()
    straight.fit(x, y, loss="bce", optimizer="adam", epochs=4, batch_size=8, verbose=0)
    half = fresh()
    half.fit(x, y, loss="bce", optimizer="adam", epochs=2, batch_size=8, verbose=0)
    portgd.save(tmp_path / "m.npz", half, half.optimizer)
    model, optimizer, _ = portgd.load(tmp_path / "m.npz")
    assert [type(layer).__name__ for layer in model.layers] == [
        "Dense", "GELU", "Dropout", "Dense", "Sigmoid"]
    model.fit(x, y, loss="bce", optimizer=optimizer, epochs=4, initial_epoch=2, batch_size=8,
              verbose=0)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value)


@pytest.mark.parametrize("make,message", [
    (lambda: Dropout(1.0), "rate must be a number in"), (lambda: Dropout(-0.1), "rate must"),
    (lambda: Dropout("0.5"), "rate must"), (lambda: GELU("erf"), "approximate must be"),
])
def test_bad_arguments(make, message):
    with pytest.raises(portgd.InputError, match=message):
        make()


def test_the_command_line_trains_with_gelu_and_dropout(tmp_path, capsys):
    path = tmp_path / "m.npz"
    assert main(["train", "--json", "--epochs", "3", "--activation", "gelu", "--dropout",
                 "0.2", "--save", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] > 0.5
    layers = [type(layer).__name__ for layer in portgd.load(path).model.layers]
    assert layers == ["Dense", "GELU", "Dropout", "Dense", "GELU", "Dropout", "Dense", "Sigmoid"]


def test_dropout_takes_no_seed_of_its_own():
    """Masks come only from the model's generator, which checkpoints save: a layer seed
    would be state that a resumed run silently restarts."""
    with pytest.raises(TypeError):
        Dropout(0.3, seed=5)
    model = Sequential([portgd.layers.Dense(4, 3), Dropout(0.3)], seed=1)
    assert model.layers[1]._rng is model.rng
    assert model.layers[1].config() == {"rate": 0.3}


def test_dropout_resume_equals_an_uninterrupted_run_mid_stream(tmp_path):
    """Saved after one epoch (masks drawn for 6 steps), resumed for one more: the same
    parameters, optimizer counters and generator state as two epochs in one go."""
    x = np.random.default_rng(8).normal(size=(48, 6))
    y = np.random.default_rng(9).normal(size=(48, 2))

    def fresh():
        return Sequential([portgd.layers.Dense(6, 12), portgd.layers.ReLU(), Dropout(0.3),
                           portgd.layers.Dense(12, 2)], seed=5, dtype="float64")

    straight = fresh()
    straight.fit(x, y, loss="mse", optimizer="sgd", epochs=2, batch_size=8, verbose=0)
    half = fresh()
    half.fit(x, y, loss="mse", optimizer="sgd", epochs=1, batch_size=8, verbose=0)
    portgd.save(tmp_path / "m.npz", half, half.optimizer)
    model, optimizer, _ = portgd.load(tmp_path / "m.npz")
    model.fit(x, y, loss="mse", optimizer=optimizer, epochs=2, initial_epoch=1, batch_size=8,
              verbose=0)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value)
    assert model.rng.bit_generator.state == straight.rng.bit_generator.state


def test_a_dropout_config_saved_with_the_old_seed_none_still_loads():
    from portgd.layers import layer_from_config

    assert layer_from_config({"type": "Dropout", "rate": 0.5, "seed": None}).rate == 0.5
    with pytest.raises(portgd.InputError, match="layer Dropout cannot be rebuilt"):
        layer_from_config({"type": "Dropout", "rate": 0.5, "seed": 5})
