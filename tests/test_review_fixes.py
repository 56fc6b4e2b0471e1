"""Regression tests for problems found in review (each named after what it guards)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import portgd
from portgd import metrics, optim
from portgd.layers import Dense, Sigmoid
from portgd.losses import MSE, BinaryCrossEntropy
from portgd.model import Sequential


def test_to_numpy_is_a_copy_on_every_backend(backend):
    x = backend.asarray([1.0, 2.0], dtype="float32")
    host = backend.to_numpy(x)
    host[0] = 99.0
    assert backend.to_numpy(x)[0] == 1.0


def test_arrays_read_from_a_model_do_not_change_when_it_trains():
    model = portgd.mlp(3, [4], 1)
    held = portgd.to_numpy(model.params["0.weight"])
    before = held.copy()
    model.fit(np.ones((8, 3)), np.zeros(8), loss="mse", optimizer="sgd", epochs=2,
              batch_size=4, verbose=0)
    np.testing.assert_array_equal(held, before)


def test_binary_accuracy_over_several_outputs():
    acc = metrics.Accuracy().bind(np, 0.5, binary=True)
    yhat = np.array([[0.007, 0.27], [0.9, 0.4]])
    y = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert acc.batch_sum(yhat, y) == pytest.approx(1.5)  # 3 of 4 decisions, over 2 outputs
    x = np.random.default_rng(0).normal(size=(6, 3))
    model = Sequential([Dense(3, 2), Sigmoid()], dtype="float64")
    result = model.evaluate(x, (x[:, :2] > 0).astype(float), loss=BinaryCrossEntropy(),
                            metrics=["accuracy"])
    p = portgd.to_numpy(model.predict(x))
    assert result["accuracy"] == pytest.approx(np.mean((p > 0.5) == (x[:, :2] > 0)))


def test_failed_move_leaves_the_model_usable():
    model = portgd.mlp(3, [4], 1, dtype="float64")
    before = model.state_dict()
    with pytest.raises(portgd.DTypeNotSupportedError):
        model.to("array_api_strict", "no_float64")
    assert model.backend.name == "numpy"
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    model.predict(np.ones((2, 3)))


def test_checkpoint_of_a_model_with_a_callable_initializer(tmp_path):
    def halves(host, rng, shape):
        return host.full(shape, 0.5)

    model = Sequential([Dense(2, 3, init=halves)], dtype="float64")
    loaded = portgd.load(portgd.save(tmp_path / "m.npz", model))
    np.testing.assert_array_equal(loaded.model.state_dict()["0.weight"], np.full((2, 3), 0.5))


def test_loading_onto_a_device_without_float64_says_so(tmp_path):
    path = portgd.save(tmp_path / "m.npz", portgd.mlp(3, [4], 1, dtype="float64"))
    with pytest.raises(portgd.DTypeNotSupportedError, match="no_float64"):
        portgd.load(path, backend="array_api_strict", device="no_float64")


def test_load_state_dict_accepts_nested_lists():
    model = Sequential([Dense(2, 1)], dtype="float64")
    model.load_state_dict({"0.weight": [[1.0], [2.0]], "0.bias": [0.5]})
    np.testing.assert_array_equal(portgd.to_numpy(model.predict([[1.0, 1.0]])), [[3.5]])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_overflowing_epoch_sum_is_reported_not_a_type_error():
    model = Sequential([Dense(1, 1, bias=False)], dtype="float32")
    model.load_state_dict({"0.weight": np.array([[1e19]], np.float32)})
    with pytest.raises(portgd.NonFiniteLossError, match="sum overflowed"):
        # each batch's loss is 1e38 (finite in float32); twice 2 x 1e38 is not
        model.fit(np.ones((4, 1)), np.zeros(4), loss=MSE(), optimizer=optim.SGD(lr=0.0),
                  epochs=1, batch_size=2, shuffle=False, verbose=0)


def test_initial_epoch_numbers_the_history_and_callbacks():
    seen = []

    class Spy(portgd.callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append(epoch)

    model = Sequential([Dense(2, 1)])
    history = model.fit(np.ones((8, 2)), np.zeros(8), loss="mse", epochs=5, initial_epoch=3,
                        batch_size=4, verbose=0, callbacks=[Spy()])
    assert history.epochs == [3, 4] and seen == [3, 4]
    with pytest.raises(portgd.InputError, match="initial_epoch"):
        model.fit(np.ones((8, 2)), np.zeros(8), loss="mse", epochs=2, initial_epoch=2,
                  batch_size=4, verbose=0)


def test_resume_and_evaluate_reuse_the_training_split(tmp_path, capsys):
    from portgd.cli import main

    ckpt = tmp_path / "m.npz"
    assert main(["train", "--quiet", "--epochs", "2", "--seed", "3", "--test-size", "0.3",
                 "--save", str(ckpt)]) == 0
    capsys.readouterr()
    meta = portgd.load(ckpt).metadata
    assert meta["split"] == {"seed": 3, "test_size": 0.3} and meta["dataset"] == "digits01"
    assert main(["evaluate", str(ckpt), "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["samples"] == 108  # 30% of 360
    assert main(["train", "--json", "--epochs", "1", "--resume", str(ckpt)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 3 and list(summary["history"]) == [
        "loss", "accuracy", "val_loss", "val_accuracy"]


def test_solve_with_an_unreadable_file_is_a_user_error(tmp_path):
    from portgd.cli import main

    (tmp_path / "A.npy").write_bytes(b"")
    (tmp_path / "Y.npy").write_bytes(b"")
    assert main(["solve", "--A", str(tmp_path / "A.npy"), "--Y", str(tmp_path / "Y.npy")]) == 2


def test_complex_data_is_not_silently_made_real(numpy_backend):
    with pytest.raises(portgd.InputError, match="imaginary part"):
        numpy_backend.asarray(np.array([1 + 2j]), dtype="float32")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_solve_linear_says_when_it_diverges():
    with pytest.raises(portgd.NonFiniteLossError, match=r"diverged.*lower lr"):
        portgd.solve_linear([[5, 1, -1], [2, -1, 1], [1, 3, -2]], [1, 4, 0], lr=1.0, iters=2000)


def test_cli_solve_reports_divergence(capsys):
    from portgd.cli import main

    assert main(["solve", "--lr", "0.1", "--iters", "200", "--log-every", "100"]) == 2
    assert "diverged" in capsys.readouterr().err


def test_cli_test_size_takes_a_count(capsys):
    import json

    from portgd.cli import main

    assert main(["train", "--json", "--epochs", "1", "--test-size", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["history"]["val_loss"]
    data = portgd.datasets.digits((0, 1))
    _, test = data.split(50, seed=0, stratify=True)
    assert test.n_samples == 50


def test_cli_checks_output_folders_before_training(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "portgd", "train", "--save",
                           str(tmp_path / "no" / "m.npz")], capture_output=True, text=True)
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert done.stdout == "" and "epoch" not in done.stderr  # nothing trained


def test_cli_survives_a_closed_pipe():
    import subprocess
    import sys

    done = subprocess.run(f"{sys.executable} -m portgd backends --json | head -c 10",
                          shell=True, capture_output=True, text=True)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_optimizer_refuses_a_model_that_moved():
    x = np.random.default_rng(0).normal(size=(16, 4))
    y = (x[:, 0] > 0).astype(np.int64)
    model = portgd.mlp(4, [8], 1, output="sigmoid")
    opt = optim.Adam()
    model.fit(x, y, loss="bce", optimizer=opt, epochs=1, batch_size=8, verbose=0)
    model.to("array_api_strict", "device1")
    with pytest.raises(portgd.BackendMismatchError, match=r"opt\.to\(model\.backend\)"):
        model.fit(x, y, loss="bce", optimizer=opt, epochs=1, batch_size=8, verbose=0)
    opt.to(model.backend)
    model.fit(x, y, loss="bce", optimizer=opt, epochs=1, batch_size=8, verbose=0)


def test_cli_resume_keeps_dtype_and_loss(tmp_path, capsys):
    import json

    from portgd.cli import main

    common = ["--json", "--dataset", "synthetic", "--dtype", "float64", "--loss", "ce"]
    assert main(["train", *common, "--epochs", "4"]) == 0
    straight = json.loads(capsys.readouterr().out)
    ckpt = str(tmp_path / "half.npz")
    assert main(["train", *common, "--epochs", "2", "--save", ckpt]) == 0
    capsys.readouterr()
    assert main(["train", "--json", "--epochs", "2", "--resume", ckpt]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["dtype"] == "float64" and resumed["epochs"] == 4
    assert resumed["train_loss"] == straight["train_loss"]  # bit-identical continuation
    assert main(["evaluate", ckpt, "--json"]) == 0  # the checkpoint knows its loss: ce
    assert json.loads(capsys.readouterr().out)["dataset"] == "synthetic"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--seed", "-1"], "expected an integer >= 0"),
        (["solve", "--lr", "-0.01"], "lr must be a positive finite number"),
    ],
)
def test_more_bad_options(argv, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "portgd", *argv], capture_output=True,
                          text=True)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_save_into_a_folder_is_refused_before_training(tmp_path, capsys):
    from portgd.cli import main

    assert main(["train", "--save", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "is a folder" in captured.err and captured.out == ""


def test_solve_bad_data(tmp_path):
    with pytest.raises(portgd.ShapeError, match="at least one row"):
        portgd.solve_linear(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(portgd.NonFiniteLossError, match="contains NaN or inf"):
        portgd.solve_linear([[1.0, np.nan], [0.0, 1.0]], [1.0, 2.0])


def test_plot_format_follows_the_suffix(tmp_path):
    history = portgd.History()
    history.append(0, {"loss": 1.0})
    history.append(1, {"loss": 0.5})
    assert history.plot(tmp_path / "curve.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(portgd.InputError, match="cannot write the plot"):
        history.plot(tmp_path / "curve.nope")


@pytest.mark.parametrize("options,message", [
    (["--lr", "0.5"], "the loss is nan at iteration 1000"),
    (["--lr", "0.095", "--iters", "300", "--log-every", "100"], "the loss grew from 5.66667 to"),
])
def test_a_diverging_solve_warns_nothing_and_names_the_lr_limit(capsys, options, message):
    """No array-library RuntimeWarning reaches the user; the hint gives N / lambda_max(A^T A)
    (3 / 33.634 = 0.0892 for the worked example: the largest eigenvalue of its A^T A is 33.634)."""
    from portgd.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        assert main(["solve", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert err[0].endswith("; lower lr below about 0.0892 (N / the largest eigenvalue of A^T A)")


def test_solve_linear_api_warns_nothing_when_it_diverges():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(portgd.NonFiniteLossError, match=r"lower lr below about 0\.0892 "):
            portgd.solve_linear([[5, 1, -1], [2, -1, 1], [1, 3, -2]], [1, 4, 0], lr=0.5)
