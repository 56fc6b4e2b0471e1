"""The public surface as a user meets it: summary, dir(portgd), fit's signature, and the
API misuses that used to train silently into nonsense."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import portgd
from portgd import training
from portgd.cli import main
from portgd.model import Sequential

SUMMARY = """\
#  layer    output shape  parameters
0  Dense    (N, 128)           8,320
1  ReLU     (N, 128)               0
2  Dense    (N, 64)            8,256
3  ReLU     (N, 64)                0
4  Dense    (N, 10)              650
5  Softmax  (N, 10)                0
17,226 parameters (67.3 KiB), float32, on numpy cpu"""


def test_summary_lists_layers_shapes_counts_dtype_and_device():
    model = portgd.mlp(64, [128, 64], 10, output="softmax", backend="numpy")
    assert model.summary() == SUMMARY
    other = portgd.mlp(3, [], 1, output="sigmoid", dtype="float64", backend="array_api_strict",
                       device="device1")
    assert other.summary().splitlines()[-1] == "4 parameters (32 B), float64, on " \
                                               "array_api_strict device1"


def test_portgd_summary_of_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "m.npz"
    model = portgd.mlp(64, [128, 64], 10, output="softmax", backend="numpy")
    portgd.save(path, model, portgd.optim.Adam(lr=0.003), epoch=7, dataset="digits")
    assert main(["summary", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"checkpoint {path}"
    assert "\n".join(lines[1:9]) == SUMMARY
    assert lines[9] == "optimizer Adam, 0 steps taken, next lr 0.003"
    assert lines[10] == "recorded: epoch=7, dataset=digits"
    assert main(["summary", str(path), "--json", "--backend", "torch"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["parameters"] == 17226 and described["backend"] == "torch"
    assert [layer["type"] for layer in described["layers"]] == [
        "Dense", "ReLU", "Dense", "ReLU", "Dense", "Softmax"]
    assert described["metadata"] == {"epoch": 7, "dataset": "digits"}
    assert described["optimizer"]["type"] == "Adam" and described["optimizer"]["steps"] == 0
    assert described["optimizer"]["lr"] == 0.003


def test_summary_of_a_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    assert main(["summary", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt or truncated" in err[0]


def test_save_load_and_datasets_are_in_dir():
    names = dir(portgd)
    for name in ("save", "load", "Checkpoint", "datasets", "mlp", "Sequential"):
        assert name in names
    assert set(portgd.__all__) <= set(names)


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_the_model_methods_show_the_loop_signature(method):
    """help(model.fit) and IDEs see every argument, with training's defaults."""
    ours = inspect.signature(getattr(Sequential, method)).parameters
    theirs = inspect.signature(getattr(training, method)).parameters
    assert next(iter(ours)) == "self" and next(iter(theirs)) == "model"
    assert [(p.name, p.default) for p in list(ours.values())[1:]] == [
        (p.name, p.default) for p in list(theirs.values())[1:]]
    assert not any(p.kind is p.VAR_KEYWORD for p in ours.values())


def test_fit_passes_every_argument_through():
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    model = portgd.mlp(3, [4], 1, output="sigmoid")
    history = model.fit(x, y, loss="bce", optimizer="sgd", epochs=3, batch_size=8,
                        shuffle=False, validation_split=0.25, metrics=["accuracy"], verbose=0,
                        seed=1, stop_on_nonfinite=True, initial_epoch=1)
    assert history.epochs == [1, 2] and "val_accuracy" in history


def test_softmax_over_one_output_is_refused():
    with pytest.raises(portgd.InputError, match=r"output='softmax' over one output is always 1"):
        portgd.mlp(64, [16], 1, output="softmax")


def test_fit_on_no_samples_says_so():
    model = portgd.mlp(3, [4], 1)
    with pytest.raises(portgd.DatasetError, match="x holds no samples"):
        model.fit(np.zeros((0, 3)), np.zeros(0), verbose=0)


@pytest.mark.parametrize("backend", ["numpy", "torch", "array_api_strict"])
def test_nan_in_the_inputs_is_bad_input_not_divergence(backend):
    pytest.importorskip(backend)
    x = np.ones((10, 3))
    x[6, 2] = np.nan
    model = portgd.mlp(3, [4], 1, backend=backend)
    with pytest.raises(portgd.DatasetError,
                       match=r"x holds NaN or infinite values \(the first at row 6, column 2\)"):
        model.fit(x, np.zeros(10), batch_size=5, verbose=0)
    y = np.zeros(10)
    y[3] = np.inf
    with pytest.raises(portgd.DatasetError, match=r"y holds NaN or infinite .* row 3\)"):
        model.fit(np.ones((10, 3)), y, batch_size=5, verbose=0)
