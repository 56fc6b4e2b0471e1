"""Sequential and mlp as the mutation run asked: defaults, the first layer's backward, the
fused loss value, conversions, the summary's text and the size units it prints."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

import portgd
from portgd import Sequential, mlp
from portgd.callbacks import Callback
from portgd.layers import Dense, ReLU, Sigmoid, Softmax
from portgd.losses import BinaryCrossEntropy, CategoricalCrossEntropy


@pytest.mark.parametrize("activation,hidden_init", [
    ("relu", "he_uniform"), ("leaky_relu", "he_uniform"), ("tanh", "glorot_uniform"),
    ("sigmoid", "glorot_uniform")])
def test_mlp_initialises_for_its_activation_and_the_output_layer_with_glorot(
        activation, hidden_init):
    model = mlp(4, [5, 6], 3, activation=activation, output="softmax")
    inits = [layer.init for layer in model.layers if isinstance(layer, Dense)]
    assert inits == [hidden_init, hidden_init, "glorot_uniform"]
    assert type(model.layers[-1]) is Softmax


def test_mlp_leaves_out_an_identity_output_but_keeps_identity_hidden_activations():
    model = mlp(2, [3], 1, activation="identity", output="identity")
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Identity", "Dense"]


def test_the_default_seed_is_zero():
    def weights(**kwargs):
        return Sequential([Dense(3, 4)], **kwargs).params["0.weight"]

    np.testing.assert_array_equal(weights(), weights(seed=0))
    assert not np.array_equal(weights(), weights(seed=1))


def test_from_config_defaults_to_seed_zero_and_float32():
    config = Sequential([Dense(3, 2)], seed=5, dtype="float64").config()
    del config["seed"], config["dtype"]
    rebuilt = Sequential.from_config(config)
    assert rebuilt.dtype_name == "float32"
    np.testing.assert_array_equal(rebuilt.params["0.weight"],
                                  Sequential([Dense(3, 2)], seed=0).params["0.weight"])


def test_repr_lists_the_layers():
    assert repr(Sequential([Dense(3, 2), ReLU()])) == (
        "Sequential([Dense(in_features=3, out_features=2, bias=True, init='glorot_uniform'), "
        "ReLU()], dtype='float32', backend='numpy', device='cpu')")


def test_loading_a_state_casts_to_the_models_dtype_and_names_unexpected_keys():
    model = Sequential([Dense(2, 2)], seed=0, dtype="float32")
    state = {k: v.astype(np.float64) + 1.0 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert all(p.dtype == np.float32 for p in model.params.values())
    with pytest.raises(portgd.InputError, match=r"missing \[\], unexpected \['1.weight'\]"):
        model.load_state_dict({**state, "1.weight": np.ones(2)})


def test_moving_a_model_keeps_its_dtype():
    pytest.importorskip("array_api_strict")
    model = Sequential([Dense(2, 2)], seed=0, dtype="float64")
    model.to("array_api_strict")
    assert model.dtype_name == "float64"
    assert all(p.dtype == model.backend.dtype("float64") for p in model.params.values())


class _Recording(Dense):
    calls: ClassVar[list[bool]] = []

    def backward(self, dout, need_input_grad=True):
        self.calls.append(need_input_grad)
        return super().backward(dout, need_input_grad)


def test_the_first_layers_input_gradient_is_not_computed():
    first = _Recording(3, 4)
    model = Sequential([first, ReLU(), _Recording(4, 2)], seed=0)
    _Recording.calls = []
    yhat = model.forward(np.ones((5, 3), dtype=np.float32))
    model.loss_and_backward(yhat, np.zeros((5, 2), dtype=np.float32), portgd.losses.MSE())
    assert _Recording.calls == [True, False]  # the last layer first, the first layer last


@pytest.mark.parametrize("last,loss", [
    (Sigmoid, lambda: BinaryCrossEntropy(from_logits=False)),
    (Softmax, lambda: CategoricalCrossEntropy(from_logits=False))])
def test_loss_value_takes_the_fused_form_from_the_logits(last, loss):
    """Saturated outputs (p rounds to 1 in float32): the clipped probability form gives
    another value than the fused logits form that loss_value must use."""
    model = Sequential([Dense(2, 2), last()], seed=0, dtype="float32")
    model.layers[0].params["weight"][...] = [[30.0, -30.0], [30.0, -30.0]]
    x = np.ones((3, 2), dtype=np.float32)
    y = np.array([[0.0, 1.0]] * 3, dtype=np.float32)
    yhat = model.forward(x)
    z = model.layers[0].forward(x)
    want = loss().fused_value(z, y, np)
    assert float(model.loss_value(yhat, y, loss())) == pytest.approx(float(want), rel=1e-6)
    assert abs(float(loss().value(yhat, y, np)) - float(want)) > 1.0


def test_fit_defaults_to_adam_and_batches_of_32():
    batches = []

    class Count(Callback):
        def on_batch_end(self, batch):
            batches.append(batch)

    model = Sequential([Dense(2, 1)], seed=0)
    model.fit(np.ones((33, 2)), np.ones(33), verbose=0, callbacks=[Count()])
    assert batches == [0, 1]
    assert type(model.optimizer) is portgd.optim.Adam


def test_the_summary_text():
    model = Sequential([ReLU(), Dense(3, 2)], seed=0)
    assert model.summary() == (
        "#  layer  output shape  parameters\n"
        "0  ReLU   (N, ?)                 0\n"
        "1  Dense  (N, 2)                 8\n"
        "8 parameters (32 B), float32, on numpy cpu")


@pytest.mark.parametrize("n_bytes,text", [
    (1023, "1023 B"), (1024, "1.0 KiB"), (2**20 - 1, "1024.0 KiB"), (3 * 2**20, "3.0 MiB"),
    (2**30 - 2**19, "1023.5 MiB"), (2**30, "1.0 GiB"), (5 * 2**30 + 2**29, "5.5 GiB")])
def test_sizes_are_printed_in_binary_units(n_bytes, text):
    from portgd.model import _size

    assert _size(n_bytes) == text


def test_installing_a_training_loop_replaces_the_one_fit_calls(monkeypatch):
    from portgd import model as model_module

    class Loop:
        def fit(self, model, x, y, **kwargs):
            return ("fit", kwargs["epochs"])

        def evaluate(self, model, x, y, **kwargs):
            return ("evaluate", kwargs["batch_size"])

    monkeypatch.setattr(model_module, "_training_loop", [])
    model_module.install_training_loop(Loop())
    model = Sequential([Dense(2, 1)], seed=0)
    assert model.fit(None, None, epochs=3) == ("fit", 3)
    assert model.evaluate(None, None, batch_size=4) == ("evaluate", 4)


def test_the_summary_aligns_two_digit_layer_numbers_to_the_right():
    layers = [Dense(2, 2) if i % 2 == 0 else ReLU() for i in range(11)]
    lines = Sequential(layers, seed=0).summary().splitlines()
    assert lines[0].startswith(" #  layer")
    assert lines[1].startswith(" 0  Dense") and lines[11].startswith("10  Dense")
