"""Optimizers: hand-computed formulas, torch.optim equivalence, device placement, checkpoints.

Every numeric check runs in float64 on each backend of the ``backend`` fixture that has
float64, in float32 on those that do not (jax without x64, array_api_strict's ``no_x64``).
The expected numbers are computed here in plain NumPy float64, step by step, independently
of portgd's update rules. Tolerance: rtol 1e-12 in float64 (the same formula evaluated in a
different operation order differs by a few ulp per step; 20 steps stay far below 1e-12);
in float32 the cross-backend table's ``TOLERANCE["float32"]`` relative to each tensor's
largest magnitude (tests/tolerances.py), as the inputs' own rounding to float32 dominates.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import float64_or_skip, widest_float
from tolerances import TOLERANCE

import portgd
from portgd import optim
from portgd.optim import (
    SGD,
    AdaGrad,
    Adam,
    AdamW,
    RMSprop,
    clip_by_global_norm,
    clip_by_value,
    global_norm,
    make_optimizer,
    optimizer_from_state_dict,
)
from portgd.schedules import CosineDecay, ExponentialDecay, StepDecay

RTOL = 1e-12
RTOL32 = TOLERANCE["float32"]

P0 = {"w": np.array([[0.5, -1.5], [2.0, 0.25]]), "b": np.array([0.75, -0.3])}
GRADS = [
    {"w": np.array([[0.1, -0.2], [0.3, 0.05]]), "b": np.array([-0.4, 0.5])},
    {"w": np.array([[-0.6, 0.7], [0.2, -0.8]]), "b": np.array([0.9, 0.15])},
    {"w": np.array([[0.35, 0.45], [-0.55, 0.65]]), "b": np.array([-0.25, -0.05])},
]


def to_backend(backend, arrays, dtype=None):
    """Host arrays on ``backend`` in ``dtype`` (default: float64, or float32 without it)."""
    dtype = dtype or widest_float(backend)
    return {k: None if v is None else backend.asarray(v, dtype=dtype) for k, v in arrays.items()}


def to_host(backend, arrays):
    return {k: backend.to_numpy(v) for k, v in arrays.items()}


def run(backend, opt, p0=P0, grads_seq=GRADS, dtype=None):
    """Step ``opt`` through ``grads_seq`` on ``backend``; host copies of the final params."""
    params = to_backend(backend, p0, dtype)
    for grads in grads_seq:
        params = opt.step(params, to_backend(backend, grads, dtype))
    return to_host(backend, params)


def rtol_for(host):
    """RTOL for a float64 result, RTOL32 for a float32 one."""
    return RTOL if np.asarray(host).dtype == np.float64 else RTOL32


def assert_close(actual, expected, rtol=None):
    """Per tensor: elementwise rtol in float64; in float32 also an atol of RTOL32 times the
    tensor's largest expected magnitude (the scale-relative rule of tests/tolerances.py)."""
    assert actual.keys() == expected.keys()
    for k in expected:
        rtol_k = rtol or rtol_for(actual[k])
        atol = 0.0 if rtol_k == RTOL else rtol_k * float(np.max(np.abs(expected[k])))
        np.testing.assert_allclose(actual[k], expected[k], rtol=rtol_k, atol=atol, err_msg=k)


def host_state(backend, opt):
    return {
        name: {key: backend.to_numpy(value) for key, value in entry.items()}
        for name, entry in opt.state.items()
    }


# -- hand-computed formulas ---------------------------------------------------------------


def test_sgd_plain_first_step_literal(backend):
    got = run(backend, SGD(lr=0.1), grads_seq=GRADS[:1])
    assert_close(got, {"b": [0.75 + 0.04, -0.3 - 0.05], "w": [[0.49, -1.48], [1.97, 0.245]]})


@pytest.mark.parametrize(
    ("momentum", "dampening", "nesterov", "weight_decay"),
    [(0.0, 0.0, False, 0.0), (0.0, 0.0, False, 0.1), (0.9, 0.0, False, 0.0),
     (0.9, 0.25, False, 0.05), (0.8, 0.0, True, 0.0), (0.8, 0.0, True, 0.1)],
)  # fmt: skip
def test_sgd_formula(backend, momentum, dampening, nesterov, weight_decay):
    lr = 0.1
    opt = SGD(lr, momentum, dampening, nesterov, weight_decay)
    expected = {}
    for name, p in P0.items():
        buf = None
        for grads in GRADS:
            g = grads[name] + weight_decay * p
            if momentum:
                buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
                g = g + momentum * buf if nesterov else buf
            p = p - lr * g
        expected[name] = p
    assert_close(run(backend, opt), expected)


@pytest.mark.parametrize(
    ("lr_decay", "weight_decay", "initial", "eps"),
    [(0.0, 0.0, 0.0, 1e-10), (0.1, 0.0, 0.0, 1e-10), (0.05, 0.2, 0.5, 1e-3)],
)
def test_adagrad_formula(backend, lr_decay, weight_decay, initial, eps):
    lr = 0.2
    opt = AdaGrad(lr, lr_decay, weight_decay, initial, eps)
    expected = {}
    for name, p in P0.items():
        total = np.full_like(p, initial)
        for t, grads in enumerate(GRADS, start=1):
            g = grads[name] + weight_decay * p
            total = total + g * g
            p = p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(total) + eps)
        expected[name] = p
    assert_close(run(backend, opt), expected)


def test_adagrad_first_step_literal(backend):
    # sum = g^2, so the step is lr * g / (|g| + eps): about lr * sign(g)
    got = run(backend, AdaGrad(lr=0.1, eps=0.0), grads_seq=GRADS[:1])
    np.testing.assert_allclose(got["b"], [0.75 + 0.1, -0.3 - 0.1], rtol=rtol_for(got["b"]))


@pytest.mark.parametrize(
    ("alpha", "weight_decay", "momentum", "centered"),
    [(0.99, 0.0, 0.0, False), (0.9, 0.0, 0.0, True), (0.9, 0.0, 0.7, False),
     (0.8, 0.1, 0.6, True)],
)  # fmt: skip
def test_rmsprop_formula(backend, alpha, weight_decay, momentum, centered):
    lr, eps = 0.01, 1e-8
    opt = RMSprop(lr, alpha, eps, weight_decay, momentum, centered)
    expected = {}
    for name, p in P0.items():
        v = np.zeros_like(p)
        m = np.zeros_like(p)
        buf = np.zeros_like(p)
        for grads in GRADS:
            g = grads[name] + weight_decay * p
            v = alpha * v + (1 - alpha) * g**2
            if centered:
                m = alpha * m + (1 - alpha) * g
                rms = np.sqrt(v - m**2) + eps
            else:
                rms = np.sqrt(v) + eps
            if momentum:
                buf = momentum * buf + g / rms
                p = p - lr * buf
            else:
                p = p - lr * g / rms
        expected[name] = p
    assert_close(run(backend, opt), expected)


@pytest.mark.parametrize(
    ("cls", "weight_decay", "amsgrad"),
    [(Adam, 0.0, False), (Adam, 0.1, False), (Adam, 0.1, True),
     (AdamW, 0.0, False), (AdamW, 0.1, False), (AdamW, 0.1, True)],
)  # fmt: skip
def test_adam_formula(backend, cls, weight_decay, amsgrad):
    lr, b1, b2, eps = 0.05, 0.8, 0.95, 1e-8
    opt = cls(lr, (b1, b2), eps, weight_decay, amsgrad)
    # GRADS[1] is small in magnitude after GRADS[0] is large for some coordinates, so the
    # running maximum of v differs from v and AMSGrad takes a different path.
    grads_seq = [GRADS[0], GRADS[1], {k: 0.01 * v for k, v in GRADS[2].items()}]
    expected = {}
    for name, p in P0.items():
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        v_max = np.zeros_like(p)
        for t, grads in enumerate(grads_seq, start=1):
            g = grads[name]
            if cls is AdamW:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            v_max = np.maximum(v_max, v)
            second = v_max if amsgrad else v
            m_hat = m / (1 - b1**t)
            v_hat = second / (1 - b2**t)
            p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        expected[name] = p
    # torch (and portgd) evaluate lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps):
    # the same number up to rounding.
    assert_close(run(backend, opt, grads_seq=grads_seq), expected)
    if amsgrad:
        assert set(opt.state["w"]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
        state = host_state(backend, opt)["w"]
        assert not np.array_equal(state["max_exp_avg_sq"], state["exp_avg_sq"])


def test_adam_first_step_is_lr_times_sign(backend):
    got = run(backend, Adam(lr=0.01, eps=0.0), grads_seq=GRADS[:1])
    expected = {k: p - 0.01 * np.sign(GRADS[0][k]) for k, p in P0.items()}
    assert_close(got, expected)


def test_adamw_decays_weights_not_gradient(backend):
    # With a zero gradient Adam's moments stay zero and only the decoupled decay acts.
    zero = {k: np.zeros_like(v) for k, v in P0.items()}
    got = run(backend, AdamW(lr=0.1, weight_decay=0.5), grads_seq=[zero, zero])
    assert_close(got, {k: v * 0.95 * 0.95 for k, v in P0.items()})
    # Adam's L2 decay goes through the moments instead: the first step is lr * sign(p).
    got = run(backend, Adam(lr=0.1, weight_decay=0.5, eps=0.0), grads_seq=[zero])
    assert_close(got, {k: v - 0.1 * np.sign(v) for k, v in P0.items()})


@pytest.mark.parametrize(
    "opt_factory",
    [lambda: SGD(0.1, momentum=0.5, maximize=True), lambda: Adam(0.1, maximize=True)],
)
def test_maximize_is_descent_on_negated_gradient(backend, opt_factory):
    negated = [{k: -v for k, v in grads.items()} for grads in GRADS]
    plain = opt_factory()
    plain.maximize = False
    assert_close(run(backend, opt_factory()), run(backend, plain, grads_seq=negated))


# -- torch.optim equivalence ----------------------------------------------------------------

TORCH_CASES = [
    ("SGD", {}),
    ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("SGD", {"weight_decay": 0.05}),
    ("SGD", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.05, "maximize": True}),
    ("SGD", {"momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1, "maximize": True}),
    ("SGD", {"momentum": 0.9, "clip_norm": 0.5}),
    ("AdaGrad", {}),
    ("AdaGrad", {"lr_decay": 0.1}),
    ("AdaGrad", {"weight_decay": 0.05}),
    ("AdaGrad", {"initial_accumulator_value": 0.3, "eps": 1e-6}),
    ("AdaGrad", {"lr": 0.5, "lr_decay": 0.05, "weight_decay": 0.02,
                 "initial_accumulator_value": 0.1, "maximize": True}),
    ("RMSprop", {}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"momentum": 0.9, "centered": True}),
    ("RMSprop", {"weight_decay": 0.05, "alpha": 0.9}),
    ("RMSprop", {"alpha": 0.9, "eps": 1e-4, "weight_decay": 0.05, "momentum": 0.5,
                 "centered": True, "maximize": True}),
    ("RMSprop", {"clip_value": 0.5}),
    ("Adam", {}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"weight_decay": 0.05}),
    ("Adam", {"betas": (0.8, 0.99), "weight_decay": 0.05, "amsgrad": True}),
    ("Adam", {"maximize": True, "lr": 0.01, "eps": 1e-3}),
    ("Adam", {"clip_norm": 1.0, "clip_value": 0.8}),
    ("AdamW", {}),
    ("AdamW", {"weight_decay": 0.1}),
    ("AdamW", {"weight_decay": 0.05, "amsgrad": True}),
    ("AdamW", {"weight_decay": 0.0}),
    ("AdamW", {"weight_decay": 0.1, "maximize": True, "betas": (0.5, 0.9)}),
]
TORCH_NAMES = {"SGD": "SGD", "AdaGrad": "Adagrad", "RMSprop": "RMSprop", "Adam": "Adam",
               "AdamW": "AdamW"}  # fmt: skip
DEFAULT_LR = {"SGD": 0.05, "AdaGrad": 0.1, "RMSprop": 0.01, "Adam": 0.05, "AdamW": 0.05}


def random_problem(seed, steps=20, skip=()):
    """Random float64 params and ``steps`` gradient dicts; ``skip`` = steps where b has none."""
    rng = np.random.default_rng(seed)
    p0 = {"0.weight": rng.normal(size=(4, 3)), "0.bias": rng.normal(size=3)}
    grads_seq = []
    for t in range(steps):
        grads = {k: rng.normal(size=v.shape) * (1 + t % 3) for k, v in p0.items()}
        if t in skip:
            grads["0.bias"] = None
        grads_seq.append(grads)
    return p0, grads_seq


def torch_reference(name, kwargs, p0, grads_seq):
    """Final params and state of torch.optim run on the same problem (CPU, float64)."""
    torch = pytest.importorskip("torch")
    kwargs = dict(kwargs)
    clip_value = kwargs.pop("clip_value", None)
    clip_norm = kwargs.pop("clip_norm", None)
    params = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in p0.items()}
    opt = getattr(torch.optim, TORCH_NAMES[name])(list(params.values()), **kwargs)
    for grads in grads_seq:
        for k, p in params.items():
            p.grad = None if grads[k] is None else torch.tensor(grads[k], dtype=torch.float64)
        present = [p for p in params.values() if p.grad is not None]
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(present, clip_value)
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(present, clip_norm)
        opt.step()
    final = {k: p.detach().numpy().copy() for k, p in params.items()}
    state = {
        k: {key: value.numpy().copy() for key, value in opt.state[p].items() if key != "step"}
        for k, p in params.items()
        if p in opt.state
    }
    steps = {k: int(opt.state[p]["step"]) for k, p in params.items() if "step" in opt.state[p]}
    return final, state, steps


@pytest.mark.parametrize(("name", "kwargs"), TORCH_CASES, ids=lambda c: str(c))
def test_matches_torch_optim(backend, name, kwargs):
    kwargs = {"lr": DEFAULT_LR[name], **kwargs}
    p0, grads_seq = random_problem(seed=sum(map(ord, name)))
    expected, expected_state, _ = torch_reference(name, kwargs, p0, grads_seq)
    opt = getattr(optim, name)(**kwargs)
    assert_close(run(backend, opt, p0, grads_seq), expected)
    got_state = {k: entry for k, entry in host_state(backend, opt).items() if entry}
    assert got_state.keys() == expected_state.keys()
    for param in expected_state:
        assert_close(got_state[param], expected_state[param])


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("Adam", {"amsgrad": True}), ("SGD", {"momentum": 0.9, "dampening": 0.2}),
     ("RMSprop", {"centered": True}), ("AdaGrad", {"lr_decay": 0.1})],
)  # fmt: skip
def test_missing_gradients_match_torch(backend, name, kwargs):
    # torch skips parameters without .grad: no update, no state change, no step count.
    kwargs = {"lr": DEFAULT_LR[name], **kwargs}
    p0, grads_seq = random_problem(seed=5, steps=12, skip={0, 1, 4, 7})
    expected, expected_state, expected_steps = torch_reference(name, kwargs, p0, grads_seq)
    opt = getattr(optim, name)(**kwargs)
    assert_close(run(backend, opt, p0, grads_seq), expected)
    got_state = host_state(backend, opt)
    for param in expected_state:
        assert_close(got_state[param], expected_state[param])
    if expected_steps:
        assert opt.param_steps == expected_steps
    assert opt.param_steps == {"0.weight": 12, "0.bias": 8}
    assert opt.step_count == 12


def test_torch_comparison_covers_every_optimizer():
    assert {name for name, _ in TORCH_CASES} == set(optim.OPTIMIZERS)


# -- devices, dtypes, purity ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"])
def test_state_and_params_stay_on_the_parameter_device(backend, name):
    kwargs = {"centered": True, "momentum": 0.5} if name == "rmsprop" else {}
    if name in ("adam", "adamw"):
        kwargs["amsgrad"] = True
    opt = make_optimizer(name, clip_norm=1.0, **kwargs)
    params = to_backend(backend, P0)
    for grads in GRADS:
        params = opt.step(params, to_backend(backend, grads))
    for value in params.values():
        assert backend.owns(value) and backend.same_device(value.device, backend.device)
    assert opt.state, "the optimizer keeps state"
    for entry in opt.state.values():
        for value in entry.values():
            assert backend.owns(value)
            assert backend.same_device(value.device, backend.device)
    assert opt.backend == backend


@pytest.mark.parametrize("cls", [SGD, AdaGrad, RMSprop, Adam, AdamW])
def test_float32_stays_float32(backend, cls):
    opt = cls(momentum=0.9) if cls in (SGD, RMSprop) else cls()
    params = to_backend(backend, P0, "float32")
    params = opt.step(params, to_backend(backend, GRADS[0], "float32"))
    float32 = backend.dtype("float32")
    assert all(v.dtype == float32 for v in params.values())
    assert all(v.dtype == float32 for entry in opt.state.values() for v in entry.values())


@pytest.mark.parametrize("cls", [SGD, AdaGrad, RMSprop, Adam, AdamW])
def test_step_returns_new_dict_and_leaves_inputs_alone(cls):
    opt = cls(momentum=0.9) if cls in (SGD, RMSprop) else cls()
    params = {k: v.copy() for k, v in P0.items()}
    grads = {k: v.copy() for k, v in GRADS[0].items()}
    new = opt.step(params, grads)
    new = opt.step(new, grads)
    assert new is not params and list(new) == list(params)
    for k in P0:
        np.testing.assert_array_equal(params[k], P0[k])
        np.testing.assert_array_equal(grads[k], GRADS[0][k])
        assert not np.array_equal(new[k], P0[k])


def test_no_host_reads_during_step(monkeypatch):
    # On array_api_strict every way to pull a value to the host raises inside step().
    strict = pytest.importorskip("array_api_strict")
    backend = portgd.get_backend("array_api_strict", "device1")
    array_type = type(strict.asarray(0.0))

    def host_read(self, *args, **kwargs):
        raise AssertionError("step() read a device value on the host")

    opts = [SGD(0.1, momentum=0.9, nesterov=True, clip_norm=0.5, clip_value=0.3),
            AdaGrad(lr_decay=0.1), RMSprop(centered=True, momentum=0.5),
            Adam(amsgrad=True, maximize=True, clip_norm=1.0),
            AdamW(lr=CosineDecay(0.1, total_steps=5, warmup_steps=1))]  # fmt: skip
    params = [to_backend(backend, P0) for _ in opts]
    grads = [to_backend(backend, g) for g in GRADS]
    for name in ("__bool__", "__float__", "__int__", "__index__", "__complex__", "__array__",
                 "__dlpack__", "item", "tolist"):  # fmt: skip
        if hasattr(array_type, name):
            monkeypatch.setattr(array_type, name, host_read)
    for i, opt in enumerate(opts):
        for g in grads:
            params[i] = opt.step(params[i], g)
    monkeypatch.undo()
    assert all(np.isfinite(backend.to_numpy(p["w"])).all() for p in params)


def test_update_model():
    class Model:
        def __init__(self):
            self.params = {k: v.copy() for k, v in P0.items()}
            self.grads = GRADS[0]

    model = Model()
    assert SGD(lr=0.1).update(model) is None
    assert_close(model.params, {k: P0[k] - 0.1 * GRADS[0][k] for k in P0})


def test_fast_path_hook_is_used_and_matches_generic(backend, monkeypatch):
    calls = []

    def fast_adam(param, grad, state, hp, step, *, xp):
        calls.append((step, hp["decoupled_weight_decay"]))
        return optim.adam_update(param, grad, state, hp, step, xp=xp)

    expected = run(backend, AdamW(lr=0.05))
    monkeypatch.setitem(backend.fast, "adamw", fast_adam)
    assert_close(run(backend, AdamW(lr=0.05)), expected)
    assert calls == [(1, True), (1, True), (2, True), (2, True), (3, True), (3, True)]
    calls.clear()
    run(backend, Adam(lr=0.05))
    assert calls == [], "Adam looks up its own key, 'adam'"


# -- clipping -----------------------------------------------------------------------------


def test_clip_by_value(backend):
    grads = to_backend(backend, {"a": np.array([-3.0, 0.5, 2.0]), "b": np.array([[0.1, -0.7]])})
    clipped = to_host(backend, clip_by_value(grads, 0.6))
    wide = np.dtype(widest_float(backend))
    np.testing.assert_array_equal(clipped["a"], np.array([-0.6, 0.5, 0.6], dtype=wide))
    np.testing.assert_array_equal(clipped["b"], np.array([[0.1, -0.6]], dtype=wide))


def test_clip_by_global_norm(backend):
    # global norm = sqrt(9 + 16 + 144) = 13
    host = {"a": np.array([3.0, -4.0]), "b": np.array([[12.0]])}
    grads = to_backend(backend, host)
    norm = backend.to_numpy(global_norm(grads))
    np.testing.assert_allclose(norm, 13.0, rtol=rtol_for(norm))
    clipped = to_host(backend, clip_by_global_norm(grads, 2.6))
    scale = 2.6 / (13.0 + 1e-6)
    assert_close(clipped, {k: v * scale for k, v in host.items()})
    clipped = to_host(backend, clip_by_global_norm(grads, 2.6, eps=0.0))
    assert_close(clipped, {"a": np.array([0.6, -0.8]), "b": np.array([[2.4]])})
    # below the limit the factor is exactly 1
    unchanged = to_host(backend, clip_by_global_norm(grads, 100.0))
    for k in host:
        np.testing.assert_array_equal(unchanged[k], host[k])


def test_clipping_passes_none_through_and_handles_empty():
    grads = {"a": np.array([3.0, 4.0]), "b": None}
    assert clip_by_value(grads, 1.0)["b"] is None
    assert clip_by_global_norm(grads, 1.0)["b"] is None
    np.testing.assert_allclose(clip_by_global_norm(grads, 1.0, eps=0)["a"], [0.6, 0.8])
    assert clip_by_value({}, 1.0) == {}
    assert clip_by_global_norm({}, 1.0) == {}
    with pytest.raises(portgd.InputError, match="no gradients"):
        global_norm({})


def test_clip_by_global_norm_matches_torch():
    torch = pytest.importorskip("torch")
    grads = random_problem(seed=11, steps=1)[1][0]
    tensors = [torch.tensor(g) for g in grads.values()]
    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in tensors]
    for p, t in zip(params, tensors, strict=True):
        p.grad = t.clone()
    total = torch.nn.utils.clip_grad_norm_(params, 1.5)
    np.testing.assert_allclose(global_norm(grads), total.numpy(), rtol=RTOL)
    clipped = clip_by_global_norm(grads, 1.5)
    for (k, _), p in zip(grads.items(), params, strict=True):
        np.testing.assert_allclose(clipped[k], p.grad.numpy(), rtol=RTOL, err_msg=k)


def test_clipping_keeps_each_dtype(backend):
    float64_or_skip(backend)
    grads = {"a": backend.asarray(np.array([3.0, 4.0]), dtype="float32"),
             "b": backend.asarray(np.array([12.0]), dtype="float64")}  # fmt: skip
    clipped = clip_by_global_norm(grads, 1.3)
    assert clipped["a"].dtype == backend.dtype("float32")
    assert clipped["b"].dtype == backend.dtype("float64")
    np.testing.assert_allclose(backend.to_numpy(clipped["b"]), [1.2], rtol=1e-6)


def test_optimizer_clipping_order_value_then_norm(backend):
    # value clip to 1 gives (1, 1, ...); then the global norm clip scales that to norm 1
    grads = {"w": np.array([[5.0, -5.0], [5.0, 5.0]]), "b": np.array([0.0, 0.0])}
    got = run(backend, SGD(lr=1.0, clip_value=1.0, clip_norm=1.0), grads_seq=[grads])
    scale = 1.0 / (2.0 + 1e-6)
    assert_close(got, {"w": P0["w"] - scale * np.array([[1.0, -1.0], [1.0, 1.0]]),
                       "b": P0["b"]})  # fmt: skip


def test_clipping_rejects_mixed_backends():
    torch = pytest.importorskip("torch")
    grads = {"a": np.array([1.0]), "b": torch.tensor([1.0], dtype=torch.float64)}
    with pytest.raises(portgd.BackendMismatchError, match=r"'b' is torch.*'a' is numpy"):
        clip_by_global_norm(grads, 1.0)


# -- learning rates and schedules -------------------------------------------------------------


def test_schedule_is_evaluated_at_steps_taken(backend):
    schedule = StepDecay(0.1, step_size=2, gamma=0.5)
    opt = SGD(lr=schedule)
    assert opt.lr == 0.1 and opt.schedule is schedule
    grads_seq = GRADS + GRADS[:2]
    got = run(backend, opt, grads_seq=grads_seq)
    rates = [0.1, 0.1, 0.05, 0.05, 0.025]
    expected = {k: p - sum(r * g[k] for r, g in zip(rates, grads_seq, strict=True))
                for k, p in P0.items()}  # fmt: skip
    assert_close(got, expected)
    assert opt.step_count == 5
    assert opt.lr == 0.025  # schedule(5): the rate of the next step


def test_assigning_lr(backend):
    opt = SGD(lr=ExponentialDecay(1.0, 0.5))
    params = opt.step(to_backend(backend, P0), to_backend(backend, GRADS[0]))
    opt.lr = 0.25
    assert opt.lr == 0.25 and opt.schedule is None
    params = opt.step(params, to_backend(backend, GRADS[1]))
    expected = {k: P0[k] - 1.0 * GRADS[0][k] - 0.25 * GRADS[1][k] for k in P0}
    assert_close(to_host(backend, params), expected)
    with pytest.raises(portgd.InputError, match="lr must be >= 0"):
        opt.lr = -1.0


def test_schedule_with_warmup_first_step_does_nothing():
    opt = Adam(lr=CosineDecay(0.1, total_steps=10, warmup_steps=2))
    new = opt.step(P0, GRADS[0])
    for k in P0:
        np.testing.assert_array_equal(new[k], P0[k])
    assert opt.lr == 0.05


def test_custom_callable_schedule():
    opt = SGD(lr=lambda step: 0.1 / (step + 1))
    new = opt.step(opt.step(P0, GRADS[0]), GRADS[1])
    assert_close(new, {k: P0[k] - 0.1 * GRADS[0][k] - 0.05 * GRADS[1][k] for k in P0})
    with pytest.raises(portgd.InputError, match="cannot be saved"):
        opt.state_dict()
    bad = SGD(lr=lambda step: -1.0)
    with pytest.raises(portgd.InputError, match=r"returned -1\.0 at step 0"):
        bad.step(P0, GRADS[0])


# -- state_dict ---------------------------------------------------------------------------

ROUND_TRIP = [
    ("sgd", {"momentum": 0.9, "dampening": 0.1}),
    ("adagrad", {"lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("rmsprop", {"centered": True, "momentum": 0.5}),
    ("adam", {"amsgrad": True, "lr": CosineDecay(0.05, total_steps=8, warmup_steps=2)}),
    ("adamw", {"clip_norm": 1.0, "lr": StepDecay(0.05, 3)}),
]


def json_round_trip(state_dict):
    meta = {k: v for k, v in state_dict.items() if k != "state"}
    return {**json.loads(json.dumps(meta)), "state": state_dict["state"]}


@pytest.mark.parametrize(("name", "kwargs"), ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_state_dict_round_trip_continues_identically(backend, name, kwargs):
    p0, grads_seq = random_problem(seed=3, steps=8, skip={1})
    uninterrupted = make_optimizer(name, **kwargs)
    expected = run(backend, uninterrupted, p0, grads_seq)

    first = make_optimizer(name, **kwargs)
    params = to_backend(backend, p0)
    for grads in grads_seq[:4]:
        params = first.step(params, to_backend(backend, grads))
    saved = json_round_trip(first.state_dict())
    # a snapshot is a copy: stepping on does not change it
    snapshot = {n: {k: v.copy() for k, v in e.items()} for n, e in saved["state"].items()}
    first.step(params, to_backend(backend, grads_seq[4]))
    for n, entry in snapshot.items():
        for k, v in entry.items():
            np.testing.assert_array_equal(saved["state"][n][k], v)

    resumed = optimizer_from_state_dict(saved)
    assert type(resumed) is type(uninterrupted)
    assert resumed.config() == first.config()
    assert resumed.backend is None and resumed.state == {}  # converted at the next step
    for grads in grads_seq[4:]:
        params = resumed.step(params, to_backend(backend, grads))
    got = to_host(backend, params)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    assert resumed.step_count == uninterrupted.step_count == 8
    assert resumed.param_steps == uninterrupted.param_steps


def test_state_dict_format():
    opt = Adam(lr=StepDecay(0.01, 10), amsgrad=True)
    opt.step(P0, GRADS[0])
    sd = opt.state_dict()
    assert sd["format"] == optim.STATE_DICT_FORMAT
    assert sd["type"] == "Adam"
    assert sd["config"]["lr"] == {"type": "StepDecay", "lr": 0.01, "step_size": 10,
                                  "gamma": 0.1}  # fmt: skip
    assert sd["config"]["betas"] == [0.9, 0.999]
    assert sd["step_count"] == 1 and sd["param_steps"] == {"w": 1, "b": 1}
    assert set(sd["state"]["w"]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert all(isinstance(v, np.ndarray) for e in sd["state"].values() for v in e.values())
    json.dumps({k: v for k, v in sd.items() if k != "state"})


def host_in(backend, arrays):
    """Host copies of ``arrays`` in the backend's widest float (state keeps that dtype)."""
    return {k: v.astype(widest_float(backend)) for k, v in arrays.items()}


def test_load_into_placed_optimizer_converts_now(backend):
    p0, grads = host_in(backend, P0), [host_in(backend, g) for g in GRADS[:2]]
    source = RMSprop(momentum=0.5)
    source.step(p0, grads[0])
    target = RMSprop().to(backend)
    target.load_state_dict(source.state_dict())
    assert target.config() == source.config()  # saved hyperparameters win, as in torch
    assert target.state.keys() == {"w", "b"}
    for entry in target.state.values():
        for value in entry.values():
            assert backend.holds(value)
    start = {k: v - 1.0 for k, v in p0.items()}
    want = source.step(start, grads[1])
    got = target.step(to_backend(backend, start), to_backend(backend, grads[1]))
    assert_close(to_host(backend, got), want)


def test_to_moves_state_between_backends(backend):
    p0, grads = host_in(backend, P0), [host_in(backend, g) for g in GRADS[:2]]
    opt = Adam(lr=0.05)
    params = opt.step(p0, grads[0])
    expected = Adam(lr=0.05)
    want = expected.step(expected.step(p0, grads[0]), grads[1])
    opt.to(backend)
    assert opt.backend == backend
    for entry in opt.state.values():
        for value in entry.values():
            assert backend.holds(value)
    got = opt.step(to_backend(backend, params), to_backend(backend, grads[1]))
    assert_close(to_host(backend, got), want)


def test_config_rebuilds_and_serialises():
    for name in ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"):
        opt = make_optimizer(name, lr=CosineDecay(0.1, 100, 10), clip_value=2.0)
        config = json.loads(json.dumps(opt.config()))
        again = type(opt)(**config)
        assert again.config() == opt.config(), name
        assert repr(again) == repr(opt)
    assert make_optimizer("momentum").config()["momentum"] == 0.9
    assert make_optimizer("Momentum", momentum=0.5).config()["momentum"] == 0.5
    assert make_optimizer("adamw").config()["weight_decay"] == 0.01
    assert SGD().config()["lr"] == 0.001 and Adam().config()["lr"] == 0.001


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("state"), r"lacks \['state'\]"),
        (lambda d: d.update(type="SGD"), "belongs to a SGD optimizer, not Adam"),
        (lambda d: d.update(format="other/9"), "unknown state dict format"),
        (lambda d: d["state"]["w"].pop("exp_avg"), r"has keys \['exp_avg_sq'\]"),
        (lambda d: d["config"].update(amsgrad=True), "expected.*max_exp_avg_sq"),
        (lambda d: d["config"].update(betas=[1.5, 0.9]), r"betas\[0\] must be in \[0, 1\)"),
        (lambda d: d["config"].update(momentum=0.9), "invalid"),
        (lambda d: d.update(step_count=-1), "step_count must be an int >= 0"),
        (lambda d: d["param_steps"].pop("b"), "must name the same parameters"),
        (lambda d: d["state"]["w"].update(exp_avg=[1.0]), "host NumPy arrays"),
        # a NumPy object with a shape that is no array (was taken for one by module name)
        (lambda d: d["state"]["w"].update(exp_avg=np.dtype("float64")), "host NumPy arrays"),
    ],
)
def test_load_state_dict_validates(mutate, match):
    opt = Adam()
    opt.step(P0, GRADS[0])
    sd = opt.state_dict()
    mutate(sd)
    with pytest.raises(portgd.CheckpointError, match=match):
        Adam().load_state_dict(sd)


class _TaggedArray(np.ndarray):
    """A NumPy array subclass defined outside NumPy: still a host array."""


def test_load_state_dict_takes_a_numpy_subclass_as_host_data():
    opt = Adam()
    opt.step(P0, GRADS[0])
    sd = opt.state_dict()
    sd["state"]["w"] = {k: v.view(_TaggedArray) for k, v in sd["state"]["w"].items()}
    again = Adam()
    again.load_state_dict(sd)
    np.testing.assert_array_equal(again.state_dict()["state"]["w"]["exp_avg"],
                                  opt.state_dict()["state"]["w"]["exp_avg"])


def test_loaded_state_of_another_model_is_caught_at_step():
    opt = Adam()
    opt.step(P0, GRADS[0])
    other = Adam()
    other.load_state_dict(opt.state_dict())
    wrong = {"w": np.zeros((3, 3)), "b": np.zeros(2)}
    with pytest.raises(portgd.CheckpointError, match=r"shape \(2, 2\).*shape \(3, 3\)"):
        other.step(wrong, {k: np.ones_like(v) for k, v in wrong.items()})


def test_optimizer_from_state_dict_rejects_unknown_type():
    with pytest.raises(portgd.CheckpointError, match="unknown optimizer type 'Lion'"):
        optimizer_from_state_dict({"type": "Lion", "config": {}})
    with pytest.raises(portgd.CheckpointError, match="'type' key"):
        optimizer_from_state_dict({})


def test_loaded_state_takes_the_parameter_dtype():
    opt = Adam()
    opt.step(P0, GRADS[0])
    resumed = optimizer_from_state_dict(opt.state_dict())
    p32 = {k: v.astype(np.float32) for k, v in P0.items()}
    g32 = {k: v.astype(np.float32) for k, v in GRADS[1].items()}
    new = resumed.step(p32, g32)
    assert all(v.dtype == np.float32 for v in new.values())
    assert all(v.dtype == np.float32 for e in resumed.state.values() for v in e.values())


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SGD(lr=-0.1), "SGD: lr must be >= 0, got -0.1"),
        (lambda: SGD(lr=float("nan")), "SGD: lr must be finite"),
        (lambda: SGD(lr="fast"), "SGD: lr must be a real number"),
        (lambda: SGD(momentum=-0.5), "SGD: momentum must be >= 0"),
        (lambda: SGD(weight_decay=-1), "SGD: weight_decay must be >= 0"),
        (lambda: SGD(nesterov=True), "nesterov=True needs momentum > 0 and dampening = 0"),
        (lambda: SGD(momentum=0.9, dampening=0.1, nesterov=True), "dampening = 0"),
        (lambda: SGD(nesterov=1), "nesterov must be True or False"),
        (lambda: AdaGrad(lr_decay=-0.1), "AdaGrad: lr_decay must be >= 0"),
        (lambda: AdaGrad(initial_accumulator_value=-1.0), "initial_accumulator_value"),
        (lambda: AdaGrad(eps=-1e-10), "AdaGrad: eps must be >= 0"),
        (lambda: RMSprop(alpha=1.5), r"RMSprop: alpha must be in \[0, 1\]"),
        (lambda: RMSprop(momentum=-0.1), "RMSprop: momentum must be >= 0"),
        (lambda: RMSprop(eps=-1.0), "RMSprop: eps must be >= 0"),
        (lambda: Adam(betas=(1.0, 0.999)), r"Adam: betas\[0\] must be in \[0, 1\), got 1.0"),
        (lambda: Adam(betas=(0.9, -0.1)), r"Adam: betas\[1\] must be in \[0, 1\)"),
        (lambda: Adam(betas=0.9), "betas must be a pair"),
        (lambda: Adam(weight_decay=-0.01), "Adam: weight_decay must be >= 0"),
        (lambda: AdamW(eps=-1.0), "AdamW: eps must be >= 0"),
        (lambda: AdamW(amsgrad="yes"), "amsgrad must be True or False"),
        (lambda: Adam(clip_norm=-1.0), "clip_norm must be >= 0"),
        (lambda: Adam(clip_value=float("inf")), "clip_value must be finite"),
        (lambda: clip_by_value({}, -1.0), "clip_by_value: limit must be >= 0"),
        (lambda: clip_by_global_norm({}, -1.0), "max_norm must be >= 0"),
        (lambda: make_optimizer("lion"), "unknown optimizer 'lion'; choose one of sgd"),
        (lambda: make_optimizer("adam", momentum=0.9), "takes no argument momentum"),
        (lambda: Adam(lr={"type": "Warp"}), "unknown schedule type 'Warp'"),
        (lambda: optim.Optimizer(0.1), None),
    ],
)
def test_bad_arguments(factory, match):
    if match is None:
        with pytest.raises(TypeError, match="base class"):
            factory()
        return
    with pytest.raises(portgd.InputError, match=match):
        factory()


def test_step_argument_errors():
    opt = SGD()
    with pytest.raises(portgd.InputError, match=r"gradients for \['c'\] have no parameter"):
        opt.step(P0, {"c": np.zeros(2)})
    with pytest.raises(portgd.ShapeError, match=r"'b' has shape \(3,\).*shape \(2,\)"):
        opt.step(P0, {"b": np.zeros(3)})
    with pytest.raises(portgd.InputError, match="params must be a dict"):
        opt.step([P0["w"]], GRADS[0])
    assert opt.step({}, {}) == {}


def test_switching_backends_without_to_is_an_error():
    torch = pytest.importorskip("torch")
    opt = Adam()
    opt.step(P0, GRADS[0])
    torch_params = {k: torch.tensor(v) for k, v in P0.items()}
    torch_grads = {k: torch.tensor(v) for k, v in GRADS[0].items()}
    with pytest.raises(
        portgd.BackendMismatchError,
        match=r"parameter 'w' is torch on device 'cpu'.*state lives on numpy.*opt\.to",
    ):
        opt.step(torch_params, torch_grads)
    with pytest.raises(portgd.BackendMismatchError, match="gradient 'w' is torch"):
        opt.step(P0, torch_grads)
    opt.to("torch", "cpu")
    new = opt.step(torch_params, torch_grads)
    assert isinstance(new["w"], torch.Tensor)


def test_another_device_of_the_same_library_is_an_error():
    pytest.importorskip("array_api_strict")
    default = portgd.get_backend("array_api_strict")
    device1 = portgd.get_backend("array_api_strict", "device1")
    opt = SGD(momentum=0.9)
    opt.step(to_backend(default, P0), to_backend(default, GRADS[0]))
    with pytest.raises(portgd.BackendMismatchError, match=r"device 'device1'.*CPU_DEVICE"):
        opt.step(to_backend(device1, P0), to_backend(device1, GRADS[0]))
    opt.to(device1)
    opt.step(to_backend(device1, P0), to_backend(device1, GRADS[0]))
    assert opt.backend == device1


def test_reset_forgets_state():
    opt = SGD(momentum=0.9)
    opt.step(P0, GRADS[0])
    opt.reset()
    assert opt.state == {} and opt.param_steps == {} and opt.step_count == 0


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("name", ["adam", "sgd_momentum", "rmsprop"])
@pytest.mark.parametrize("hidden,outputs", [(6, 2), (4, 1)], ids=["other", "broadcastable"])
def test_an_optimizer_reused_on_another_model_is_refused_before_any_change(backend, name,
                                                                           hidden, outputs):
    """State is keyed by parameter name ("2.weight"): a second model with other shapes must
    not broadcast the first one's state into its parameters (array_api_strict, the generic
    rule: (4, 2) state made a (4, 1) weight (4, 2)) nor fail inside NumPy's in-place fast
    path."""
    from portgd import Sequential
    from portgd.layers import Dense, Tanh

    make = {"adam": lambda: optim.Adam(lr=0.01),
            "sgd_momentum": lambda: optim.SGD(lr=0.01, momentum=0.9),
            "rmsprop": lambda: optim.RMSprop(lr=0.01)}[name]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    opt = make()
    first = Sequential([Dense(3, 4), Tanh(), Dense(4, 2)], seed=0, dtype="float64",
                       backend=backend)
    first.fit(x, y, loss="mse", optimizer=opt, epochs=1, batch_size=4, verbose=0)
    second = Sequential([Dense(3, hidden), Tanh(), Dense(hidden, outputs)], seed=1,
                        dtype="float64", backend=backend)
    y = y[:, :outputs]
    before = second.state_dict()
    with pytest.raises(portgd.InputError, match=(
            rf"holds state for a parameter '2.weight' shaped \(4, 2\); this model's "
            rf"'2.weight' is shaped \({hidden}, {outputs}\).*Make a new optimizer for this "
            rf"model, or call its reset\(\) first")):
        second.fit(x, y, loss="mse", optimizer=opt, epochs=1, batch_size=4, verbose=0)
    for key, value in second.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    opt.reset()  # what the message says works
    second.fit(x, y, loss="mse", optimizer=opt, epochs=1, batch_size=4, verbose=0)
    state = opt.state["2.weight"]
    assert [tuple(v.shape) for v in state.values()] == [(hidden, outputs)] * len(state)
    assert second.state_dict()["2.weight"].shape == (hidden, outputs)
