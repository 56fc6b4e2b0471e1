"""Your own data: CSV, .npy and .npz files, and every malformed file refused with its reason."""

from __future__ import annotations

import random

import numpy as np
import pytest

from portgd.datasets import from_file, read_table
from portgd.errors import DatasetError

CSV = "a,b,label\n1,2,cat\n3,4.5,dog\n-1,0,cat\n2,2,bird\n"


def write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_csv_with_class_names(tmp_path):
    data = from_file(write(tmp_path, CSV), "label", backend="numpy")
    np.testing.assert_array_equal(data.X, np.array([[1, 2], [3, 4.5], [-1, 0], [2, 2]],
                                                   dtype=np.float32))
    assert data.info["classes"] == ["bird", "cat", "dog"]  # sorted, labels 0..2
    np.testing.assert_array_equal(data.y, [1, 2, 1, 0])
    assert data.num_classes == 3 and data.name == "d.csv"
    assert data.info["features"] == ["a", "b"] and data.info["target"] == "label"


def test_target_by_index_name_or_default(tmp_path):
    path = write(tmp_path, "x,t,z\n1,0,5\n2,1,6\n3,0,7\n")
    by_name = from_file(path, "t", backend="numpy")
    by_index = from_file(path, 1, backend="numpy")
    by_text = from_file(path, "-2", backend="numpy")
    for data in (by_index, by_text):
        np.testing.assert_array_equal(data.X, by_name.X)
        np.testing.assert_array_equal(data.y, by_name.y)
    np.testing.assert_array_equal(by_name.X, [[1, 5], [2, 6], [3, 7]])
    last = from_file(path, backend="numpy")  # the last column, z: 3 whole values -> classes
    assert last.info["target"] == "z" and last.num_classes == 3


def test_auto_task_and_forced_tasks(tmp_path):
    path = write(tmp_path, "x,y\n1,0.5\n2,1.5\n3,2.25\n")
    data = from_file(path, backend="numpy", dtype="float64")
    assert data.task == "regression" and data.y.shape == (3, 1)
    np.testing.assert_array_equal(data.y[:, 0], [0.5, 1.5, 2.25])
    whole = write(tmp_path, "x,y\n1,3\n2,7\n3,3\n", "w.csv")
    assert from_file(whole, backend="numpy").info["classes"] == [3, 7]
    assert from_file(whole, task="regression", backend="numpy").task == "regression"
    with pytest.raises(DatasetError, match="not a number, so it cannot be a regression"):
        from_file(write(tmp_path, CSV), task="regression", backend="numpy")


def test_known_classes_label_a_file_holding_some_of_them(tmp_path):
    path = write(tmp_path, "a,b,label\n1,2,dog\n3,4,dog\n")
    data = from_file(path, classes=["bird", "cat", "dog"], backend="numpy")
    np.testing.assert_array_equal(data.y, [2, 2])
    assert data.num_classes == 3
    with pytest.raises(DatasetError, match=r"sample 0 \(0-based\) has the target 'dog'"):
        from_file(path, classes=["bird", "cat"], backend="numpy")
    numbers = write(tmp_path, "a,t\n1,1.0\n2,0\n", "n.csv")
    np.testing.assert_array_equal(from_file(numbers, classes=[0, 1], backend="numpy").y, [1, 0])


def test_npy_table_and_npz_pair(tmp_path):
    table = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "t.npy", table)
    data = from_file(tmp_path / "t.npy", 0, task="regression", backend="numpy", dtype="float64")
    np.testing.assert_array_equal(data.X, table[:, 1:])
    np.testing.assert_array_equal(data.y[:, 0], table[:, 0])
    np.savez(tmp_path / "p.npz", X=table, y=np.array([0, 1, 1, 0]))
    pair = from_file(tmp_path / "p.npz", backend="numpy")
    np.testing.assert_array_equal(pair.X, table)
    np.testing.assert_array_equal(pair.y, [0, 1, 1, 0])
    assert read_table(tmp_path / "p.npz", need_target=False).y is None


def test_prediction_reads_the_model_features_by_name(tmp_path):
    path = write(tmp_path, "b,extra,a\n2,9,1\n4,9,3\n")
    table = read_table(path, need_target=False, features=["a", "b"])
    np.testing.assert_array_equal(table.X, [[1, 2], [3, 4]])
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) 'c'"):
        read_table(path, need_target=False, features=["a", "c"])


def test_blank_lines_quotes_and_bom_are_fine(tmp_path):
    path = write(tmp_path, b'\xef\xbb\xbf"a","b"\r\n1,"2"\r\n\r\n3,4\r\n\r\n')
    table = read_table(path)
    assert table.features == ("a",) and table.target == "b"
    np.testing.assert_array_equal(table.X, [[1], [3]])


# -- the bad-input matrix: every malformed file is a DatasetError with its reason -------------
BAD_CSV = [
    ("", "is empty; a CSV file needs a header row"),
    ("a,b\n", "has a header but no samples"),
    ("1,2\n3,4\n", "line 1: the first line holds numbers, not column names"),
    ("a,a\n1,2\n", "line 1: the column name 'a' appears twice"),
    ("a,,c\n1,2,3\n", "line 1: column 1 has no name"),
    ("a,b,c\n1,2,3\n4,5\n", "line 3: 2 fields, but the header has 3 columns"),
    ("a,b,c\n1,2,3\n4,5,6,7\n", "line 3: 4 fields, but the header has 3 columns"),
    ("a,b,c\n1,2,3\n4,5,6\n7,abc,9\n", "line 4: column 'b' is 'abc', not a number"),
    ("a,b,c\n1,,3\n", "line 2: column 'b' is empty"),
    ("a,b,c\nnan,1,1\n", "line 2: column 'a' is 'nan', not a finite number"),
    ("a,b,c\n1,-inf,1\n", "line 2: column 'b' is '-inf', not a finite number"),
    ("a,b,c\n1,1e999,1\n", "line 2: column 'b' is '1e999', not a finite number"),
    ("a,b,c\n1,2,\n", "line 2: the target column 'c' is empty"),
    ("a,b\n1,x\n2,x\n", "every sample has the target 'x'"),
    ("t\n1\n2\n", "has no feature column besides the target 't'"),
    (b"a,b\n1,2\n3,\xff4\n", "line 3: not UTF-8 text (byte 0xff at position 3)"),
    ('a,b\n1,"2\n', "line 2: not valid CSV"),
]


@pytest.mark.parametrize("text,message", BAD_CSV)
def test_bad_csv_names_the_line_and_the_reason(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DatasetError) as info:
        from_file(path, backend="numpy")
    assert message in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "target,message",
    [("z", "has no column 'z'; its columns are 'a', 'b', 'c'"),
     (3, "target column index 3 is out of range for 3 columns"),
     (-4, "target column index -4 is out of range")],
)
def test_bad_target_column(tmp_path, target, message):
    with pytest.raises(DatasetError, match=message):
        from_file(write(tmp_path, "a,b,c\n1,2,0\n2,3,1\n"), target, backend="numpy")


def bad_arrays(tmp_path):
    np.save(tmp_path / "1d.npy", np.arange(4.0))
    np.save(tmp_path / "obj.npy", np.array([1, "x"], dtype=object), allow_pickle=True)
    np.save(tmp_path / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "nan.npy", np.array([[1.0, 2.0], [np.nan, 1.0]]))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "nan.npy").read_bytes()[:-5])
    np.savez(tmp_path / "noy.npz", X=np.ones((2, 2)))
    np.savez(tmp_path / "x1d.npz", X=np.ones(3), y=np.ones(3))
    np.savez(tmp_path / "ylen.npz", X=np.ones((3, 2)), y=np.ones(2))
    np.savez(tmp_path / "ynan.npz", X=np.ones((2, 2)), y=np.array([0.0, np.inf]))
    np.savez(tmp_path / "yobj.npz", X=np.ones((2, 2)), y=np.array([{}, 1], dtype=object))
    with open(tmp_path / "arr.npz", "wb") as handle:
        np.save(handle, np.ones((2, 2)))
    (tmp_path / "arr.npy.npz").write_bytes(b"garbage")
    (tmp_path / "t.txt").write_text("a,b\n1,2\n")
    (tmp_path / "dir.csv").mkdir()


BAD_FILES = [
    ("1d.npy", "holds an array of shape (4,); a .npy table is 2-D"),
    ("obj.npy", "holds Python objects (pickled)"),
    ("str.npy", "the table has dtype <U1; portgd needs numbers"),
    ("nan.npy", "the table row 1 (0-based) holds nan"),
    ("empty.npy", "holds an array of shape (0, 3)"),
    ("trunc.npy", "is not a readable .npy file"),
    ("noy.npz", "has the entries ['X']; a data .npz holds 'X'"),
    ("x1d.npz", "X has shape (3,); it must be (samples, features)"),
    ("ylen.npz", "y has shape (2,) but X has 3 rows"),
    ("ynan.npz", "y row 1 (0-based) holds inf"),
    ("yobj.npz", "holds Python objects"),
    ("arr.npz", "is a .npy array saved under an .npz name"),
    ("arr.npy.npz", "is not a readable .npz file"),
    ("t.txt", "portgd reads .csv, .npy, .npz files, not '.txt'"),
    ("dir.csv", "is a folder, not a data file"),
    ("missing.csv", "does not exist"),
    ("missing.npy", "does not exist"),
]


@pytest.mark.parametrize("name,message", BAD_FILES)
def test_bad_array_files(tmp_path, name, message):
    bad_arrays(tmp_path)
    with pytest.raises(DatasetError) as info:
        from_file(tmp_path / name, backend="numpy")
    assert message in str(info.value)


def test_random_damage_is_always_a_dataset_error(tmp_path):
    """Seeded byte-level damage to a valid CSV: a Dataset or a DatasetError, nothing else."""
    rng = random.Random(0)
    good = (CSV + CSV.split("\n", 1)[1] * 2).encode()
    path = tmp_path / "f.csv"
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[at] = rng.randrange(256)
            elif action < 0.7:
                del data[at]
            else:
                data.insert(at, rng.choice(b',"\n\r\x00 e.-9'))
        path.write_bytes(bytes(data))
        try:
            from_file(path, backend="numpy")
            outcomes["ok"] += 1
        except DatasetError:
            outcomes["refused"] += 1
    assert outcomes["ok"] > 10 and outcomes["refused"] > 100, outcomes
