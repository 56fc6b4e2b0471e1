"""Checkpoint headers as the mutation run asked: every structural check of a malformed header
names the file and what is wrong; the header keeps the portgd version; what cannot be saved
is named by its path in the metadata. (The fuzzers of test_fuzz_npz.py mutate whole files.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

import portgd
from portgd import Sequential, optim
from portgd.checkpoint import ADVICE
from portgd.layers import Dense


@pytest.fixture
def saved(tmp_path):
    model = Sequential([Dense(2, 2)], seed=0)
    opt = optim.Adam(lr=0.01)
    model.fit(np.ones((4, 2)), np.ones((4, 2)), optimizer=opt, epochs=1, batch_size=4,
              verbose=0)
    path = tmp_path / "good.npz"
    portgd.save(path, model, opt, note="kept")
    with np.load(path) as archive:
        entries = {name: archive[name] for name in archive.files}
    return tmp_path, entries


def _rewrite(tmp_path, entries, change):
    header = json.loads(entries["header"].tobytes().decode("utf-8"))
    change(header)
    path = tmp_path / "bad.npz"
    data = dict(entries, header=np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8))
    np.savez(path, **data)
    return path


def _set(key, value):
    return lambda header: header.__setitem__(key, value)


def _state(value):
    return lambda header: header["optimizer"].__setitem__("state", value)


MODEL = "'model' must be an object whose 'layers' is a list of objects"
PARAMS = "'params' must be a list of distinct parameter names"
STATE = ("'optimizer' must be null or an object whose 'state' maps parameter names to "
         "{key: entry name}")


@pytest.mark.parametrize("change,what", [
    (_set("model", []), MODEL),
    (_set("model", {"layers": {}}), MODEL),
    (_set("model", {"layers": [1]}), MODEL),
    (_set("params", "0.weight"), PARAMS),
    (_set("params", ["0.weight", 3]), PARAMS),
    (_set("params", ["0.weight", "0.weight"]), PARAMS),
    (_set("rng", []), "'rng' must be an object"),
    (_set("metadata", 5), "'metadata' must be an object"),
    (_set("optimizer", 5), STATE),
    (_state([]), STATE),
    (_state({"0.weight": []}), STATE),
    (_state({"0.weight": {"exp_avg": 7}}), STATE),
    (_state({"9.bias": {"exp_avg": "state/9.bias/exp_avg"}}),
     "the optimizer holds state for '9.bias', which is not a parameter"),
    (_state({"0.weight": {"exp_avg": "header"}}), "the entry 'header' is named twice"),
    (_state({"0.weight": {"exp_avg": "param/0.bias"}}), "the entry 'param/0.bias' is named twice"),
])
def test_a_malformed_header_names_the_file_and_the_field(saved, change, what):
    tmp_path, entries = saved
    path = _rewrite(tmp_path, entries, change)
    with pytest.raises(portgd.CheckpointError) as caught:
        portgd.load(path)
    assert str(caught.value) == f"{path} has a malformed header: {what}; {ADVICE}"


def test_null_metadata_and_a_null_optimizer_are_well_formed(saved):
    tmp_path, entries = saved

    def change(header):
        header["metadata"] = None
        header["optimizer"] = None

    loaded = portgd.load(_rewrite(tmp_path, entries, change))
    assert loaded.optimizer is None and loaded.metadata == {}


@pytest.mark.parametrize("value,shape", [(np.zeros(3, np.int16), "int16 array shaped (3,)"),
                                         (np.zeros((1, 3), np.uint8), "uint8 array shaped (1, 3)")])
def test_a_header_entry_of_another_kind_is_refused(saved, value, shape):
    tmp_path, entries = saved
    path = tmp_path / "bad.npz"
    np.savez(path, **dict(entries, header=value))
    with pytest.raises(portgd.CheckpointError) as caught:
        portgd.load(path)
    assert str(caught.value) == (f"{path}: member 'header.npy' is a {shape}, not 1-D uint8 "
                                 f"(UTF-8 JSON); {ADVICE}")


@pytest.mark.parametrize("header", [[1, 2], {"format": "other"}])
def test_a_header_of_another_format_is_not_a_portgd_checkpoint(saved, header):
    tmp_path, entries = saved
    path = tmp_path / "bad.npz"
    raw = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)
    np.savez(path, **dict(entries, header=raw))
    with pytest.raises(portgd.CheckpointError, match="is not a portgd checkpoint"):
        portgd.load(path)


def test_the_header_records_the_portgd_version_and_the_state_outside_it(saved):
    _, entries = saved
    header = json.loads(entries["header"].tobytes().decode("utf-8"))
    assert header["portgd_version"] == portgd.__version__
    assert set(header["optimizer"]["state"]) == {"0.weight", "0.bias"}
    assert all(isinstance(ref, str) for refs in header["optimizer"]["state"].values()
               for ref in refs.values())  # entry names, not the arrays themselves
    assert header["metadata"] == {"note": "kept"}


def test_what_cannot_be_saved_is_named_by_its_place_in_the_metadata(tmp_path):
    model = Sequential([Dense(2, 1)], seed=0)
    with pytest.raises(portgd.CheckpointError) as caught:
        portgd.save(tmp_path / "m.npz", model, extra={"runs": [1, {"when": object}]})
    assert str(caught.value).startswith(
        "cannot save header.metadata.extra.runs[1].when = <class 'object'> (type) in a "
        "checkpoint header")


def test_a_file_that_is_no_archive_gets_the_checkpoint_advice(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip archive at all")
    with pytest.raises(portgd.CheckpointError) as caught:
        portgd.load(path)
    assert str(caught.value).startswith(str(path)) and str(caught.value).endswith(ADVICE)


def test_a_header_whose_parameters_do_not_fit_its_layers_names_the_file(saved):
    tmp_path, entries = saved
    def change(header):
        header["params"] = ["0.weight"]
        header["optimizer"] = None

    path = _rewrite(tmp_path, entries, change)
    with pytest.raises(portgd.CheckpointError) as caught:
        portgd.load(path)
    assert str(caught.value).startswith(f"{path} does not describe a valid model: the header "
                                        f"lists the parameters ['0.weight'] but its layers")
