"""Seeded fuzzing of the file loaders: a corrupted file loads correctly or is a PortgdError.

The corruptions live in tools/fuzz_loaders.py (which also runs the long fuzzing recipe of
docs/fuzzing.md); here each kind runs a fixed set of seeded cases, a few seconds in all.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import portgd

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "fuzz_loaders.py"
SEED = 20261202


def _load_script():
    spec = importlib.util.spec_from_file_location("fuzz_loaders", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fuzz = _load_script()
TARGETS = fuzz.targets()
BASE = TARGETS["checkpoint"].base
DATA = fuzz.data_files()

# Kinds of corruption whose every case must be refused, or must load (they keep the file valid).
_ZIP_REFUSED = {"truncate", "member_truncate", "huge_shape", "hostile_header", "duplicate",
                "drop"}
ALWAYS_REFUSED = {"checkpoint": _ZIP_REFUSED, "evaluate": _ZIP_REFUSED, "npz": _ZIP_REFUSED,
                  "idx": {"truncate", "extend", "huge_shape"},
                  "npy": {"truncate", "huge_shape", "hostile_header"}}
ALWAYS_LOADED = {"deflate"}


def _cases(target_name, count):
    return [pytest.param(target_name, mutation, count, id=f"{target_name}-{mutation}")
            for mutation in sorted(TARGETS[target_name].mutations)]


@pytest.mark.parametrize(
    ("target_name", "mutation", "count"),
    _cases("checkpoint", 60) + _cases("evaluate", 15) + _cases("idx", 80)
    + _cases("mnist-images", 30) + _cases("mnist-labels", 30) + _cases("csv", 60)
    + _cases("npy", 60) + _cases("npz", 40) + _cases("train-csv", 8),
)
def test_every_corruption_loads_or_is_a_portgd_error(tmp_path, target_name, mutation, count):
    target = TARGETS[target_name]
    report = fuzz.fuzz(target, count, SEED, tmp_path, mutation=mutation)
    assert report.findings == []
    assert report.total() == count
    if mutation in ALWAYS_REFUSED.get(target_name, ()):
        assert report.total("refused") == count
    if mutation in ALWAYS_LOADED:
        assert report.total("loaded") == count


def _write(tmp_path, data, name="m.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _entries():
    return fuzz.members(BASE)


def _with_npy_header(member, change):
    """The base checkpoint with ``change(header text)`` as ``member``'s NPY header."""
    entries = dict(_entries())
    _, text, values = fuzz.split_npy(entries[member])
    entries[member] = fuzz.join_npy(change(text), values)
    return fuzz.archive(list(entries.items()))


def _with_member(member, blob):
    """The base checkpoint with ``member``'s content replaced by ``blob``."""
    entries = dict(_entries())
    entries[member] = blob
    return fuzz.archive(list(entries.items()))


def _refused(path, *fragments):
    """Load ``path``; the CheckpointError names the file and each fragment."""
    with pytest.raises(portgd.CheckpointError) as info:
        portgd.load(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_valid_but_deflated_checkpoint_loads_the_same_numbers(tmp_path):
    original = portgd.load(_write(tmp_path, BASE, "a.npz"))
    deflated = portgd.load(_write(tmp_path, fuzz.archive(_entries(), zipfile.ZIP_DEFLATED)))
    for name, value in original.model.state_dict().items():
        np.testing.assert_array_equal(deflated.model.state_dict()[name], value)
    assert deflated.optimizer.state_dict()["param_steps"] == \
        original.optimizer.state_dict()["param_steps"]


@pytest.mark.parametrize("shape", [(2**40, 2**40), (2**62,), (10**12,), (4, 8, 2**61)])
@pytest.mark.parametrize("member", ["header.npy", "param/0.weight.npy"])
def test_huge_declared_shapes_are_refused_before_allocating(tmp_path, member, shape):
    descr = "|u1" if member == "header.npy" else "<f4"
    data = _with_npy_header(member, lambda text: fuzz._header_dict(descr, False, shape))
    path = _write(tmp_path, data)
    tracemalloc.start()
    try:
        _refused(path, repr(member), f"declares shape {shape}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the file is ~10 kB; nothing near the declared size is allocated


def test_a_header_that_breaks_numpys_tokenizer_is_a_checkpoint_error(tmp_path):
    # NumPy's own parser raised tokenize.TokenError for this header (issue 17)
    data = _with_npy_header("param/0.weight.npy", lambda text: text.replace("(", "((", 1))
    _refused(_write(tmp_path, data), "'param/0.weight.npy'", "unreadable NPY header")


def test_a_member_that_is_not_npy_is_missing_not_bytes(tmp_path):
    # numpy.load returned such a member as bytes, which then failed as an array (issue 17)
    entries = [(name[:-4] if name == "param/0.weight.npy" else name, blob)
               for name, blob in _entries()]
    _refused(_write(tmp_path, fuzz.archive(entries)), "'param/0.weight.npy' is missing")


def test_a_member_twice_is_refused(tmp_path):
    entries = _entries()
    entries.append(entries[2])
    _refused(_write(tmp_path, fuzz.archive(entries)), repr(entries[2][0]), "appears twice")


def _patch_central_directory(data, member, offset, value, fmt):
    """``data`` with a field of ``member``'s central directory record replaced."""
    at = data.index(b"PK\x01\x02")
    while True:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46: at + 46 + name_length].decode() == member:
            break
        extra, comment = struct.unpack_from("<HH", data, at + 30)
        at = data.index(b"PK\x01\x02", at + 46 + name_length + extra + comment)
    out = bytearray(data)
    struct.pack_into(fmt, out, at + offset, value)
    return bytes(out)


def test_zip_features_python_cannot_read_are_checkpoint_errors(tmp_path):
    # zipfile raised NotImplementedError for these (issue 17)
    patched = _patch_central_directory(BASE, "param/0.bias.npy", 8, 0x20, "<H")  # flag bit 5
    _refused(_write(tmp_path, patched, "a.npz"), "'param/0.bias.npy'", "patched data")
    version = _patch_central_directory(BASE, "param/0.bias.npy", 6, 100, "<H")  # needs 10.0
    _refused(_write(tmp_path, version, "b.npz"), "zip file version 10.0")
    method = _patch_central_directory(BASE, "param/0.bias.npy", 10, 12, "<H")  # bzip2
    _refused(_write(tmp_path, method, "c.npz"), "'param/0.bias.npy'", "compression method 12")


def test_an_end_record_with_another_entry_count_is_refused(tmp_path):
    data = bytearray(BASE)
    end = data.rindex(b"PK\x05\x06")
    count = struct.unpack_from("<H", data, end + 10)[0]
    struct.pack_into("<HH", data, end + 8, count - 1, count - 1)
    _refused(_write(tmp_path, bytes(data)), f"declares {count - 1} entries", f"lists {count}")


def test_members_of_the_wrong_dtype_are_refused(tmp_path):
    data = _with_npy_header("param/0.bias.npy", lambda text: text.replace("<f4", "<i4"))
    _refused(_write(tmp_path, data), "'param/0.bias.npy'", "int32")


def test_optimizer_state_of_the_wrong_shape_is_refused_at_load(tmp_path):
    data = _with_npy_header("optim/0.bias/exp_avg.npy",
                            lambda text: text.replace("(4,)", "(2, 2)"))
    _refused(_write(tmp_path, data), "'optim/0.bias/exp_avg.npy'", "(2, 2)")


CLI_CORRUPTIONS = {
    "tokenizer": (lambda: _with_npy_header("param/0.weight.npy",
                                           lambda text: text.replace("(", "((", 1)),
                  "member 'param/0.weight.npy' has an unreadable NPY header"),
    "huge": (lambda: _with_npy_header("param/0.weight.npy",
                                      lambda text: fuzz._header_dict("<f4", False, (2**62,))),
             "member 'param/0.weight.npy' declares shape (4611686018427387904,)"),
    "zip-version": (lambda: _patch_central_directory(BASE, "param/0.bias.npy", 6, 100, "<H"),
                    "zip file version 10.0"),
    "metadata": (lambda: _with_metadata(split={"seed": float("nan"), "test_size": 0.2}),
                 "records seed=nan in its metadata"),
    "empty-huge": (lambda: _with_member("param/0.weight.npy",
                                        fuzz.hostile_npy("<f4", False, (0, 2**63))),
                   "member 'param/0.weight.npy' declares shape (0, 9223372036854775808) of "
                   "float32, larger than any array NumPy can create"),
}


@pytest.mark.parametrize("corruption", sorted(CLI_CORRUPTIONS))
def test_portgd_evaluate_prints_one_error_line_and_no_traceback(tmp_path, corruption):
    make, fragment = CLI_CORRUPTIONS[corruption]
    path = _write(tmp_path, make())
    done = subprocess.run([sys.executable, "-m", "portgd", "evaluate", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"portgd: error: {path}")
    assert fragment in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# -- --data files ------------------------------------------------------------------------------


def test_a_data_npy_whose_header_breaks_numpys_tokenizer_is_a_dataset_error(tmp_path):
    _, text, values = fuzz.split_npy(DATA["npy"])
    path = _write(tmp_path, fuzz.join_npy(text.replace("(", "((", 1), values), "d.npy")
    with pytest.raises(portgd.DatasetError, match="has an unreadable NPY header"):
        portgd.datasets.from_file(path, backend="numpy")


def test_portgd_train_on_a_damaged_data_file_prints_one_error_line(tmp_path):
    _, text, values = fuzz.split_npy(DATA["npy"])
    path = _write(tmp_path, fuzz.join_npy(text.replace("(", "((", 1), values), "d.npy")
    done = subprocess.run([sys.executable, "-m", "portgd", "train", "--data", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"portgd: error: {path} has an unreadable NPY header")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_a_data_file_declaring_a_huge_shape_is_refused_before_allocating(tmp_path, kind):
    if kind == "npy":
        values = fuzz.split_npy(DATA["npy"])[2]
        data = fuzz.join_npy(fuzz._header_dict("<f8", False, (2**40, 4)), values)
    else:
        entries = dict(fuzz.members(DATA["npz"]))
        values = fuzz.split_npy(entries["X.npy"])[2]
        entries["X.npy"] = fuzz.join_npy(fuzz._header_dict("<f8", False, (10**12, 3)), values)
        data = fuzz.archive(list(entries.items()))
    path = _write(tmp_path, data, f"d.{kind}")
    tracemalloc.start()
    try:
        with pytest.raises(portgd.DatasetError, match="declares shape"):
            portgd.datasets.from_file(path, backend="numpy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


# Well-formed headers over exactly the data they declare, which byte flips (almost) never
# build. A zero-width dtype and an empty shape NumPy cannot create escaped as ValueError from
# a data .npy (review finding 8); the rest pin that each stays refused by every reader.
HOSTILE_MESSAGES = {
    ("|S0", False, (5,)): "declares the zero-width dtype '|S0'",
    ("<U0", False, (10**18,)): "declares the zero-width dtype '<U0'",
    ("S", False, (12, 4)): "declares the zero-width dtype 'S'",
    ("|a0", True, ()): "declares the zero-width dtype '|a0'",
    ("<f8", False, (0, 2**63)): "declares shape (0, 9223372036854775808) of float64, larger than",
    ("<f4", False, (0, 10**18, 10**18)): "of float32, larger than any array NumPy can create",
    ("|u1", False, (2**64, 0)): "declares shape (18446744073709551616, 0) of uint8, larger than",
    ("|O", False, (12, 4)): "holds Python objects (pickled)",
    ("(2,)<f4", False, (12, 2)): "declares the dtype '(2,)<f4'; only",
    ("<f4,<f8", False, (12,)): "declares the dtype '<f4,<f8'; only",
    ("<M8[ns]", False, (12, 4)): "declares the dtype '<M8[ns]'; only",
    ("<c16", False, (12, 4)): "declares the dtype '<c16'; only",
}


def _hostile_id(header):
    return f"{header[0]!r}-{'F' if header[1] else 'C'}-{header[2]}"


@pytest.mark.parametrize("header", fuzz.HOSTILE_HEADERS, ids=_hostile_id)
def test_every_reader_refuses_a_well_formed_hostile_header(tmp_path, header):
    blob = fuzz.hostile_npy(*header)
    npy = _write(tmp_path, blob, "d.npy")
    entries = dict(fuzz.members(DATA["npz"]))
    entries["X.npy"] = blob
    npz = _write(tmp_path, fuzz.archive(list(entries.items())), "d.npz")
    checkpoint = _write(tmp_path, _with_member("param/0.weight.npy", blob))
    fragment = next((text for key, text in HOSTILE_MESSAGES.items() if key == header), "")
    for path in (npy, npz):
        with pytest.raises(portgd.DatasetError) as info:
            portgd.datasets.from_file(path, backend="numpy")
        assert str(info.value).startswith(str(path)) and fragment in str(info.value)
        assert "bytes of data but holds" not in str(info.value)  # the data length is right
    # checkpoints hold numbers only: text dtypes are refused before their width is looked at
    text = "zero-width" in fragment
    message = _refused(checkpoint, "'param/0.weight.npy'",
                       "declares the dtype" if text else fragment)
    assert "bytes of data but holds" not in message


@pytest.mark.parametrize("header", [("|S0", False, (5,)), ("<U0", False, (10**18,)),
                                    ("<f8", False, (0, 2**63))], ids=_hostile_id)
def test_portgd_train_on_a_hostile_data_npy_prints_one_error_line(tmp_path, header):
    path = _write(tmp_path, fuzz.hostile_npy(*header), "s0.npy")
    done = subprocess.run([sys.executable, "-m", "portgd", "train", "--data", str(path),
                           "--epochs", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"portgd: error: {path} {HOSTILE_MESSAGES[header]}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_member_that_is_not_npy_in_a_data_npz_is_missing(tmp_path):
    # numpy.load returned it as bytes, which then failed as an array
    entries = [("X" if name == "X.npy" else name, blob) for name, blob in fuzz.members(DATA["npz"])]
    with pytest.raises(portgd.DatasetError, match=r"has the entries \['y'\]"):
        portgd.datasets.from_file(_write(tmp_path, fuzz.archive(entries), "d.npz"),
                                  backend="numpy")


def test_values_beyond_float32_are_refused_not_made_infinite(tmp_path):
    path = _write(tmp_path, b"a,b,label\n1,2,0\n3,1e300,1\n4,5,0\n", "d.csv")
    with pytest.raises(portgd.DatasetError, match=r"row 1 \(0-based\) is 1e\+300, beyond"):
        portgd.datasets.from_file(path, backend="numpy")
    loaded = portgd.datasets.from_file(path, backend="numpy", dtype="float64")
    assert np.asarray(loaded.X)[1, 1] == 1e300


@pytest.mark.skipif(np.finfo(np.longdouble).max <= np.finfo(np.float64).max,
                    reason="this platform's longdouble is float64")
def test_a_longdouble_beyond_float64_is_refused_without_a_warning(tmp_path):
    table = np.ones((3, 2), dtype=np.longdouble)
    table[1, 0] = np.longdouble(10) ** 400
    path = tmp_path / "d.npy"
    np.save(path, table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's cast warned "overflow encountered in cast"
        with pytest.raises(portgd.DatasetError, match=r"row 1 \(0-based\) holds inf"):
            portgd.datasets.from_file(path, backend="numpy")


# -- docs/fuzzing.md ----------------------------------------------------------------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "fuzzing.md"


def _documented_runs():
    """The argument lists of every ``python tools/fuzz_loaders.py`` line in docs/fuzzing.md."""
    return [line.split("tools/fuzz_loaders.py", 1)[1].split()
            for line in DOC.read_text(encoding="utf-8").splitlines()
            if line.lstrip("$ ").startswith(("python tools/fuzz_loaders.py",
                                              "nice -n 10 python tools/fuzz_loaders.py"))]


def test_every_documented_command_parses_and_names_a_loader():
    runs = _documented_runs()
    assert len(runs) >= 3
    parser = fuzz.build_parser()
    for argv in runs:
        args = parser.parse_args(argv)
        assert args.loader == "all" or args.loader in TARGETS
    assert set(fuzz.LOADERS) == set(TARGETS)


def test_the_documented_reproduction_command_rebuilds_one_case(tmp_path, capsys):
    (argv,) = [run for run in _documented_runs() if "--case" in run]
    argv[argv.index("--keep") + 1] = str(tmp_path / "finding")
    assert fuzz.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 cases" in out and "'escaped': 0" in out
    assert len(list((tmp_path / "finding").iterdir())) == 1  # the corrupted file, kept


def _with_metadata(**changes):
    """The base checkpoint with its metadata changed (valid archive, valid JSON)."""
    entries = dict(_entries())
    header = json.loads(fuzz.split_npy(entries["header.npy"])[2])
    header["metadata"].update(changes)
    text = json.dumps(header).encode()
    entries["header.npy"] = fuzz.join_npy(fuzz._header_dict("|u1", False, (len(text),)), text)
    return fuzz.archive(list(entries.items()))


@pytest.mark.parametrize(("command", "changes", "named"), [
    ("evaluate", {"split": [0.2]}, "split=[0.2]"),
    ("evaluate", {"loss": "hinge", "dataset": 7}, "dataset=7, loss='hinge'"),
    ("train", {"epoch": -3}, "epoch=-3"),
    ("train", {"split": {"seed": 1.5, "test_size": 2.5}}, "seed=1.5, test_size=2.5"),
    ("predict", {"features": ["a", 2], "classes": [0]}, "features=['a', 2], classes=[0]"),
])
def test_metadata_the_cli_uses_is_checked(tmp_path, capsys, command, changes, named):
    path = _write(tmp_path, _with_metadata(**changes))
    data = _write(tmp_path, DATA["csv"], "d.csv")
    argv = {"evaluate": ["evaluate", str(path)], "train": ["train", "--resume", str(path)],
            "predict": ["predict", str(path), "--data", str(data)]}[command]
    assert portgd.cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"portgd: error: {path} records {named} in its metadata")
