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


# -- the backends' fast paths are the ones a layer calls ------------------------------------
def test_layers_bound_to_numpy_call_its_fast_paths():
    """The generic rules give the same numbers (tests/test_fast_paths.py), so only the binding
    shows that the fast path runs."""
    backend = portgd.get_backend("numpy")
    model = Sequential([Dense(3, 4), ReLU(), Dense(4, 2), Softmax()], seed=0)
    relu, softmax = model.layers[1], model.layers[3]
    assert relu._grad is backend.fast["relu_backward"]
    assert model.layers[0]._add_bias is backend.fast["add_bias"]
    for layer in (model.layers[0], softmax):
        assert layer.reduce_sum is backend.fast["sum"]
        assert layer.reduce_max is backend.fast["max"]


def test_layers_on_a_backend_without_fast_paths_call_the_namespace():
    strict = pytest.importorskip("array_api_strict")
    model = Sequential([Dense(3, 2), Softmax()], seed=0, backend="array_api_strict")
    assert model.layers[1].reduce_sum is strict.sum and model.layers[1].reduce_max is strict.max
    assert model.layers[0]._add_bias is portgd.layers.add_bias


# -- Dropout's edges --------------------------------------------------------------------------
class _Uniform:
    """A stand-in generator whose ``random(shape)`` returns the given values, tiled."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float64)
        self.calls = 0

    def random(self, shape):
        self.calls += 1
        return np.resize(self.values, shape)


def test_dropout_keeps_a_unit_whose_draw_equals_the_rate():
    from portgd.layers import Dropout

    layer = Dropout(0.25)
    Sequential([layer], seed=0, dtype="float64")
    layer._rng = _Uniform([0.25, 0.2499999, 0.9, 0.0])
    layer.training = True
    y = layer.forward(np.ones((1, 4)))
    np.testing.assert_array_equal(y, [[1 / 0.75, 0.0, 1 / 0.75, 0.0]])


def test_dropout_at_rate_zero_draws_nothing_and_passes_gradients_through():
    from portgd.layers import Dropout

    layer = Dropout(0.0)
    Sequential([layer], seed=0, dtype="float64")
    layer._rng = _Uniform([0.5])
    layer.training = True
    x = np.arange(6.0).reshape(2, 3)
    assert layer.forward(x) is x and layer._rng.calls == 0
    dout = np.ones((2, 3))
    assert layer.backward(dout) is dout


def test_dropout_outside_training_passes_gradients_through():
    from portgd.layers import Dropout

    layer = Dropout(0.5)
    Sequential([layer], seed=0)
    layer.training = False
    x = np.ones((2, 3), dtype=np.float32)
    assert layer.forward(x) is x
    dout = np.full((2, 3), 2.0, dtype=np.float32)
    assert layer.backward(dout) is dout


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_masks_in_the_models_dtype(dtype):
    from portgd.layers import Dropout

    layer = Dropout(0.5)
    Sequential([Dense(3, 4), layer], seed=0, dtype=dtype)
    layer.training = True
    y = layer.forward(np.ones((5, 4), dtype=dtype))
    assert y.dtype == np.dtype(dtype) and layer._mask.dtype == np.dtype(dtype)
    assert set(np.unique(y).tolist()) <= {0.0, 2.0}
    assert layer.backward(np.ones((5, 4), dtype=dtype)).dtype == np.dtype(dtype)


def test_dropout_rate_zero_is_accepted_and_one_is_not():
    from portgd.layers import Dropout

    assert Dropout(0.0).rate == 0.0 and Dropout(0).rate == 0.0
    with pytest.raises(portgd.InputError, match=r"rate must be a number in \[0, 1\)"):
        Dropout(1.0)


def test_dropout_defaults_to_half():
    from portgd.layers import Dropout

    assert Dropout().rate == 0.5 and repr(Dropout()) == "Dropout(rate=0.5)"


def test_the_fused_cross_entropy_value_sums_with_the_softmax_layers_reductions():
    model = Sequential([Dense(3, 4), Softmax()], seed=0, dtype="float64")
    softmax = model.layers[1]
    calls = []

    def counted(x, /, *, axis=None, keepdims=False):
        calls.append(axis)
        return np.sum(x, axis=axis, keepdims=keepdims)

    x = np.random.default_rng(0).normal(size=(5, 3))
    y = np.eye(4)[[0, 1, 2, 3, 0]]
    want = float(portgd.losses.CategoricalCrossEntropy(from_logits=True).value(
        x @ model.params["0.weight"], y))
    model.forward(x)
    softmax.reduce_sum = counted
    loss = portgd.losses.CategoricalCrossEntropy(from_logits=False)
    value, _ = loss.fused_with_layer(softmax, y, model.xp)
    assert calls == [-1, None]
    assert float(value) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_gives_the_select_forms_numbers_bit_for_bit(dtype):
    """``exp(min(x, 0)) / (1 + exp(-|x|))`` is ``where(x >= 0, 1, e) / (1 + e)`` with
    ``e = exp(-|x|)``, to the last bit: both tails, signed zeros, subnormals, infinities, NaN."""
    rng = np.random.default_rng(3)
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.concatenate([rng.standard_normal(500) * 40, rng.standard_normal(500),
                        [0.0, -0.0, tiny, -tiny, 1e4, -1e4, np.inf, -np.inf, np.nan]]).astype(dtype)
    e = np.exp(-np.abs(x))
    with np.errstate(over="ignore"):
        got = portgd.layers.sigmoid(np, x)
    want = np.where(x >= 0, dtype(1.0), e) / (dtype(1.0) + e)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)  # NaN where the select form has NaN
    numbers = ~np.isnan(want)  # a NaN's sign bit means nothing
    np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))
