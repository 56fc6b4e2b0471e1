"""ModelCheckpoint and History.plot: what they write, and that failures destroy nothing."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

import portgd
from portgd.callbacks import ModelCheckpoint
from portgd.history import History
from portgd.layers import Dense, Sigmoid
from portgd.model import Sequential


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    return x, (x[:, 0] > 0).astype(np.int64)


def test_model_checkpoint_every_epoch_with_formatted_names(tmp_path):
    x, y = _data()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0)
    saver = ModelCheckpoint(tmp_path / "ckpt-{epoch:02d}-{loss:.3f}.npz", monitor="loss")
    history = model.fit(x, y, loss="bce", epochs=3, batch_size=16, verbose=0,
                        callbacks=[saver])
    expected = [tmp_path / f"ckpt-{e + 1:02d}-{loss:.3f}.npz"
                for e, loss in enumerate(history["loss"])]
    assert saver.saved == expected
    last = portgd.load(expected[-1])
    assert last.metadata["epoch"] == 3
    assert last.metadata["logs"]["loss"] == pytest.approx(history["loss"][-1])
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(last.model.state_dict()[name], value)


def test_model_checkpoint_best_only(tmp_path):
    x, y = _data()
    model = Sequential([Dense(3, 1), Sigmoid()], seed=0)
    saver = ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss", save_best_only=True)
    history = model.fit(x, y, loss="bce", optimizer=portgd.optim.SGD(lr=3.0), epochs=8,
                        batch_size=16, verbose=0, validation_split=0.25, callbacks=[saver])
    val = history["val_loss"]
    improvements = [i for i in range(len(val)) if val[i] < min(val[:i], default=np.inf)]
    assert len(saver.saved) == len(improvements)
    assert portgd.load(tmp_path / "best.npz").metadata["epoch"] == improvements[-1] + 1


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    history = History()
    history.append(0, {"loss": 1.0})
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(portgd.PortgdError, match=r"pip install 'portgd\[plot\]'"):
        history.plot(tmp_path / "curve.png")


def test_plot_writes_a_png_and_replaces_atomically(tmp_path, monkeypatch):
    history = History()
    for epoch, (loss, val) in enumerate([(1.0, 1.2), (0.6, 0.9), (0.4, 0.8)]):
        history.append(epoch, {"loss": loss, "val_loss": val})
    target = tmp_path / "curve.png"
    history.plot(target)
    first = target.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"

    import matplotlib.figure

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(portgd.InputError, match=r"cannot write the plot to .*disk full"):
        history.plot(target)
    assert target.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_plot_errors(tmp_path):
    with pytest.raises(portgd.InputError, match="empty"):
        History().plot(tmp_path / "x.png")
    history = History()
    history.append(0, {"loss": 1.0})
    with pytest.raises(portgd.InputError, match="does not exist"):
        history.plot(tmp_path / "missing" / "x.png")
