"""Layers as a user writes and reads them: their description and configuration, the defaults
the docs state, and each activation's forward pass against its formula on the host
(the backward passes: test_gradients.py)."""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import Sequential
from portgd.layers import (
    Dense,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    layer_from_config,
)


# layers are made inside the tests (factories): an object made at collection time would not
# run the code under test (tools/mutation.py activates a mutant only when the test runs)
@pytest.mark.parametrize("make,text", [
    (lambda: Dense(3, 2),
     "Dense(in_features=3, out_features=2, bias=True, init='glorot_uniform')"),
    (lambda: Dense(4, 1, bias=False, init="he_uniform"),
     "Dense(in_features=4, out_features=1, bias=False, init='he_uniform')"),
    (lambda: LeakyReLU(), "LeakyReLU(alpha=0.01)"),
    (lambda: LeakyReLU(0.2), "LeakyReLU(alpha=0.2)"),
    (ReLU, "ReLU()"), (Tanh, "Tanh()"), (Sigmoid, "Sigmoid()"), (Softmax, "Softmax()"),
    (Identity, "Identity()"),
])
def test_layers_describe_and_rebuild_themselves(make, text):
    layer = make()
    assert repr(layer) == text
    assert layer.index is None and layer.xp is None and layer.params == {} == layer.grads
    again = layer_from_config({"type": type(layer).__name__, **layer.config()})
    assert type(again) is type(layer) and again.config() == layer.config()


def test_dense_parameters_before_and_after_building():
    assert Dense(3, 2).param_shapes() == {"weight": (3, 2), "bias": (2,)}
    assert Dense(3, 2, bias=False).param_shapes() == {"weight": (3, 2)}
    layer = Dense(3, 2)
    assert layer.param_names == ("weight", "bias")
    assert Dense(3, 2, bias=False).param_names == ("weight",)
    Sequential([layer], dtype="float64")
    assert {k: tuple(v.shape) for k, v in layer.params.items()} == layer.param_shapes()
    np.testing.assert_array_equal(portgd.to_numpy(layer.params["bias"]), np.zeros(2))


def _forward(layer, x):
    model = Sequential([Dense(x.shape[1], x.shape[1]), layer], dtype="float64")
    model.load_state_dict({"0.weight": np.eye(x.shape[1]), "0.bias": np.zeros(x.shape[1])})
    return portgd.to_numpy(model.predict(x))


X = np.array([[-3.0, -0.5, 0.0, 0.25, 2.0], [40.0, -40.0, 1e-3, -1e-3, 0.0]])


@pytest.mark.parametrize("make,formula", [
    (ReLU, lambda x: np.maximum(x, 0)),
    (LeakyReLU, lambda x: np.where(x > 0, x, 0.01 * x)),
    (lambda: LeakyReLU(0.3), lambda x: np.where(x > 0, x, 0.3 * x)),
    (Tanh, np.tanh),
    (Sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    (Softmax, lambda x: np.exp(x - x.max(1, keepdims=True))
     / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)),
    (Identity, lambda x: x),
], ids=["relu", "leaky_relu", "leaky_relu-0.3", "tanh", "sigmoid", "softmax", "identity"])
def test_activations_against_their_formulas(make, formula):
    np.testing.assert_allclose(_forward(make(), X), formula(X), rtol=1e-15, atol=1e-300)


def test_dense_forward_and_its_refusals():
    layer = Dense(2, 3)
    model = Sequential([layer], dtype="float64")
    w, b = np.arange(6.0).reshape(2, 3), np.array([1.0, -1.0, 0.5])
    model.load_state_dict({"0.weight": w, "0.bias": b})
    x = np.array([[1.0, 2.0], [-1.0, 0.5]])
    np.testing.assert_array_equal(portgd.to_numpy(model.predict(x)), x @ w + b)
    with pytest.raises(portgd.ShapeError, match=r"expects inputs shaped \(batch, 2\)"):
        model.predict(np.ones((2, 3)))
    with pytest.raises(portgd.ShapeError, match=r"expects inputs shaped \(batch, 2\)"):
        layer.forward(model.backend.asarray(np.ones((2, 2, 2))))


@pytest.mark.parametrize("args,message", [
    ((0, 2), "Dense in_features must be a positive int, got 0"),
    ((2, 0), "Dense out_features must be a positive int, got 0"),
    ((True, 2), "Dense in_features must be a positive int, got True"),
    ((2, 1.5), "Dense out_features must be a positive int, got 1.5"),
])
def test_dense_sizes_are_checked_by_name(args, message):
    with pytest.raises(portgd.InputError) as error:
        Dense(*args)
    assert str(error.value) == message
