"""Your own data on the command line: train --data, evaluate --data, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

import portgd
from portgd.cli import main


@pytest.fixture
def blobs(tmp_path):
    """A three-class CSV (class names), features x1..x3, the target in the middle."""
    rng = np.random.default_rng(0)
    names = np.array(["cat", "dog", "eel"])
    labels = rng.integers(0, 3, 240)
    X = rng.normal(size=(240, 3)) + 3.0 * np.eye(3)[labels]
    lines = ["x1,kind,x2,x3"]
    lines += [f"{a:.6f},{names[k]},{b:.6f},{c:.6f}" for (a, b, c), k in zip(X, labels,
                                                                               strict=True)]
    path = tmp_path / "blobs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_evaluate_predict_on_a_csv_file(tmp_path, blobs, capsys):
    ckpt = tmp_path / "m.npz"
    summary = run_json(capsys, ["train", "--data", str(blobs), "--target", "kind", "--json",
                                "--epochs", "30", "--lr", "0.01", "--save", str(ckpt)])
    assert summary["dataset"] == str(blobs) and summary["test_accuracy"] >= 0.9
    meta = portgd.load(ckpt).metadata
    assert meta["classes"] == ["cat", "dog", "eel"] and meta["features"] == ["x1", "x2", "x3"]
    assert meta["target"] == "kind" and meta["loss"] == "ce"

    result = run_json(capsys, ["evaluate", str(ckpt), "--json"])  # the recorded file and split
    assert result["samples"] == 48
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)

    # predict reads the model's feature columns by name, whatever their order
    new = tmp_path / "new.csv"
    new.write_text("x3,x2,x1\n0,0,3\n0,3,0\n3,0,0\n")
    assert main(["predict", str(ckpt), "--data", str(new)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "class,p_cat,p_dog,p_eel"
    assert [line.split(",")[0] for line in lines[1:]] == ["cat", "dog", "eel"]
    for line in lines[1:]:
        assert sum(float(v) for v in line.split(",")[1:]) == pytest.approx(1.0, abs=1e-6)

    out = tmp_path / "p.npy"
    assert main(["predict", str(ckpt), "--data", str(new), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"3 predictions written to {out}"
    array = np.load(out)
    assert array.shape == (3, 4)
    np.testing.assert_array_equal(array[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(array[:, 0], np.argmax(array[:, 1:], axis=1))


def test_resume_rereads_the_recorded_file(tmp_path, blobs, capsys):
    ckpt = tmp_path / "m.npz"
    run_json(capsys, ["train", "--data", str(blobs), "--target", "kind", "--json",
                      "--epochs", "2", "--save", str(ckpt)])
    resumed = run_json(capsys, ["train", "--resume", str(ckpt), "--json", "--epochs", "1"])
    assert resumed["epochs"] == 3 and resumed["dataset"] == str(blobs)


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_a_model_trained_on_an_array_file_evaluates_and_resumes_with_no_options(
        tmp_path, capsys, suffix):
    """The target train --save records for an .npz ('y') or .npy (its column) is read back."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(np.int64)
    data = tmp_path / f"t{suffix}"
    if suffix == ".npz":
        np.savez(data, X=X, y=y)
    else:
        np.save(data, np.column_stack([X, y]))
    ckpt = tmp_path / "m.npz"
    summary = run_json(capsys, ["train", "--data", str(data), "--json", "--epochs", "3",
                                "--save", str(ckpt)])
    result = run_json(capsys, ["evaluate", str(ckpt), "--json"])
    assert result["samples"] == 40
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    resumed = run_json(capsys, ["train", "--resume", str(ckpt), "--json", "--epochs", "1"])
    assert resumed["epochs"] == 4 and resumed["dataset"] == str(data)


def test_regression_from_an_npz_pair_and_predictions_as_values(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    np.savez(tmp_path / "r.npz", X=X, y=X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3)
    ckpt = tmp_path / "r-model.npz"
    summary = run_json(capsys, ["train", "--data", str(tmp_path / "r.npz"), "--json",
                                "--epochs", "60", "--lr", "0.01", "--save", str(ckpt)])
    assert summary["test_accuracy"] is None and summary["test_loss"] < 0.1
    out = tmp_path / "pred.csv"
    assert main(["predict", str(ckpt), "--data", str(tmp_path / "r.npz"), "--output",
                 str(out)]) == 0
    rows = out.read_text().strip().splitlines()
    assert rows[0] == "prediction" and len(rows) == 201
    model = portgd.load(ckpt).model
    expected = portgd.to_numpy(model.predict(X))[:, 0]
    np.testing.assert_allclose([float(r) for r in rows[1:]], expected, rtol=1e-6)


def test_integer_targets_with_loss_mse_are_regression(tmp_path, capsys):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 2))
    np.save(tmp_path / "t.npy", np.column_stack([X, np.round(X[:, 0] * 3)]))
    summary = run_json(capsys, ["train", "--data", str(tmp_path / "t.npy"), "--loss", "mse",
                                "--json", "--epochs", "2"])
    assert summary["test_accuracy"] is None


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--data", "{dir}/bad.csv"], "bad.csv, line 3: column 'b' is 'oops', not a"),
        (["train", "--data", "{dir}/bad.csv", "--dataset", "digits"],
         "give --dataset or --data, not both"),
        (["train", "--target", "b"], "--target names a column of a --data file"),
        (["train", "--data", "{dir}/bad.csv", "--download"], "--download applies to"),
        (["train", "--data", "{dir}/none.csv"], "none.csv does not exist"),
        (["train", "--data", "{dir}/bad.csv", "--target", "q"], "has no column 'q'"),
        (["predict", "{dir}/m.npz", "--data", "{dir}/two.csv"],
         "two.csv has 2 feature columns but the checkpoint"),
        (["predict", "{dir}/m.npz", "--data", "{dir}/two.csv", "--output", "{dir}/p.txt"],
         "--output {dir}/p.txt: the file name must end in .csv or .npy"),
        (["predict", "{dir}/m.npz", "--data", "{dir}/bad.csv"], "line 3: column 'b' is 'oops'"),
        (["evaluate", "{dir}/m.npz", "--data", "{dir}/two.csv"], "has 1 features and needs"),
    ],
)
def test_bad_data_on_the_command_line_is_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "bad.csv").write_text("a,b,c\n1,2,0\n3,oops,1\n")
    (tmp_path / "two.csv").write_text("a,b\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    portgd.save(tmp_path / "m.npz", portgd.mlp(64, [4], 1, output="sigmoid"))
    argv = [a.format(dir=tmp_path) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message.format(dir=tmp_path) in lines[0], captured.err
    assert captured.out == ""
