"""TrainingStep/LayerwiseStep (the update fit applies during backprop) against update(model).

Updating each layer as soon as its gradients exist must give the numbers of the plain
"whole backward pass, then update(model)" order bit for bit, on every backend and for every
optimizer configuration; it must release the gradients, and it must lower the peak memory of
a step by the gradients no longer held at once.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import float64_or_skip

import portgd
from portgd import optim
from portgd.errors import CheckpointError
from portgd.step import TrainingStep

CONFIGS = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adagrad", {"lr_decay": 0.01}),
    ("rmsprop", {"centered": True, "momentum": 0.5}),
    ("adam", {"amsgrad": True, "weight_decay": 0.01}),
    ("adamw", {}),
    ("sgd", {"momentum": 0.5, "clip_value": 0.05, "maximize": True}),
    ("adam", {"clip_norm": 0.1}),  # needs every gradient first: applied in finish()
]


def _model(backend, dtype="float64"):
    return portgd.mlp(5, [7, 6], 3, output="softmax", seed=3, dtype=dtype, backend=backend)


def _tanh_first(backend, dtype="float64"):
    """A model whose first layer has no parameters (its backward still runs)."""
    from portgd.layers import Dense, ReLU, Softmax, Tanh

    return portgd.Sequential([Tanh(), Dense(5, 7), ReLU(), Dense(7, 3), Softmax()], seed=3,
                             dtype=dtype, backend=backend)


def _batches(steps=5, n=8):
    rng = np.random.default_rng(1)
    return [(rng.normal(size=(n, 5)), rng.integers(0, 3, n)) for _ in range(steps)]


def _targets(model, labels):
    return portgd.losses.one_hot(model.xp, model.backend.asarray(labels), 3, model.dtype)


def _assert_same_training_state(plain, layerwise, plain_opt, layer_opt):
    assert layer_opt.step_count == plain_opt.step_count
    assert layer_opt.param_steps == plain_opt.param_steps
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(layerwise.state_dict()[key], value, err_msg=key)
    expected = plain_opt.state_dict()["state"]
    got = layer_opt.state_dict()["state"]
    assert got.keys() == expected.keys()
    for key, entry in expected.items():
        for state_key, value in entry.items():
            np.testing.assert_array_equal(got[key][state_key], value)


def _train_both(backend, build, plain_opt, layer_opt, steps=5):
    """The same batches through update(model) and through the layerwise step."""
    loss = portgd.losses.CategoricalCrossEntropy(from_logits=False)
    plain, layerwise = build(backend), build(backend)
    start = layer_opt.step_count
    with backend.activate():
        for x, labels in _batches(steps):
            xb = plain.input(x)
            y = _targets(plain, labels)
            plain.loss_and_backward(plain.forward(xb), y, loss)
            kept = {k: plain.backend.to_numpy(g) for k, g in plain.grads.items()}
            plain_opt.update(plain)
            for k, g in plain.grads.items():  # update(model) leaves the gradients intact
                np.testing.assert_array_equal(plain.backend.to_numpy(g), kept[k])

            step = TrainingStep(layerwise, layer_opt)
            layerwise.loss_and_backward(layerwise.forward(xb), y, loss, after_layer=step)
            step.finish()
            assert layerwise.grads == {}  # released as they were used
    assert layer_opt.step_count == start + steps
    _assert_same_training_state(plain, layerwise, plain_opt, layer_opt)


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{sorted(k)}" for n, k in CONFIGS])
def test_layerwise_step_equals_update_after_backward(backend, name, kwargs):
    float64_or_skip(backend)
    _train_both(backend, _model, optim.make_optimizer(name, lr=0.05, **kwargs),
                optim.make_optimizer(name, lr=0.05, **kwargs))


def test_layerwise_step_with_a_schedule_and_a_parameter_free_first_layer(numpy_backend):
    from portgd.schedules import StepDecay

    def make():
        return optim.SGD(lr=StepDecay(0.1, step_size=2, gamma=0.5), momentum=0.9)

    _train_both(numpy_backend, _tanh_first, make(), make())


def test_layerwise_step_with_loaded_state_matches_update(numpy_backend):
    source = optim.Adam(lr=0.01, amsgrad=True)
    _train_both(numpy_backend, _model, source, optim.Adam(lr=0.01, amsgrad=True), steps=2)
    plain_opt, layer_opt = optim.Adam(lr=0.5), optim.Adam(lr=0.5)
    plain_opt.load_state_dict(source.state_dict())
    layer_opt.load_state_dict(source.state_dict())
    _train_both(numpy_backend, _model, plain_opt, layer_opt, steps=3)
    assert layer_opt.param_steps["0.weight"] == 5


def test_a_model_without_parameters_to_update_still_counts_the_step():
    model = portgd.Sequential([portgd.layers.Softmax()], backend="numpy")  # fused CE: start=-1
    opt = optim.SGD(lr=0.1)
    step = TrainingStep(model, opt)
    seen = []
    model.loss_and_backward(model.forward(model.input(np.ones((2, 3)))),
                            model.input(np.eye(3)[:2]),
                            portgd.losses.CategoricalCrossEntropy(from_logits=False),
                            after_layer=lambda *args: seen.append(args))
    step.finish()
    assert seen == [] and opt.step_count == 1 and opt.state == {}


def test_finish_twice_or_a_layer_after_finish_is_an_error():
    model = _model("numpy")
    step = TrainingStep(model, optim.SGD(lr=0.1))
    step.finish()
    with pytest.raises(portgd.InputError, match="already finished"):
        step.finish()
    with pytest.raises(portgd.InputError, match="begin_step"):
        step(0, model.layers[0])


def test_an_interrupted_backward_leaves_exact_per_parameter_counts():
    class Boom(portgd.layers.Layer):
        def backward(self, dout):
            raise KeyboardInterrupt

    model = portgd.Sequential([portgd.layers.Dense(4, 3), Boom(), portgd.layers.Dense(3, 2)],
                              backend="numpy", dtype="float64")
    before = model.state_dict()
    opt = optim.Adam(lr=0.1)
    step = TrainingStep(model, opt)
    x = model.input(np.ones((2, 4)))
    with pytest.raises(KeyboardInterrupt):
        model.loss_and_backward(model.forward(x), model.input(np.zeros((2, 2))),
                                portgd.losses.MSE(), after_layer=step)
    after = model.state_dict()
    assert not np.array_equal(after["2.weight"], before["2.weight"])  # above: stepped
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])  # below: not
    assert opt.param_steps == {"2.weight": 1, "2.bias": 1} and opt.step_count == 0


def test_parameter_names_follow_positions_in_layers():
    """Optimizer state is keyed like model.params even if layers move after construction."""
    model = _model("numpy")
    model.layers.insert(0, portgd.layers.Identity())
    x, labels = _batches(1)[0]
    opt = optim.Adam(lr=0.01)
    model.fit(x, labels, loss=portgd.losses.CategoricalCrossEntropy(from_logits=False),
              optimizer=opt, epochs=1, batch_size=8, verbose=0)
    assert set(opt.state) == set(model.params) == {"1.weight", "1.bias", "3.weight", "3.bias",
                                                    "5.weight", "5.bias"}


def test_an_in_place_rule_without_the_may_overwrite_grad_keyword_is_called_without_it(
    numpy_backend, monkeypatch
):
    calls = []

    def sgd_inplace(param, grad, state, hp, step, *, xp):  # a backend's older-style rule
        calls.append(step)
        return optim.sgd_update(param, grad, state, hp, step, xp=xp)

    monkeypatch.setitem(numpy_backend.fast, "sgd:inplace", sgd_inplace)
    x, labels = _batches(1)[0]
    _model("numpy").fit(x, labels, loss=portgd.losses.CategoricalCrossEntropy(from_logits=False),
                        optimizer=optim.SGD(lr=0.1), epochs=1, batch_size=4, verbose=0)
    assert calls == [1] * 6 + [2] * 6  # two steps of six parameters


def test_after_layer_sees_each_backpropagated_layer_once_in_reverse():
    model = _model("numpy")
    seen = []
    loss = portgd.losses.CategoricalCrossEntropy(from_logits=False)
    x, labels = _batches(1)[0]
    model.loss_and_backward(model.forward(model.input(x)), _targets(model, labels), loss,
                            after_layer=lambda i, layer: seen.append((i, bool(layer.grads))))
    # Softmax (index 5) is skipped: the fused loss gives the gradient of its input directly
    assert seen == [(4, True), (3, False), (2, True), (1, False), (0, True)]


def test_fit_leaves_no_gradients_and_matches_a_manual_loop():
    x, labels = _batches(1, n=32)[0]
    fitted, manual = _model("numpy"), _model("numpy")
    loss = portgd.losses.CategoricalCrossEntropy(from_logits=False)
    fitted.fit(x, labels, loss=loss, optimizer=optim.Adam(lr=0.01), epochs=2, batch_size=16,
               shuffle=False, verbose=0)
    assert fitted.grads == {}
    opt = optim.Adam(lr=0.01)
    for _ in range(2):
        for start in (0, 16):
            xb = manual.input(x[start:start + 16])
            manual.loss_and_backward(manual.forward(xb), _targets(manual, labels[start:start + 16]),
                                     loss)
            opt.update(manual)
    for key, value in manual.state_dict().items():
        np.testing.assert_array_equal(fitted.state_dict()[key], value)


def test_loaded_state_is_checked_and_cast_in_the_layerwise_path():
    loss = portgd.losses.CategoricalCrossEntropy(from_logits=False)
    x, labels = _batches(1)[0]
    source = _model("numpy")
    source_opt = optim.Adam(lr=0.01)
    source.fit(x, labels, loss=loss, optimizer=source_opt, epochs=1, batch_size=8, verbose=0)

    target = _model("numpy", dtype="float32")  # float64 state meets float32 parameters
    opt = optim.Adam(lr=0.01)
    opt.load_state_dict(source_opt.state_dict())
    target.fit(x, labels, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    assert opt.state["0.weight"]["exp_avg"].dtype == np.float32
    assert opt.param_steps["0.weight"] == 2

    wider = portgd.mlp(5, [9, 6], 3, output="softmax", backend="numpy")
    opt = optim.Adam(lr=0.01)
    opt.load_state_dict(source_opt.state_dict())
    before = wider.state_dict()
    with pytest.raises(CheckpointError, match=r"'0.weight'/'exp_avg' has shape \(5, 7\)"):
        wider.fit(x, labels, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    for key, value in before.items():  # it fails before the first layer is updated
        np.testing.assert_array_equal(wider.state_dict()[key], value, err_msg=key)


def _peak_bytes(model, opt, x, y, loss, layerwise):
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    if layerwise:
        step = TrainingStep(model, opt)
        model.loss_and_backward(model.forward(x), y, loss, after_layer=step)
        step.finish()
    else:
        model.loss_and_backward(model.forward(x), y, loss)
        opt.update(model)
        model.zero_grad()
    peak = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    return peak


def test_layerwise_step_holds_one_layers_gradients_at_a_time():
    """Peak memory of a step: the two 256x256 float64 weight gradients (512 KiB each) are
    never alive together, so the peak drops by one of them."""
    loss = portgd.losses.MSE()
    rng = np.random.default_rng(0)
    peaks = {}
    for layerwise in (False, True):
        model = portgd.Sequential([portgd.layers.Dense(256, 256), portgd.layers.Dense(256, 256)],
                                  dtype="float64", backend="numpy")
        x, y = model.input(rng.normal(size=(2, 256))), model.input(rng.normal(size=(2, 256)))
        opt = optim.SGD(lr=0.01)
        _peak_bytes(model, opt, x, y, loss, layerwise)  # warm-up: nothing allocated lazily below
        peaks[layerwise] = _peak_bytes(model, opt, x, y, loss, layerwise)
    gradient = 256 * 256 * 8
    assert peaks[False] - peaks[True] >= gradient, peaks


class _UnhashableRule:
    """A callable rule object that cannot be a cache key (eq without hash)."""

    __hash__ = None

    def __init__(self):
        self.flags = []

    def __eq__(self, other):
        return self is other

    def __call__(self, param, grad, state, hp, step, *, xp, may_overwrite_grad=False):
        self.flags.append(may_overwrite_grad)
        return optim.sgd_update(param, grad, state, hp, step, xp=xp)


def _catch_all_rule(calls):
    def sgd_inplace(*args, **kwargs):  # passes everything on to the generic rule
        calls.append(sorted(kwargs))
        return optim.sgd_update(*args, **kwargs)

    return sgd_inplace


def test_the_keyword_goes_only_to_rules_that_name_it(numpy_backend, monkeypatch):
    x, labels = _batches(1)[0]
    loss = portgd.losses.CategoricalCrossEntropy(from_logits=False)

    unhashable = _UnhashableRule()
    monkeypatch.setitem(numpy_backend.fast, "sgd:inplace", unhashable)
    _model("numpy").fit(x, labels, loss=loss, optimizer=optim.SGD(lr=0.1), epochs=1,
                        batch_size=8, verbose=0)
    assert unhashable.flags == [True] * 6

    calls = []
    monkeypatch.setitem(numpy_backend.fast, "sgd:inplace", _catch_all_rule(calls))
    _model("numpy").fit(x, labels, loss=loss, optimizer=optim.SGD(lr=0.1), epochs=1,
                        batch_size=8, verbose=0)
    assert calls == [["xp"]] * 6


def _named_params_and_grads():
    rng = np.random.default_rng(5)
    shapes = {"0.weight": (3, 4), "0.bias": (4,), "2.weight": (4, 2), "2.bias": (2,)}
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads = {k: rng.normal(size=s) for k, s in shapes.items()}
    return params, grads


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{sorted(k)}" for n, k in CONFIGS])
def test_the_layerwise_step_is_a_function_of_name_keyed_dicts(name, kwargs):
    """No model: the optimizer's step applied in two parts equals opt.step on the whole."""
    params, grads = _named_params_and_grads()
    whole = optim.make_optimizer(name, lr=0.05, **kwargs)
    parts = optim.make_optimizer(name, lr=0.05, **kwargs)
    for _ in range(3):
        expected = whole.step(params, grads)
        owned = {k: v.copy() for k, v in params.items()}  # apply may update these in place
        step = parts.begin_step(owned)
        if step.layerwise:
            got = {}
            for layer in ("2", "0"):  # the backward order
                keys = {"weight", "bias"}
                got.update({f"{layer}.{k}": v for k, v in step.apply(
                    {k: owned[f"{layer}.{k}"] for k in keys},
                    {k: grads[f"{layer}.{k}"].copy() for k in keys},
                    name_of=lambda k, layer=layer: f"{layer}.{k}").items()})
            assert step.finish() == {}
        else:
            with pytest.raises(portgd.InputError, match="finish"):
                step.apply(owned, grads)
            got = step.finish(owned, {k: g.copy() for k, g in grads.items()})
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        params = expected
    assert parts.param_steps == whole.param_steps and parts.step_count == whole.step_count == 3


def test_the_rule_is_looked_up_once_per_backend_like_a_layers_fast_paths(numpy_backend,
                                                                          monkeypatch):
    """An optimizer takes its update function from the backend once, as a layer binds its
    fast paths when built: a fast path registered later reaches new optimizers only, and a
    move to another backend looks the rule up there."""
    x, labels = _batches(1)[0]
    loss = portgd.losses.CategoricalCrossEntropy(from_logits=False)
    opt = optim.SGD(lr=0.1)
    _model("numpy").fit(x, labels, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    calls = []
    monkeypatch.setitem(numpy_backend.fast, "sgd:inplace", _catch_all_rule(calls))
    _model("numpy").fit(x, labels, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    assert calls == []
    _model("numpy").fit(x, labels, loss=loss, optimizer=optim.SGD(lr=0.1), epochs=1,
                        batch_size=8, verbose=0)
    assert calls == [["xp"]] * 6
    opt.to("array_api_strict")  # another backend: its own (generic) rule
    _model("array_api_strict").fit(x, labels, loss=loss, optimizer=opt, epochs=1, batch_size=8,
                                   verbose=0)
    assert calls == [["xp"]] * 6
    opt.to(numpy_backend)  # back on NumPy: looked up again, and the new rule is found
    _model("numpy").fit(x, labels, loss=loss, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    assert calls == [["xp"]] * 12


@pytest.mark.parametrize("options", [{}, {"maximize": True}, {"clip_value": 0.5}])
def test_a_parameter_whose_gradient_is_none_is_left_alone(options):
    """A layer may store None for a parameter that has no gradient this step: the layerwise
    step skips it (no update, no state, no count) and updates the rest, also where the
    gradients are clipped or negated first."""
    params, grads = _named_params_and_grads()
    grads = {"0.bias": None, **{k: v for k, v in grads.items() if k != "0.bias"}}  # None first
    whole = optim.Adam(lr=0.05, **options)
    parts = optim.Adam(lr=0.05, **options)
    want = whole.step(params, grads)
    step = parts.begin_step({k: v.copy() for k, v in params.items()})
    got = {}
    for prefix in ("2.", "0."):
        keys = [k for k in grads if k.startswith(prefix)]
        got.update({prefix + k: v for k, v in step.apply(
            {k[2:]: params[k].copy() for k in keys}, {k[2:]: grads[k] for k in keys},
            name_of=prefix.__add__).items()})
    step.finish()
    assert sorted(got) == ["0.weight", "2.bias", "2.weight"]
    for key, value in got.items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)
    assert sorted(parts.state) == sorted(whole.state) == ["0.weight", "2.bias", "2.weight"]
    assert parts.param_steps == whole.param_steps == {"0.weight": 1, "2.bias": 1, "2.weight": 1}


def test_a_rule_that_may_overwrite_the_gradient_gets_the_backends_namespace(numpy_backend,
                                                                            monkeypatch):
    seen = []

    def sgd_inplace(param, grad, state, hp, step, *, xp, may_overwrite_grad=False):
        seen.append((xp, may_overwrite_grad))
        return optim.sgd_update(param, grad, state, hp, step, xp=xp)

    monkeypatch.setitem(numpy_backend.fast, "sgd:inplace", sgd_inplace)
    x, labels = _batches(1)[0]
    _model("numpy").fit(x, labels, loss=portgd.losses.CategoricalCrossEntropy(from_logits=False),
                        optimizer=optim.SGD(lr=0.1), epochs=1, batch_size=8, verbose=0)
    assert seen == [(numpy_backend.xp, True)] * 6


def test_a_group_whose_rule_fails_part_way_commits_nothing(numpy_backend, monkeypatch):
    """State and counts move with the parameters: a rule that raises on a group's second
    parameter leaves the first one's state and count where they were, since the caller
    never receives its new value."""
    calls = []

    def sgd_inplace(param, grad, state, hp, step, *, xp):
        calls.append(step)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return optim.sgd_update(param, grad, state, hp, step, xp=xp)

    monkeypatch.setitem(numpy_backend.fast, "sgd:inplace", sgd_inplace)
    opt = optim.SGD(lr=0.1, momentum=0.9)
    params, grads = _named_params_and_grads()
    step = opt.begin_step(params)
    group = {"weight": params["0.weight"], "bias": params["0.bias"]}
    with pytest.raises(RuntimeError, match="out of memory"):
        step.apply(group, {"weight": grads["0.weight"], "bias": grads["0.bias"]},
                   name_of="0.".__add__)
    assert calls == [1, 1]
    assert opt.state == {} and opt.param_steps == {}
