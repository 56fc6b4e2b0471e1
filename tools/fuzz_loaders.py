"""Fuzz portgd's file loaders: a corrupted file must load correctly or raise a PortgdError.

Each loader starts from a small valid file and is given corrupted copies of it. The outcome of
one case is ``loaded`` (the loader returned a result, which is then checked), ``refused`` (a
PortgdError) or ``escaped`` (any other exception: a finding). Corruptions:

* ``flip``: one to four bytes anywhere XORed with a random non-zero byte;
* ``truncate``: the file cut at a random length; ``extend``: random bytes appended;
* for ``.npz`` files, corruptions of one member written back with a valid CRC-32, so that
  they reach the NPY and checkpoint layers: ``member_flip`` (biased to the NPY header),
  ``member_truncate``, ``npy_header`` (the header dict replaced: other dtypes, shapes, keys,
  versions, unbalanced or nested text), ``huge_shape`` (a shape of up to 2**62 elements over
  the same few bytes), ``hostile_header`` (a well-formed header over exactly the data it
  declares, with a dtype or shape that must still be refused: :data:`HOSTILE_HEADERS`; for
  ``.npy`` files too), ``duplicate`` and ``drop`` (a member twice, or missing), ``rename``,
  ``json`` (one value of a checkpoint's JSON header replaced), ``deflate`` (every member
  compressed: a valid file that must load);
* for IDX files: ``idx_header`` (bytes of the magic number and sizes), ``huge_shape`` (a
  dimension set to up to 2**32 - 1), ``gzip`` (the file gzipped, then flipped or truncated).

Cases are seeded: case ``i`` of ``--seed s`` is the same file on every run and machine with
the same Python, so ``--seed s --case i --keep DIR`` rebuilds a finding.

Two engines run the same corruptions:

* ``random`` (default): ``--count`` cases per loader;
* ``atheris``: coverage-guided (libFuzzer through atheris); the fuzzer's input bytes choose
  the corruption and its random numbers, and coverage of portgd's and NumPy's Python code
  steers the choice. ``--count`` is libFuzzer's ``-runs``. Needs ``pip install atheris``.

Examples (see docs/fuzzing.md)::

    python tools/fuzz_loaders.py --count 10000 --seed 1
    python tools/fuzz_loaders.py --loader checkpoint --engine atheris --count 10000
    python tools/fuzz_loaders.py --loader idx --seed 1 --case 17 --keep /tmp/finding

The test suite (tests/test_fuzz_loaders.py) runs the random engine with a small budget.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import gzip
import io
import json
import math
import random
import struct
import sys
import tempfile
import traceback
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import portgd
from portgd import cli, datasets, losses, optim
from portgd.datasets import read_idx

Mutation = Callable[[bytes, random.Random], bytes]


# -- generic byte corruptions --------------------------------------------------------------
def flip(data: bytes, rng: random.Random) -> bytes:
    """One to four bytes XORed with a random non-zero value."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))] if data else data


def extend(data: bytes, rng: random.Random) -> bytes:
    return data + rng.randbytes(rng.randint(1, 64))


# -- .npz members ---------------------------------------------------------------------------
def members(data: bytes) -> list[tuple[str, bytes]]:
    """The entries of a valid ZIP archive, in order."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def archive(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A ZIP archive of ``entries`` with valid CRCs (duplicate names allowed)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buffer, "w", compression) as out:
            for name, content in entries:
                out.writestr(name, content)
    return buffer.getvalue()


def split_npy(blob: bytes) -> tuple[bytes, str, bytes]:
    """``(magic and version, header text, data)`` of a valid NPY member."""
    if blob[6] == 1:
        (length,) = struct.unpack("<H", blob[8:10])
        start = 10
    else:
        (length,) = struct.unpack("<I", blob[8:12])
        start = 12
    return blob[:8], blob[start:start + length].decode("latin-1"), blob[start + length:]


def join_npy(text: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """An NPY member from a header text (padded as NumPy pads it) and raw data."""
    encoded = text.encode("utf-8" if version == (3, 0) else "latin-1", errors="replace")
    size = 10 if version == (1, 0) else 12
    encoded += b" " * (-(size + len(encoded) + 1) % 64) + b"\n"
    length = struct.pack("<H" if size == 10 else "<I", len(encoded))
    return b"\x93NUMPY" + bytes(version) + length + encoded + data


def _header_dict(descr: Any, fortran: Any, shape: Any) -> str:
    return f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"


HUGE_SHAPES = [(2**31,), (2**40, 2**40), (10**12,), (2**62,), (4, 8, 2**61), (2**32, 2**32, 8),
               (1 << 20, 1 << 20), (2**63 - 1,)]
BAD_DESCRS = ["|O", "<U3", "|S0", "V8", "<M8[s]", "<c16", "garbage", "", "<f0", "(2,)<f4",
              "<i99", ">f8", "|b1", "<f2", "u1", "<f8,<f4", "O8"]
BAD_SHAPES = [(-1, 3), (3.0,), ("a",), (True, 2), [4, 8], None, 7, (), (0,), (1,) * 40,
              (2**70,)]
#: NPY headers (descr, fortran_order, shape) that parse, over exactly the bytes of data they
#: declare (see :func:`hostile_npy`), and that every loader must still refuse: zero-width,
#: structured, subarray, object, date and complex dtypes, empty shapes too large for NumPy
#: to create, a 0-d Fortran array. Byte flips almost never build one: the data must match.
HOSTILE_HEADERS: list[tuple[Any, bool, tuple[int, ...]]] = [
    ("|S0", False, (5,)), ("<U0", False, (10**18,)), ("S", False, (12, 4)), ("|a0", True, ()),
    ("<U", True, (12, 4)), ("|V8", False, (12, 4)), ("<M8[ns]", False, (12, 4)),
    ("<m8[s]", False, (12,)), ("|O", False, (12, 4)), ("(2,)<f4", False, (12, 2)),
    ("<f4,<f8", False, (12,)), ([("X", "<f8")], False, (12,)), ("<c16", False, (12, 4)),
    ("<f8", False, (0, 2**63)), ("<f4", False, (0, 10**18, 10**18)), ("|u1", False, (2**64, 0)),
    ("<f8", True, ()),
]


def npy_header_text(old: str, rng: random.Random) -> tuple[str, tuple[int, int]]:
    """A corrupted NPY header text (and the NPY version to write it with)."""
    fields = ast.literal_eval(old)
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    choice = rng.randrange(11)
    version = (1, 0)
    if choice == 0:
        text = _header_dict(rng.choice(BAD_DESCRS), fortran, shape)
    elif choice == 1:
        text = _header_dict(descr, fortran, rng.choice(BAD_SHAPES))
    elif choice == 2:
        text = _header_dict(descr, rng.choice([True, 1, "no", None]), shape)
    elif choice == 3:  # a key missing or an extra key
        text = rng.choice([f"{{'descr': {descr!r}, 'shape': {shape!r}}}",
                           _header_dict(descr, fortran, shape)[:-1] + "'extra': 1}"])
    elif choice == 4:  # unbalanced, unterminated or odd text (tokenizer and parser errors)
        cut = old[: rng.randrange(len(old))]
        text = rng.choice([cut, old.replace("(", "((", 1), old.replace("'", '"""', 1),
                           old + "\\", "(" * 300 + ")" * 300, "-" * 5000 + "1",
                           "[" * 150, "{'a': 1e9999}", "lambda: 0", "\x00" + old])
    elif choice == 5:
        text = old.replace(repr(shape), repr(shape).replace(")", ", )") if shape else "(1,)")
    elif choice == 6:  # random printable noise inside the dict
        pos = rng.randrange(len(old))
        text = old[:pos] + "".join(chr(rng.randint(32, 126)) for _ in range(3)) + old[pos:]
    elif choice == 7:  # another NPY version, or an unknown one
        version = rng.choice([(2, 0), (3, 0), (0, 9), (4, 0), (1, 1)])
        text = old
    elif choice == 8:
        text = "".join(chr(rng.randint(0, 255)) for _ in range(rng.randint(0, 200)))
    elif choice == 9:  # a larger shape over the same data
        text = _header_dict(descr, fortran, tuple(n + rng.randint(1, 3) for n in shape) or (2,))
    else:
        text = _header_dict(descr, fortran, rng.choice(HUGE_SHAPES))
    return text, version


def _pick(entries: list[tuple[str, bytes]], rng: random.Random) -> int:
    return rng.randrange(len(entries))


MemberChange = Callable[[str, bytes, random.Random], tuple[str, bytes]]


def _one_member(data: bytes, rng: random.Random, change: MemberChange) -> bytes:
    """The archive with one random member's (name, content) changed; CRCs made valid."""
    entries = members(data)
    i = _pick(entries, rng)
    entries[i] = change(*entries[i], rng)
    return archive(entries)


def _flipped_member(name: str, blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    out = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        limit = min(len(out), 128) if rng.random() < 0.7 else len(out)  # mostly the header
        out[rng.randrange(limit)] ^= rng.randint(1, 255)
    return name, bytes(out)


def _truncated_member(name: str, blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    return name, blob[: rng.randrange(len(blob))]


def _new_npy_header(name: str, blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    _, text, values = split_npy(blob)
    new, version = npy_header_text(text, rng)
    return name, join_npy(new, values, version)


def _huge_shape(name: str, blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    _, text, values = split_npy(blob)
    descr = ast.literal_eval(text)["descr"]
    return name, join_npy(_header_dict(descr, False, rng.choice(HUGE_SHAPES)), values)


def hostile_npy(descr: Any, fortran: bool, shape: tuple[int, ...]) -> bytes:
    """An NPY member with this header over zero bytes of the length it declares."""
    try:
        with warnings.catch_warnings():  # 'a' is a deprecated alias of 'S'
            warnings.simplefilter("ignore", DeprecationWarning)
            nbytes = math.prod(shape) * np.dtype(descr).itemsize
    except (TypeError, ValueError):
        nbytes = 0
    return join_npy(_header_dict(descr, fortran, shape), bytes(nbytes if nbytes < 2**16 else 0))


def _hostile_header(name: str, blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    return name, hostile_npy(*rng.choice(HOSTILE_HEADERS))


def _renamed(name: str, blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    new = rng.choice([name[:-4], name + ".npy", name.upper(), "x" + name,
                      name.replace("/", "\\"), "header.npy", "param/0.bias.npy"])
    return new, blob


def member_flip(data: bytes, rng: random.Random) -> bytes:
    return _one_member(data, rng, _flipped_member)


def member_truncate(data: bytes, rng: random.Random) -> bytes:
    return _one_member(data, rng, _truncated_member)


def npy_header(data: bytes, rng: random.Random) -> bytes:
    return _one_member(data, rng, _new_npy_header)


def huge_shape(data: bytes, rng: random.Random) -> bytes:
    return _one_member(data, rng, _huge_shape)


def hostile_header(data: bytes, rng: random.Random) -> bytes:
    return _one_member(data, rng, _hostile_header)


def rename(data: bytes, rng: random.Random) -> bytes:
    return _one_member(data, rng, _renamed)


def duplicate(data: bytes, rng: random.Random) -> bytes:
    entries = members(data)
    name, blob = entries[_pick(entries, rng)]
    copy = blob if rng.random() < 0.5 else flip(blob, rng)
    entries.insert(rng.randrange(len(entries) + 1), (name, copy))
    return archive(entries)


def drop(data: bytes, rng: random.Random) -> bytes:
    entries = members(data)
    del entries[_pick(entries, rng)]
    return archive(entries)


JSON_VALUES: list[Any] = [None, True, 0, -1, 1, 2**70, 10**9, 1.5, float("nan"), "x", "",
                          [], {}, [1, 2], {"a": 1}, "float16", "int8", [[[[[]]]]]]


def _json_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) into a JSON value."""
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _json_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _json_paths(value, (*path, index))
    return found


def json_value(text: bytes, rng: random.Random) -> bytes:
    """The JSON text with one value replaced, one key deleted, or raw bytes flipped."""
    header = json.loads(text)
    paths = [p for p in _json_paths(header) if p]
    path = rng.choice(paths)
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif rng.random() < 0.15:
        return flip(text, rng)
    else:
        parent[path[-1]] = rng.choice(JSON_VALUES)
    return json.dumps(header).encode()


def json_header(data: bytes, rng: random.Random) -> bytes:
    entries = members(data)
    for i, (name, blob) in enumerate(entries):
        if name == "header.npy":
            new = json_value(split_npy(blob)[2], rng)
            entries[i] = (name, join_npy(_header_dict("|u1", False, (len(new),)), new))
    return archive(entries)


def deflate(data: bytes, rng: random.Random) -> bytes:
    return archive(members(data), zipfile.ZIP_DEFLATED)


# -- IDX ------------------------------------------------------------------------------------
def idx_header(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    end = min(len(out), 4 + 4 * out[3])
    for _ in range(rng.randint(1, 2)):
        out[rng.randrange(end)] ^= rng.randint(1, 255)
    return bytes(out)


def idx_huge_shape(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    dim = rng.randrange(out[3])
    size = rng.choice([2**32 - 1, 2**31, 10**9, 65536, rng.randrange(2**32)])
    out[4 + 4 * dim: 8 + 4 * dim] = struct.pack(">I", size)
    return bytes(out)


def idx_gzip(data: bytes, rng: random.Random) -> bytes:
    packed = gzip.compress(data, mtime=0)
    return rng.choice([flip, truncate, extend, lambda d, r: d])(packed, rng)


# -- CSV ------------------------------------------------------------------------------------
CSV_TOKENS = ["", "nan", "inf", "-inf", "1e999", "1e300", "-3.5e38", "abc", '"', '"a,b"', "\x00",
              "1" * 400, ",",
              "\n", "\r", "\ufeff", "1,2", "0x10", "True", "\u00e9", " ", "-0", "1_000"]


def csv_token(data: bytes, rng: random.Random) -> bytes:
    """A random field, quote, separator or line break inserted or substituted somewhere."""
    text = data.decode("utf-8")
    at = rng.randrange(len(text) + 1)
    end = at + rng.choice([0, 0, 1, 3])
    return (text[:at] + rng.choice(CSV_TOKENS) + text[end:]).encode("utf-8")


def csv_lines(data: bytes, rng: random.Random) -> bytes:
    """Lines dropped, duplicated, swapped or emptied (the header among them)."""
    lines = data.split(b"\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    choice = rng.randrange(4)
    if choice == 0:
        del lines[i]
    elif choice == 1:
        lines.insert(i, lines[j])
    elif choice == 2:
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines[i] = b""
    return b"\n".join(lines)


def csv_bytes(data: bytes, rng: random.Random) -> bytes:
    """Bytes that are not UTF-8, a byte-order mark, CRLF endings or NUL bytes."""
    choice = rng.randrange(4)
    if choice == 0:
        at = rng.randrange(len(data))
        return data[:at] + bytes([rng.randint(0x80, 0xFF)]) + data[at:]
    if choice == 1:
        return b"\xef\xbb\xbf" + data
    if choice == 2:
        return data.replace(b"\n", b"\r\n")
    at = rng.randrange(len(data))
    return data[:at] + b"\x00" + data[at:]


# -- the loaders ----------------------------------------------------------------------------
@dataclass
class Target:
    """One loader under fuzzing: the valid file, its corruptions and how to load a file."""

    name: str
    filename: str  # the corrupted file's name (a loader may look for a fixed name)
    base: bytes
    mutations: dict[str, Mutation]
    load: Callable[[Path], Any]
    check: Callable[[Any], None] = lambda result: None
    #: "loaded" or "refused" for a result that passed ``check`` (a CLI status, say)
    outcome: Callable[[Any], str] = lambda result: "loaded"


def base_checkpoint() -> bytes:
    """A small checkpoint with optimizer state and the metadata `portgd evaluate` uses."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 20))
    y = (X[:, 0] > 0).astype(np.int64)
    model = portgd.mlp(20, [4], 1, output="sigmoid", seed=0)
    opt = optim.Adam(lr=0.01)
    model.fit(X, y.reshape(-1, 1).astype(float), loss=losses.BinaryCrossEntropy(
        from_logits=False), optimizer=opt, epochs=1, batch_size=32, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        path = portgd.save(Path(folder) / "base.npz", model, opt, epoch=1, dataset="synthetic",
                           split={"seed": 0, "test_size": 0.2}, loss="bce")
        return path.read_bytes()


def check_checkpoint(result: Any) -> None:
    """A loaded checkpoint is a usable model: its parameters have the shapes of its layers."""
    model = result.model
    for layer in model.layers:
        for name, shape in layer.param_shapes().items():
            assert tuple(layer.params[name].shape) == shape, (name, shape)


def run_cli(*argv: str) -> tuple[int, str]:
    """``portgd ARGV`` in this process: (status, stderr); raises what escapes ``main``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(list(argv))
    return status, err.getvalue()


def evaluate_cli(path: Path) -> tuple[int, str]:
    return run_cli("evaluate", str(path))


def train_cli(path: Path) -> tuple[int, str]:
    return run_cli("train", "--data", str(path), "--epochs", "1", "--hidden", "4",
                   "--batch-size", "4", "--quiet")


def check_cli(result: tuple[int, str]) -> None:
    """Success, or status 2 (3: training diverged) with ``portgd: error:`` and no traceback."""
    status, err = result
    assert status == 0 or (status in (2, 3) and err.startswith("portgd: error: ")
                            and "Traceback" not in err), result


def cli_outcome(result: tuple[int, str]) -> str:
    return "loaded" if result[0] == 0 else "refused"


def idx_file(values: np.ndarray) -> bytes:
    """``values`` (uint8) in the IDX format."""
    head = bytes([0, 0, 0x08, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return head + values.astype(np.uint8).tobytes()


IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)  # three 4x5 "images"
LABELS = np.array([7, 0, 9], dtype=np.uint8)


def check_idx(result: Any) -> None:
    assert isinstance(result, np.ndarray) and result.dtype.isnative


def load_mnist(path: Path, companion: str, content: bytes) -> Any:
    """``portgd.datasets.mnist`` on the folder of ``path``, with a valid ``companion`` file."""
    (path.parent / companion).write_bytes(content)
    return datasets.mnist(path.parent)


def data_files() -> dict[str, bytes]:
    """The valid --data files: the same 12 samples as CSV, .npy and .npz."""
    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(12, 3)), 3)
    y = np.array([0, 1, 2] * 4)
    csv = "a,b,c,label\n" + "".join(
        f"{r[0]},{r[1]},{r[2]},{['cat', 'dog', 'emu'][k]}\n" for r, k in zip(X, y, strict=True))
    npy, npz = io.BytesIO(), io.BytesIO()
    np.save(npy, np.column_stack([X, y]))
    np.savez(npz, X=X, y=y)
    return {"csv": csv.encode(), "npy": npy.getvalue(), "npz": npz.getvalue()}


def check_data(result: Any) -> None:
    """A loaded --data file: finite features; a class label per sample, or finite targets."""
    X, y = np.asarray(result.X), np.asarray(result.y)
    assert X.ndim == 2 and np.isfinite(X).all(), X
    if result.num_classes is None:  # regression: (n, 1) targets
        assert y.shape == (X.shape[0], 1) and np.isfinite(y).all(), y
    else:
        assert y.shape == (X.shape[0],) and 0 <= y.min() and y.max() < result.num_classes, y


def check_mnist(result: Any) -> None:
    """A loaded MNIST set has one label 0..9 per flattened image, pixels in [0, 1]."""
    X, y = np.asarray(result.X), np.asarray(result.y)
    assert X.shape[0] == y.shape[0] and X.min() >= 0 and X.max() <= 1, X.shape
    assert y.min() >= 0 and y.max() <= 9


def npy_file_header(data: bytes, rng: random.Random) -> bytes:
    """A whole .npy file with its header replaced as ``npy_header`` replaces a member's."""
    return _new_npy_header("", data, rng)[1]


def npy_file_huge_shape(data: bytes, rng: random.Random) -> bytes:
    return _huge_shape("", data, rng)[1]


def npy_file_hostile_header(data: bytes, rng: random.Random) -> bytes:
    return _hostile_header("", data, rng)[1]


ZIP_MUTATIONS: dict[str, Mutation] = {
    "flip": flip, "truncate": truncate, "extend": extend, "member_flip": member_flip,
    "member_truncate": member_truncate, "npy_header": npy_header, "huge_shape": huge_shape,
    "hostile_header": hostile_header, "duplicate": duplicate, "drop": drop, "rename": rename,
    "json": json_header,
    "deflate": deflate,
}
NPY_MUTATIONS: dict[str, Mutation] = {
    "flip": flip, "truncate": truncate, "extend": extend, "npy_header": npy_file_header,
    "huge_shape": npy_file_huge_shape, "hostile_header": npy_file_hostile_header,
}
CSV_MUTATIONS: dict[str, Mutation] = {
    "flip": flip, "truncate": truncate, "extend": extend, "csv_token": csv_token,
    "csv_lines": csv_lines, "csv_bytes": csv_bytes,
}
IDX_MUTATIONS: dict[str, Mutation] = {
    "flip": flip, "truncate": truncate, "extend": extend, "idx_header": idx_header,
    "huge_shape": idx_huge_shape, "gzip": idx_gzip,
}


#: the loaders under fuzzing
LOADERS = ("checkpoint", "evaluate", "idx", "mnist-images", "mnist-labels", "csv", "npy",
           "npz", "train-csv")


def targets() -> dict[str, Target]:
    """Every loader under fuzzing, by name."""
    return {
        "checkpoint": Target("checkpoint", "case.npz", base_checkpoint(), ZIP_MUTATIONS,
                             portgd.load, check_checkpoint),
        "evaluate": Target("evaluate", "case.npz", base_checkpoint(), ZIP_MUTATIONS,
                           evaluate_cli, check_cli, cli_outcome),
        "idx": Target("idx", "case-idx3-ubyte", idx_file(IMAGES), IDX_MUTATIONS, read_idx,
                      check_idx),
        "mnist-images": Target(
            "mnist-images", "train-images-idx3-ubyte", idx_file(IMAGES), IDX_MUTATIONS,
            lambda path: load_mnist(path, "train-labels-idx1-ubyte", idx_file(LABELS)),
            check_mnist),
        "mnist-labels": Target(
            "mnist-labels", "train-labels-idx1-ubyte", idx_file(LABELS), IDX_MUTATIONS,
            lambda path: load_mnist(path, "train-images-idx3-ubyte", idx_file(IMAGES)),
            check_mnist),
        "train-csv": Target("train-csv", "data.csv", data_files()["csv"], CSV_MUTATIONS,
                            train_cli, check_cli, cli_outcome),
        **{
            kind: Target(kind, f"data.{kind}", content, mutations, datasets.from_file,
                         check_data)
            for (kind, content), mutations in zip(
                data_files().items(),
                (CSV_MUTATIONS, NPY_MUTATIONS,
                 {k: v for k, v in ZIP_MUTATIONS.items() if k != "json"}), strict=True)
        },
    }


# -- running cases --------------------------------------------------------------------------
@dataclass
class Report:
    """Outcomes of a run: counts by (mutation, outcome), and every escaped exception."""

    counts: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    findings: list[str] = field(default_factory=list)

    def total(self, outcome: str | None = None) -> int:
        return sum(n for (_, kind), n in self.counts.items() if outcome in (None, kind))


def corrupt(target: Target, seed: int, case: int, mutation: str | None = None) -> tuple[str, bytes]:
    """Case ``case`` of ``seed``: (mutation name, corrupted bytes); the same on every run.

    ``mutation`` forces the kind of corruption (by default the case's seed picks it).
    """
    rng = random.Random(f"{target.name}:{seed}:{case}:{mutation or ''}")
    name = mutation or rng.choice(sorted(target.mutations))
    return name, target.mutations[name](target.base, rng)


def run_case(target: Target, mutation: str, data: bytes, path: Path, report: Report,
             label: str) -> None:
    """Load ``data`` from ``path``; count the outcome, record an escape with its traceback."""
    path.write_bytes(data)
    try:
        result = target.load(path)
        target.check(result)
    except portgd.PortgdError:
        report.counts[mutation, "refused"] += 1
    except Exception:  # every other exception is exactly what the fuzzing looks for
        report.counts[mutation, "escaped"] += 1
        report.findings.append(f"{label} ({mutation}):\n{traceback.format_exc()}")
    else:
        report.counts[mutation, target.outcome(result)] += 1


def fuzz(target: Target, count: int, seed: int, folder: Path, first: int = 0,
         mutation: str | None = None) -> Report:
    """Cases ``first .. first + count - 1`` of ``seed`` against ``target``.

    ``mutation`` restricts the run to one kind of corruption.
    """
    report = Report()
    path = folder / target.filename
    for case in range(first, first + count):
        kind, data = corrupt(target, seed, case, mutation)
        label = f"--loader {target.name} --seed {seed} --case {case}"
        run_case(target, kind, data, path, report,
                 label + (f" --mutation {mutation}" if mutation else ""))
    return report


def run_atheris(target: Target, runs: int, folder: Path) -> None:
    """Coverage-guided fuzzing of ``target`` for ``runs`` inputs; does not return.

    libFuzzer mutates the file's bytes, starting from the valid file; for an ``.npz`` file
    half of the mutations change one member and write the archive back with valid CRCs,
    so that they reach the NPY and checkpoint layers. An escaped exception stops the run,
    and libFuzzer saves the input as ``crash-*`` in the current folder. A summary line is
    printed every 1000 inputs and after the last.
    """
    import atheris

    report = Report()
    path = folder / target.filename
    corpus = folder / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "valid").write_bytes(target.base)

    def one_input(data: bytes) -> None:
        run_case(target, "atheris", data, path, report, f"{target.name} atheris")
        done = report.total()
        if done % 1000 == 0 or done == runs:
            counts = {kind: report.total(kind) for kind in ("loaded", "refused", "escaped")}
            print(f"{target.name}: {done} inputs, {counts}", flush=True)
        if report.findings:
            raise RuntimeError(report.findings[-1])

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if target.filename.endswith(".npz") and rng.random() < 0.5:
            try:
                entries = members(data)
            except Exception:  # this input is no valid archive: mutate its bytes instead
                entries = []
            if entries:
                i = _pick(entries, rng)
                name, blob = entries[i]
                entries[i] = (name, atheris.Mutate(blob, len(blob) + 64))
                return archive(entries)[:max_size]
        return atheris.Mutate(data, max_size)

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-max_len={4 * len(target.base)}",
                   "-seed=1", str(corpus)], one_input, custom_mutator=mutate)
    atheris.Fuzz()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loader", default="all", choices=["all", *LOADERS],
                        help="which loader (evaluate: portgd evaluate FILE; mnist-images, "
                             "mnist-labels: portgd.datasets.mnist on a folder with one "
                             "corrupted file; csv, npy, npz: portgd.datasets.from_file, "
                             "as portgd train --data reads; train-csv: portgd train --data "
                             "FILE.csv --epochs 1); default: all")
    parser.add_argument("--count", type=int, default=10_000, help="cases per loader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=["random", "atheris"], default="random")
    parser.add_argument("--mutation", help="only this kind of corruption (default: any)")
    parser.add_argument("--case", type=int, help="run only this case (with --seed)")
    parser.add_argument("--keep", type=Path, help="write the corrupted file(s) into this folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.engine == "atheris" and args.loader == "all":
        raise SystemExit("--engine atheris fuzzes one loader per process: give --loader")
    every = targets()
    chosen = list(every.values()) if args.loader == "all" else [every[args.loader]]
    escaped = 0
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for target in chosen:
            if args.engine == "atheris":
                run_atheris(target, args.count, folder)  # exits the process when done
            if args.case is not None:
                report = fuzz(target, 1, args.seed, folder, args.case, args.mutation)
            else:
                report = fuzz(target, args.count, args.seed, folder, 0, args.mutation)
            by_outcome = {kind: report.total(kind) for kind in ("loaded", "refused", "escaped")}
            print(f"{target.name}: {report.total()} cases, {by_outcome}")
            for mutation in sorted(target.mutations):
                row = {kind: report.counts[mutation, kind] for kind in by_outcome}
                print(f"  {mutation:16} {row}")
            for finding in report.findings:
                print(finding)
            escaped += report.total("escaped")
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
