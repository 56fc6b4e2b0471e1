"""The command line as a user meets it: every bad input is one line and a non-zero exit, every
check that can fail is made before the first epoch, divergence is reported as such."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_docs import subcommands

import portgd
from portgd import _preflight, cli
from portgd.cli import main


def run(*argv):
    return subprocess.run([sys.executable, "-m", "portgd", *argv], capture_output=True,
                          text=True, timeout=300)


def one_line_error(capsys, argv, status=2):
    """Run ``portgd argv`` in-process; return its one stderr line, checking nothing ran."""
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("portgd"), lines[0]
    return captured.out, lines[0]


@pytest.fixture
def trained(tmp_path):
    path = tmp_path / "m.npz"
    assert main(["train", "--quiet", "--epochs", "1", "--hidden", "8", "--save", str(path)]) == 0
    return path


# -- the bad-input matrix: one line, status 2, and no work done before the refusal --------------
@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--plot", "c.txt"], "--plot c.txt: the file name must end in .png"),
        (["train", "--save", "m.ckpt"], "--save m.ckpt: the file name must end in .npz"),
        (["train", "--save", "/proc/x.npz"], "cannot create files in /proc"),
        (["train", "--save", "/no/such/folder/m.npz"], "the folder /no/such/folder does not"),
        (["train", "--plot", "/no/such/folder/c.png"], "the folder /no/such/folder does not"),
        (["train", "--save", ""], "--save needs a file name"),
        (["train", "--hidden", "100000,100000"], "training would need about"),
        (["train", "--batch-size", "5000"], "larger than the 288 training samples"),
    ],
)
def test_refused_before_training(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    out, line = one_line_error(capsys, argv)
    assert message in line
    assert out == ""  # refused before the header line: no epoch ran


def test_a_folder_given_as_output_file_is_refused(capsys, tmp_path):
    out, line = one_line_error(capsys, ["train", "--save", str(tmp_path)])
    assert f"--save {tmp_path} is a folder" in line and out == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_folder_is_refused_before_training(capsys, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for option, name in (("--plot", "c.png"), ("--save", "m.npz")):
            out, line = one_line_error(capsys, ["train", option, str(folder / name)])
            assert "cannot create files in" in line and out == ""
    finally:
        folder.chmod(0o755)


def test_an_unwritable_folder_is_found_by_a_probe_file(tmp_path, monkeypatch):
    """The probe, not a permission bit, decides (root ignores the bits; /proc refuses root)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_preflight.tempfile, "mkstemp", refuse)
    with pytest.raises(portgd.InputError, match=r"cannot create files in .*Permission denied"):
        _preflight.output_file(str(tmp_path / "m.npz"), "--save", (".npz",))
    monkeypatch.undo()
    assert _preflight.output_file(str(tmp_path / "m.npz"), "--save", (".npz",)).name == "m.npz"
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_plot_without_matplotlib_is_refused_before_training(capsys, monkeypatch, tmp_path):
    real = _preflight.importlib.util.find_spec
    monkeypatch.setattr(_preflight.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    out, line = one_line_error(capsys, ["train", "--plot", str(tmp_path / "c.png")])
    assert "--plot needs matplotlib" in line and "pip install 'portgd[plot]'" in line
    assert out == ""


def test_resume_with_another_dtype_is_refused(capsys, trained):
    capsys.readouterr()
    out, line = one_line_error(capsys, ["train", "--resume", str(trained), "--dtype", "float64"])
    assert "--dtype float64 differs from the dtype of the checkpoint" in line
    assert "(float32)" in line and out == ""


def test_resume_keeps_the_dtype_it_reports(capsys, trained):
    capsys.readouterr()
    assert main(["train", "--json", "--epochs", "1", "--resume", str(trained),
                 "--dtype", "float32", "--save", str(trained)]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "float32"
    assert portgd.load(trained).model.dtype_name == "float32"


# -- the memory estimate -------------------------------------------------------------------
def test_memory_estimate_counts_each_part():
    estimate = _preflight.training_memory([64, 16, 1], batch_size=32, n_train=288, n_eval=72,
                                          n_targets=1, itemsize=4, optimizer_slots=2)
    params = 64 * 16 + 16 + 16 + 1
    assert estimate.n_parameters == params == 1057
    assert estimate.parameters == estimate.gradients == 4 * params
    assert estimate.optimizer == 2 * 4 * params  # Adam's two moments
    assert estimate.activations == 4 * 4 * 32 * (16 + 1)
    assert estimate.data == 4 * (2 * 288 * 65 + 72 * 65)
    assert _preflight.training_memory([10, 10], batch_size=1, n_train=1, n_eval=1, n_targets=10,
                                      itemsize=8, optimizer_slots=0).optimizer == 0


@pytest.mark.parametrize("argv,slots", [
    (["--optimizer", "sgd"], 0), (["--optimizer", "sgd", "--momentum", "0.9"], 1),
    (["--optimizer", "rmsprop", "--momentum", "0.9"], 2), (["--optimizer", "adam"], 2)])
def test_the_memory_estimate_counts_the_state_of_the_built_optimizer(monkeypatch, capsys,
                                                                     tmp_path, argv, slots):
    """The state arrays per parameter come from the optimizer the run uses (its
    state_keys), for a new run and for one resumed from a checkpoint."""
    seen = []
    monkeypatch.setattr(_preflight, "check_memory", lambda estimate, backend: seen.append(
        estimate))
    path = tmp_path / "m.npz"
    assert cli.main(["train", "--quiet", "--epochs", "1", "--save", str(path), *argv]) == 0
    assert cli.main(["train", "--quiet", "--epochs", "1", "--resume", str(path)]) == 0
    assert [e.optimizer for e in seen] == [slots * seen[0].parameters] * 2


def test_memory_refusal_says_what_it_needs_and_what_to_change():
    estimate = _preflight.training_memory([784, 30000, 30000, 10], batch_size=32, n_train=100,
                                          n_eval=10, n_targets=10, itemsize=4, optimizer_slots=2)
    backend = portgd.get_backend("numpy")
    with pytest.raises(portgd.InputError) as info:
        _preflight.check_memory(estimate, backend, free=8 * 2**30)
    message = str(info.value)
    assert "923,880,010 parameters" in message and "8 GiB free" in message
    assert "smaller --hidden" in message and "--batch-size" in message
    _preflight.check_memory(estimate, backend, free=20 * estimate.total)  # fits: no error


def test_a_model_too_big_for_the_device_is_refused_with_the_numbers(capsys, monkeypatch):
    monkeypatch.setattr(_preflight, "available_memory", lambda backend: 2**17)  # 128 KiB free
    out, line = one_line_error(capsys, ["train", "--backend", "torch"])
    assert "training would need about" in line and "6,273 parameters" in line
    assert "torch cpu has 0.000122 GiB free" in line and out == ""


# -- divergence ------------------------------------------------------------------------------
def test_divergence_is_an_error_with_the_epoch_and_no_library_warnings():
    done = run("train", "--lr", "1e6", "--quiet")
    assert done.returncode == cli.DIVERGED == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("portgd: error: training diverged in epoch 1:")
    assert "Lower --lr (it is 1e+06; try 100000) or add --clip-norm 1;" in lines[0]
    assert "--keep-going" in lines[0]
    assert "stop_on_nonfinite" not in done.stderr and "Warning" not in done.stderr
    assert "done:" not in done.stdout


def test_keep_going_trains_on_and_warns_once(capsys):
    assert main(["train", "--lr", "1e6", "--quiet", "--epochs", "2", "--keep-going",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and summary["history"]["loss"][0] > 1e6


def test_keep_going_warning_is_one_line(capsys):
    assert main(["train", "--lr", "1e6", "--quiet", "--epochs", "2", "--keep-going"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("portgd: warning: training diverged in epoch 1")


def test_the_reference_is_the_larger_of_the_start_loss_and_a_guess():
    import math

    data = portgd.datasets.synthetic_regression(100, 3, 2, backend="numpy")
    model = portgd.mlp(3, [8], 2, seed=0, backend="numpy")
    start = model.evaluate(data.X, data.y, loss="mse")["loss"]
    variance = float(data.y.var(axis=0).mean())
    assert cli._reference_loss(model, "mse", data, data.y, 32) == pytest.approx(
        max(start, variance), rel=1e-6)
    digits = portgd.datasets.digits(backend="numpy")
    small = portgd.mlp(64, [4], 10, output="softmax", seed=0, backend="numpy")
    small.layers[0].params = {k: v * 0.0 for k, v in small.layers[0].params.items()}
    # a zeroed first layer and glorot output: the start loss is about log 10, so the guess
    # (log 10 exactly) or the start loss is the reference, whichever is larger
    start = small.evaluate(digits.X, digits.y, loss=portgd.losses.CategoricalCrossEntropy())
    assert cli._reference_loss(small, "ce", digits, digits.y, 32) == pytest.approx(
        max(start["loss"], math.log(10)), rel=1e-6)


def test_a_converging_regression_that_starts_far_off_is_not_divergence(tmp_path, capsys):
    # Inputs standard normal, a linear target with standard deviation 0.1: the untrained
    # network's first-epoch loss is hundreds of times the target variance, yet it converges.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    target = 0.1 * x[:, 0] + 0.05
    path = tmp_path / "reg.csv"
    np.savetxt(path, np.c_[x, target], "%.4f", ",", header="a,b,t", comments="")
    assert float(target.var()) < 0.011
    assert main(["train", "--data", str(path), "--json", "--epochs", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    losses = summary["history"]["loss"]
    assert losses[0] > 10 * float(target.var())  # the old rule called this divergence
    assert losses[-1] < losses[0] / 10


# -- errors that are not the user's: still one line -------------------------------------------
def test_an_internal_error_is_one_line_with_status_1(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(cli, "_cmd_solve", broken)
    monkeypatch.delenv("PORTGD_DEBUG", raising=False)
    _, line = one_line_error(capsys, ["solve"], status=1)
    assert line == ("portgd: internal error: RuntimeError: something broke. This is a bug in "
                    "portgd; please report it (PORTGD_DEBUG=1 shows the traceback)")
    monkeypatch.setenv("PORTGD_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["solve"])


def test_out_of_memory_is_a_user_error(capsys, monkeypatch):
    def exhausted(args):
        raise MemoryError

    monkeypatch.setattr(cli, "_cmd_solve", exhausted)
    _, line = one_line_error(capsys, ["solve"])
    assert line.startswith("portgd: error: out of memory; use smaller --hidden")


# -- help: each default shown once ----------------------------------------------------------
def test_every_default_is_shown_once_in_help():
    parser = cli.build_parser()
    for name, sub in subcommands(parser).items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if action.dest == "help":
                continue
            text = formatter._expand_help(action)
            where = f"portgd {name} {action.option_strings[0]}"
            assert "(default: None)" not in text and text.count("(default") <= 1, where
            if action.default not in (None, False):
                assert "default" in text, f"{where} does not show its default"
        assert "[64, 32]" not in sub.format_help()


# -- the same matrix in real processes: the exit status, one line, never a traceback ----------
@pytest.mark.parametrize(
    "argv,status,message",
    [
        (["train", "--plot", "/proc/c.png"], 2, "cannot create files in /proc"),
        (["train", "--save", "/proc/x.npz"], 2, "cannot create files in /proc"),
        (["train", "--hidden", "100000,100000"], 2, "training would need about"),
        (["train", "--lr", "1e6", "--quiet"], 3, "training diverged in epoch 1"),
        (["train", "--dropout", "1"], 2, "argument --dropout: expected a number in [0, 1)"),
        (["train", "--data", "{dir}/bad.csv"], 2, "bad.csv, line 2: column 'a' is 'x'"),
        (["evaluate", "{dir}/one.npz", "--dataset", "digits"], 2,
         "is a two-class model (one sigmoid output), but --dataset digits has 10 classes"),
        (["predict", "{dir}/one.npz", "--data", "{dir}/none.csv"], 2, "none.csv does not exist"),
        (["summary", "{dir}/bad.csv"], 2, "is corrupt or truncated"),
    ],
)
def test_bad_input_in_a_real_process(tmp_path, argv, status, message):
    (tmp_path / "bad.csv").write_text("a,b\nx,1\n")
    portgd.save(tmp_path / "one.npz", portgd.mlp(64, [4], 1, output="sigmoid"), loss="bce")
    done = run(*[a.format(dir=tmp_path) for a in argv])
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_a_dtype_the_backend_lacks_is_named_as_the_option_to_pass(capsys):
    """The backend's advice (``dtype='float32'`` in Python) reads as ``--dtype float32``."""
    pytest.importorskip("jax")
    assert main(["solve", "--backend", "jax", "--iters", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("portgd: error: jax on device 'cpu:0' does not support float64; it "
                          "supports float32. Use --dtype float32 or another device")
    assert "dtype='float32'" not in err
    assert main(["solve", "--backend", "jax", "--iters", "10", "--dtype", "float32"]) == 0
