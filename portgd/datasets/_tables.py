"""Your own data: CSV files with a header, ``.npy`` tables and ``.npz`` pairs of X and y.

Every malformed input is a :class:`~portgd.errors.DatasetError` that names the file and, for
a CSV file, the line (1-based, the header is line 1) and the column, and says why.

* ``.csv``: a header row of column names, then one sample per line, comma-separated. The
  feature columns hold numbers; the target column holds numbers or class names.
* ``.npy``: a 2-D numeric array, one sample per row; the target is one of its columns.
* ``.npz``: the entries ``X`` (``(n, features)``) and ``y`` (``(n,)`` or ``(n, 1)``).

The target column is given by name (CSV) or by index (any format; negative counts from the
end); the default is the last column. Whether the task is classification or regression is
``task``: ``"auto"`` takes class names, and whole-number targets with at most
``MAX_AUTO_CLASSES`` distinct values, as classes, and anything else as regression.
Class labels are the sorted distinct target values, numbered ``0..k-1`` in that order
(``info["classes"]`` keeps the original values).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DatasetError
from ._dataset import Dataset, _build, _target

if TYPE_CHECKING:
    import numpy as np

#: File suffixes :func:`from_file` reads.
SUFFIXES = (".csv", ".npy", ".npz")
#: ``task="auto"``: whole-number targets with at most this many distinct values are classes.
MAX_AUTO_CLASSES = 100
TASKS = ("auto", "classification", "regression")


@dataclass(frozen=True)
class Table:
    """A file's contents on the host: features, the raw target column and the names."""

    X: np.ndarray  # (n, features) float64
    y: np.ndarray | None  # (n,) float64 or str; None when the file has no target
    features: tuple[str, ...]
    target: str | None


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError(
            f"{path}: portgd reads {', '.join(SUFFIXES)} files, not "
            f"{suffix or 'a file without a suffix'!r}; save the table as CSV with a header "
            "row, or as .npy / .npz"
        )
    return suffix


def _column_index(target: str | int | None, names: Sequence[str], path: Path) -> int:
    """The index of the target column in ``names``, by name or (possibly negative) index."""
    n = len(names)
    if target is None:
        return n - 1
    if isinstance(target, str) and target in names:
        return list(names).index(target)
    text = str(target).strip()
    try:
        index = int(text)
    except ValueError:
        shown = ", ".join(repr(name) for name in names[:12]) + (", ..." if n > 12 else "")
        raise DatasetError(
            f"{path} has no column {target!r}; its columns are {shown} (or give an index "
            f"0..{n - 1})"
        ) from None
    if not -n <= index < n:
        raise DatasetError(
            f"{path}: target column index {index} is out of range for {n} columns "
            f"(use 0..{n - 1}, or -1 for the last)"
        )
    return index % n


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _read_csv(path: Path, target: str | int | None, need_target: bool,
              features: Sequence[str] | None) -> Table:
    """Parse a CSV file line by line, so that every problem has a line number."""
    import numpy as np

    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows: list[list[float]] = []
    labels: list[str] = []
    with handle:
        reader = csv.reader(_utf8_lines(handle, path), strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path} is empty; a CSV file needs a header row of "
                                   "column names, then one sample per line")
            names = [name.strip() for name in header]
            _check_header(names, path)
            if features is not None:  # prediction: pick the model's features by name
                missing = [name for name in features if name not in names]
                if missing:
                    raise DatasetError(
                        f"{path} lacks the column(s) {', '.join(map(repr, missing[:5]))} the "
                        f"model was trained on; its columns are {', '.join(map(repr, names))}"
                    )
                keep = [names.index(name) for name in features]
                target_at = None
            else:
                target_at = _column_index(target, names, path) if need_target else None
                keep = [i for i in range(len(names)) if i != target_at]
            if not keep:
                raise DatasetError(f"{path} has no feature column besides the target "
                                   f"{names[target_at]!r}")
            for fields in reader:
                line = reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue  # blank lines (a trailing newline) are not samples
                if len(fields) != len(names):
                    raise DatasetError(
                        f"{path}, line {line}: {len(fields)} fields, but the header has "
                        f"{len(names)} columns"
                    )
                row = []
                for i in keep:
                    value = _number(fields[i])
                    if value is None or not math.isfinite(value):
                        raise DatasetError(_bad_cell(path, line, names[i], fields[i]))
                    row.append(value)
                rows.append(row)
                if target_at is not None:
                    label = fields[target_at].strip()
                    if not label:
                        raise DatasetError(f"{path}, line {line}: the target column "
                                           f"{names[target_at]!r} is empty")
                    labels.append(label)
        except csv.Error as exc:
            raise DatasetError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not rows:
        raise DatasetError(f"{path} has a header but no samples")
    X = np.asarray(rows, dtype=np.float64)
    feature_names = tuple(names[i] for i in keep)
    if target_at is None:
        return Table(X, None, feature_names, None)
    return Table(X, np.asarray(labels), feature_names, names[target_at])


def _utf8_lines(handle: Any, path: Path) -> Any:
    """The lines of a binary file as text, each decoded alone so an error has its line."""
    for number, raw in enumerate(handle, 1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{path}, line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                f"position {exc.start + 1}); save the file as UTF-8 CSV"
            ) from None


def _check_header(names: list[str], path: Path) -> None:
    if any(not name for name in names):
        blank = [i for i, name in enumerate(names) if not name]
        raise DatasetError(
            f"{path}, line 1: column {blank[0]} has no name; the first line must be a header "
            "of column names"
        )
    if all(_number(name) is not None for name in names):
        raise DatasetError(
            f"{path}, line 1: the first line holds numbers, not column names; add a header "
            "row (e.g. x1,x2,...,target)"
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DatasetError(f"{path}, line 1: the column name {name!r} appears twice")
        seen.add(name)


def _bad_cell(path: Path, line: int, column: str, text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    if not text.strip():
        why = "is empty; fill in or drop the sample"
    elif _number(text) is not None:
        why = f"is {shown!r}, not a finite number; portgd trains on finite numbers only"
    else:
        why = f"is {shown!r}, not a number"
    return f"{path}, line {line}: column {column!r} {why}"


def _signature(path: Path, what: str) -> bytes:
    """The first bytes of ``path``: NumPy's or zip's signature, else DatasetError."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not (magic.startswith(b"\x93NUMPY") or magic.startswith(b"PK")):
        raise DatasetError(
            f"{path} is not a readable {what} file: it starts with neither NumPy's nor zip's "
            "signature; save it with numpy.save or numpy.savez"
        )
    return magic


def _advice(what: str) -> str:
    return f"it is not a readable {what} file; save it again with numpy.save or numpy.savez"


def _numeric(array: Any, path: Path, what: str) -> np.ndarray:
    """``array`` as float64, or DatasetError naming the first non-finite row."""
    import numpy as np

    if array.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: {what} has dtype {array.dtype}; portgd needs numbers")
    with np.errstate(over="ignore"):  # a longdouble beyond float64 becomes inf, refused next
        values = array.astype(np.float64)
    if values.dtype.kind == "f" and values.size:
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DatasetError(
                f"{path}: {what} row {row} (0-based) holds {values[bad][0]}; portgd trains on "
                "finite numbers only"
            )
    return values


def _check_range(values: np.ndarray, dtype: str, path: Path, what: str) -> None:
    """Refuse values that are finite as float64 but would overflow to inf in ``dtype``."""
    import numpy as np

    limit = float(np.finfo(dtype).max)
    big = np.abs(values) > limit
    if big.any():
        row = int(np.argwhere(big)[0][0])
        raise DatasetError(
            f"{path}: {what} in row {row} (0-based) is {values[big][0]:g}, beyond the largest "
            f"{dtype} ({limit:g}); rescale the data, or use float64 (--dtype float64)"
        )


def _read_npy(path: Path, target: str | int | None, need_target: bool) -> Table:
    from ..io.npz import NUMBER_KINDS, TEXT_KINDS, read_npy_file  # NumPy, on first use

    if not _signature(path, ".npy").startswith(b"\x93NUMPY"):
        raise DatasetError(f"{path} is an .npz archive saved under a .npy name")
    array = read_npy_file(path, DatasetError, _advice(".npy"), NUMBER_KINDS + TEXT_KINDS)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < (2 if need_target else 1):
        raise DatasetError(
            f"{path} holds an array of shape {array.shape}; a .npy table is 2-D, one sample "
            f"per row{', with the target in one column' if need_target else ''}"
        )
    values = _numeric(array, path, "the table")
    names = [str(i) for i in range(values.shape[1])]
    if not need_target:
        return Table(values, None, tuple(names), None)
    at = _column_index(target, names, path)
    keep = [i for i in range(values.shape[1]) if i != at]
    return Table(values[:, keep], values[:, at], tuple(names[i] for i in keep), names[at])


def _read_npz(path: Path, need_target: bool) -> Table:
    from ..io.npz import NUMBER_KINDS, TEXT_KINDS, open_npz  # NumPy, on first use

    if _signature(path, ".npz").startswith(b"\x93NUMPY"):
        raise DatasetError(f"{path} is a .npy array saved under an .npz name")
    kinds = NUMBER_KINDS + TEXT_KINDS
    with open_npz(path, DatasetError, _advice(".npz")) as archive:
        entries = set(archive.names)
        if "X" not in entries or (need_target and "y" not in entries):
            raise DatasetError(
                f"{path} has the entries {sorted(entries)}; a data .npz holds 'X' (features, "
                "one sample per row) and 'y' (targets): numpy.savez(path, X=X, y=y)"
            )
        X = archive.array("X", kinds)
        y = archive.array("y", kinds) if need_target else None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DatasetError(f"{path}: X has shape {X.shape}; it must be (samples, features)")
    values = _numeric(X, path, "X")
    names = tuple(str(i) for i in range(values.shape[1]))
    if y is None:
        return Table(values, None, names, None)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != values.shape[0]:
        raise DatasetError(
            f"{path}: y has shape {y.shape} but X has {values.shape[0]} rows; y must be "
            "(samples,) or (samples, 1)"
        )
    if y.dtype.kind in "US":
        return Table(values, y.astype(str), names, "y")
    return Table(values, _numeric(y, path, "y"), names, "y")


def read_table(
    path: str | os.PathLike[str],
    target: str | int | None = None,
    *,
    need_target: bool = True,
    features: Sequence[str] | None = None,
) -> Table:
    """The host contents of a ``.csv``, ``.npy`` or ``.npz`` data file (see the module doc).

    ``need_target=False`` reads features only (for prediction): a CSV file is then read by
    the column names in ``features`` when given, a ``.npy`` file is all features.

    Raises:
        DatasetError: an unknown suffix, a missing or unreadable file, or malformed
            contents (for CSV: the line, the column and the reason).
    """
    path = Path(path).expanduser()
    suffix = _suffix(path)
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not a data file")
    if suffix == ".csv":
        return _read_csv(path, target, need_target, features if not need_target else None)
    if target not in (None, "y") and suffix == ".npz":  # 'y': the name info["target"] records
        raise DatasetError(f"{path}: an .npz data file holds its targets in 'y'; leave out "
                           "the target column")
    if suffix == ".npy":
        return _read_npy(path, target, need_target)
    return _read_npz(path, need_target)


def _known_classes(y: np.ndarray, classes: Sequence[Any], path: Path) -> np.ndarray:
    """Labels of ``y`` by their position in ``classes`` (the training data's classes)."""
    import numpy as np

    index = {str(c): i for i, c in enumerate(classes)}
    for c in classes:  # numeric classes also match their float spelling (1 and 1.0)
        number = _number(str(c))
        if number is not None:
            index.setdefault(repr(number), index[str(c)])
    labels = np.empty(len(y), dtype=np.int64)
    for row, value in enumerate(y.tolist()):
        key = str(value)
        number = _number(key)
        found = index.get(key, index.get(repr(number)) if number is not None else None)
        if found is None:
            raise DatasetError(
                f"{path}: sample {row} (0-based) has the target {value!r}, which is not one of "
                f"the model's classes {list(classes)}"
            )
        labels[row] = found
    return labels


def _classes(y: np.ndarray, task: str, path: Path) -> tuple[np.ndarray, list[Any]] | None:
    """``(labels 0..k-1, original class values)`` for a classification target, else None."""
    import numpy as np

    numbers = y.dtype.kind == "f"
    if not numbers:
        parsed = [_number(v) for v in y.tolist()]
        if all(p is not None and math.isfinite(p) for p in parsed):
            y, numbers = np.asarray(parsed, dtype=np.float64), True
    if task == "regression":
        if not numbers:
            bad = next(v for v in y.tolist() if _number(v) is None)
            raise DatasetError(
                f"{path}: the target {bad!r} is not a number, so it cannot be a regression "
                "target; leave out --loss mse to train a classifier"
            )
        return None
    values, labels = np.unique(y, return_inverse=True)
    whole = not numbers or bool(np.all(values == np.round(values)))
    if task == "auto" and (not whole or len(values) > MAX_AUTO_CLASSES):
        return None
    if len(values) < 2:
        raise DatasetError(f"{path}: every sample has the target {values[0].item()!r}; "
                           "classification needs at least two classes")
    classes = [v.item() if hasattr(v, "item") else v for v in values]
    if numbers:
        classes = [int(v) if float(v).is_integer() else float(v) for v in classes]
    return labels.astype(np.int64), classes


def from_file(
    path: str | os.PathLike[str],
    target: str | int | None = None,
    *,
    task: str = "auto",
    classes: Sequence[Any] | None = None,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
) -> Dataset:
    """A Dataset from your own ``.csv``, ``.npy`` or ``.npz`` file (see the module doc).

    Args:
        path: the file.
        target: the target column, by name (CSV) or index; default: the last column
            (``y`` of an ``.npz``, whose target can only be ``"y"``).
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        classes: the class values of labels ``0..k-1`` (a model's training classes), so
            that a file holding only some of them is labelled the same way; implies
            classification.
        backend: the backend the arrays go to (default: the active backend).
        device: the device on that backend (default: its default device).
        dtype: the float dtype of ``X`` (and of regression targets).

    ``info`` holds ``source`` (the path), ``features`` (column names), ``target`` (its name)
    and, for classification, ``classes`` (the original target values of labels 0..k-1).

    Raises:
        DatasetError: as :func:`read_table`, or targets unfit for the task.
    """
    import numpy as np

    if task not in TASKS:
        raise DatasetError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    chosen, dtype = _target(backend, device, dtype)
    path = Path(path).expanduser()
    table = read_table(path, target)
    assert table.y is not None
    info: dict[str, Any] = {"source": str(path), "features": list(table.features),
                            "target": table.target}
    found = None if classes is None else (_known_classes(table.y, classes, path), list(classes))
    if classes is None:
        found = _classes(table.y, task, path)
    _check_range(table.X, dtype, path, "a feature")
    if found is None:
        y = table.y.astype(np.float64).reshape(-1, 1)
        _check_range(y, dtype, path, "the target")
        num_classes = None
    else:
        y, info["classes"] = found
        num_classes = len(info["classes"])
    return _build(chosen, dtype, table.X, y, name=path.name, num_classes=num_classes,
                  feature_shape=(table.X.shape[1],), info=info)
