"""Nothing is read back to the host inside a training step (DESIGN.md; issue: GPU path).

On a GPU every read of a device value is a synchronisation. array_api_strict stands in for
the device here: every way its arrays reach the host (``float()``, ``bool()``, ``int()``,
``np.asarray``, DLPack, ``.item()``, ``.tolist()``) is counted, and fit must read a fixed
number of times per epoch however many batches the epoch has.
"""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import optim
from portgd.losses import CategoricalCrossEntropy

HOST_READS = ("__bool__", "__float__", "__int__", "__index__", "__complex__", "__array__",
              "__dlpack__", "item", "tolist")  # fmt: skip


class ReadCounter:
    def __init__(self):
        self.count = 0


@pytest.fixture
def host_reads(monkeypatch):
    """Counts every host read of an array_api_strict array while the test runs."""
    strict = pytest.importorskip("array_api_strict")
    array_type = type(strict.asarray(0.0))
    counter = ReadCounter()
    for name in HOST_READS:
        original = getattr(array_type, name, None)
        if original is None:
            continue

        def counted(self, *args, _original=original, **kwargs):
            counter.count += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(array_type, name, counted)
    return counter


def _fit(batches, epochs, validation=False, metrics=()):
    backend = portgd.get_backend("array_api_strict", "device1")
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.normal(size=(8 * batches, 6)), dtype="float32")
    y = backend.asarray(rng.integers(0, 3, size=8 * batches))
    model = portgd.mlp(6, [5], 3, output="softmax", backend=backend)
    kwargs = {"validation_data": (x, y)} if validation else {}
    return model.fit(x, y, loss=CategoricalCrossEntropy(from_logits=False),
                     optimizer=optim.Adam(lr=0.01, clip_norm=1.0), epochs=epochs,
                     batch_size=8, verbose=0, metrics=metrics, **kwargs)


@pytest.mark.parametrize("validation,metrics", [(False, ()), (True, ("accuracy",))])
def test_reads_per_epoch_do_not_grow_with_batches(host_reads, validation, metrics):
    counts = {}
    for batches in (3, 30):
        before = host_reads.count
        _fit(batches, epochs=2, validation=validation, metrics=metrics)
        counts[batches] = host_reads.count - before
    assert counts[3] == counts[30]
    # the one-time input validation (1 read of the targets, 1 of whether x is finite) plus
    # one read per epoch of the loss and metrics (and the same again for the validation
    # data, validated once and read per epoch)
    budget = 2 + 2 * 1 + (2 + 2 * 1 if validation else 0)
    assert counts[30] == budget


def test_a_training_step_reads_nothing(host_reads):
    backend = portgd.get_backend("array_api_strict", "device1")
    model = portgd.mlp(6, [5], 3, output="softmax", backend=backend)
    opt = optim.RMSprop(centered=True, momentum=0.5)
    loss = CategoricalCrossEntropy(from_logits=False)
    x = backend.asarray(np.ones((4, 6)), dtype="float32")
    y = backend.asarray(np.eye(3)[[0, 1, 2, 0]], dtype="float32")
    before = host_reads.count
    for _ in range(5):
        model.loss_and_backward(model.forward(x), y, loss)
        opt.update(model)
    assert host_reads.count == before


def test_the_counter_counts(host_reads):
    x = portgd.get_backend("array_api_strict").asarray([1.0, 2.0])
    float(x[0])
    np.asarray(x)
    assert host_reads.count == 2
