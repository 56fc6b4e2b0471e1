"""Property-based tests (hypothesis): shapes, dtypes, devices and finiteness of every layer,
loss and random Sequential stack, on every CPU backend.

Drawn: batch sizes 1..17, feature counts 1..9, float32 / float64, the input values (extreme
magnitudes included, where the stable forms must not overflow). NumPy is used only on the host
side, to compare what comes back through ``backend.to_numpy``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import portgd
from portgd import Sequential
from portgd.layers import Dense, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from portgd.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy

# The conftest's autouse fixture only resets the backend selection; it is safe to share
# between the examples of one test.
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

BATCH = st.integers(1, 17)
FEATURES = st.integers(1, 9)
DTYPES = st.sampled_from(["float32", "float64"])

# |x| up to 1e4 in float32 (exp(1e4) overflows float32 by thousands of orders of magnitude);
# float64 goes further still.
EXTREME = {"float32": 1e4, "float64": 1e30}
MODERATE = 10.0
# MSE inputs: large, but (yhat - y)^2 summed over 17 * 9 entries stays finite
REAL = {"float32": 1e4, "float64": 1e100}

# ---------------------------------------------------------------------------------------------
# backends


_BACKEND_CASES = [
    pytest.param(("numpy", None), id="numpy"),
    pytest.param(("array_api_strict", None), id="strict"),
    pytest.param(("array_api_strict", "device1"), id="strict-device1"),
    pytest.param(("torch", "cpu"), id="torch-cpu"),
]
_BACKENDS: dict[tuple[str, str | None], portgd.backends.Backend] = {}


@pytest.fixture(params=_BACKEND_CASES)
def bk(request):
    """numpy, array_api_strict (default device and device1), torch on the CPU."""
    name, device = request.param
    if name == "torch":
        pytest.importorskip("torch")
    if (name, device) not in _BACKENDS:
        _BACKENDS[name, device] = portgd.get_backend(name, device)
    return _BACKENDS[name, device]


def _dtype_or_skip(backend, dtype: str):
    # hypothesis draws the dtype, so an unsupported one cannot be a pytest skip
    assume(backend.supports(dtype))
    return backend.dtype(dtype)


def _on_backend(backend, a, shape, dtype, what: str) -> None:
    """``a`` is an array of ``backend``, shaped ``shape``, of ``dtype``, on its device."""
    assert backend.owns(a), f"{what}: {type(a)} is not an array of {backend}"
    assert tuple(a.shape) == tuple(shape), f"{what}: shape {tuple(a.shape)} != {tuple(shape)}"
    assert a.dtype == dtype, f"{what}: dtype {a.dtype} != {dtype}"
    assert backend.same_device(backend.device_of(a), backend.device), (
        f"{what}: on device {backend.device_of(a)}, backend on {backend.device}"
    )


def _finite(backend, a, what: str) -> np.ndarray:
    host = backend.to_numpy(a)
    assert np.all(np.isfinite(host)), f"{what} is not finite: {host}"
    return host


def _values(draw, shape, dtype: str, bound: float):
    """A host array of finite values in [-bound, bound], exactly representable in ``dtype``."""
    width = 32 if dtype == "float32" else 64
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width)
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))


def _eps(dtype: str) -> float:
    return float(np.finfo(dtype).eps)


def _build(backend, layers, dtype: str, seed: int = 0) -> Sequential:
    return Sequential(layers, seed=seed, dtype=dtype, backend=backend)


# ---------------------------------------------------------------------------------------------
# Dense


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@SETTINGS
@given(data=st.data(), n=BATCH, fin=FEATURES, fout=FEATURES, dtype=DTYPES)
def test_dense_shapes_dtypes_devices(bk, bias, data, n, fin, fout, dtype):
    xp_dtype = _dtype_or_skip(bk, dtype)
    layer = Dense(fin, fout, bias=bias)
    _build(bk, [layer], dtype)
    assert set(layer.params) == ({"weight", "bias"} if bias else {"weight"})
    _on_backend(bk, layer.params["weight"], (fin, fout), xp_dtype, "weight")
    if bias:
        _on_backend(bk, layer.params["bias"], (fout,), xp_dtype, "bias")

    x = _values(data.draw, (n, fin), dtype, MODERATE)
    y = layer.forward(bk.asarray(x))
    _on_backend(bk, y, (n, fout), xp_dtype, "Dense output")
    expected = x @ bk.to_numpy(layer.params["weight"])
    if bias:
        expected = expected + bk.to_numpy(layer.params["bias"])
    tol = 16 * fin * _eps(dtype)  # |x| <= 10 and |W| <= sqrt(6 / 2): sums of fin products
    np.testing.assert_allclose(bk.to_numpy(y), expected, rtol=tol, atol=tol * MODERATE)

    dout = _values(data.draw, (n, fout), dtype, MODERATE)
    dx = layer.backward(bk.asarray(dout))
    _on_backend(bk, dx, (n, fin), xp_dtype, "Dense dL/dx")
    assert set(layer.grads) == set(layer.params)
    for name, param in layer.params.items():
        _on_backend(bk, layer.grads[name], tuple(param.shape), param.dtype, f"grad {name}")
        _finite(bk, layer.grads[name], f"grad {name}")
    assert layer.backward(bk.asarray(dout), need_input_grad=False) is None


# ---------------------------------------------------------------------------------------------
# activations

ACTIVATIONS = {
    "identity": Identity,
    "relu": ReLU,
    "leaky_relu": lambda: LeakyReLU(0.1),
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "softmax": Softmax,
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@SETTINGS
@given(data=st.data(), n=BATCH, f=FEATURES, dtype=DTYPES)
def test_activation_shapes_dtypes_and_ranges(bk, name, data, n, f, dtype):
    xp_dtype = _dtype_or_skip(bk, dtype)
    layer = ACTIVATIONS[name]()
    _build(bk, [layer], dtype)
    assert layer.params == {}

    x = _values(data.draw, (n, f), dtype, EXTREME[dtype])
    y = layer.forward(bk.asarray(x))
    _on_backend(bk, y, (n, f), xp_dtype, f"{name} output")
    yh = _finite(bk, y, f"{name} output")

    dout = _values(data.draw, (n, f), dtype, MODERATE)
    dx = layer.backward(bk.asarray(dout))
    _on_backend(bk, dx, (n, f), xp_dtype, f"{name} dL/dx")
    _finite(bk, dx, f"{name} dL/dx")
    assert layer.grads == {}

    eps = _eps(dtype)
    if name == "identity":
        np.testing.assert_array_equal(yh, x)
    elif name == "relu":
        np.testing.assert_array_equal(yh, np.maximum(x, 0))
        np.testing.assert_array_equal(bk.to_numpy(dx), np.where(x > 0, dout, 0))
    elif name == "leaky_relu":
        np.testing.assert_array_equal(bk.to_numpy(dx), np.where(x > 0, dout, 0.1 * dout))
    elif name == "sigmoid":
        assert np.all((yh >= 0) & (yh <= 1)), yh
    elif name == "tanh":
        assert np.all((yh >= -1) & (yh <= 1)), yh
    elif name == "softmax":
        assert np.all((yh >= 0) & (yh <= 1)), yh
        # each y_k = e_k / s is rounded once and s carries at most (f - 1) roundings
        sums = yh.astype(np.float64).sum(axis=1)
        np.testing.assert_allclose(sums, 1.0, rtol=0, atol=(f + 1) * eps)
        # the largest input always gets the largest probability, and it is at least 1 / f
        top = yh[np.arange(n), np.argmax(x, axis=1)]
        np.testing.assert_array_equal(top, yh.max(axis=1))
        assert np.all(top >= (1.0 / f) * (1 - (f + 1) * eps))


@SETTINGS
@given(data=st.data(), n=BATCH, f=FEATURES, dtype=DTYPES)
def test_sigmoid_and_softmax_saturate_exactly_at_extremes(bk, data, n, f, dtype):
    """Inputs of magnitude 1e4: probabilities 0 and 1 exactly, never NaN from inf / inf."""
    _dtype_or_skip(bk, dtype)
    signs = data.draw(hnp.arrays(np.dtype(dtype), (n, f), elements=st.sampled_from([-1.0, 1.0])))
    x = signs * np.asarray(1e4, dtype=dtype)
    sig, soft = Sigmoid(), Softmax()
    _build(bk, [sig], dtype)
    _build(bk, [soft], dtype)
    np.testing.assert_array_equal(bk.to_numpy(sig.forward(bk.asarray(x))), (signs > 0) * 1.0)
    p = bk.to_numpy(soft.forward(bk.asarray(x)))
    winners = (signs > 0).sum(axis=1, keepdims=True)
    expected = np.where(winners == 0, 1.0 / f, (signs > 0) / np.maximum(winners, 1))
    np.testing.assert_allclose(p, expected, rtol=2 * _eps(dtype), atol=0)


# ---------------------------------------------------------------------------------------------
# losses

# (id, loss factory(reduction), prediction kind, target kind, count for "mean")
LOSS_CASES = [
    ("mse", lambda r: MSE(reduction=r), "real", "real", "n*outputs"),
    ("bce-prob", lambda r: BinaryCrossEntropy(reduction=r), "prob", "unit", "n*outputs"),
    (
        "bce-logits",
        lambda r: BinaryCrossEntropy(from_logits=True, reduction=r),
        "logits",
        "unit",
        "n*outputs",
    ),
    ("ce-logits-onehot", lambda r: CategoricalCrossEntropy(reduction=r), "logits", "onehot", "n"),
    ("ce-logits-labels", lambda r: CategoricalCrossEntropy(reduction=r), "logits", "labels", "n"),
    (
        "ce-prob-onehot",
        lambda r: CategoricalCrossEntropy(from_logits=False, reduction=r),
        "simplex",
        "onehot",
        "n",
    ),
    (
        "ce-prob-labels",
        lambda r: CategoricalCrossEntropy(from_logits=False, reduction=r),
        "simplex",
        "labels",
        "n",
    ),
]


def _predictions(draw, kind, shape, dtype):
    if kind == "real":
        return _values(draw, shape, dtype, REAL[dtype])
    if kind == "logits":
        return _values(draw, shape, dtype, EXTREME[dtype])
    if kind == "prob":  # 0 and 1 included: the clip must keep log and the gradient finite
        return np.abs(_values(draw, shape, dtype, 1.0))
    # "simplex": rows of probabilities (some exactly 0), normalised on the host
    p = np.abs(_values(draw, shape, dtype, 1.0))
    p[:, 0] += 1e-3  # no all-zero row
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


def _targets(draw, kind, shape, target_dtype, pred_dtype=None):
    n, k = shape
    if kind == "real":  # in the range of the predictions' dtype, which they are cast to
        bound = min(REAL[target_dtype], REAL[pred_dtype or target_dtype])
        return _values(draw, shape, target_dtype, bound)
    if kind == "unit":  # soft targets in [0, 1]
        return np.abs(_values(draw, shape, target_dtype, 1.0))
    labels = np.asarray(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    if kind == "labels":
        return labels.astype(np.int64)
    return np.eye(k, dtype=target_dtype)[labels]


@pytest.mark.parametrize(
    "make,pred_kind,target_kind,count", [c[1:] for c in LOSS_CASES], ids=[c[0] for c in LOSS_CASES]
)
@SETTINGS
@given(
    data=st.data(), n=BATCH, f=FEATURES, dtype=DTYPES, target_dtype=DTYPES,
    reduction=st.sampled_from(["mean", "sum"]),
)  # fmt: skip
def test_loss_value_and_gradient(
    bk, make, pred_kind, target_kind, count, data, n, f, dtype, target_dtype, reduction
):
    xp_dtype = _dtype_or_skip(bk, dtype)
    _dtype_or_skip(bk, target_dtype)
    loss = make(reduction)
    yhat = _predictions(data.draw, pred_kind, (n, f), dtype)
    y = _targets(data.draw, target_kind, (n, f), target_dtype, dtype)
    yhat_dev, y_dev = bk.asarray(yhat), bk.asarray(y)

    value, grad = loss(yhat_dev, y_dev)
    _on_backend(bk, value, (), xp_dtype, "loss value")
    _on_backend(bk, grad, (n, f), xp_dtype, "loss gradient")
    v = _finite(bk, value, "loss value")
    _finite(bk, grad, "loss gradient")
    _on_backend(bk, loss.value(yhat_dev, y_dev), (), xp_dtype, "loss.value")
    if pred_kind == "logits" and target_kind in ("onehot", "labels"):
        assert v >= 0  # lse(z) >= max(z) >= z_y holds exactly in floating point
    if pred_kind != "logits":  # MSE and the from-probabilities losses are sums of terms >= 0
        assert v >= 0


@pytest.mark.parametrize(
    "make,pred_kind,target_kind,count", [c[1:] for c in LOSS_CASES], ids=[c[0] for c in LOSS_CASES]
)
@SETTINGS
@given(data=st.data(), n=BATCH, f=FEATURES, dtype=DTYPES)
def test_loss_sum_is_count_times_mean(bk, make, pred_kind, target_kind, count, data, n, f, dtype):
    """The docstrings: "mean" divides by N*outputs for MSE and BCE, by N for CE."""
    _dtype_or_skip(bk, dtype)
    yhat = bk.asarray(_predictions(data.draw, pred_kind, (n, f), dtype))
    y = bk.asarray(_targets(data.draw, target_kind, (n, f), dtype))
    mean_value, mean_grad = make("mean")(yhat, y)
    sum_value, sum_grad = make("sum")(yhat, y)
    k = n * f if count == "n*outputs" else n
    # the same sum, then one extra product with 1 / k in the prediction dtype (twice rounded);
    # a "mean" that lands among the subnormals keeps only an absolute precision
    tol = 4 * _eps(dtype)
    atol = 2 * k * float(np.finfo(dtype).smallest_subnormal)
    mean_h = bk.to_numpy(mean_value).astype(np.float64)
    sum_h = bk.to_numpy(sum_value).astype(np.float64)
    np.testing.assert_allclose(k * mean_h, sum_h, rtol=tol, atol=atol)
    np.testing.assert_allclose(
        k * bk.to_numpy(mean_grad).astype(np.float64),
        bk.to_numpy(sum_grad).astype(np.float64),
        rtol=tol,
        atol=atol,
    )


@SETTINGS
@given(data=st.data(), n=BATCH, f=FEATURES, dtype=DTYPES)
def test_ce_integer_labels_equal_one_hot(bk, data, n, f, dtype):
    _dtype_or_skip(bk, dtype)
    labels = _targets(data.draw, "labels", (n, f), dtype)
    onehot = np.eye(f, dtype=dtype)[labels]
    for from_logits, kind in ((True, "logits"), (False, "simplex")):
        yhat = bk.asarray(_predictions(data.draw, kind, (n, f), dtype))
        loss = CategoricalCrossEntropy(from_logits=from_logits)
        v1, g1 = loss(yhat, bk.asarray(labels))
        v2, g2 = loss(yhat, bk.asarray(onehot))
        np.testing.assert_array_equal(bk.to_numpy(v1), bk.to_numpy(v2))
        np.testing.assert_array_equal(bk.to_numpy(g1), bk.to_numpy(g2))


@SETTINGS
@given(data=st.data(), n=BATCH, f=FEATURES, dtype=DTYPES)
def test_fused_losses_are_finite_at_extreme_logits(bk, data, n, f, dtype):
    """The fused Sigmoid + BCE and Softmax + CE pairs: finite value and dz = (yhat - y) / N."""
    xp_dtype = _dtype_or_skip(bk, dtype)
    z = _values(data.draw, (n, f), dtype, EXTREME[dtype])
    for layer, loss, kind, count in (
        (Sigmoid(), BinaryCrossEntropy(), "unit", n * f),
        (Softmax(), CategoricalCrossEntropy(from_logits=False), "labels", n),
    ):
        _build(bk, [layer], dtype)
        yhat = layer.forward(bk.asarray(z))
        y = _targets(data.draw, kind, (n, f), dtype)
        value, dz = loss.fused(layer.logits, yhat, bk.asarray(y))
        _on_backend(bk, value, (), xp_dtype, "fused loss value")
        _on_backend(bk, dz, (n, f), xp_dtype, "fused gradient")
        v = _finite(bk, value, "fused loss value")
        _finite(bk, dz, "fused gradient")
        only_value = loss.fused_value(layer.logits, bk.asarray(y))
        _on_backend(bk, only_value, (), xp_dtype, "fused_value")
        np.testing.assert_array_equal(bk.to_numpy(only_value), v)
        y_rows = np.eye(f)[y] if kind == "labels" else y.astype(np.float64)
        expected = (bk.to_numpy(yhat).astype(np.float64) - y_rows) / count
        # yhat - y in [-1, 1] rounded once, times 1 / count rounded once more
        np.testing.assert_allclose(
            bk.to_numpy(dz), expected, rtol=2 * _eps(dtype), atol=_eps(dtype) / count
        )


# ---------------------------------------------------------------------------------------------
# Sequential from a random stack

HIDDEN = [None, "identity", "relu", "leaky_relu", "tanh", "sigmoid", "softmax"]


@st.composite
def stacks(draw):
    """(in_features, [Dense(width) + optional activation] * depth, optional leading activation)."""
    in_features = draw(FEATURES)
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(FEATURES, min_size=depth, max_size=depth))
    acts = draw(st.lists(st.sampled_from(HIDDEN), min_size=depth, max_size=depth))
    lead = draw(st.sampled_from(HIDDEN))
    bias = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    return in_features, list(zip(widths, acts, bias, strict=True)), lead


def _make_layers(in_features, spec, lead):
    layers = [] if lead is None else [ACTIVATIONS[lead]()]
    features = in_features
    for width, act, bias in spec:
        layers.append(Dense(features, width, bias=bias))
        if act is not None:
            layers.append(ACTIVATIONS[act]())
        features = width
    return layers


@SETTINGS
@given(data=st.data(), stack=stacks(), n=BATCH, dtype=DTYPES, seed=st.integers(0, 2**32 - 1))
def test_sequential_random_stack(bk, data, stack, n, dtype, seed):
    xp_dtype = _dtype_or_skip(bk, dtype)
    in_features, spec, lead = stack
    model = _build(bk, _make_layers(in_features, spec, lead), dtype, seed=seed)
    out = spec[-1][0]
    assert model.in_features == in_features
    assert model.out_features == out

    x = _values(data.draw, (n, in_features), dtype, MODERATE)
    yhat = model.forward(bk.asarray(x))
    _on_backend(bk, yhat, (n, out), xp_dtype, "model output")
    _finite(bk, yhat, "model output")

    last = spec[-1][1]
    if last == "sigmoid":  # the fused stable pairs
        loss, y = BinaryCrossEntropy(), _targets(data.draw, "unit", (n, out), dtype)
    elif last == "softmax":
        loss = CategoricalCrossEntropy(from_logits=False)
        y = _targets(data.draw, "labels", (n, out), dtype)
    else:
        loss, y = MSE(), _values(data.draw, (n, out), dtype, MODERATE)
    value = model.loss_and_backward(yhat, bk.asarray(y), loss)
    _on_backend(bk, value, (), xp_dtype, "loss value")
    _finite(bk, value, "loss value")

    params, grads = model.params, model.grads
    expected = {
        f"{i}.{name}"
        for i, layer in enumerate(model.layers)
        if isinstance(layer, Dense)
        for name in (("weight", "bias") if layer.use_bias else ("weight",))
    }
    assert set(params) == expected
    assert set(grads) == expected
    for name, p in params.items():
        _on_backend(bk, p, tuple(p.shape), xp_dtype, f"param {name}")
        _on_backend(bk, grads[name], tuple(p.shape), xp_dtype, f"grad {name}")
        _finite(bk, grads[name], f"grad {name}")
