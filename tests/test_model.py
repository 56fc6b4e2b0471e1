"""Sequential: parameters, state dicts, moving between backends, and its error messages."""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import Sequential
from portgd.layers import Dense, ReLU, Sigmoid, Softmax, Tanh


def mlp(backend=None, dtype="float32", seed=0):
    return Sequential([Dense(4, 8), ReLU(), Dense(8, 6), Tanh(), Dense(6, 3), Softmax()],
                      seed=seed, dtype=dtype, backend=backend)


def test_parameter_names_and_count():
    model = mlp()
    assert list(model.params) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight",
                                  "4.bias"]
    assert model.num_parameters() == 4 * 8 + 8 + 8 * 6 + 6 + 6 * 3 + 3
    assert model.params["0.weight"].shape == (4, 8)
    assert model.in_features == 4 and model.out_features == 3


def test_same_seed_same_weights_on_every_backend(backend):
    reference = mlp(backend="numpy").state_dict()
    state = mlp(backend=backend).state_dict()
    for name, value in reference.items():
        np.testing.assert_array_equal(state[name], value)
        assert state[name].dtype == np.float32


def test_everything_lives_on_the_models_device(backend):
    model = mlp(backend=backend)
    x = backend.asarray(np.ones((2, 4)), dtype="float32")
    y = model.forward(x)
    for array in [*model.params.values(), y]:
        assert backend.owns(array)
        assert backend.same_device(backend.device_of(array), backend.device)


def test_state_dict_is_a_host_copy():
    model = mlp()
    state = model.state_dict()
    state["0.weight"][:] = 0
    assert np.abs(portgd.to_numpy(model.params["0.weight"])).sum() > 0


def test_load_state_dict_round_trip_and_errors(backend):
    source = mlp(backend="numpy", seed=1)
    target = mlp(backend=backend, seed=2)
    target.load_state_dict(source.state_dict())
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(target.params[name]), value)
    bad = source.state_dict()
    bad["0.weight"] = np.zeros((5, 8), np.float32)
    with pytest.raises(portgd.ShapeError, match=r"'0.weight'.*\(4, 8\).*\(5, 8\)"):
        target.load_state_dict(bad)
    del bad["0.weight"]
    with pytest.raises(portgd.InputError, match="missing"):
        target.load_state_dict(bad)


def test_to_moves_between_backends(backend):
    model = mlp(backend="numpy")
    x = np.random.default_rng(0).normal(size=(5, 4))
    expected = portgd.to_numpy(model.predict(x))
    model.to(backend)
    assert model.backend == backend
    out = model.predict(x)
    assert backend.owns(out)
    np.testing.assert_allclose(backend.to_numpy(out), expected, rtol=1e-6)


def test_predict_in_batches_equals_whole():
    model = mlp(dtype="float64")
    x = np.random.default_rng(0).normal(size=(10, 4))
    np.testing.assert_allclose(portgd.to_numpy(model.predict(x, batch_size=3)),
                               portgd.to_numpy(model.predict(x)), rtol=1e-14)


def test_wrong_feature_count_names_the_layer():
    model = mlp()
    with pytest.raises(portgd.ShapeError) as err:
        model.predict(np.ones((2, 5)))
    assert str(err.value) == ("layer 0 (Dense) expects inputs shaped (batch, 4); "
                              "got shape (2, 5)")


def test_mismatched_layers_are_refused_when_built():
    with pytest.raises(portgd.ShapeError, match=r"layer 2 \(Dense\) expects 7 input features"):
        Sequential([Dense(4, 8), ReLU(), Dense(7, 2)])


def test_arrays_of_another_backend_are_an_error_naming_both():
    model = mlp(backend=portgd.get_backend("array_api_strict", "device1"))
    other = portgd.get_backend("array_api_strict").asarray(np.ones((2, 4)))
    with pytest.raises(portgd.BackendMismatchError) as err:
        model.predict(other)
    assert "CPU_DEVICE" in str(err.value) and "device1" in str(err.value)
    torch = pytest.importorskip("torch")
    with pytest.raises(portgd.BackendMismatchError, match=r"torch\.Tensor"):
        mlp().predict(torch.ones(2, 4))


def test_integer_inputs_become_the_float_dtype():
    model = mlp(dtype="float64")
    ints = np.arange(8).reshape(2, 4)
    out_int = portgd.to_numpy(model.predict(ints))
    out_float = portgd.to_numpy(model.predict(ints.astype(np.float64)))
    np.testing.assert_array_equal(out_int, out_float)


def test_float64_model_on_a_device_without_float64():
    with pytest.raises(portgd.DTypeNotSupportedError, match="no_float64"):
        mlp(backend="array_api_strict", dtype="float64").to("array_api_strict", "no_float64")
    with pytest.raises(portgd.DTypeNotSupportedError):
        Sequential([Dense(2, 1)], dtype="float64", backend="array_api_strict",
                   device="no_float64")


def test_bad_layers_argument():
    with pytest.raises(portgd.InputError, match="at least one layer"):
        Sequential([])
    with pytest.raises(portgd.InputError, match="not a portgd layer"):
        Sequential([Dense(2, 2), "relu"])
    with pytest.raises(portgd.InputError, match="positive int"):
        Dense(0, 3)


def test_config_round_trip():
    model = Sequential([Dense(3, 4, init="he_normal"), ReLU(), Dense(4, 1, bias=False),
                        Sigmoid()], seed=9, dtype="float64")
    rebuilt = Sequential.from_config(model.config())
    assert rebuilt.config() == model.config()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(rebuilt.state_dict()[name], value)


def test_sigmoid_is_stable_in_both_tails(backend):
    from portgd.layers import sigmoid

    x = backend.asarray([-1000.0, -40.0, 0.0, 40.0, 1000.0], dtype="float32")
    out = backend.to_numpy(sigmoid(backend.xp, x))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [0.0, 4.248354e-18, 0.5, 1.0, 1.0], rtol=1e-6)
