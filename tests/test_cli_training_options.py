"""portgd train's optimizer, schedule, early-stopping and validation options, and Ctrl-C /
SIGTERM saving the last completed epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import portgd
from portgd import _files, cli
from portgd.cli import main


def saved(capsys, tmp_path, *argv):
    path = tmp_path / "m.npz"
    assert main(["train", "--quiet", "--save", str(path), *argv]) == 0
    capsys.readouterr()
    return portgd.load(path)


def test_optimizer_options_reach_the_optimizer(capsys, tmp_path):
    checkpoint = saved(capsys, tmp_path, "--optimizer", "momentum", "--nesterov", "--lr", "0.05",
                       "--weight-decay", "1e-4", "--clip-norm", "1", "--schedule", "cosine",
                       "--warmup", "2", "--epochs", "3", "--min-lr", "0.001")
    optimizer = checkpoint.optimizer
    config = optimizer.config()
    assert type(optimizer).__name__ == "SGD"
    assert (config["momentum"], config["nesterov"], config["weight_decay"]) == (0.9, True, 1e-4)
    assert optimizer.clip_norm == 1.0 and optimizer.clip_value is None
    # digits01: 288 training samples at batch 32 are 9 steps an epoch
    assert config["lr"] == {"type": "CosineDecay", "lr": 0.05, "total_steps": 27,
                            "warmup_steps": 18, "min_lr": 0.001}
    assert optimizer.step_count == 27 and optimizer.lr == pytest.approx(0.001)


def test_warmup_with_a_constant_rate_holds_lr_after_it(capsys, tmp_path):
    optimizer = saved(capsys, tmp_path, "--warmup", "1", "--epochs", "2", "--lr", "0.002",
                      "--optimizer", "sgd", "--momentum", "0.5", "--clip-value", "0.1").optimizer
    schedule = optimizer.schedule
    assert [schedule(s) for s in (0, 3, 9, 12, 17)] == pytest.approx(
        [0.0, 0.002 * 3 / 9, 0.002, 0.002, 0.002])
    assert optimizer.config()["momentum"] == 0.5 and optimizer.clip_value == 0.1


def test_the_header_names_the_schedule(capsys):
    assert main(["train", "--quiet", "--epochs", "2", "--warmup", "1", "--schedule",
                 "cosine"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith("optimizer Adam lr=0.001 (cosine decay to 0, 1 warm-up epoch)")


def test_early_stopping_restores_the_best_epoch(capsys):
    assert main(["train", "--json", "--quiet", "--dataset", "digits", "--lr", "0.01",
                 "--epochs", "60", "--patience", "2", "--restore-best",
                 "--validation-fraction", "0.2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    stopped = summary["stopped_early"]
    assert stopped["restored"] and stopped["epoch"] < 60
    val = summary["history"]["val_loss"]
    assert len(val) == stopped["epoch"]
    best = int(np.argmin(val)) + 1
    assert stopped["best_epoch"] == best
    assert all(v >= val[best - 1] for v in val[best:])  # no improvement after the best epoch
    assert len(val) - best == 2  # patience 2


def test_validation_fraction_keeps_the_test_part_out_of_training(capsys):
    assert main(["train", "--json", "--epochs", "2", "--validation-fraction", "0.25"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # the held-out figures come from a separate evaluation, not from the validation history
    assert summary["test_loss"] != summary["history"]["val_loss"][-1]
    data = portgd.datasets.load("digits01", backend="numpy")
    train, test = data.split(0.2, seed=0, stratify=True)
    train, _ = train.split(0.25, seed=0, stratify=True)
    assert train.n_samples == 216 and test.n_samples == 72


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--momentum", "0.9"], "--momentum applies to --optimizer sgd, momentum, rmsprop"),
        (["--nesterov"], "--nesterov needs SGD with momentum"),
        (["--optimizer", "sgd", "--nesterov"], "--nesterov needs SGD with momentum"),
        (["--warmup", "20"], "--warmup 20 must be fewer epochs than --epochs 20"),
        (["--min-lr", "0.1"], "--min-lr applies to --schedule cosine"),
        (["--schedule", "cosine", "--min-lr", "0.1"], "--min-lr 0.1 must not exceed --lr"),
        (["--restore-best"], "--restore-best applies to early stopping"),
    ],
)
def test_bad_option_combinations_are_refused_before_training(capsys, argv, message):
    assert main(["train", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--momentum", "1.5"], ["--lr", "nan"], ["--lr", "0"],
                                  ["--clip-norm", "-1"], ["--weight-decay", "inf"],
                                  ["--validation-fraction", "1"], ["--patience", "0"]])
def test_bad_option_values_are_argparse_errors(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2
    assert "portgd train: error: argument" in capsys.readouterr().err


def test_optimizer_options_with_resume_are_refused(capsys, tmp_path):
    path = tmp_path / "m.npz"
    assert main(["train", "--quiet", "--epochs", "1", "--save", str(path)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(path), "--weight-decay", "0.1"]) == 2
    assert "leave out --weight-decay" in capsys.readouterr().err


# -- Ctrl-C and SIGTERM ------------------------------------------------------------------------
def interrupt_after_epochs(tmp_path, signum, epochs_seen=2):
    """Start a long training run, send ``signum`` once ``epochs_seen`` epochs are reported."""
    path = tmp_path / "m.npz"
    process = subprocess.Popen(
        [sys.executable, "-m", "portgd", "train", "--dataset", "digits", "--epochs", "100000",
         "--hidden", "32", "--save", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = 0
    while seen < epochs_seen:
        line = process.stderr.readline()
        assert line, "the run ended before it was interrupted"
        seen += line.startswith("epoch ")
    process.send_signal(signum)
    out, rest = process.communicate(timeout=120)
    return process.returncode, out, rest, path


@pytest.mark.parametrize("signum,status,word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_an_interrupt_saves_the_last_completed_epoch(tmp_path, capsys, signum, status, word):
    code, _, err, path = interrupt_after_epochs(tmp_path, signum)
    assert code == status and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    checkpoint = portgd.load(path)
    epoch = checkpoint.metadata["epoch"]
    assert epoch >= 1  # the line of epoch 2 is printed just before its snapshot is taken
    assert last == (f"portgd: {word}; the last completed epoch ({epoch}) is saved in {path}: "
                    f"continue with portgd train --resume {path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary file
    assert checkpoint.optimizer.step_count == epoch * 45  # 1437 samples at batch 32
    # the checkpoint continues: one more epoch from it
    assert main(["train", "--resume", str(path), "--epochs", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == epoch + 1


def signal_at_training_step(monkeypatch, step, *signums):
    """Send ``signums`` to this process from inside training step ``step`` (0-based, counted
    over the whole run), in the middle of the forward pass: a deterministic Ctrl-C."""
    from portgd.model import Sequential

    real, seen = Sequential.forward, []

    def forward(self, x, training=False, **options):
        if training:
            if len(seen) == step:
                for signum in signums:
                    os.kill(os.getpid(), signum)
            seen.append(step)
        return real(self, x, training, **options)

    monkeypatch.setattr(Sequential, "forward", forward)
    return seen


def test_interrupt_before_the_first_epoch_saves_nothing(tmp_path, capsys, monkeypatch):
    signal_at_training_step(monkeypatch, 0, signal.SIGINT)
    path = tmp_path / "m.npz"
    assert main(["train", "--quiet", "--epochs", "2", "--save", str(path)]) == 130
    assert capsys.readouterr().err.strip() == ("portgd: interrupted; no epoch had finished, "
                                              "nothing saved")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signums", [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT)])
def test_an_interrupt_mid_epoch_ends_the_step_and_saves_the_last_epoch(tmp_path, capsys,
                                                                         monkeypatch, signums):
    """A signal in step 12 (epoch 2; 288 samples at batch 32 are 9 steps) lets that step
    finish, stops before the next, and saves exactly what one epoch without an interrupt
    saves; a second Ctrl-C right after the first is answered the same way."""
    reference = saved(capsys, tmp_path, "--epochs", "1")
    seen = signal_at_training_step(monkeypatch, 12, *signums)
    path = tmp_path / "i.npz"
    assert main(["train", "--quiet", "--epochs", "3", "--save", str(path)]) == 130
    assert capsys.readouterr().err.strip() == (
        f"portgd: interrupted; the last completed epoch (1) is saved in {path}: continue with "
        f"portgd train --resume {path}")
    assert len(seen) == 13  # the interrupted step completed, no further step began
    interrupted = portgd.load(path)
    assert interrupted.metadata["epoch"] == 1 and interrupted.optimizer.step_count == 9
    for name, value in reference.model.state_dict().items():
        np.testing.assert_array_equal(interrupted.model.state_dict()[name], value)
    assert (interrupted.model.rng.bit_generator.state
            == reference.model.rng.bit_generator.state)


@pytest.mark.parametrize("signum,status,word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_during_the_final_evaluation_keeps_the_finished_run(tmp_path, capsys,
                                                                      monkeypatch, signum,
                                                                      status, word):
    real = cli._final_figures

    def final_figures(*args, **kwargs):
        os.kill(os.getpid(), signum)  # Ctrl-C / kill while the held-out data is evaluated
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "_final_figures", final_figures)
    path = tmp_path / "m.npz"
    assert main(["train", "--quiet", "--epochs", "2", "--validation-fraction", "0.2",
                 "--save", str(path)]) == status
    assert capsys.readouterr().err.strip() == (
        f"portgd: {word} after the checkpoint of all 2 epochs was written to {path}")
    assert portgd.load(path).metadata["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_a_third_signal_ends_at_once_and_the_handlers_come_back():
    from portgd import _runs

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _runs.SignalStop() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signals == [signal.SIGINT, signal.SIGTERM]  # recorded, nothing raised
            assert (stop.status, stop.what) == (130, "interrupted")  # the first one counts
            with pytest.raises(_runs.Interrupted):
                stop.on_batch_end(0)
            os.kill(os.getpid(), signal.SIGINT)  # the third: Python's own handler again
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_during_a_write_waits_for_the_complete_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def write(handle):
        handle.write(b"new ")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the write
        handle.write(b"content")

    with pytest.raises(KeyboardInterrupt):
        _files.write_atomically(target, write)
    assert target.read_bytes() == b"new content"  # complete, then the interrupt
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def write(handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        _files.write_atomically(target, write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_signals_held_restores_the_handlers(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with _files.signals_held() as held:
        assert signal.getsignal(signal.SIGTERM) is not before
        assert held == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_during_the_final_save_reports_the_written_file(tmp_path, capsys, monkeypatch):
    from portgd import checkpoint

    real = checkpoint.save

    def interrupted_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the checkpoint is being written
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", interrupted_save)
    path = tmp_path / "m.npz"
    assert main(["train", "--quiet", "--epochs", "2", "--save", str(path)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"portgd: interrupted after the checkpoint of all 2 epochs was written to {path}"
    assert portgd.load(path).metadata["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
