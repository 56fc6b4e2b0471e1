"""Cross-backend equivalence: the same seed gives the same numbers on every backend.

An MLP with two hidden layers is trained for 50 steps with each optimizer on every backend of
the fixture, in float64 and float32, and compared with the NumPy float64 reference run within
the tolerance table of tests/tolerances.py.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from tolerances import TOLERANCE

import portgd
from portgd import optim
from portgd.losses import CategoricalCrossEntropy
from portgd.model import mlp

OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.05),
    "momentum": lambda: optim.SGD(lr=0.05, momentum=0.9),
    "nesterov": lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adagrad": lambda: optim.AdaGrad(lr=0.05),
    "rmsprop": lambda: optim.RMSprop(lr=0.005, centered=True, momentum=0.5),
    "adam": lambda: optim.Adam(lr=0.005, amsgrad=True),
    "adamw": lambda: optim.AdamW(lr=0.005),
}

_data = np.random.default_rng(0)
X = _data.normal(size=(200, 10))
Y = np.argmax(X @ _data.normal(size=(10, 3)), axis=1)  # learnable labels


def train(backend, dtype, optimizer):
    model = mlp(10, [16, 12], 3, activation="tanh", output="softmax", seed=1, dtype=dtype,
                backend=backend)
    history = model.fit(X, Y, loss=CategoricalCrossEntropy(from_logits=False),
                        optimizer=OPTIMIZERS[optimizer](), epochs=10, batch_size=40,
                        verbose=0, seed=2)  # 5 batches x 10 epochs = 50 steps
    return model, np.array(history["loss"])


@functools.cache
def reference(optimizer):
    model, losses = train(portgd.get_backend("numpy"), "float64", optimizer)
    return model.state_dict(), losses


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_same_numbers_as_numpy_float64(backend, dtype, optimizer):
    if not backend.supports(dtype):
        pytest.skip(f"{backend} has no {dtype}")
    ref_params, ref_losses = reference(optimizer)
    model, losses = train(backend, dtype, optimizer)
    tol = TOLERANCE[dtype]
    state = model.state_dict()
    for name, ref in ref_params.items():
        error = np.max(np.abs(state[name].astype(np.float64) - ref))
        assert error <= tol * np.max(np.abs(ref)), (name, error)
    np.testing.assert_allclose(losses, ref_losses, rtol=tol, atol=0)
    assert ref_losses[-1] < 0.8 * ref_losses[0]  # it did learn


def test_training_stays_on_the_non_default_device():
    device1 = portgd.get_backend("array_api_strict", "device1")
    model = mlp(10, [8], 3, output="softmax", backend=device1)
    optimizer = optim.Adam(lr=0.01)
    model.fit(device1.asarray(X), Y, loss=CategoricalCrossEntropy(from_logits=False),
              optimizer=optimizer, epochs=2, batch_size=50, verbose=0,
              validation_data=(X[:20], Y[:20]), metrics=["accuracy"])
    arrays = [*model.params.values(), *model.grads.values(),
              *(v for entry in optimizer.state.values() for v in entry.values()),
              model.predict(X[:5])]
    assert arrays
    for array in arrays:
        assert device1.owns(array) and device1.device_name == str(array.device._device)
