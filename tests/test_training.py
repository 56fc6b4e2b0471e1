"""fit / evaluate: end-to-end accuracy, bookkeeping, callbacks and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import datasets, optim
from portgd.callbacks import EarlyStopping, LearningRateScheduler, TerminateOnNaN
from portgd.layers import Dense, Sigmoid
from portgd.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy
from portgd.model import Sequential, mlp


def test_digits_zero_vs_one_reaches_99_percent(backend):
    data = datasets.digits((0, 1), backend=backend)
    train, test = data.split(0.25, seed=0, stratify=True)
    model = mlp(64, [32], 1, output="sigmoid", seed=0, backend=backend)
    model.fit(train.X, train.y, loss="bce", optimizer=optim.Adam(lr=0.01), epochs=10,
              batch_size=32, verbose=0)
    result = model.evaluate(test.X, test.y, metrics=["accuracy"])
    assert result["accuracy"] >= 0.99


def test_digits_ten_classes_reach_95_percent():
    data = datasets.digits()
    train, test = data.split(0.25, seed=0, stratify=True)
    model = mlp(64, [128, 64], 10, output="softmax", seed=0)
    history = model.fit(train.X, train.y, loss=CategoricalCrossEntropy(from_logits=False),
                        optimizer=optim.Adam(lr=0.003), epochs=30, batch_size=32, verbose=0,
                        metrics=["accuracy"], validation_data=(test.X, test.y))
    result = model.evaluate(test.X, test.y, metrics=["accuracy"])
    assert result["accuracy"] >= 0.95
    assert result["accuracy"] == pytest.approx(history["val_accuracy"][-1], abs=1e-12)


def _toy(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (x @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.int64)
    return x, y


def test_history_and_metrics_are_the_true_means():
    x, y = _toy()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0, dtype="float64")
    history = model.fit(x, y, loss="bce", optimizer=optim.SGD(lr=0.1), epochs=3,
                        batch_size=96, shuffle=False, verbose=0, metrics=["accuracy", "mse"])
    assert list(history.history) == ["loss", "accuracy", "mse"]
    assert len(history) == 3 and history.epochs == [0, 1, 2]
    # one full batch per epoch: the epoch metrics equal the metrics before that epoch's step
    result = model.evaluate(x, y, metrics=["accuracy", "mse"])
    p = portgd.to_numpy(model.predict(x))[:, 0]
    assert result["accuracy"] == pytest.approx(np.mean((p > 0.5) == (y == 1)), abs=1e-15)
    assert result["mse"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert result["loss"] == pytest.approx(bce, rel=1e-10)


def test_validation_split_takes_the_last_samples():
    x, y = _toy()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0, dtype="float64")
    history = model.fit(x, y, loss="bce", optimizer="sgd", epochs=1, batch_size=8,
                        validation_split=0.25, verbose=0)
    expected = model.evaluate(x[72:], y[72:])
    assert history["val_loss"][0] == pytest.approx(expected["loss"], rel=1e-12)


def test_non_finite_loss_stops_and_says_where():
    x, y = _toy()
    x[70, 1] = 1e200  # finite (NaN would be refused as bad input); its squared error is not
    model = Sequential([Dense(3, 1)], seed=0, dtype="float64")
    with pytest.raises(portgd.NonFiniteLossError) as err, np.errstate(all="ignore"):
        model.fit(x, y, loss="mse", optimizer="sgd", epochs=3, batch_size=32, shuffle=False,
                  verbose=0)
    message = str(err.value)
    assert "epoch 1" in message and "batch 2" in message and "samples 64 to 95" in message
    assert "stop_on_nonfinite=False" in message


def test_non_finite_loss_can_continue_or_terminate_quietly():
    x, y = _toy()
    x[5, 0] = 1e200
    model = Sequential([Dense(3, 1)], seed=0, dtype="float64")
    with np.errstate(all="ignore"):
        history = model.fit(x, y, loss="mse", optimizer="sgd", epochs=2, batch_size=32,
                            verbose=0, stop_on_nonfinite=False)
        assert len(history) == 2 and not np.isfinite(history["loss"]).any()
        history = model.fit(x, y, loss="mse", optimizer="sgd", epochs=5, batch_size=32,
                            verbose=0, callbacks=[TerminateOnNaN()])
    assert len(history) == 1


class _Recorder:
    """Stands in for a model: its 'parameters' are the epoch they were saved at."""

    def __init__(self):
        self.epoch = None
        self.stop_training = False

    def state_dict(self):
        return {"epoch": self.epoch}

    def load_state_dict(self, state):
        self.epoch = ("restored", state["epoch"])


def test_early_stopping_patience_min_delta_and_restore():
    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01, restore_best=True)
    stopper.model = model = _Recorder()
    stopper.on_train_begin()
    for epoch, value in enumerate([1.0, 0.5, 0.495, 0.6, 0.3]):
        model.epoch = epoch
        stopper.on_epoch_end(epoch, {"val_loss": value})
        if model.stop_training:
            break
    # 0.495 is not better than 0.5 by more than min_delta: epochs 2 and 3 both count
    assert stopper.best_epoch == 1 and stopper.stopped_epoch == 3
    stopper.on_train_end()
    assert model.epoch == ("restored", 1)


def test_early_stopping_in_fit_and_accuracy_mode():
    x, y = _toy()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0)
    stopper = EarlyStopping(monitor="accuracy", patience=0)
    assert stopper.tracker.sign == -1.0  # accuracy is maximised
    history = model.fit(x, y, loss="bce", optimizer=optim.SGD(lr=0.0), epochs=5, batch_size=32,
                        verbose=0, metrics=["accuracy"], callbacks=[stopper])
    assert len(history) == 2  # lr=0 never improves after the first epoch
    with pytest.raises(portgd.InputError, match="cannot monitor 'val_loss'"):
        model.fit(x, y, loss="bce", epochs=1, batch_size=32, verbose=0,
                  callbacks=[EarlyStopping()])


def test_learning_rate_scheduler_sets_the_rate_each_epoch():
    x, y = _toy()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0)
    opt = optim.SGD(lr=0.1)
    seen = []
    sched = LearningRateScheduler(lambda epoch, lr: (seen.append(lr), 0.1 / (epoch + 1))[1])
    model.fit(x, y, loss="bce", optimizer=opt, epochs=3, batch_size=32, verbose=0,
              callbacks=[sched])
    assert seen == [0.1, 0.1, 0.05]
    assert opt.lr == pytest.approx(0.1 / 3)


def test_verbose_zero_prints_nothing_and_one_shows_progress(capsys):
    x, y = _toy()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0)
    model.fit(x, y, loss="bce", epochs=1, batch_size=32, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    model.fit(x, y, loss="bce", epochs=2, batch_size=32, verbose=1, metrics=["accuracy"])
    lines = capsys.readouterr().err.splitlines()  # not a terminal: one line per epoch
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("loss=" in line and "accuracy=" in line and "samples/s)" in line
               for line in lines)


def test_progress_bar_on_a_terminal():
    import io

    from portgd.progress import EpochProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    reads = []

    def read():
        reads.append(1)
        return {"loss": 0.5}

    progress = EpochProgress(0, 3, n_batches=100, stream=screen)
    for done in range(1, 101):
        progress.step(done, 32 * done, read)
    progress.finish({"loss": 0.25}, 3200)
    text = screen.getvalue()
    assert "epoch 1/3" in text and "100/100" in text and "loss=0.25" in text
    assert len(reads) <= 2  # a fast epoch reads the device at most at the end


@pytest.mark.parametrize(
    "loss,y,error,match",
    [
        ("bce", np.full(96, 2.0), portgd.InputError, r"targets in \[0, 1\]"),
        (CategoricalCrossEntropy(), np.full(96, 3), portgd.InputError, r"in \[0, 2\)"),
        (CategoricalCrossEntropy(), np.full(96, 0.5), portgd.InputError, "must be integers"),
        ("bce", np.zeros(95), portgd.ShapeError, "x has 96 samples but y has 95"),
        ("mse", np.zeros((96, 3)), portgd.ShapeError, "do not fit a model with 1 outputs"),
    ],
)
def test_bad_targets(loss, y, error, match):
    x, _ = _toy()
    outputs = 2 if isinstance(loss, CategoricalCrossEntropy) else 1
    model = Sequential([Dense(3, outputs)], seed=0)
    with pytest.raises(error, match=match):
        model.fit(x, y, loss=loss, epochs=1, batch_size=32, verbose=0)


def test_bad_fit_arguments():
    x, y = _toy()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0)
    with pytest.raises(portgd.DatasetError, match="fewer than batch_size=200"):
        model.fit(x, y, loss="bce", batch_size=200, verbose=0)
    with pytest.raises(portgd.InputError, match="epochs must be a positive int"):
        model.fit(x, y, loss="bce", epochs=0, verbose=0)
    with pytest.raises(portgd.InputError, match=r"validation_split must be in \[0, 1\)"):
        model.fit(x, y, loss="bce", validation_split=1.5, verbose=0)
    with pytest.raises(portgd.InputError, match="unknown loss"):
        model.fit(x, y, loss="hinge", verbose=0)
    with pytest.raises(portgd.InputError, match="has not been fitted"):
        Sequential([Dense(3, 1)]).evaluate(x, y)


def test_loss_shape_mismatch_is_a_clear_error():
    with pytest.raises(portgd.ShapeError, match=r"targets shaped \(4, 2\) do not match "
                                                r"predictions shaped \(4, 1\)"):
        MSE()(np.zeros((4, 1)), np.zeros((4, 2)))
    with pytest.raises(portgd.InputError, match="reduction"):
        BinaryCrossEntropy(reduction="avg")


def test_integer_features_are_converted_not_truncated():
    x, y = _toy()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0, dtype="float64")
    ints = np.round(x * 10).astype(np.int64)
    a = model.evaluate(ints, y, loss="bce")
    b = model.evaluate(ints.astype(np.float64), y, loss="bce")
    assert a == b


def test_softmax_with_a_logits_loss_is_refused_and_a_loss_name_fuses():
    x, y = _toy()
    model = mlp(3, [4], 2, output="softmax")
    with pytest.raises(portgd.InputError, match=r"applied twice .* pass from_logits=False"):
        model.fit(x, y, loss=CategoricalCrossEntropy(), epochs=1, batch_size=32, verbose=0)
    by_name = mlp(3, [4], 2, output="softmax").fit(x, y, loss="ce", epochs=5, verbose=0)
    fused = mlp(3, [4], 2, output="softmax").fit(
        x, y, loss=CategoricalCrossEntropy(from_logits=False), epochs=5, verbose=0)
    assert by_name["loss"] == fused["loss"]  # "ce" after a Softmax is the fused pair


def test_fit_releases_gradients_after_each_update():
    x, y = _toy()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0)
    model.loss_and_backward(model.forward(model.input(x)), model.input(y[:, None]),
                            BinaryCrossEntropy())
    assert set(model.grads) == {"0.weight", "0.bias"}
    model.fit(x, y, loss="bce", epochs=1, batch_size=32, verbose=0)
    assert model.grads == {}
