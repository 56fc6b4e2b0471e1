"""Metrics agree with their definitions, as properties: for logits and for probabilities, one
and several outputs, integer labels and one-hot rows, whole-set and batched evaluation.

The model is one Dense layer with the identity as weights and zero bias (then, for
probabilities, the activation), so its outputs are exactly the drawn values and the definition
can be evaluated on the host from ``predict``'s output. Logits are drawn with values in
(0, 0.5] on purpose: the decision threshold for logits is 0, for probabilities 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import portgd
from portgd import Sequential
from portgd.layers import Dense, Sigmoid, Softmax
from portgd.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

#: logits with many in (0, 0.5], where a probability threshold of 0.5 would decide wrongly
LOGIT = st.one_of(st.floats(0.0, 0.5, exclude_min=True), st.floats(-4.0, 4.0),
                  st.sampled_from([0.0, 0.5, -0.5, 1e-300]))


def _passthrough(k: int, *tail) -> Sequential:
    model = Sequential([Dense(k, k), *tail], dtype="float64")
    model.load_state_dict({"0.weight": np.eye(k), "0.bias": np.zeros(k)})
    return model


def _draw(data, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    z = data.draw(hnp.arrays(np.float64, (n, k), elements=LOGIT), label="z")
    # soft targets too: 0.5 is a negative (the definition reads targets as y > 0.5)
    y = data.draw(hnp.arrays(np.float64, (n, k), elements=st.sampled_from([0.0, 0.5, 1.0])),
                  label="y")
    return z, y


def _evaluate(model, x, y, loss, metrics, data):
    batch = data.draw(st.one_of(st.none(), st.integers(1, x.shape[0])), label="batch_size")
    return model.evaluate(x, y, loss=loss, metrics=metrics, batch_size=batch)


def _binary_accuracy(decided: np.ndarray, y: np.ndarray) -> float:
    """Keras's binary accuracy: the mean over samples and outputs of decision == target."""
    return float(np.mean(decided == (y > 0.5)))


@SETTINGS
@given(n=st.integers(1, 12), k=st.integers(1, 4), data=st.data())
def test_binary_accuracy_from_logits_thresholds_at_zero(n, k, data):
    z, y = _draw(data, n, k)
    model = _passthrough(k)
    out = portgd.to_numpy(model.predict(z))
    np.testing.assert_array_equal(out, z)
    result = _evaluate(model, z, y, BinaryCrossEntropy(from_logits=True),
                       ["accuracy", "mse", "mae"], data)
    assert result["accuracy"] == pytest.approx(_binary_accuracy(z > 0, y), abs=1e-15)
    assert result["mse"] == pytest.approx(np.mean((z - y) ** 2), rel=1e-12, abs=1e-300)
    assert result["mae"] == pytest.approx(np.mean(np.abs(z - y)), rel=1e-12, abs=1e-300)


@SETTINGS
@given(n=st.integers(1, 12), k=st.integers(1, 4), data=st.data())
def test_binary_accuracy_from_probabilities_thresholds_at_one_half(n, k, data):
    z, y = _draw(data, n, k)
    model = _passthrough(k, Sigmoid())
    p = portgd.to_numpy(model.predict(z))
    result = _evaluate(model, z, y, BinaryCrossEntropy(), ["accuracy", "mse", "mae"], data)
    assert result["accuracy"] == pytest.approx(_binary_accuracy(p > 0.5, y), abs=1e-15)
    assert result["mse"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    assert result["mae"] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-12)


@SETTINGS
@given(n=st.integers(1, 12), data=st.data())
def test_one_output_regression_accuracy_thresholds_at_one_half(n, data):
    """Any loss but binary cross-entropy with one output: outputs are read as probabilities."""
    z, y = _draw(data, n, 1)
    result = _evaluate(_passthrough(1), z, y, MSE(), ["accuracy"], data)
    assert result["accuracy"] == pytest.approx(_binary_accuracy(z > 0.5, y), abs=1e-15)


@SETTINGS
@given(n=st.integers(1, 12), k=st.integers(2, 5), data=st.data(),
       labels_as=st.sampled_from(["labels", "onehot"]),
       form=st.sampled_from(["logits", "softmax"]))
def test_categorical_accuracy_is_the_argmax_match(n, k, data, labels_as, form):
    z = data.draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-4, 4), unique=True),
                  label="z")  # unique: no ties among the logits
    labels = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)), label="labels")
    y = labels if labels_as == "labels" else np.eye(k)[labels]
    if form == "logits":
        model, loss = _passthrough(k), CategoricalCrossEntropy()
    else:
        model, loss = _passthrough(k, Softmax()), CategoricalCrossEntropy(from_logits=False)
    out = portgd.to_numpy(model.predict(z))  # softmax may round two near logits together
    result = _evaluate(model, z, y, loss, ["accuracy"], data)
    assert result["accuracy"] == pytest.approx(np.mean(np.argmax(out, axis=1) == labels),
                                               abs=1e-15)


@pytest.mark.parametrize("outputs", [1, 2])
def test_logits_between_zero_and_one_half_are_positive_decisions(outputs):
    """The one example spelled out: every logit in (0, 0.5] with target 1 is right."""
    z = np.array([[0.25, 0.5], [0.1, 1e-3], [-0.25, -0.5], [0.5, 0.3]])[:, :outputs]
    y = np.array([[1, 1], [1, 1], [0, 0], [1, 1]], dtype=float)[:, :outputs]
    model = _passthrough(outputs)
    result = model.evaluate(z, y, loss=BinaryCrossEntropy(from_logits=True),
                            metrics=["accuracy"])
    assert result["accuracy"] == 1.0
    history = model.fit(z, y, loss=BinaryCrossEntropy(from_logits=True), metrics=["accuracy"],
                        optimizer=portgd.optim.SGD(lr=0.0), batch_size=3, verbose=0,
                        validation_data=(z, y))
    assert history.history["accuracy"] == [1.0]
    assert history.history["val_accuracy"] == [1.0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_sums_are_device_scalars_in_the_model_dtype(dtype):
    """A Metric's ``batch_sum`` (the protocol of custom metrics too) is a 0-d array of the
    predictions' dtype, summed over the samples; class labels may be integers or one-hot."""
    from portgd import metrics

    backend = portgd.get_backend("numpy")
    xp = backend.xp
    yhat = backend.asarray(np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]),
                           dtype=dtype)
    labels = backend.asarray(np.array([1, 1, 2]))
    onehot = backend.asarray(np.eye(3)[[1, 1, 2]], dtype=dtype)
    categorical = metrics.get("accuracy").bind(xp, 0.5, False)
    for y in (labels, onehot):
        total = categorical.batch_sum(yhat, y)
        assert total.dtype == yhat.dtype and total.shape == ()
        assert float(total) == 2.0
    binary = metrics.get("accuracy").bind(xp, 0.5, True)
    total = binary.batch_sum(yhat, onehot)  # 8 of the 9 decisions are right
    assert total.dtype == yhat.dtype and float(total) == pytest.approx(8 / 3, rel=1e-6)
    for name, expected in (("mse", np.sum((np.asarray(yhat) - np.asarray(onehot)) ** 2) / 3),
                           ("mae", np.sum(np.abs(np.asarray(yhat) - np.asarray(onehot))) / 3)):
        total = metrics.get(name).bind(xp, 0.5, False).batch_sum(yhat, onehot)
        assert total.dtype == yhat.dtype and total.shape == ()
        assert float(total) == pytest.approx(float(expected), rel=1e-6)


def test_categorical_accuracy_needs_no_int64_and_takes_the_first_maximum():
    # array_api_strict's no_x64 device cannot hold the int64 that the standard's argmax
    # returns; accuracy must still work there and agree with NumPy's argmax (first on ties).
    import array_api_strict as strict

    from portgd import metrics

    device = strict.Device("no_x64")
    yhat = np.array([[0.1, 0.7, 0.2], [0.4, 0.4, 0.2], [0.3, 0.3, 0.3], [0.0, 0.2, 0.9]],
                    dtype=np.float32)
    labels = np.array([1, 1, 0, 2])
    expected = float(np.sum(np.argmax(yhat, axis=1) == labels))
    assert expected == 3.0  # the tie in row 1 goes to class 0, a miss
    onehot = np.eye(3, dtype=np.float32)[labels]
    metric = metrics.get("accuracy").bind(strict, 0.5, False, device=device)
    x = strict.asarray(yhat, device=device)
    for target in (strict.asarray(labels.astype(np.int32), device=device),
                   strict.asarray(onehot, device=device)):
        assert float(metric.batch_sum(x, target)) == expected
