"""Every fast path gives the same numbers as the generic array-API path it replaces."""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import optim

CONFIGS = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}),
    ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adagrad", {"lr_decay": 0.01, "weight_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("rmsprop", {}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.01}),
    ("adam", {}),
    ("adam", {"amsgrad": True, "weight_decay": 0.01}),
    ("adamw", {}),
    ("adamw", {"amsgrad": True}),
]


class _Model:
    """Just enough of a model for Optimizer.update: params and grads dicts."""

    def __init__(self, params):
        self.params = params
        self.grads = {}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,kwargs", CONFIGS)
def test_in_place_optimizer_matches_generic_bit_for_bit(name, kwargs, dtype):
    backend = portgd.get_backend("numpy")
    assert f"{name}:inplace" in backend.fast
    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=(7, 5)).astype(dtype), "b": rng.normal(size=5).astype(dtype)}
    fast_opt = optim.make_optimizer(name, lr=0.05, **kwargs)
    generic_opt = optim.make_optimizer(name, lr=0.05, **kwargs)
    model = _Model({k: v.copy() for k, v in start.items()})
    params = {k: v.copy() for k, v in start.items()}
    for _ in range(6):
        grads = {k: rng.normal(size=v.shape).astype(dtype) for k, v in start.items()}
        model.grads = grads
        fast_opt.update(model)  # in place on the model's arrays
        params = generic_opt.step(params, grads)  # pure
    for key in start:
        np.testing.assert_array_equal(model.params[key], params[key])
        for state_key, value in generic_opt.state[key].items():
            np.testing.assert_array_equal(fast_opt.state[key][state_key], value)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,kwargs", CONFIGS)
def test_in_place_rule_given_the_gradient_as_scratch_matches_generic(name, kwargs, dtype):
    """fit's layer-by-layer step lets the in-place rules overwrite the released gradient."""
    backend = portgd.get_backend("numpy")
    opt = optim.make_optimizer(name, lr=0.05, **kwargs)
    fast, hp = opt._rule(backend, in_place=True, may_overwrite_grad=True)
    generic = type(opt).update_rule
    rng = np.random.default_rng(0)
    fast_param = rng.normal(size=(7, 5)).astype(dtype)
    param = fast_param.copy()
    fast_state = opt.init_state(param, np, "cpu")
    state = opt.init_state(param, np, "cpu")
    overwritten = []
    for step in range(1, 7):
        grad = rng.normal(size=(7, 5)).astype(dtype)
        given = grad.copy()
        fast_param, fast_state = fast(fast_param, given, fast_state, hp, step, xp=np)
        param, state = generic(param, grad, state, hp, step, xp=np)
        np.testing.assert_array_equal(fast_param, param)
        for key, value in state.items():
            np.testing.assert_array_equal(fast_state[key], value)
        overwritten.append(not np.array_equal(given, grad))
    # plain and momentum SGD keep their intermediates in the gradient (with weight decay, in
    # the decayed copy g + wd * p); Nesterov and the other rules need g and a second buffer
    uses_gradient = name == "sgd" and not kwargs.get("nesterov") and not kwargs.get("weight_decay")
    assert all(overwritten) == uses_gradient and any(overwritten) == uses_gradient


def test_step_stays_pure_on_numpy():
    params = {"w": np.ones(3)}
    grads = {"w": np.full(3, 0.5)}
    opt = optim.Adam(lr=0.1)
    new = opt.step(params, grads)
    np.testing.assert_array_equal(params["w"], np.ones(3))
    assert new["w"] is not params["w"]


def test_model_does_not_alias_loaded_arrays():
    """In-place updates must never reach arrays the caller handed to load_state_dict."""
    model = portgd.mlp(3, [4], 1)
    state = model.state_dict()
    before = {k: v.copy() for k, v in state.items()}
    model.load_state_dict(state)
    model.fit(np.ones((8, 3)), np.zeros(8), loss="mse", optimizer="sgd", epochs=1,
              batch_size=8, verbose=0)
    assert not np.array_equal(before["0.weight"], model.state_dict()["0.weight"])
    for key, value in before.items():
        np.testing.assert_array_equal(state[key], value)


def test_relu_backward_fast_path_matches_generic_including_non_finite():
    from portgd.layers import relu_backward

    backend = portgd.get_backend("numpy")
    x = np.array([[-1.0, 0.0, 2.0, -3.0], [1.0, -0.5, 0.0, 4.0]], np.float32)
    dout = np.array([[np.inf, -3.0, np.nan, -2.0], [5.0, -np.inf, 1.0, -1.0]], np.float32)
    with np.errstate(invalid="ignore"):
        fast = backend.fast["relu_backward"](x, dout)
        generic = relu_backward(x, dout, np)
    np.testing.assert_array_equal(fast, generic)
    np.testing.assert_array_equal(np.signbit(fast), np.signbit(generic))
    assert fast.dtype == generic.dtype == np.float32
