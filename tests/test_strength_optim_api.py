"""The optimizers' public surface as the mutation run asked: defaults, argument checks named
after the class and argument, reprs, counters, in-place updates of a model's arrays, state
moved and loaded without aliasing, and state dicts that are refused with their reason."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import portgd
from portgd import Sequential, optim
from portgd.layers import Dense

CLASSES = [optim.SGD, optim.AdaGrad, optim.RMSprop, optim.Adam, optim.AdamW]

DEFAULTS = {  # torch's defaults, as docs/optimizers.md states them
    "SGD": {"lr": 0.001, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
            "weight_decay": 0.0},
    "AdaGrad": {"lr": 0.01, "lr_decay": 0.0, "weight_decay": 0.0,
                "initial_accumulator_value": 0.0, "eps": 1e-10},
    "RMSprop": {"lr": 0.01, "alpha": 0.99, "eps": 1e-08, "weight_decay": 0.0,
                "momentum": 0.0, "centered": False},
    "Adam": {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.0,
             "amsgrad": False},
    "AdamW": {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01,
              "amsgrad": False},
}
COMMON = {"clip_value": None, "clip_norm": None, "maximize": False}


@pytest.mark.parametrize("cls", CLASSES)
def test_the_defaults(cls):
    opt = cls()
    assert opt.config() == {**DEFAULTS[cls.__name__], **COMMON}
    assert repr(opt) == cls.__name__ + "(" + ", ".join(
        f"{k}={v!r}" for k, v in {**DEFAULTS[cls.__name__], **COMMON}.items()) + ")"


@pytest.mark.parametrize("cls", CLASSES)
def test_clipping_and_maximize_are_kept(cls):
    opt = cls(clip_value=0.5, clip_norm=2.0, maximize=True)
    assert (opt.clip_value, opt.clip_norm, opt.maximize) == (0.5, 2.0, True)


def _arguments(cls):
    return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]


@pytest.mark.parametrize("cls", CLASSES)
def test_every_argument_is_checked_under_its_own_name(cls):
    for name in _arguments(cls):
        if name == "lr":
            continue  # a callable or a schedule config is a learning rate too
        bad = "x" if name != "betas" else ("x", 0.9)
        with pytest.raises(portgd.InputError) as caught:
            cls(**{name: bad})
        message = str(caught.value)
        assert message.startswith(f"{cls.__name__}: {name}"), (name, message)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("name", ["lr", "clip_value", "clip_norm"])
def test_negative_rates_and_limits_are_refused(cls, name):
    with pytest.raises(portgd.InputError, match=rf"^{cls.__name__}: {name} must be >= 0, "
                                                rf"got -1.0$"):
        cls(**{name: -1.0})
    assert getattr(cls(**{name: 0.0}), "_lr" if name == "lr" else name) == 0.0


def test_maximize_must_be_a_bool():
    with pytest.raises(portgd.InputError, match=r"^Adam: maximize must be True or False, got 1"):
        optim.Adam(maximize=1)


def test_each_step_counts_once_even_without_parameters():
    opt = optim.SGD(lr=0.1)
    for _ in range(3):
        assert opt.step({}, {}) == {}
    assert opt.step_count == 3


def _model_and_grads():
    model = Sequential([Dense(3, 2)], seed=0)
    layer = model.layers[0]
    layer.grads = {k: np.full_like(v, 0.5) for k, v in layer.params.items()}
    return model


@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_update_changes_a_models_own_arrays_in_place(clip_norm):
    model = _model_and_grads()
    before = dict(model.params)
    opt = optim.Adam(lr=0.1, clip_norm=clip_norm)
    if clip_norm is None:
        opt.update(model)
    else:  # the whole-model update a clipping LayerwiseStep applies in finish()
        step = opt.begin_step(model.params, model.backend)
        model.params = step.finish(model.params, model.grads)
    assert all(model.params[k] is before[k] for k in before)


def test_a_clipping_step_needs_the_gradients_too():
    model = _model_and_grads()
    step = optim.SGD(lr=0.1, clip_norm=1.0).begin_step(model.params, model.backend)
    with pytest.raises(portgd.InputError, match="needs every parameter and gradient"):
        step.finish(model.params, None)


def test_update_refuses_a_model_moved_away_from_the_state():
    pytest.importorskip("array_api_strict")
    model = _model_and_grads()
    opt = optim.Adam(lr=0.1)
    opt.update(model)
    model.to("array_api_strict")
    layer = model.layers[0]
    layer.grads = {k: model.backend.asarray(np.ones(tuple(v.shape)), dtype=v.dtype)
                   for k, v in layer.params.items()}
    with pytest.raises(portgd.BackendMismatchError, match=r"opt.to\(model.backend\)"):
        opt.update(model)


def test_an_object_that_is_no_array_is_named_by_its_type():
    opt = optim.SGD(lr=0.1)
    opt.step({"w": np.ones(2)}, {"w": np.ones(2)})
    with pytest.raises(portgd.BackendMismatchError,
                       match=r"^SGD: parameter 'w' is a builtins.object, but"):
        opt.step({"w": object()}, {"w": np.ones(2)})


@pytest.mark.parametrize("value,kind,what", [
    ([1.0, 2.0], "list", "parameter 'w'"), ((1.0, 2.0), "tuple", "parameter 'w'"),
    (1.5, "float", "parameter 'w'"), (2, "int", "parameter 'w'"), (1j, "complex", "parameter 'w'"),
])
def test_python_data_in_place_of_an_array_is_named_as_such(value, kind, what):
    """A list is host data NumPy would take, but no array: the message says so, rather than
    that the state lives elsewhere."""
    opt = optim.SGD(lr=0.1)
    opt.step({"w": np.ones(2)}, {"w": np.ones(2)})
    with pytest.raises(portgd.InputError, match=rf"^SGD: {what} is a Python {kind}, not an "
                                                r"array; pass arrays of the backend the state "
                                                r"lives on, e.g. portgd.get_backend\('numpy'\)"
                                                r"\.asarray\(value\)$"):
        opt.step({"w": value}, {"w": np.ones(2)})


def test_a_gradient_given_as_a_list_is_named_as_such():
    opt = optim.SGD(lr=0.1)
    opt.step({"w": np.ones(2)}, {"w": np.ones(2)})
    with pytest.raises(portgd.InputError, match=r"^SGD: gradient 'w' is a Python list, not an"):
        opt.step({"w": np.ones(2)}, {"w": [1.0, 2.0]})


def test_moving_the_state_keeps_the_device():
    pytest.importorskip("array_api_strict")
    opt = optim.Adam(lr=0.1)
    opt.to("array_api_strict", "device1")
    assert opt.backend.device_name == "device1"


def test_loaded_state_is_a_copy_of_the_state_dict():
    model = _model_and_grads()
    opt = optim.Adam(lr=0.1)
    opt.update(model)
    snapshot = opt.state_dict()
    kept = {name: {k: v.copy() for k, v in s.items()} for name, s in snapshot["state"].items()}
    fresh = optim.Adam(lr=0.1)
    fresh.load_state_dict(snapshot)
    fresh.update(_model_and_grads())
    for name, state in kept.items():
        for key, value in state.items():
            np.testing.assert_array_equal(snapshot["state"][name][key], value)
    assert fresh.needs_params_to_begin is False  # checked once, at the first step


def test_state_moved_between_backends_is_copied():
    pytest.importorskip("array_api_strict")
    model = _model_and_grads()
    opt = optim.Adam(lr=0.1)
    opt.update(model)
    before = {k: np.array(v, copy=True) for k, v in opt.state["0.weight"].items()}
    opt.to("array_api_strict")
    opt.to("numpy")
    for key, value in opt.state["0.weight"].items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("change,message", [
    (lambda sd: sd.pop("format"), None),
    (lambda sd: sd.__setitem__("step_count", -1), r"Adam: step_count must be an int >= 0"),
    (lambda sd: sd.__setitem__("step_count", True), r"Adam: step_count must be an int >= 0"),
    (lambda sd: sd.__setitem__("param_steps", {"0.weight": -2, "0.bias": 1}),
     r"Adam: param_steps\['0.weight'\] must be an int >= 0, got -2"),
    (lambda sd: sd.__setitem__("state", []), r"Adam: 'state' and 'param_steps' must be dicts"),
    (lambda sd: sd["state"].__setitem__("0.bias", 5),
     r"Adam: state of parameter '0.bias' has keys int, expected"),
])
def test_state_dicts_refused_with_their_reason(change, message):
    model = _model_and_grads()
    opt = optim.Adam(lr=0.1)
    opt.update(model)
    snapshot = opt.state_dict()
    change(snapshot)
    fresh = optim.Adam(lr=0.1)
    if message is None:  # a snapshot without "format" is read as the current format
        fresh.load_state_dict(snapshot)
        assert fresh.step_count == 1
        return
    with pytest.raises(portgd.CheckpointError, match=message):
        fresh.load_state_dict(snapshot)


def test_a_rule_without_a_readable_signature_is_not_given_keywords():
    from portgd.optim.optimizer import _names_keyword

    assert _names_keyword(max, "key") is False  # inspect cannot read it: pass nothing


def test_make_optimizer_refuses_what_is_not_a_name():
    with pytest.raises(portgd.InputError, match=r"^unknown optimizer 42; choose one of sgd"):
        optim.make_optimizer(42)
    assert type(optim.make_optimizer("ADAM")) is optim.Adam


@pytest.mark.parametrize("call,owner", [
    (lambda g: optim.clip_by_value(g, 1.0), "clip_by_value"),
    (lambda g: optim.global_norm(g), "global_norm"),
    (lambda g: optim.clip_by_global_norm(g, 1.0), "clip_by_global_norm"),
])
def test_clipping_functions_name_themselves_in_their_errors(call, owner):
    pytest.importorskip("array_api_strict")
    with pytest.raises(portgd.InputError, match=rf"^{owner}: grads must be a dict"):
        call([np.ones(2)])
    strict = portgd.get_backend("array_api_strict")
    mixed = {"a": np.ones(2), "b": strict.asarray(np.ones(2))}
    with pytest.raises(portgd.BackendMismatchError, match=rf"^{owner}: gradient 'b' is "):
        call(mixed)


def test_clip_by_global_norm_checks_its_limits_under_their_names():
    grads = {"a": np.ones(2)}
    with pytest.raises(portgd.InputError, match=r"^clip_by_global_norm: max_norm must be >= 0"):
        optim.clip_by_global_norm(grads, -1.0)
    with pytest.raises(portgd.InputError, match=r"^clip_by_global_norm: eps must be >= 0"):
        optim.clip_by_global_norm(grads, 1.0, eps=-1.0)
    with pytest.raises(portgd.InputError, match=r"^clip_by_global_norm: eps must be a real"):
        optim.clip_by_global_norm(grads, 1.0, eps="x")
    clipped = optim.clip_by_global_norm(grads, 1.0, eps=0.0)  # no eps: exactly norm 1
    np.testing.assert_allclose(float(optim.global_norm(clipped)), 1.0, rtol=1e-15)


def test_step_names_the_optimizer_in_its_argument_errors():
    opt = optim.RMSprop(lr=0.1)
    params = {"w": np.ones(2)}
    with pytest.raises(portgd.InputError, match=r"^RMSprop.step: grads must be a dict"):
        opt.step(params, [np.ones(2)])
    with pytest.raises(portgd.InputError,
                       match=r"^RMSprop.step: gradients for \['v'\] have no parameter"):
        opt.step(params, {"v": np.ones(2)})
    with pytest.raises(portgd.ShapeError, match=r"^RMSprop.step: gradient 'w' has shape \(3,\) "
                                                r"but the parameter has shape \(2,\)"):
        opt.step(params, {"w": np.ones(3)})


def test_an_object_of_another_module_is_named_by_module_and_type():
    from fractions import Fraction

    opt = optim.SGD(lr=0.1)
    opt.step({"w": np.ones(2)}, {"w": np.ones(2)})
    with pytest.raises(portgd.BackendMismatchError,
                       match=r"^SGD: parameter 'w' is a fractions.Fraction, but"):
        opt.step({"w": Fraction(1, 2)}, {"w": np.ones(2)})


@pytest.mark.parametrize("cls", CLASSES)
def test_negative_weight_decay_is_refused(cls):
    with pytest.raises(portgd.InputError,
                       match=rf"^{cls.__name__}: weight_decay must be >= 0, got -0.5$"):
        cls(weight_decay=-0.5)


def test_rmsprop_keeps_a_momentum_buffer_only_with_momentum():
    assert optim.RMSprop().state_keys() == ("square_avg",)
    assert "momentum_buffer" in optim.RMSprop(momentum=0.5).state_keys()
    assert "grad_avg" in optim.RMSprop(centered=True).state_keys()


def test_moving_the_state_lets_go_of_the_arrays_it_last_returned():
    pytest.importorskip("array_api_strict")
    model = _model_and_grads()
    opt = optim.Adam(lr=0.1)
    opt.update(model)
    assert opt._returned  # the model's own arrays, whose state needs no shape check
    opt.to("array_api_strict")
    assert opt._returned == {}  # they live on the old device: nothing keeps them alive


@pytest.mark.parametrize("in_place", [True, False])
def test_state_of_another_model_changes_nothing_even_after_a_matching_parameter(in_place):
    """The first parameter's state fits, the second's does not: the update refuses before
    it writes into either (an in-place rule would have changed the first already)."""
    opt = optim.Adam(lr=0.1)
    first = {"w": np.ones((2, 2)), "b": np.ones(2)}
    opt.step(first, {"w": np.ones((2, 2)), "b": np.ones(2)})
    before = {name: {k: v.copy() for k, v in state.items()} for name, state in opt.state.items()}
    other = {"w": np.full((2, 2), 3.0), "b": np.full(3, 3.0)}
    grads = {"w": np.ones((2, 2)), "b": np.ones(3)}
    with pytest.raises(portgd.InputError, match="holds state for a parameter 'b' shaped"):
        if in_place:
            opt._apply(other, grads, in_place=True, trusted=True)
        else:
            opt.step(other, grads)
    np.testing.assert_array_equal(other["w"], np.full((2, 2), 3.0))
    assert opt.param_steps == {"w": 1, "b": 1} and opt.step_count == 1
    for name, state in before.items():
        for key, value in state.items():
            np.testing.assert_array_equal(opt.state[name][key], value)


def test_a_whole_update_checks_each_held_state_once(monkeypatch):
    """The whole-model update checks every state before writing; the parameters it checked
    are not checked a second time inside the update, and the next step checks none."""
    import portgd.optim.optimizer as optimizer_module

    checked = []
    real = optimizer_module._state_mismatch
    monkeypatch.setattr(optimizer_module, "_state_mismatch",
                        lambda state, p: checked.append(tuple(p.shape)) or real(state, p))
    opt = optim.Adam(lr=0.1)
    grads = {"w": np.ones((2, 2)), "b": np.ones(2)}
    opt.step({"w": np.ones((2, 2)), "b": np.ones(2)}, grads)
    assert checked == []  # no state yet: nothing to check
    owned = {"w": np.full((2, 2), 3.0), "b": np.full(2, 3.0)}  # new arrays: checked
    new = opt._apply(owned, grads, in_place=True, trusted=True)
    assert sorted(checked) == [(2,), (2, 2)]
    opt._apply(new, grads, in_place=True, trusted=True)  # the arrays it returned: no check
    assert sorted(checked) == [(2,), (2, 2)]


def test_a_constant_rate_reuses_one_hp_dict_and_a_new_rate_makes_another():
    """Optimizer._hp: built once while rate and hyperparameters stay, anew when either
    changes (the dict every rule reads: a stale one would apply the old settings)."""
    backend = portgd.get_backend("numpy")
    opt = optim.Adam(lr=0.1)
    first = opt._rule(backend, in_place=True)[1]
    assert opt._rule(backend, in_place=True)[1] is first
    opt.lr = 0.2
    assert opt._rule(backend, in_place=True)[1]["lr"] == 0.2


def test_hyperparameters_loaded_at_the_same_rate_reach_the_next_step():
    """load_state_dict replaces the hyperparameters: a step after it uses the loaded weight
    decay even though the rate, and so the cached rate of the last step, is unchanged."""
    params = {"w": np.array([1.0, -2.0, 3.0])}
    grads = {"w": np.array([0.5, 0.25, -1.0])}
    loaded = {"lr": 0.1, "weight_decay": 0.5}
    want = optim.Adam(**loaded).step(params, grads)
    plain = optim.Adam(lr=0.1).step(params, grads)
    assert not np.array_equal(want["w"], plain["w"])  # the decay changes the first step
    opt = optim.Adam(lr=0.1)
    opt.step(params, grads)
    opt.load_state_dict(optim.Adam(**loaded).state_dict())
    np.testing.assert_array_equal(opt.step(params, grads)["w"], want["w"])


def test_a_rate_of_minus_zero_after_zero_reaches_the_rule_as_minus_zero():
    """The hp dict is kept for the very same rate object only: -0.0 == 0.0, but a rule
    multiplying by the rate keeps the sign, as a fresh optimizer at that step would."""
    rates = [0.0, -0.0]
    opt = optim.SGD(lr=lambda step: rates[step])
    params = {"w": np.array([-0.0])}
    grads = {"w": np.array([1.0])}
    params = opt.step(params, grads)
    assert np.signbit(params["w"][0])  # -0.0 - 0.0 * 1.0 = -0.0
    params = opt.step(params, grads)
    assert not np.signbit(params["w"][0])  # -0.0 - (-0.0 * 1.0) = +0.0
