"""Checkpoints: round trips across backends, bit-identical resume, and every bad file."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import portgd
from portgd import checkpoint, optim
from portgd.model import mlp

rng = np.random.default_rng(0)
X = rng.normal(size=(120, 5))
Y = np.argmax(X @ rng.normal(size=(5, 3)), axis=1)


def trained(backend="numpy", epochs=2, dtype="float32"):
    model = mlp(5, [8], 3, output="softmax", seed=3, dtype=dtype, backend=backend)
    opt = optim.Adam(lr=0.01)
    model.fit(X, Y, loss=portgd.losses.CategoricalCrossEntropy(from_logits=False),
              optimizer=opt, epochs=epochs, batch_size=16, verbose=0)
    return model, opt


def test_round_trip_onto_every_backend(tmp_path, backend):
    model, opt = trained()
    path = portgd.save(tmp_path / "model.npz", model, opt, epoch=2, note="hello")
    loaded = portgd.load(path, backend=backend)
    assert loaded.metadata == {"epoch": 2, "note": "hello"}
    assert loaded.model.backend == backend
    assert loaded.model.config() == model.config()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.model.state_dict()[name], value)
    assert type(loaded.optimizer) is optim.Adam
    assert loaded.optimizer.step_count == opt.step_count
    saved_state = opt.state_dict()["state"]
    for name, entry in loaded.optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(value, saved_state[name][key])


def _continue(model, opt, epochs):
    model.fit(X, Y, loss=portgd.losses.CategoricalCrossEntropy(from_logits=False),
              optimizer=opt, epochs=epochs, batch_size=16, verbose=0)
    return model.state_dict()


@pytest.mark.parametrize("backend_name", ["numpy", "torch"])
def test_resume_is_bit_identical(tmp_path, backend_name):
    pytest.importorskip(backend_name)
    straight = _continue(*trained(backend_name, epochs=2), epochs=3)
    model, opt = trained(backend_name, epochs=2)
    portgd.save(tmp_path / "half.npz", model, opt)
    resumed = portgd.load(tmp_path / "half.npz", backend=backend_name)
    again = _continue(resumed.model, resumed.optimizer, epochs=3)
    for name, value in straight.items():
        np.testing.assert_array_equal(again[name], value)


def test_save_without_optimizer(tmp_path):
    model, _ = trained()
    loaded = portgd.load(portgd.save(tmp_path / "m.npz", model))
    assert loaded.optimizer is None and loaded.metadata == {}


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained()
    path = portgd.save(tmp_path / "model.npz", model, opt, epoch=1)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(portgd.CheckpointError, match="disk full; the previous file"):
        portgd.save(path, model, opt, epoch=2)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind


def test_metadata_must_be_json_like(tmp_path):
    model, _ = trained()
    with pytest.raises(portgd.CheckpointError, match="metadata must be JSON-like"):
        portgd.save(tmp_path / "m.npz", model, when=object())
    assert not (tmp_path / "m.npz").exists()


def test_missing_folder_and_missing_file(tmp_path):
    model, _ = trained()
    with pytest.raises(portgd.CheckpointError, match="does not exist"):
        portgd.save(tmp_path / "nope" / "m.npz", model)
    with pytest.raises(portgd.CheckpointError, match="the file does not exist"):
        portgd.load(tmp_path / "absent.npz")


def test_truncated_file(tmp_path):
    model, opt = trained()
    path = portgd.save(tmp_path / "m.npz", model, opt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(portgd.CheckpointError, match="corrupt or truncated"):
        portgd.load(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(portgd.CheckpointError, match="corrupt or truncated"):
        portgd.load(path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, header=np.array([{"a": 1}], dtype=object))
    with pytest.raises(portgd.CheckpointError, match="pickled Python objects"):
        portgd.load(path)


def test_npz_without_header(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(portgd.CheckpointError, match="not a portgd checkpoint"):
        portgd.load(path)


def _rewrite_header(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes())
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_incompatible_format_version(tmp_path):
    model, _ = trained()
    path = portgd.save(tmp_path / "m.npz", model)
    _rewrite_header(path, lambda h: h.update(format_version=99, portgd_version="9.0"))
    with pytest.raises(portgd.CheckpointError, match=r"format 99 \(written by portgd 9.0\)"):
        portgd.load(path)


def test_mismatched_parameters(tmp_path):
    model, _ = trained()
    path = portgd.save(tmp_path / "m.npz", model)
    _rewrite_header(path, lambda h: h["model"]["layers"][0].update(out_features=9))
    with pytest.raises(portgd.CheckpointError, match="does not describe a valid model"):
        portgd.load(path)


def test_corrupt_header(tmp_path):
    model, _ = trained()
    path = portgd.save(tmp_path / "m.npz", model)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["header"] = np.frombuffer(b"{not json", dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(portgd.CheckpointError, match="corrupt header"):
        portgd.load(path)


def test_file_layout(tmp_path):
    model, _ = trained()
    path = portgd.save(tmp_path / "m.npz", model)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert "header.npy" in names and "param/0.weight.npy" in names


def test_saved_file_has_the_usual_permissions(tmp_path):
    model, _ = trained()
    path = portgd.save(tmp_path / "m.npz", model)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
