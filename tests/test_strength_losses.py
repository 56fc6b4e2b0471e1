"""Every loss value against its definition computed on the host, in both reductions, for one
and several outputs and for 1-d batches; the configuration of a loss; and the namespace a loss
works in when none is passed. (Gradients: test_gradients.py, test_strength_gradients.py.)

The formulas are those of docs/numerics.md, written again here in NumPy float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import Sequential, losses
from portgd.errors import InputError
from portgd.layers import Dense
from portgd.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy

RTOL = 1e-12


def _softplus(z):
    return np.logaddexp(0.0, z)


def _lse(z):
    return np.log(np.sum(np.exp(z - z.max(axis=1, keepdims=True)), axis=1)) + z.max(axis=1)


def _reduced(terms: np.ndarray, reduction: str, count: int) -> float:
    return float(np.sum(terms) / count if reduction == "mean" else np.sum(terms))


def _value(loss, yhat, y):
    backend = portgd.get_backend("numpy")
    return float(backend.to_numpy(loss.value(backend.asarray(yhat), backend.asarray(y))))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(6, 3), (6, 1), (6,)], ids=["2-d", "one-output", "1-d"])
def test_mse_and_binary_cross_entropy_values(shape, reduction):
    rng = np.random.default_rng(len(shape) + shape[-1])
    z = rng.normal(size=shape) * 3
    y_real, y_soft = rng.normal(size=shape), rng.uniform(0, 1, size=shape)
    p = np.clip(1 / (1 + np.exp(-z)), 1e-7, 1 - 1e-7)
    count = int(np.prod(shape))  # N * outputs: MSE and BCE average over every entry
    cases = [
        (MSE(reduction=reduction), z, y_real, (z - y_real) ** 2),
        (BinaryCrossEntropy(from_logits=True, reduction=reduction), z, y_soft,
         _softplus(z) - y_soft * z),
        (BinaryCrossEntropy(reduction=reduction), p, y_soft,
         -(y_soft * np.log(p) + (1 - y_soft) * np.log(1 - p))),
    ]
    for loss, yhat, y, terms in cases:
        assert _value(loss, yhat, y) == pytest.approx(_reduced(terms, reduction, count),
                                                      rel=RTOL), repr(loss)
        value, _ = loss(portgd.get_backend("numpy").asarray(yhat),
                        portgd.get_backend("numpy").asarray(y))
        assert float(value) == pytest.approx(_reduced(terms, reduction, count), rel=RTOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("targets", ["labels", "onehot", "soft"])
def test_categorical_cross_entropy_values(targets, reduction):
    rng = np.random.default_rng(3)
    n, k = 5, 4
    z = rng.normal(size=(n, k)) * 3
    labels = rng.integers(0, k, size=n)
    if targets == "soft":
        y = rng.uniform(0.1, 1, size=(n, k))
        y /= y.sum(axis=1, keepdims=True)
    else:
        y = np.eye(k)[labels]
    given = labels if targets == "labels" else y
    logits_terms = _lse(z) - np.sum(y * z, axis=1)
    loss = CategoricalCrossEntropy(reduction=reduction)
    assert _value(loss, z, given) == pytest.approx(_reduced(logits_terms, reduction, n), rel=RTOL)
    # from probabilities: clip(p, eps, 1), so that values above 1 count as 1
    p = rng.uniform(0.0, 1.6, size=(n, k))
    p[0, 0] = 0.0
    prob_terms = -np.sum(y * np.log(np.clip(p, 1e-7, 1.0)), axis=1)
    loss = CategoricalCrossEntropy(from_logits=False, reduction=reduction)
    assert _value(loss, p, given) == pytest.approx(_reduced(prob_terms, reduction, n), rel=RTOL)


def test_binary_cross_entropy_clips_probabilities_at_eps():
    p = np.array([[0.0, 1.0, 0.5, 1e-9]])
    y = np.array([[1.0, 0.0, 1.0, 1.0]])
    eps = 1e-3
    q = np.clip(p, eps, 1 - eps)
    expected = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    assert _value(BinaryCrossEntropy(eps=eps), p, y) == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("make,text", [  # made in the test, not at collection
    (MSE, "MSE(reduction='mean')"),
    (lambda: MSE(reduction="sum"), "MSE(reduction='sum')"),
    (lambda: BinaryCrossEntropy(from_logits=True, reduction="sum", eps=1e-3),
     "BinaryCrossEntropy(from_logits=True, reduction='sum', eps=0.001)"),
    (CategoricalCrossEntropy, "CategoricalCrossEntropy(from_logits=True, reduction='mean', "
                              "eps=1e-07)"),
    (lambda: CategoricalCrossEntropy(from_logits=False),
     "CategoricalCrossEntropy(from_logits=False, reduction='mean', eps=1e-07)"),
])
def test_losses_describe_and_rebuild_themselves(make, text):
    loss = make()
    assert repr(loss) == text
    name = {"MSE": "mse", "BinaryCrossEntropy": "bce", "CategoricalCrossEntropy": "ce"}
    again = losses.get(name[type(loss).__name__], **loss.config())
    assert type(again) is type(loss) and again.config() == loss.config()
    assert losses.get(loss) is loss


def test_defaults_are_documented_ones():
    assert BinaryCrossEntropy().config() == {"from_logits": False, "reduction": "mean",
                                             "eps": 1e-7}
    assert CategoricalCrossEntropy().config() == {"from_logits": True, "reduction": "mean",
                                                  "eps": 1e-7}
    assert MSE().config() == {"reduction": "mean"}


@pytest.mark.parametrize("eps", [0.0, -1e-7, 0.5, 0.7])
def test_eps_outside_the_open_interval_is_refused(eps):
    for cls in (BinaryCrossEntropy, CategoricalCrossEntropy):
        with pytest.raises(InputError, match=r"eps must be in \(0, 0.5\)"):
            cls(eps=eps)
    assert BinaryCrossEntropy(eps=0.49).eps == 0.49
    assert CategoricalCrossEntropy(eps=1e-12).eps == 1e-12


def test_a_label_equal_to_the_number_of_outputs_is_refused():
    model = Sequential([Dense(2, 3)], dtype="float64")
    x = np.zeros((3, 2))
    with pytest.raises(InputError, match=r"labels must be in \[0, 3\).*from 0 to 3"):
        model.evaluate(x, np.array([0, 1, 3]), loss="ce")
    assert np.isfinite(model.evaluate(x, np.array([0, 1, 2]), loss="ce")["loss"])


def test_losses_work_in_the_namespace_of_their_arrays():
    """Called without ``xp``, a loss finds it from the arrays: array-api-strict arrays in,
    array-api-strict arrays out (a NumPy fallback would fail on them)."""
    strict = portgd.get_backend("array_api_strict")
    rng = np.random.default_rng(0)
    z = strict.asarray(rng.normal(size=(4, 3)))
    y = strict.asarray(np.eye(3)[[0, 2, 1, 1]])
    for loss in (MSE(), BinaryCrossEntropy(from_logits=True), CategoricalCrossEntropy()):
        value, grad = loss(z, y)
        assert strict.owns(value) and strict.owns(grad)
        assert strict.owns(loss.value(z, y))
    for loss, activation in ((BinaryCrossEntropy(), portgd.layers.sigmoid),
                             (CategoricalCrossEntropy(from_logits=False),
                              portgd.layers.softmax)):
        value, grad = loss.fused(z, activation(strict.xp, z), y)
        assert strict.owns(value) and strict.owns(grad)
        assert strict.owns(loss.fused_value(z, y))


@pytest.mark.parametrize("last", ["sigmoid", "softmax"])
def test_a_logits_loss_after_the_activation_takes_the_outputs_as_logits(last):
    """Only the from-probabilities losses fuse with the activation. A from-logits loss after
    Sigmoid or Softmax reads the probabilities as logits (fit warns about it): its value is
    the from-logits formula of the model's outputs."""
    from portgd.layers import Sigmoid, Softmax

    rng = np.random.default_rng(5)
    model = Sequential([Dense(3, 4), Sigmoid() if last == "sigmoid" else Softmax()],
                       dtype="float64")
    x = rng.normal(size=(6, 3))
    p = portgd.to_numpy(model.predict(x))
    if last == "sigmoid":
        y = rng.uniform(0, 1, size=(6, 4))
        loss = BinaryCrossEntropy(from_logits=True)
        expected = np.mean(_softplus(p) - y * p)
    else:
        y = np.eye(4)[rng.integers(0, 4, size=6)]
        loss = CategoricalCrossEntropy(from_logits=True)
        expected = np.mean(_lse(p) - np.sum(y * p, axis=1))
    assert loss.fuses_with is None
    assert model.evaluate(x, y, loss=loss)["loss"] == pytest.approx(expected, rel=RTOL)


def test_categorical_cross_entropy_names_itself_when_targets_do_not_fit():
    with pytest.raises(portgd.ShapeError, match=r"^CategoricalCrossEntropy: targets shaped "
                                                r"\(4, 2\) do not match predictions shaped "
                                                r"\(4, 3\)"):
        CategoricalCrossEntropy()(np.zeros((4, 3)), np.zeros((4, 2)), np)


@pytest.mark.parametrize("targets", ["labels", "float64 one-hot rows"])
def test_the_fused_pair_takes_labels_and_other_dtypes_as_one_hot_rows(targets):
    """The fused Softmax + cross-entropy turns labels into one-hot rows (and casts targets to
    the logits' dtype) with the namespace it is given: the same value and gradient as
    float32 one-hot rows."""
    model = portgd.mlp(3, [4], 3, output="softmax", seed=2)
    x = np.random.default_rng(0).normal(size=(5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    model.forward(model.input(x))
    loss = CategoricalCrossEntropy(from_logits=False)
    rows = np.eye(3, dtype=np.float32)[labels]
    given = labels if targets == "labels" else rows.astype(np.float64)
    value, grad = loss.fused_with_layer(model.layers[-1], given, np)
    want_value, want_grad = loss.fused_with_layer(model.layers[-1], rows, np)
    assert grad.dtype == np.float32
    np.testing.assert_array_equal(value, want_value)
    np.testing.assert_array_equal(grad, want_grad)
