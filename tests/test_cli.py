"""The command line: train, evaluate, solve; user errors are one line and status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from portgd.cli import main


def run(*argv):
    return subprocess.run([sys.executable, "-m", "portgd", *argv], capture_output=True,
                          text=True, timeout=300)


def test_train_with_no_arguments_is_the_main_job():
    done = run("train")
    assert done.returncode == 0, done.stderr
    assert "digits01" in done.stdout and "on numpy cpu" in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("done: 20 epochs, held-out accuracy")
    assert float(last.split("accuracy ")[1].split()[0]) >= 0.99
    assert "epoch 20/20" in done.stderr  # the progress bars


def test_train_json_summary(capsys):
    assert main(["train", "--json", "--epochs", "3", "--hidden", "16", "--backend",
                 "array_api_strict", "--device", "device1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["device"] == "device1" and summary["epochs"] == 3
    assert summary["parameters"] == 64 * 16 + 16 + 16 + 1
    assert len(summary["history"]["loss"]) == 3
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_save_resume_evaluate_and_plot(tmp_path, capsys):
    ckpt, png = tmp_path / "m.npz", tmp_path / "curve.png"
    assert main(["train", "--quiet", "--epochs", "2", "--save", str(ckpt), "--plot", str(png),
                 "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint written to {ckpt}" in out and f"plot written to {png}" in out
    assert main(["train", "--json", "--epochs", "1", "--resume", str(ckpt), "--dataset",
                 "digits", "--save", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 3
    assert main(["evaluate", str(ckpt), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "digits" and result["samples"] == 360
    assert 0.5 < result["accuracy"] <= 1.0

    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (360, 1000)  # two panels (loss, accuracy) at 100 dpi
    assert image[..., :3].std() > 0.05  # not blank


def test_solve_worked_example(capsys):
    assert main(["solve"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "iteration        0  loss 5.66666666667"
    assert len(lines) == 12 and lines[-1].startswith("x = 0.714")


def test_solve_from_files(tmp_path, capsys):
    np.savetxt(tmp_path / "A.csv", np.array([[2.0, 0.0], [0.0, 4.0]]), delimiter=",")
    np.save(tmp_path / "Y.npy", np.array([2.0, 4.0]))
    assert main(["solve", "--A", str(tmp_path / "A.csv"), "--Y", str(tmp_path / "Y.npy"),
                 "--iters", "2000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(result["x"], [1.0, 1.0], rtol=1e-9)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--hidden", "12,x"], "--hidden takes comma-separated layer widths"),
        (["train", "--backend", "nope"], "no backend named 'nope'"),
        (["train", "--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["train", "--dataset", "mnist:/no/such/folder"], "/no/such/folder"),
        (["train", "--loss", "bce", "--dataset", "digits"], "--loss bce needs a two-class"),
        (["evaluate", "/no/such/file.npz"], "the file does not exist"),
        (["solve", "--A", "/no/A.csv", "--Y", "/no/Y.csv"], "--A file /no/A.csv does not exist"),
        (["train", "--device", "cuda:3"], "numpy has no device 'cuda:3'"),
    ],
)
def test_user_errors_are_one_line_without_traceback(argv, message):
    done = run(*argv)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    done = run("evaluate", str(bad))
    assert done.returncode == 2 and "corrupt or truncated" in done.stderr
    assert "Traceback" not in done.stderr


def test_bench_json_reports_every_requested_case(capsys):
    assert main(["bench", "--backend", "numpy", "--backend", "array_api_strict", "--case",
                 "b32", "--case", "784-128-1", "--steps", "2", "--repeats", "1", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [(r["backend"], r["case"]) for r in results] == [
        ("numpy", "784-128-1 sigmoid/bce b128"), ("numpy", "784-256-256-10 relu/ce b32"),
        ("array_api_strict", "784-128-1 sigmoid/bce b128"),
        ("array_api_strict", "784-256-256-10 relu/ce b32"),
    ]
    for r in results:
        assert r["steps"] == 2 and len(r["epoch_seconds"]) == 1
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] * 2 / r["epoch_seconds"][0])


def test_bench_flop_count():
    from portgd.bench import CASES

    # 784-256-256-10: forward 3 products, weight gradients 3, input gradients 2
    case = CASES[2]
    products = 2 * (784 * 256 + 256 * 256 + 256 * 10) + (256 * 256 + 256 * 10)
    assert case.flops_per_sample() == 2 * products


def test_bench_unknown_case_is_a_user_error():
    done = run("bench", "--case", "resnet")
    assert done.returncode == 2 and "no benchmark case matches 'resnet'" in done.stderr


def test_evaluate_a_checkpoint_without_a_dataset_asks_for_one(tmp_path):
    import portgd

    path = portgd.save(tmp_path / "m.npz", portgd.mlp(64, [4], 10, output="softmax"))
    done = run("evaluate", str(path))
    assert done.returncode == 2
    assert "does not record its dataset" in done.stderr and "--dataset" in done.stderr


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--epochs", "0"], "expected a positive integer, got '0'"),
        (["train", "--hidden", "64,,32"], "--hidden takes comma-separated"),
        (["train", "--download"], "--download applies to --dataset mnist:PATH only"),
    ],
)
def test_option_values_are_checked_before_any_work(argv, message):
    done = run(*argv)
    assert done.returncode == 2 and message in done.stderr
    assert done.stdout == ""  # nothing ran: not even the header line
