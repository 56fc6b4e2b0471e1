"""Finite-difference checks of what training actually applies, for every loss and
loss/activation pair (fused or not), with one and several outputs, in every reduction.

The analytic gradient is read from one step of plain SGD with lr = 1 through ``fit`` (one
batch, no shuffle): ``g = w_before - w_after``. The numeric gradient is central differences of
``evaluate``'s loss, the value the user sees. Both are public: the test holds whatever the
model, loss and training modules look like inside. float64 on NumPy; test_gradients.py checks
the pieces on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import numeric_grad

from portgd import Sequential, optim
from portgd.layers import Dense, Identity, Sigmoid, Softmax, Tanh
from portgd.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy

# central differences with eps = 1e-6 in float64: truncation ~1e-12 * f''', rounding ~1e-10
RTOL, ATOL = 1e-6, 1e-9

N = 7

CASES = {
    # name: (loss for a reduction, layers after the last Dense, targets, over classes)
    # targets: "soft" in [0, 1], "labels" (N,) integers, "onehot" rows, "real" normal
    "sigmoid+bce (fused)": (lambda r: BinaryCrossEntropy(reduction=r), [Sigmoid], "soft", False),
    "softmax+ce (fused)": (lambda r: CategoricalCrossEntropy(from_logits=False, reduction=r),
                           [Softmax], "onehot", True),
    "softmax+ce (fused), labels": (
        lambda r: CategoricalCrossEntropy(from_logits=False, reduction=r), [Softmax], "labels",
        True),
    "bce (logits)": (lambda r: BinaryCrossEntropy(from_logits=True, reduction=r), [], "soft",
                     False),
    "ce (logits)": (lambda r: CategoricalCrossEntropy(reduction=r), [], "onehot", True),
    "ce (logits), labels": (lambda r: CategoricalCrossEntropy(reduction=r), [], "labels", True),
    "mse": (lambda r: MSE(reduction=r), [], "real", False),
    "sigmoid+mse": (lambda r: MSE(reduction=r), [Sigmoid], "soft", False),
    "softmax+mse": (lambda r: MSE(reduction=r), [Softmax], "soft", True),
    "tanh+mse": (lambda r: MSE(reduction=r), [Tanh], "real", False),
    # the activation is not the model's last layer, so the losses take probabilities
    "sigmoid,identity+bce (probabilities)": (
        lambda r: BinaryCrossEntropy(reduction=r), [Sigmoid, Identity], "soft", False),
    "softmax,identity+ce (probabilities)": (
        lambda r: CategoricalCrossEntropy(from_logits=False, reduction=r), [Softmax, Identity],
        "onehot", True),
}


def _targets(kind: str, outputs: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "soft":
        return rng.uniform(0, 1, size=(N, outputs))
    if kind == "labels":
        return rng.integers(0, outputs, size=N)
    if kind == "onehot":
        return np.eye(outputs)[rng.integers(0, outputs, size=N)]
    return rng.normal(size=(N, outputs))


def _check(name: str, reduction: str, outputs: int) -> None:
    make_loss, tail, kind, _ = CASES[name]
    loss = make_loss(reduction)
    layers = [Dense(3, 4), Tanh(), Dense(4, outputs), *(layer() for layer in tail)]
    rng = np.random.default_rng(outputs + (reduction == "sum"))
    x = rng.normal(size=(N, 3))
    y = _targets(kind, outputs, rng)
    model = Sequential(layers, seed=outputs, dtype="float64")
    before = model.state_dict()

    def value(params: dict[str, np.ndarray]) -> float:
        model.load_state_dict(params)
        return model.evaluate(x, y, loss=loss)["loss"]

    numeric = {}
    for key, p in before.items():
        def f(v, key=key):
            return value({**before, key: v})
        numeric[key] = numeric_grad(f, p.copy())
    model.load_state_dict(before)
    model.fit(x, y, loss=loss, optimizer=optim.SGD(lr=1.0), batch_size=N, shuffle=False,
              verbose=0)
    after = model.state_dict()
    for key in before:
        analytic = before[key] - after[key]
        np.testing.assert_allclose(analytic, numeric[key], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name}, reduction={reduction}, {key}")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("name", [n for n, case in CASES.items() if not case[3]])
def test_training_step_is_the_loss_gradient(name, outputs, reduction):
    _check(name, reduction, outputs)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("outputs", [2, 4])
@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[3]])
def test_training_step_is_the_loss_gradient_over_classes(name, outputs, reduction):
    _check(name, reduction, outputs)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("pair", ["sigmoid+bce", "softmax+ce"])
def test_fused_loss_equals_the_logits_loss_with_several_outputs(pair, reduction):
    """``loss.fused(z, activation(z), y)`` is the from-logits loss of ``z``: value and gradient,
    with the loss's own scale (1 / (N outputs) for BCE, 1 / N for CE, 1 for sum)."""
    rng = np.random.default_rng(11)
    z = rng.normal(size=(N, 3)) * 3
    model = Sequential([Dense(3, 3), Sigmoid() if pair == "sigmoid+bce" else Softmax()],
                       dtype="float64")
    model.load_state_dict({"0.weight": np.eye(3), "0.bias": np.zeros(3)})
    yhat = model.predict(z)
    if pair == "sigmoid+bce":
        y = rng.uniform(0, 1, size=(N, 3))
        fused = BinaryCrossEntropy(reduction=reduction)
        logits = BinaryCrossEntropy(from_logits=True, reduction=reduction)
    else:
        y = np.eye(3)[rng.integers(0, 3, size=N)]
        fused = CategoricalCrossEntropy(from_logits=False, reduction=reduction)
        logits = CategoricalCrossEntropy(reduction=reduction)
    backend = model.backend
    z_dev, y_dev = backend.asarray(z), backend.asarray(y)
    value, grad = fused.fused(z_dev, yhat, y_dev)
    expected_value, expected_grad = logits(z_dev, y_dev)
    np.testing.assert_allclose(backend.to_numpy(value), backend.to_numpy(expected_value),
                               rtol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(grad), backend.to_numpy(expected_grad),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(fused.fused_value(z_dev, y_dev)),
                               backend.to_numpy(expected_value), rtol=1e-13)
    numeric = numeric_grad(lambda v: float(backend.to_numpy(logits.value(backend.asarray(v),
                                                                         y_dev))), z.copy())
    np.testing.assert_allclose(backend.to_numpy(grad), numeric, rtol=RTOL, atol=ATOL)
