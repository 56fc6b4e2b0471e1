"""Seeded fuzzing of the file loaders: a corrupted file loads correctly or is a PortgdError.

The corruptions live in tools/fuzz_loaders.py (which also runs the long fuzzing recipe of
docs/fuzzing.md); here each kind runs a fixed set of seeded cases, a few seconds in all.
"""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
import tracemalloc
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

# Kinds of corruption whose every case must be refused, or must load (they keep the file valid).
ALWAYS_REFUSED = {"truncate", "member_truncate", "huge_shape", "duplicate", "drop"}
ALWAYS_LOADED = {"deflate"}


def _cases(target_name, count):
    return [pytest.param(target_name, mutation, count, id=f"{target_name}-{mutation}")
            for mutation in sorted(TARGETS[target_name].mutations)]


@pytest.mark.parametrize(
    ("target_name", "mutation", "count"),
    _cases("checkpoint", 60) + _cases("evaluate", 15) + _cases("idx", 80),
)
def test_every_corruption_loads_or_is_a_portgd_error(tmp_path, target_name, mutation, count):
    target = TARGETS[target_name]
    report = fuzz.fuzz(target, count, SEED, tmp_path, mutation=mutation)
    assert report.findings == []
    assert report.total() == count
    if mutation in ALWAYS_REFUSED:
        assert report.total("refused") == count
    if mutation in ALWAYS_LOADED:
        assert report.total("loaded") == count


def _write(tmp_path, data, name="m.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _entries():
    return fuzz.members(BASE)


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
    entries = _entries()
    for i, (name, blob) in enumerate(entries):
        if name == member:
            values = fuzz.split_npy(blob)[2]
            descr = "|u1" if name == "header.npy" else "<f4"
            entries[i] = (name, fuzz.join_npy(fuzz._header_dict(descr, False, shape), values))
    path = _write(tmp_path, fuzz.archive(entries))
    tracemalloc.start()
    try:
        _refused(path, repr(member), f"declares shape {shape}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the file is ~10 kB; nothing near the declared size is allocated


def test_a_header_that_breaks_numpys_tokenizer_is_a_checkpoint_error(tmp_path):
    # NumPy's own parser raised tokenize.TokenError for this header (issue 17)
    entries = _entries()
    name, blob = entries[1]
    _, text, values = fuzz.split_npy(blob)
    entries[1] = (name, fuzz.join_npy(text.replace("(", "((", 1), values))
    _refused(_write(tmp_path, fuzz.archive(entries)), repr(name), "unreadable NPY header")


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


def _with_header_text(member, old, new):
    """The base checkpoint with ``old`` replaced by ``new`` in ``member``'s NPY header."""
    entries = _entries()
    for i, (name, blob) in enumerate(entries):
        if name == member:
            _, text, values = fuzz.split_npy(blob)
            entries[i] = (name, fuzz.join_npy(text.replace(old, new), values))
    return fuzz.archive(entries)


def test_members_of_the_wrong_dtype_are_refused(tmp_path):
    data = _with_header_text("param/0.bias.npy", "<f4", "<i4")
    _refused(_write(tmp_path, data), "'param/0.bias.npy'", "int32")


def test_optimizer_state_of_the_wrong_shape_is_refused_at_load(tmp_path):
    data = _with_header_text("optim/0.bias/exp_avg.npy", "(4,)", "(2, 2)")
    _refused(_write(tmp_path, data), "'optim/0.bias/exp_avg.npy'", "(2, 2)")


@pytest.mark.parametrize("corruption", ["tokenizer", "huge", "zip-version", "metadata"])
def test_portgd_evaluate_prints_one_error_line_and_no_traceback(tmp_path, corruption):
    entries = _entries()
    if corruption == "tokenizer":
        name, blob = entries[1]
        _, text, values = fuzz.split_npy(blob)
        entries[1] = (name, fuzz.join_npy(text.replace("(", "((", 1), values))
        data = fuzz.archive(entries)
    elif corruption == "huge":
        name, blob = entries[1]
        _, text, values = fuzz.split_npy(blob)
        entries[1] = (name, fuzz.join_npy(fuzz._header_dict("<f4", False, (2**62,)), values))
        data = fuzz.archive(entries)
    elif corruption == "zip-version":
        data = _patch_central_directory(BASE, "param/0.bias.npy", 6, 100, "<H")
    else:
        text = fuzz.split_npy(entries[0][1])[2].replace(b'"split": {"seed": 0',
                                                         b'"split": {"seed": NaN')
        entries[0] = ("header.npy",
                      fuzz.join_npy(fuzz._header_dict("|u1", False, (len(text),)), text))
        data = fuzz.archive(entries)
    path = _write(tmp_path, data)
    done = subprocess.run([sys.executable, "-m", "portgd", "evaluate", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"portgd: error: {path}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
