"""The training loop's bookkeeping, as properties: the epoch loss is the sample-weighted mean
of the batch losses at the weights each batch saw, every sample is seen once per epoch, and
the batch order comes from ``fit(seed=...)`` when given, else from the model's generator.

Written against the public surface only (``fit``, ``evaluate``, ``state_dict``, a custom
``Layer``), in float64 on NumPy: the bookkeeping is backend-independent, and the cross-backend
equality of training runs is tested in test_equivalence.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import portgd
from portgd import Sequential, optim
from portgd.callbacks import Callback
from portgd.layers import Dense, Layer, Sigmoid, Softmax, Tanh
from portgd.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy

SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

#: the same sums in another order: a few float64 roundings apart
REL = 1e-12


def _data(n: int, features: int = 3, outputs: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = rng.normal(size=(n, outputs))
    return x, y


def _regressor(seed: int = 0, outputs: int = 2) -> Sequential:
    return Sequential([Dense(3, 4), Tanh(), Dense(4, outputs)], seed=seed, dtype="float64")


@SETTINGS
@given(n=st.integers(1, 40), data=st.data())
def test_epoch_loss_equals_evaluate_on_the_same_weights(n, data):
    """With lr = 0 the weights never move, so each epoch's loss is the loss of those weights
    on all n samples: evaluate's number, whatever the batch size (a short last batch too)."""
    batch_size = data.draw(st.integers(1, n), label="batch_size")
    x, y = _data(n)
    model = _regressor()
    expected = model.evaluate(x, y, loss="mse")["loss"]
    history = model.fit(x, y, loss="mse", optimizer=optim.SGD(lr=0.0), epochs=2,
                        batch_size=batch_size, verbose=0, seed=1)
    assert history.history["loss"] == pytest.approx([expected, expected], rel=REL)


@SETTINGS
@given(n=st.integers(2, 30), data=st.data())
def test_epoch_loss_is_the_sample_weighted_mean_of_the_batch_losses(n, data):
    """With lr > 0: replay the epoch batch by batch (no shuffle, stateless SGD). The epoch
    loss is sum_b n_b L_b / n with L_b the mean loss of batch b at the weights before its
    step; the unweighted mean of the L_b differs when the last batch is short."""
    batch_size = data.draw(st.integers(1, n), label="batch_size")
    x, y = _data(n, seed=n)
    model = _regressor(seed=2)
    replay = _regressor(seed=2)
    epoch = model.fit(x, y, loss="mse", optimizer=optim.SGD(lr=0.05), batch_size=batch_size,
                      shuffle=False, verbose=0).history["loss"][0]
    weighted, sgd = 0.0, optim.SGD(lr=0.05)
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        weighted += len(xb) * replay.evaluate(xb, yb, loss="mse")["loss"]
        replay.fit(xb, yb, loss="mse", optimizer=sgd, batch_size=len(xb), verbose=0)
    assert epoch == pytest.approx(weighted / n, rel=REL)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, replay.state_dict()[name], rtol=REL, atol=1e-15)


def test_epoch_loss_with_a_short_last_batch_is_not_the_mean_of_batch_means():
    """The case that separates the two: 5 samples in batches of 4 and 1."""
    x, y = _data(5)
    y[4] = 100.0  # the lone last sample has a large loss
    model = _regressor()
    expected = model.evaluate(x, y, loss="mse")["loss"]
    got = model.fit(x, y, loss="mse", optimizer=optim.SGD(lr=0.0), batch_size=4,
                    shuffle=False, verbose=0).history["loss"][0]
    first, last = model.evaluate(x[:4], y[:4])["loss"], model.evaluate(x[4:], y[4:])["loss"]
    assert got == pytest.approx(expected, rel=REL)
    assert got == pytest.approx((4 * first + last) / 5, rel=REL)
    assert abs(got - (first + last) / 2) > 0.1 * got


@pytest.mark.parametrize("metric", ["accuracy", "mse", "mae"])
def test_epoch_metrics_are_sample_weighted_too(metric):
    x, y = _data(7, outputs=1)
    y = (y > 0).astype(float)
    model = Sequential([Dense(3, 1), Sigmoid()], seed=4, dtype="float64")
    expected = model.evaluate(x, y, loss="bce", metrics=[metric])
    history = model.fit(x, y, loss="bce", optimizer=optim.SGD(lr=0.0), batch_size=3,
                        verbose=0, metrics=[metric], validation_data=(x, y), seed=0)
    for key in ("loss", metric):
        assert history.history[key][0] == pytest.approx(expected[key], rel=REL)
        assert history.history["val_" + key][0] == pytest.approx(expected[key], rel=REL)


# ---------------------------------------------------------------------------------------------
# batch order


class _Recorder(Layer):
    """Passes its input through and records column 0 of every batch (the sample index)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[int]] = []

    def forward(self, x):
        self.batches.append([int(v) for v in np.asarray(x[:, 0]).tolist()])
        return x


def _orders(model_seed: int, fit_seed: int | None, n: int = 23, batch_size: int = 5,
            epochs: int = 2, shuffle: bool = True) -> list[list[list[int]]]:
    """The batches of each epoch, as lists of sample indices."""
    recorder = _Recorder()
    model = Sequential([recorder, Dense(2, 1)], seed=model_seed, dtype="float64")
    x = np.stack([np.arange(n, dtype=float), np.ones(n)], axis=1)
    model.fit(x, np.zeros(n), loss="mse", optimizer=optim.SGD(lr=0.0), epochs=epochs,
              batch_size=batch_size, shuffle=shuffle, verbose=0, seed=fit_seed)
    per_epoch = -(-n // batch_size)
    return [recorder.batches[e * per_epoch:(e + 1) * per_epoch] for e in range(epochs)]


@pytest.mark.parametrize("n,batch_size", [(23, 5), (10, 10), (7, 1), (9, 4)])
def test_every_epoch_sees_every_sample_once_in_full_batches_then_the_rest(n, batch_size):
    for fit_seed in (None, 3):
        for epoch in _orders(0, fit_seed, n, batch_size, epochs=3):
            sizes = [len(b) for b in epoch]
            expected = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size
                                                            else [])
            assert sizes == expected
            assert sorted(i for b in epoch for i in b) == list(range(n))


def test_two_fit_seeds_give_two_orders_and_each_is_reproducible():
    one, two = _orders(0, 1), _orders(0, 2)
    assert one != two
    assert one[0] != two[0] and one[1] != two[1]
    assert _orders(0, 1) == one


def test_the_fit_seed_wins_over_the_model_seed():
    """Models with different seeds (different weights, different generators) given the same
    fit seed draw the same batch order."""
    assert _orders(0, 7) == _orders(1, 7)
    assert _orders(0, 7) == _orders(12345, 7)


def test_without_a_fit_seed_the_model_generator_orders_the_batches():
    same, other = _orders(5, None), _orders(6, None)
    assert same == _orders(5, None)
    assert same != other
    assert same[0] != same[1]  # a new order every epoch


def test_shuffle_false_keeps_the_data_order():
    for epoch in _orders(0, 1, n=11, batch_size=4, shuffle=False):
        assert epoch == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_the_fit_seed_changes_the_trained_weights():
    """The order is not only drawn but used: two seeds train to two different models, one
    seed twice to the same one."""
    x, y = _data(20)

    def trained(seed):
        model = _regressor()
        model.fit(x, y, loss="mse", optimizer=optim.SGD(lr=0.1), batch_size=3, epochs=2,
                  verbose=0, seed=seed)
        return model.state_dict()["0.weight"]

    assert not np.array_equal(trained(1), trained(2))
    np.testing.assert_array_equal(trained(1), trained(1))


# ---------------------------------------------------------------------------------------------
# fit's loss matches the loss evaluate reports, for every loss and its fused form


@pytest.mark.parametrize("make_loss,last,outputs", [  # objects made in the test
    (BinaryCrossEntropy, Sigmoid, 3),
    (lambda: BinaryCrossEntropy(reduction="sum"), Sigmoid, 2),
    (lambda: BinaryCrossEntropy(from_logits=True), None, 3),
    (lambda: CategoricalCrossEntropy(from_logits=False), Softmax, 3),
    (lambda: CategoricalCrossEntropy(reduction="sum"), None, 4),
    (lambda: MSE(reduction="sum"), None, 2),
], ids=["bce-fused", "bce-fused-sum", "bce-logits", "ce-fused", "ce-sum", "mse-sum"])
def test_epoch_loss_equals_evaluate_for_every_loss(make_loss, last, outputs):
    loss = make_loss()
    layers = [Dense(3, 4), Tanh(), Dense(4, outputs)]
    if last is not None:
        layers.append(last())
    model = Sequential(layers, seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3))
    if isinstance(loss, CategoricalCrossEntropy):
        y = rng.integers(0, outputs, size=9)
    else:
        y = rng.uniform(0, 1, size=(9, outputs))
    got = model.fit(x, y, loss=loss, optimizer=optim.SGD(lr=0.0), batch_size=4, verbose=0,
                    shuffle=False).history["loss"][0]
    # docs/numerics.md: the loss of all samples under the loss's reduction: for "mean" the
    # sum over batches of (batch loss * batch size) / samples, for "sum" the sum of the batch
    # losses; a one-batch evaluate is that batch's loss
    batches = [model.evaluate(x[s:s + 4], y[s:s + 4], loss=loss)["loss"]
               for s in range(0, 9, 4)]
    if loss.reduction == "mean":
        sizes = [len(x[s:s + 4]) for s in range(0, 9, 4)]
        expected = sum(n * b for n, b in zip(sizes, batches, strict=True)) / 9
    else:
        expected = sum(batches)
    assert got == pytest.approx(expected, rel=REL)
    for batch_size in (None, 1, 2, 4, 9):
        found = model.evaluate(x, y, loss=loss, batch_size=batch_size)["loss"]
        assert found == pytest.approx(got, rel=REL), batch_size


@SETTINGS
@given(n=st.integers(1, 30), data=st.data())
def test_sum_reduction_epoch_loss_is_the_loss_of_all_samples_for_any_batch_size(n, data):
    """reduction="sum": with lr = 0 each epoch's loss is the summed loss of all n samples,
    evaluate's one-batch figure, whatever fit's and evaluate's batch sizes."""
    batch_size = data.draw(st.integers(1, n), label="batch_size")
    x, y = _data(n)
    model = _regressor()
    loss = MSE(reduction="sum")
    expected = model.evaluate(x, y, loss=loss)["loss"]
    assert expected == pytest.approx(float(np.sum((model.predict(x) - y) ** 2)), rel=REL)
    assert model.evaluate(x, y, loss=loss, batch_size=batch_size)["loss"] == pytest.approx(
        expected, rel=REL)
    history = model.fit(x, y, loss=loss, optimizer=optim.SGD(lr=0.0), epochs=2,
                        batch_size=batch_size, verbose=0, seed=1, validation_data=(x, y))
    assert history.history["loss"] == pytest.approx([expected, expected], rel=REL)
    assert history.history["val_loss"] == pytest.approx([expected, expected], rel=REL)


# ---------------------------------------------------------------------------------------------
# validation data and resumed epochs


@SETTINGS
@given(n=st.integers(2, 30), fraction=st.floats(0.01, 0.99))
def test_validation_split_holds_out_the_last_rounded_fraction(n, fraction):
    held = round(n * fraction)
    assume(0 < held < n)
    x, y = _data(n, seed=n)
    model = _regressor()
    cut = n - held
    train_loss = model.evaluate(x[:cut], y[:cut], loss="mse")["loss"]
    val_loss = model.evaluate(x[cut:], y[cut:], loss="mse")["loss"]
    history = model.fit(x, y, loss="mse", optimizer=optim.SGD(lr=0.0), batch_size=cut,
                        validation_split=fraction, verbose=0)
    assert history.history["loss"][0] == pytest.approx(train_loss, rel=REL)
    assert history.history["val_loss"][0] == pytest.approx(val_loss, rel=REL)


@pytest.mark.parametrize("n,fraction", [(10, 0.04), (10, 0.96), (3, 0.1)])
def test_validation_split_that_leaves_a_side_empty_is_refused(n, fraction):
    x, y = _data(n)
    with pytest.raises(portgd.DatasetError, match=f"validation_split={fraction} of {n} samples"):
        _regressor().fit(x, y, loss="mse", validation_split=fraction, batch_size=1, verbose=0)


def test_validation_data_and_split_together_are_refused():
    x, y = _data(8)
    with pytest.raises(portgd.InputError, match="validation_data or validation_split"):
        _regressor().fit(x, y, loss="mse", validation_data=(x, y), validation_split=0.5,
                         verbose=0)


def test_resuming_at_an_epoch_runs_the_remaining_epochs_under_their_numbers():
    seen = []

    class Epochs(Callback):
        def on_epoch_begin(self, epoch):
            seen.append(("begin", epoch))

        def on_epoch_end(self, epoch, logs):
            seen.append(("end", epoch))

    x, y = _data(8)
    history = _regressor().fit(x, y, loss="mse", optimizer=optim.SGD(lr=0.01), epochs=5,
                               initial_epoch=3, batch_size=4, verbose=0, callbacks=[Epochs()])
    assert history.epochs == [3, 4] and len(history.history["loss"]) == 2
    assert seen == [("begin", 3), ("end", 3), ("begin", 4), ("end", 4)]
    for bad in (5, -1, True, 1.0):
        with pytest.raises(portgd.InputError, match="initial_epoch must be an int in"):
            _regressor().fit(x, y, loss="mse", epochs=5, initial_epoch=bad, verbose=0)


# -- a loss named after the activation it fuses with -------------------------------------------
@pytest.mark.parametrize("name,last,loss_type", [
    ("bce", Sigmoid, BinaryCrossEntropy), ("ce", Softmax, CategoricalCrossEntropy)])
def test_a_loss_name_after_its_activation_takes_the_fused_gradient(name, last, loss_type):
    """After Sigmoid (Softmax) the name "bce" ("ce") means probabilities, and fit uses the fused
    gradient ``(p - y) / N``: exact even where the activation saturates to 1 in float32, where
    the unfused chain rule through clipped probabilities gives another gradient."""
    outputs = 1 if last is Sigmoid else 2
    model = Sequential([Dense(2, outputs), last()], seed=0, dtype="float32")
    model.layers[0].params["weight"][...] = 40.0  # z = 40 (x + ...): p rounds to 1
    model.layers[0].params["bias"][...] = np.arange(outputs, dtype=np.float32)
    x = np.ones((4, 2), dtype=np.float32)
    y = np.zeros((4, outputs), dtype=np.float32) if last is Sigmoid else np.eye(2)[[1, 0, 1, 0]]
    before = {k: v.copy() for k, v in model.params.items()}
    p = model.predict(x)
    model.fit(x, y, loss=name, optimizer=optim.SGD(lr=1.0), epochs=1, batch_size=4,
              shuffle=False, verbose=0)
    assert type(model.loss) is loss_type and model.loss.from_logits is False
    dz = (p - y) / (4 * outputs if last is Sigmoid else 4)
    np.testing.assert_allclose(before["0.bias"] - model.params["0.bias"], dz.sum(axis=0),
                               rtol=1e-6)


@pytest.mark.parametrize("loss,last", [
    (lambda: BinaryCrossEntropy(from_logits=True), Sigmoid),
    (lambda: CategoricalCrossEntropy(from_logits=True), Softmax)])
def test_a_logits_loss_after_its_activation_is_refused(loss, last):
    model = Sequential([Dense(2, 2), last()], seed=0)
    x, y = np.ones((4, 2)), np.eye(2)[[0, 1, 0, 1]]
    with pytest.raises(portgd.InputError, match="the activation would be applied twice"):
        model.fit(x, y, loss=loss(), epochs=1, batch_size=2, verbose=0)


def test_a_validation_split_of_one_is_refused_as_out_of_range():
    model = Sequential([Dense(2, 1)], seed=0)
    with pytest.raises(portgd.InputError, match=r"validation_split must be in \[0, 1\), got 1.0"):
        model.fit(np.ones((4, 2)), np.ones(4), validation_split=1.0, verbose=0)


def test_callbacks_see_the_history_fit_returns():
    seen = []

    class Look(Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append((self.history, len(self.history.epochs)))

    model = Sequential([Dense(2, 1)], seed=0)
    history = model.fit(np.ones((4, 2)), np.ones(4), epochs=2, batch_size=2, verbose=0,
                        callbacks=[Look()])
    assert [h is history for h, _ in seen] == [True, True]
    assert [n for _, n in seen] == [1, 2]  # the epoch is appended before the hooks run


def test_a_lazy_backend_finds_the_first_non_finite_batch_after_materialising(monkeypatch):
    """With the batch losses materialised into one array every 2 steps, the NaN report still
    names the first batch whose loss was not finite, as an eager run does."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    x[29] = 1e200  # batch 7 of 10 (batch_size 4) overflows

    def fit(lazy):
        backend = portgd.get_backend("numpy")
        if lazy:
            monkeypatch.setattr(backend, "materialize_every", 2)
        model = Sequential([Dense(3, 1)], seed=0, dtype="float64")
        with np.errstate(over="ignore", invalid="ignore"), pytest.raises(
                portgd.NonFiniteLossError) as caught:
            model.fit(x, y, loss=MSE(), optimizer=optim.SGD(lr=1e-3), epochs=1,
                      batch_size=4, shuffle=False, verbose=0)
        return str(caught.value)

    eager = fit(False)
    assert "first at batch 7, samples 28 to 31" in eager
    assert fit(True) == eager


def test_validation_is_evaluated_in_batches_of_batch_size():
    """val_loss is evaluate(batch_size=fit's batch_size) on the final weights, bit for bit
    (one batch of all 300 samples rounds its float32 sums differently)."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(400, 5)).astype(np.float32), rng.normal(size=(400, 2))
    xv, yv = rng.normal(size=(300, 5)).astype(np.float32), rng.normal(size=(300, 2))
    model = Sequential([Dense(5, 7), Tanh(), Dense(7, 2)], seed=1)
    history = model.fit(x, y, loss=MSE(), optimizer=optim.SGD(lr=0.01), epochs=1,
                        batch_size=7, validation_data=(xv, yv), verbose=0)
    batched = model.evaluate(xv, yv, loss=MSE(), batch_size=7)["loss"]
    whole = model.evaluate(xv, yv, loss=MSE())["loss"]
    assert batched != whole  # the test can tell the two apart
    assert history.history["val_loss"] == [batched]


def test_a_sum_that_overflows_is_reported_as_such():
    """Four batches whose squared errors sum to 1e38 each: 4e38 passes float32's maximum."""
    model = Sequential([Dense(1, 1, init="zeros")], seed=0, dtype="float32")
    x, y = np.zeros((16, 1), dtype=np.float32), np.full((16, 1), 5e18, dtype=np.float32)
    with np.errstate(over="ignore"), pytest.raises(portgd.NonFiniteLossError) as caught:
        model.fit(x, y, loss=MSE(), optimizer=optim.SGD(lr=0.0), epochs=1, batch_size=4,
                  verbose=0)
    assert "(every batch loss was finite but their sum overflowed)" in str(caught.value)


def test_batch_hooks_and_progress_see_every_batch_in_order(monkeypatch):
    from portgd import training

    steps, batches = [], []

    class Recorder:
        def __init__(self, epoch, epochs, n_batches):
            steps.append(("begin", epoch, epochs, n_batches))

        def step(self, done, samples, read):
            steps.append(("step", done, samples, sorted(read())))

        def finish(self, logs, samples):
            steps.append(("finish", samples))

    class Batches(Callback):
        def on_batch_end(self, batch):
            batches.append(batch)

    monkeypatch.setattr(training, "EpochProgress", Recorder)
    model = Sequential([Dense(2, 1)], seed=0)
    model.fit(np.ones((10, 2)), np.ones(10), epochs=1, batch_size=4, verbose=1,
              metrics=["mae"], callbacks=[Batches()])
    assert batches == [0, 1, 2]
    assert steps == [("begin", 0, 1, 3), ("step", 1, 4, ["loss", "mae"]),
                     ("step", 2, 8, ["loss", "mae"]), ("step", 3, 10, ["loss", "mae"]),
                     ("finish", 10)]


def test_targets_of_another_library_are_named_y():
    strict = pytest.importorskip("array_api_strict")
    model = Sequential([Dense(2, 1)], seed=0)
    with pytest.raises(portgd.BackendMismatchError, match=r"^y is a array_api_strict"):
        model.fit(np.ones((4, 2)), strict.asarray(np.ones(4)), verbose=0)


def test_class_labels_are_checked_against_the_index_dtype_as_class_labels(monkeypatch):
    backend = portgd.get_backend("numpy")
    seen = []
    monkeypatch.setattr(backend, "check_index_range",
                        lambda low, high, what="indices": seen.append((low, high, what)))
    model = Sequential([Dense(2, 3), Softmax()], seed=0)
    model.fit(np.ones((4, 2)), np.array([0, 2, 1, 2]), loss="ce", epochs=1, batch_size=4,
              verbose=0)
    assert seen == [(0, 2, "class labels")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prepared_targets_take_the_models_dtype(dtype):
    from portgd.training import prepare

    model = Sequential([Dense(2, 1)], seed=0, dtype=dtype)
    x, y = prepare(model, np.ones((3, 2)), np.array([1, 0, 1]), MSE())
    assert x.dtype == np.dtype(dtype) and y.dtype == np.dtype(dtype) and y.shape == (3, 1)


def test_the_non_finite_batch_is_found_on_torch_too():
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 1))
    y[9] = 1e200  # batch 2 of 3 (batch_size 4): its squared error overflows

    model = Sequential([Dense(3, 1)], seed=0, dtype="float64", backend="torch")
    with pytest.raises(portgd.NonFiniteLossError, match=r"first at batch 2, samples 8 to 11"):
        model.fit(x, y, loss=MSE(), optimizer=optim.SGD(lr=0.0), epochs=1, batch_size=4,
                  shuffle=False, verbose=0)
