"""Finite-difference checks (float64) of every layer, activation, loss and fused pair."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import float64_or_skip, numeric_grad

from portgd import Sequential
from portgd.layers import Dense, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from portgd.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy

ACTIVATIONS = [Identity, ReLU, lambda: LeakyReLU(0.1), Tanh, Sigmoid, Softmax]
ACTIVATION_IDS = ["identity", "relu", "leaky_relu", "tanh", "sigmoid", "softmax"]
RTOL, ATOL = 1e-6, 1e-8  # central differences with eps=1e-6 in float64


def _layer_on(backend, layer, in_features):
    Sequential([layer], seed=3, dtype="float64", backend=backend)  # builds the layer
    return layer


@pytest.mark.parametrize("make", ACTIVATIONS, ids=ACTIVATION_IDS)
def test_activation_input_gradient(backend, make):
    float64_or_skip(backend)
    layer = _layer_on(backend, make(), 5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU kinks away from the finite-difference step
    dout = rng.normal(size=(4, 5))

    def scalar(xh):
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(xh))) * dout))

    layer.forward(backend.asarray(x))
    analytic = backend.to_numpy(layer.backward(backend.asarray(dout)))
    np.testing.assert_allclose(analytic, numeric_grad(scalar, x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradients(backend, bias):
    float64_or_skip(backend)
    layer = _layer_on(backend, Dense(3, 4, bias=bias), 3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3))
    dout = rng.normal(size=(5, 4))

    def scalar():
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(x))) * dout))

    layer.forward(backend.asarray(x))
    dx = backend.to_numpy(layer.backward(backend.asarray(dout)))
    grads = {k: backend.to_numpy(v) for k, v in layer.grads.items()}
    assert set(grads) == ({"weight", "bias"} if bias else {"weight"})

    def wrt_input(xh):
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(xh))) * dout))

    np.testing.assert_allclose(dx, numeric_grad(wrt_input, x.copy()), rtol=RTOL, atol=ATOL)
    for name, value in grads.items():
        host = backend.to_numpy(layer.params[name]).copy()

        def wrt_param(p, name=name):
            layer.params[name] = backend.asarray(p)
            return scalar()

        np.testing.assert_allclose(value, numeric_grad(wrt_param, host), rtol=RTOL, atol=ATOL)


LOSS_CASES = [
    ("mse", lambda: MSE(), "real"),
    ("mse-sum", lambda: MSE(reduction="sum"), "real"),
    ("bce-prob", lambda: BinaryCrossEntropy(), "prob"),
    ("bce-logits", lambda: BinaryCrossEntropy(from_logits=True), "real"),
    ("bce-sum", lambda: BinaryCrossEntropy(from_logits=True, reduction="sum"), "real"),
    ("ce-logits", lambda: CategoricalCrossEntropy(), "real"),
    ("ce-prob", lambda: CategoricalCrossEntropy(from_logits=False), "simplex"),
    ("ce-sum", lambda: CategoricalCrossEntropy(reduction="sum"), "real"),
]


def _loss_inputs(kind, rng, shape):
    if kind == "prob":
        return rng.uniform(0.1, 0.9, size=shape)
    if kind == "simplex":
        p = rng.uniform(0.2, 1.0, size=shape)
        return p / p.sum(axis=1, keepdims=True)
    return rng.normal(size=shape) * 2


def _targets(name, rng, shape):
    if name.startswith("ce"):
        return np.eye(shape[1])[rng.integers(0, shape[1], size=shape[0])]
    if name.startswith("bce"):
        return rng.uniform(0, 1, size=shape)  # soft targets are allowed
    return rng.normal(size=shape)


@pytest.mark.parametrize("name,make,kind", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_loss_gradient(backend, name, make, kind):
    float64_or_skip(backend)
    loss = make()
    rng = np.random.default_rng(2)
    shape = (6, 3)
    yhat, y = _loss_inputs(kind, rng, shape), _targets(name, rng, shape)
    y_dev = backend.asarray(y)
    value, grad = loss(backend.asarray(yhat), y_dev)
    assert tuple(value.shape) == ()
    assert tuple(grad.shape) == shape

    def scalar(p):
        return float(backend.to_numpy(loss.value(backend.asarray(p), y_dev)))

    np.testing.assert_allclose(backend.to_numpy(grad), numeric_grad(scalar, yhat.copy()),
                               rtol=RTOL, atol=ATOL)


def _model_grad_check(backend, layers, loss, y):
    model = Sequential(layers, seed=5, dtype="float64", backend=backend)
    rng = np.random.default_rng(4)
    x = backend.asarray(rng.normal(size=(y.shape[0], layers[0].in_features)))
    y_dev = backend.asarray(y)
    model.loss_and_backward(model.forward(x), y_dev, loss)
    analytic = {k: backend.to_numpy(v) for k, v in model.grads.items()}
    assert set(analytic) == set(model.params)
    for name in analytic:
        host = backend.to_numpy(model.params[name]).copy()

        def scalar(p, name=name):
            params = dict(model.params)
            params[name] = backend.asarray(p)
            model.params = params
            yhat = model.forward(x)
            last = model.layers[-1]
            if loss.fuses_with is type(last):
                return float(backend.to_numpy(loss.fused_value(last.logits, y_dev)))
            return float(backend.to_numpy(loss.value(yhat, y_dev)))

        numeric = numeric_grad(scalar, host)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("make", ACTIVATIONS[:5], ids=ACTIVATION_IDS[:5])
def test_mlp_chain_rule(backend, make):
    """Two hidden layers, every activation, MSE: the full backward pass against differences."""
    float64_or_skip(backend)
    rng = np.random.default_rng(6)
    layers = [Dense(3, 5), make(), Dense(5, 4), make(), Dense(4, 2)]
    _model_grad_check(backend, layers, MSE(), rng.normal(size=(7, 2)))


def test_fused_sigmoid_bce(backend):
    float64_or_skip(backend)
    rng = np.random.default_rng(7)
    layers = [Dense(3, 4), Tanh(), Dense(4, 1), Sigmoid()]
    y = rng.integers(0, 2, size=(8, 1)).astype(float)
    _model_grad_check(backend, layers, BinaryCrossEntropy(), y)


def test_fused_softmax_ce(backend):
    float64_or_skip(backend)
    rng = np.random.default_rng(8)
    layers = [Dense(3, 4), ReLU(), Dense(4, 3), Softmax()]
    y = np.eye(3)[rng.integers(0, 3, size=8)]
    _model_grad_check(backend, layers, CategoricalCrossEntropy(from_logits=False), y)


def test_fused_gradient_is_yhat_minus_y_over_n(backend):
    """DESIGN.md: the fused pairs start backpropagation with (yhat - y) / N."""
    float64_or_skip(backend)
    rng = np.random.default_rng(9)
    for last, loss, y in (
        (Sigmoid(), BinaryCrossEntropy(), rng.integers(0, 2, size=(6, 1)).astype(float)),
        (Softmax(), CategoricalCrossEntropy(from_logits=False), np.eye(3)[[0, 2, 1, 1, 0, 2]]),
    ):
        model = Sequential([Dense(2, y.shape[1]), last], dtype="float64", backend=backend)
        yhat = model.forward(backend.asarray(rng.normal(size=(6, 2))))
        _, dz = loss.fused(last.logits, yhat, backend.asarray(y))
        expected = (backend.to_numpy(yhat) - y) / 6
        np.testing.assert_allclose(backend.to_numpy(dz), expected, rtol=1e-12, atol=1e-15)
