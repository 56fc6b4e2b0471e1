"""portgd.io.npz, the validated NPY/NPZ reader: every valid array reads back exactly as NumPy
wrote it, whatever its dtype, byte order, memory order or NPY version."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from portgd.errors import DatasetError
from portgd.io import npz as _npz

ARRAYS = {
    "float32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "big-endian float64": np.linspace(-1, 1, 6).astype(">f8"),
    "fortran": np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)),
    "uint8": np.arange(250, 256, dtype=np.uint8),
    "bool": np.array([[True, False], [False, True]]),
    "int64": np.array([-(2**62), 0, 2**62], dtype=np.int64),
    "scalar": np.array(3.5),
    "empty": np.zeros((0, 5), dtype=np.float64),
    "text": np.array(["cat", "dog", "emu"]),
}


def _npy(array, version=None):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_valid_npy_reads_back_exactly(tmp_path, name, version):
    array = ARRAYS[name]
    path = tmp_path / "a.npy"
    path.write_bytes(_npy(array, version))
    got = _npz.read_npy_file(path, DatasetError, "advice", _npz.NUMBER_KINDS + _npz.TEXT_KINDS)
    assert got.shape == array.shape and got.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, array)
    assert got.flags.writeable and got.flags.c_contiguous and got.dtype.isnative


def test_npz_members_read_back_and_text_needs_asking_for(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **{name.replace(" ", "_"): a for name, a in ARRAYS.items()})
    with _npz.open_npz(path, DatasetError, "advice") as archive:
        assert sorted(archive.names) == sorted(name.replace(" ", "_") for name in ARRAYS)
        np.testing.assert_array_equal(archive.array("fortran"), ARRAYS["fortran"])
        np.testing.assert_array_equal(archive.array("text", "U"), ARRAYS["text"])
        with pytest.raises(DatasetError, match=r"a.npz: member 'text.npy' declares the dtype"):
            archive.array("text")


def test_entries_other_than_npy_are_not_arrays(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("notes.txt", b"hello")
        out.writestr("X.npy", _npy(ARRAYS["float32"]))
    with _npz.open_npz(path, DatasetError, "advice") as archive:
        assert archive.names == ["X"]
        with pytest.raises(DatasetError, match=r"member 'notes\.npy' is missing"):
            archive.array("notes")
