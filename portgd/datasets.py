"""Datasets: scikit-learn's 8x8 digits, MNIST IDX files and seeded synthetic data.

Everything here is host I/O. Files are read and synthetic data is drawn on the host as NumPy
arrays (the host format) and moved to the chosen backend once, through
``Backend.asarray(host, dtype=...)``. So the same call gives the same numbers on every backend,
and nothing here depends on a GPU library.

Every loader returns a :class:`Dataset`, which unpacks as ``X, y = digits()``:

* ``X``: float features ``(n_samples, n_features)`` in ``dtype`` (default ``float32``);
  images are flattened row by row, their shape is kept in ``Dataset.feature_shape``;
* ``y``: class indices ``(n_samples,)`` as ``int64`` for classification, float targets
  ``(n_samples, n_targets)`` in ``dtype`` for regression.

NumPy is imported inside the functions, not at module level, so ``import portgd`` stays free
of array libraries even when it imports this module.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import math
import numbers
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from ._files import write_atomically
from ._registry import backend_of, get_backend
from .errors import BackendMismatchError, DatasetError

if TYPE_CHECKING:
    import numpy as np

    from .backends import Backend

__all__ = [
    "Dataset",
    "SPECS",
    "Standardizer",
    "check_labels",
    "digits",
    "download_mnist",
    "load",
    "mnist",
    "read_idx",
    "standardize",
    "synthetic_classification",
    "synthetic_regression",
    "train_test_split",
]

#: The dataset specs :func:`load` (and the command line) understands.
SPECS = {
    "digits": "scikit-learn's 8x8 handwritten digits, 10 classes (1797 samples)",
    "digits01": "the digits 0 and 1 only, a binary task (360 samples)",
    "mnist:PATH": "MNIST IDX files in the folder PATH, training split (60000 samples)",
    "synthetic": "seeded Gaussian blobs, 2 classes, 20 features (1000 samples)",
}

DATA_INSTALL_HINT = "pip install 'portgd[data]'"


# -- the result type ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Features and targets on one backend, with what a training script needs to know.

    Unpacks as ``X, y = dataset``.

    Attributes:
        X: features ``(n_samples, n_features)``, a floating array on ``backend``.
        y: class indices ``(n_samples,)`` of dtype int64 when ``num_classes`` is set;
            float targets ``(n_samples, n_targets)`` for regression.
        name: short name (``"digits"``, ``"digits01"``, ``"mnist"``, ``"synthetic"``, ...).
        num_classes: number of classes, or None for a regression dataset.
        feature_shape: the shape of one sample before flattening (``(8, 8)`` for digits,
            ``(28, 28)`` for MNIST, ``(n_features,)`` for synthetic data).
        backend: the Backend that holds ``X`` and ``y``.
        info: host-side extras (read-only mapping), e.g. the MNIST split and folder, or the
            true coefficients of a synthetic regression.
    """

    X: Any
    y: Any
    name: str
    num_classes: int | None
    feature_shape: tuple[int, ...]
    backend: Backend
    info: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __iter__(self) -> Iterator[Any]:
        return iter((self.X, self.y))

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return "regression" if self.num_classes is None else "classification"

    def split(
        self, test_size: float | int = 0.2, *, seed: int = 0, stratify: bool = False
    ) -> tuple[Dataset, Dataset]:
        """``(train, test)`` Datasets from :func:`train_test_split` of this one."""
        X_train, X_test, y_train, y_test = train_test_split(
            self.X, self.y, test_size, seed=seed, stratify=stratify
        )
        return replace(self, X=X_train, y=y_train), replace(self, X=X_test, y=y_test)

    def __repr__(self) -> str:
        def describe(a: Any) -> str:
            return f"{tuple(a.shape)} {_dtype_str(a.dtype)}"

        classes = "regression" if self.num_classes is None else f"num_classes={self.num_classes}"
        return (
            f"Dataset({self.name!r}, X={describe(self.X)}, y={describe(self.y)}, {classes}, "
            f"backend={self.backend.name} on {self.backend.device_name!r})"
        )


def _dtype_str(dtype: Any) -> str:
    from .backends import dtype_name

    return dtype_name(dtype)


def _target(backend: Any, device: Any, dtype: Any) -> tuple[Backend, str]:
    """The Backend to put data on and the float dtype's name; fails before any work."""
    from .backends import dtype_name
    from .backends._base import FLOAT_NAMES

    chosen = get_backend(backend, device)
    name = dtype_name(dtype)
    if name not in FLOAT_NAMES:
        raise DatasetError(
            f"dtype must be a floating dtype ({', '.join(FLOAT_NAMES)}) for the features, "
            f"got {dtype!r}; labels are int64 regardless"
        )
    chosen.dtype(name)  # DTypeNotSupportedError here, before reading any file
    return chosen, name


def _host_float(dtype: str) -> Any:
    """The host dtype to compute features in before the (exact or rounding) transfer."""
    import numpy as np

    return np.float64 if dtype == "float64" else np.float32


def _build(
    backend: Backend,
    dtype: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    num_classes: int | None,
    feature_shape: tuple[int, ...],
    info: Mapping[str, Any] | None = None,
) -> Dataset:
    y_dtype = "int64" if num_classes is not None else dtype
    return Dataset(
        X=backend.asarray(X, dtype=dtype),
        y=backend.asarray(y, dtype=y_dtype),
        name=name,
        num_classes=num_classes,
        feature_shape=tuple(int(d) for d in feature_shape),
        backend=backend,
        info=MappingProxyType(dict(info or {})),
    )


def _count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DatasetError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise DatasetError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


# -- digits ---------------------------------------------------------------------------------
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def _digits_file() -> Path:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn (which is slow)."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise DatasetError(
            "the digits dataset ships with scikit-learn, which is not installed; "
            f"install it with {DATA_INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations or ():
        candidate = Path(folder, *DIGITS_FILE)
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"scikit-learn is installed but has no {'/'.join(DIGITS_FILE)}; its installation "
        f"looks incomplete: reinstall it with {DATA_INSTALL_HINT}"
    )


@functools.cache
def _digits_host() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) uint8 in 0..16, labels (1797,) int64), read once, read-only."""
    import numpy as np

    path = _digits_file()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DatasetError(
            f"cannot parse {path} ({exc}); reinstall scikit-learn with {DATA_INSTALL_HINT}"
        ) from exc
    if table.shape[1] != 65 or table.shape[0] == 0:
        raise DatasetError(
            f"{path} has shape {table.shape}, expected rows of 64 pixels and a label; "
            f"reinstall scikit-learn with {DATA_INSTALL_HINT}"
        )
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(
            f"{path} holds values outside 0..16 (pixels) or 0..9 (labels); "
            f"reinstall scikit-learn with {DATA_INSTALL_HINT}"
        )
    pixels = pixels.astype(np.uint8)
    labels = labels.copy()
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def _digit_classes(classes: Sequence[int]) -> tuple[int, ...]:
    try:
        chosen = tuple(classes)
    except TypeError:
        raise DatasetError(f"classes must be a sequence of digits, got {classes!r}") from None
    for c in chosen:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c <= 9:
            raise DatasetError(f"classes must be digits 0..9, got {c!r} in {classes!r}")
    if len(set(chosen)) != len(chosen):
        raise DatasetError(f"classes must not repeat a digit, got {classes!r}")
    if len(chosen) < 2:
        raise DatasetError(f"classes needs at least two digits to classify, got {classes!r}")
    return tuple(int(c) for c in chosen)


def digits(
    classes: Sequence[int] | None = None,
    *,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
) -> Dataset:
    """The 8x8 handwritten digits that ship with scikit-learn (UCI optical digits test set).

    ``X`` is ``(1797, 64)`` with the pixel counts 0..16 divided by 16, so values lie in
    [0, 1]; ``y`` holds the digit, int64, ``(1797,)``. The file is read from scikit-learn's
    package data without importing scikit-learn.

    Args:
        classes: keep only these digits, relabelled 0..k-1 in the given order:
            ``classes=(0, 1)`` is the binary 0-vs-1 task (360 samples), ``(1, 0)`` the same
            task with the labels swapped. Sample order is kept.
        backend: the backend the arrays go to (default: the active backend).
        device: the device on that backend (default: its default device).
        dtype: the float dtype of ``X``.

    Raises:
        DatasetError: scikit-learn is not installed (``pip install 'portgd[data]'``) or
            ``classes`` is not a list of at least two distinct digits.
    """
    import numpy as np

    chosen = None if classes is None else _digit_classes(classes)
    target, dtype = _target(backend, device, dtype)
    pixels, labels = _digits_host()
    if chosen is None:
        name, num_classes = "digits", 10
        y = labels.copy()
    else:
        name, num_classes = "digits" + "".join(map(str, chosen)), len(chosen)
        relabel = np.full(10, -1, dtype=np.int64)
        relabel[list(chosen)] = np.arange(len(chosen))
        y = relabel[labels]
        keep = y >= 0
        pixels, y = pixels[keep], y[keep]
    X = pixels.astype(_host_float(dtype))
    X /= 16
    info = {"source": str(_digits_file()), "classes": chosen or tuple(range(10))}
    return _build(
        target, dtype, X, y, name=name, num_classes=num_classes, feature_shape=(8, 8), info=info
    )


# -- IDX files ------------------------------------------------------------------------------
#: IDX type codes (third byte of the magic number) -> big-endian NumPy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip signature."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(
                f"{path} is a damaged gzip file ({exc}); delete it and download it again"
            ) from None
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in an IDX file (raw or gzipped), as a native-endian NumPy array.

    IDX layout (all integers big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions ``d``, then
    ``d`` uint32 sizes, then the values in C order. The file must hold exactly that many bytes.

    Raises:
        DatasetError: the file is missing, unreadable, not IDX, truncated or too long.
    """
    import numpy as np

    path = Path(path)
    data = _read_bytes(path)
    redo = "the file is damaged or not an IDX file; delete it and download it again"
    if len(data) < 4:
        raise DatasetError(
            f"{path} holds {len(data)} bytes, too few for the 4-byte IDX magic number; {redo}"
        )
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DatasetError(
            f"{path} has magic number 0x{data[:4].hex()}, expected 0x0000TTDD with type "
            f"code TT in {codes} and DD dimensions; {redo}"
        )
    ndim = data[3]
    if ndim == 0:
        raise DatasetError(f"{path} declares 0 dimensions; {redo}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path} is truncated: its {ndim} dimension sizes need {header} header bytes, "
            f"the file holds {len(data)}; {redo}"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has extra bytes at the end"
        raise DatasetError(
            f"{path} {problem}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"the file holds {len(data)}; {redo}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


# -- MNIST ----------------------------------------------------------------------------------
class Archive(NamedTuple):
    """One published MNIST file: its SHA-256 and its size in bytes."""

    sha256: str
    size: int


#: The official MNIST archives (the files of LeCun, Cortes and Burges, as mirrored below).
MNIST_ARCHIVES: dict[str, Archive] = {
    "train-images-idx3-ubyte.gz": Archive(
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422
    ),
    "train-labels-idx1-ubyte.gz": Archive(
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881
    ),
    "t10k-images-idx3-ubyte.gz": Archive(
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877
    ),
    "t10k-labels-idx1-ubyte.gz": Archive(
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542
    ),
}

#: Mirrors tried in order (yann.lecun.com no longer serves the files to scripts).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: split -> (images file, labels file), without the optional ``.gz``.
MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DOWNLOAD_TIMEOUT_S = 60.0


def _check_split(split: Any) -> str:
    if split not in MNIST_SPLITS:
        raise DatasetError(f"MNIST split must be 'train' or 'test', got {split!r}")
    return split


def _existing(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _fetch(url: str, *, max_bytes: int, timeout: float) -> bytes:
    """The body at ``url``, at most ``max_bytes`` of it (more is an error, not a truncation)."""
    import urllib.request

    from . import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"portgd/{__version__}"})
    chunks, total = [], 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise ValueError(f"the server sent more than the expected {max_bytes} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def _why(exc: BaseException) -> str:
    code, reason = getattr(exc, "code", None), getattr(exc, "reason", None)
    if isinstance(code, int):
        return f"HTTP {code} {reason or ''}".rstrip()
    if reason is not None:
        return str(reason)
    return str(exc) or type(exc).__name__


def _write_atomically(dest: Path, payload: bytes) -> None:
    """Write ``dest`` so that it either holds all of ``payload`` or does not exist."""
    try:
        write_atomically(dest, lambda handle: handle.write(payload))
    except OSError as exc:
        raise DatasetError(f"cannot write {dest}: {exc.strerror or exc}") from None


def _download(name: str, folder: Path) -> Path:
    import http.client

    archive = MNIST_ARCHIVES[name]
    failures = []
    for mirror in MNIST_MIRRORS:
        url = mirror + name
        try:
            payload = _fetch(url, max_bytes=archive.size, timeout=DOWNLOAD_TIMEOUT_S)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"{url}: {_why(exc)}")
            continue
        digest = hashlib.sha256(payload).hexdigest()
        if digest != archive.sha256:
            failures.append(
                f"{url}: SHA-256 checksum mismatch (got {digest}, expected {archive.sha256}); "
                "nothing was saved"
            )
            continue
        _write_atomically(folder / name, payload)
        return folder / name
    raise DatasetError(
        f"could not download {name} into {folder}: {'; '.join(failures)}. Check the network "
        "connection (or proxy settings), or download the file by hand and put it in the folder."
    )


def download_mnist(
    path: str | os.PathLike[str], *, splits: Sequence[str] = ("train", "test")
) -> list[Path]:
    """Download the official MNIST files of ``splits`` into the folder ``path``.

    Files already there (raw or ``.gz``) are kept. Each download is checked against the
    SHA-256 recorded in :data:`MNIST_ARCHIVES` before it is written, and written to a temporary
    file that is renamed into place, so a failed or interrupted download leaves nothing behind.

    Returns:
        The paths of the files, downloaded or already present.

    Raises:
        DatasetError: no mirror could be reached, a checksum did not match, or the folder is
            not writable.
    """
    folder = Path(path).expanduser()
    wanted = [_check_split(s) for s in ([splits] if isinstance(splits, str) else splits)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    found = []
    for split in wanted:
        for stem in MNIST_SPLITS[split]:
            found.append(_existing(folder, stem) or _download(f"{stem}.gz", folder))
    return found


def _mnist_file(folder: Path, stem: str, split: str) -> Path:
    if not folder.is_dir():
        raise DatasetError(
            f"the MNIST folder {folder} does not exist; put the IDX files there, or fetch "
            "them with download=True (portgd train --download)"
        )
    found = _existing(folder, stem)
    if found is None:
        raise DatasetError(
            f"the MNIST {split} file {stem} (or {stem}.gz) is not in {folder}; fetch the "
            f"official files with download=True (portgd train --download), or copy them from "
            f"{MNIST_MIRRORS[0]}"
        )
    return found


def mnist(
    path: str | os.PathLike[str],
    *,
    split: str = "train",
    download: bool = False,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
) -> Dataset:
    """MNIST from the standard IDX files in the folder ``path``.

    The folder holds ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (training
    split, 60000 images) and ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
    (test split, 10000 images), each raw or gzipped (``.gz``). ``X`` is
    ``(n, 784)``: the 28x28 images flattened row by row, bytes 0..255 divided by 255;
    ``y`` is the digit, int64, ``(n,)``.

    Args:
        path: the folder.
        split: ``"train"`` or ``"test"``.
        download: fetch missing files of this split from the official mirrors first (see
            :func:`download_mnist`).
        backend: the backend the arrays go to (default: the active backend).
        device: the device on that backend (default: its default device).
        dtype: the float dtype of ``X``.

    Raises:
        DatasetError: a file is missing, damaged or not MNIST-shaped (the message names the
            file), the image and label counts differ, or the download failed.
    """
    import numpy as np

    split = _check_split(split)
    target, dtype = _target(backend, device, dtype)
    folder = Path(path).expanduser()
    if download:
        download_mnist(folder, splits=(split,))
    images_stem, labels_stem = MNIST_SPLITS[split]
    images_path = _mnist_file(folder, images_stem, split)
    labels_path = _mnist_file(folder, labels_stem, split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetError(
            f"{images_path} holds {images.dtype.name} data of shape {images.shape}; MNIST "
            "images are uint8 of shape (n, rows, columns). Is it the labels file?"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(
            f"{labels_path} holds {labels.dtype.name} data of shape {labels.shape}; MNIST "
            "labels are uint8 of shape (n,). Is it the images file?"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; one of them is from another set or damaged"
        )
    if labels.size and labels.max() > 9:
        raise DatasetError(
            f"{labels_path} holds label {int(labels.max())}; MNIST labels are the digits 0..9"
        )
    X = images.reshape(images.shape[0], -1).astype(_host_float(dtype))
    X /= 255
    info = {"split": split, "images": str(images_path), "labels": str(labels_path)}
    return _build(
        target,
        dtype,
        X,
        labels.astype(np.int64),
        name="mnist",
        num_classes=10,
        feature_shape=images.shape[1:],
        info=info,
    )


# -- synthetic data -------------------------------------------------------------------------
def synthetic_classification(
    n_samples: int = 1000,
    n_features: int = 20,
    n_classes: int = 2,
    *,
    seed: int = 0,
    class_sep: float = 3.0,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
) -> Dataset:
    """Gaussian blobs: one unit-variance cloud per class around a centre ``class_sep`` from 0.

    Drawn on the host with ``numpy.random.default_rng(seed)``, in this order: the centres, the
    labels, the noise. With ``n_classes <= n_features`` the centres are ``class_sep`` times
    orthonormal directions (every pair of centres is ``class_sep * sqrt(2)`` apart, so with the
    default 3.0 about 2% of two-class samples fall on the wrong side of the best boundary);
    otherwise they are random unit directions times ``class_sep``. Classes are balanced
    (counts differ by at most one) and shuffled.

    ``X`` is ``(n_samples, n_features)`` in ``dtype``, ``y`` int64 ``(n_samples,)``.
    ``info["centers"]`` holds the centres ``(n_classes, n_features)`` as float64.
    """
    import numpy as np

    n_samples = _count(n_samples, "n_samples", 1)
    n_features = _count(n_features, "n_features", 1)
    n_classes = _count(n_classes, "n_classes", 2)
    if n_samples < n_classes:
        raise DatasetError(f"n_samples={n_samples} is too few for {n_classes} classes")
    if not (isinstance(class_sep, numbers.Real) and math.isfinite(class_sep) and class_sep >= 0):
        raise DatasetError(f"class_sep must be a finite number >= 0, got {class_sep!r}")
    target, dtype = _target(backend, device, dtype)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((n_features, n_classes))
    if n_classes <= n_features:
        q, r = np.linalg.qr(directions)
        directions = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    else:
        directions /= np.linalg.norm(directions, axis=0)
    centers = float(class_sep) * directions.T
    labels = rng.permutation(np.arange(n_samples, dtype=np.int64) % n_classes)
    X = centers[labels] + rng.standard_normal((n_samples, n_features))
    return _build(
        target,
        dtype,
        X,
        labels,
        name="synthetic",
        num_classes=n_classes,
        feature_shape=(n_features,),
        info={"centers": centers, "seed": seed},
    )


def synthetic_regression(
    n_samples: int = 1000,
    n_features: int = 10,
    n_targets: int = 1,
    noise: float = 0.1,
    *,
    seed: int = 0,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
) -> Dataset:
    """A noisy linear teacher: ``y = X @ coef + intercept + noise * e``.

    Drawn on the host with ``numpy.random.default_rng(seed)``, in this order:
    ``coef ~ N(0, 1/n_features)`` of shape ``(n_features, n_targets)``,
    ``intercept ~ N(0, 1)`` of shape ``(n_targets,)``, ``X ~ N(0, 1)``, ``e ~ N(0, 1)``.
    The teacher depends only on the seed and the shape, not on ``n_samples``.

    ``X`` is ``(n_samples, n_features)`` and ``y`` is ``(n_samples, n_targets)`` (2-D also for
    one target), both in ``dtype``. ``info["coef"]`` and ``info["intercept"]`` hold the
    teacher as float64, so a solver's answer can be checked against it.
    """
    import numpy as np

    n_samples = _count(n_samples, "n_samples", 1)
    n_features = _count(n_features, "n_features", 1)
    n_targets = _count(n_targets, "n_targets", 1)
    if not (isinstance(noise, numbers.Real) and math.isfinite(noise) and noise >= 0):
        raise DatasetError(f"noise must be a finite number >= 0, got {noise!r}")
    target, dtype = _target(backend, device, dtype)
    rng = np.random.default_rng(seed)
    coef = rng.standard_normal((n_features, n_targets)) / math.sqrt(n_features)
    intercept = rng.standard_normal(n_targets)
    X = rng.standard_normal((n_samples, n_features))
    y = X @ coef + intercept + float(noise) * rng.standard_normal((n_samples, n_targets))
    return _build(
        target,
        dtype,
        X,
        y,
        name="synthetic-regression",
        num_classes=None,
        feature_shape=(n_features,),
        info={"coef": coef, "intercept": intercept, "noise": float(noise), "seed": seed},
    )


# -- labels ---------------------------------------------------------------------------------
def _class_labels(y: Any, what: str) -> np.ndarray:
    """``y`` on the host as one whole-number class label per sample, ``(n,)``."""
    import numpy as np

    host = y if isinstance(y, np.ndarray) else backend_of(y).to_numpy(y)
    host = np.asarray(host)
    if host.ndim == 2 and host.shape[1] == 1:
        host = host[:, 0]
    if host.ndim != 1:
        raise DatasetError(
            f"{what} must hold one class index per sample, shape (n,); got shape "
            f"{host.shape} (for one-hot rows pass their argmax)"
        )
    if host.dtype.kind in "biu":
        return host.astype(np.int64)
    if host.dtype.kind == "f":
        whole = np.isfinite(host) & (host == np.round(host))
        if not whole.all():
            bad = host[~whole][0]
            raise DatasetError(
                f"{what} must be whole class indices, found {bad!r}; regression targets "
                "have no classes"
            )
        return host.astype(np.int64)
    raise DatasetError(f"{what} must be integer class indices, got dtype {host.dtype}")


def check_labels(y: Any, num_classes: int, *, what: str = "labels") -> None:
    """Raise DatasetError unless ``y`` holds one class index in ``[0, num_classes)`` per sample.

    ``y`` may be a host array or any backend's array (it is read back to the host once), of
    shape ``(n,)`` or ``(n, 1)``; integer, boolean, or float holding whole numbers. Use it
    before training: ``num_classes=2`` is what binary cross-entropy accepts (labels 0 and 1).
    """
    num_classes = _count(num_classes, "num_classes", 2)
    import numpy as np

    labels = _class_labels(y, what)
    if labels.size == 0:
        return
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        bad = np.unique(labels[outside])
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DatasetError(
            f"{what} must be class indices 0..{num_classes - 1} for {num_classes} classes, "
            f"found {shown}; relabel them (digits(classes=...) does) or use a model with "
            f"more outputs"
        )


# -- splitting ------------------------------------------------------------------------------
def _test_count(test_size: Any, n: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise DatasetError(
            f"test_size must be a fraction in (0, 1) or a number of samples, got {test_size!r}"
        )
    if isinstance(test_size, numbers.Integral):
        n_test = int(test_size)
        if n_test < 1:
            raise DatasetError(f"test_size must be at least 1 sample, got {n_test}")
    else:
        fraction = float(test_size)
        if not 0.0 < fraction < 1.0:
            raise DatasetError(
                f"test_size must be a fraction in (0, 1) or a number of samples, got {fraction}"
            )
        n_test = math.ceil(round(fraction * n, 6))  # round: 0.7 * 10 is 7.000000000000001
    if n_test >= n:
        raise DatasetError(
            f"a dataset of {n} samples is too small for test_size={test_size!r}: it leaves "
            f"{n - n_test} training samples; both sides of the split need at least one"
        )
    return n_test


def _stratified_counts(counts: np.ndarray, n_test: int) -> np.ndarray:
    """Test samples per class: proportional, at least one on each side, summing to n_test."""
    import numpy as np

    exact = counts * (n_test / counts.sum())
    take = np.clip(np.floor(exact).astype(np.int64), 1, counts - 1)
    while take.sum() < n_test:  # give to the class furthest below its share
        room = np.flatnonzero(take < counts - 1)
        take[room[np.argmax((exact - take)[room])]] += 1
    while take.sum() > n_test:  # take from the class furthest above its share
        room = np.flatnonzero(take > 1)
        take[room[np.argmin((exact - take)[room])]] -= 1
    return take


def _split_indices(
    n: int, n_test: int, rng: np.random.Generator, labels: np.ndarray | None
) -> np.ndarray:
    """Host int64 indices, the test part first (``n_test`` of them), then the training part."""
    import numpy as np

    if labels is None:
        return rng.permutation(n)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        lonely = classes[np.argmin(counts)]
        raise DatasetError(
            f"stratify=True needs at least 2 samples of every class; class {lonely} has "
            f"{counts.min()}"
        )
    if not len(classes) <= n_test <= n - len(classes):
        raise DatasetError(
            f"stratify=True with {len(classes)} classes needs at least {len(classes)} samples "
            f"on each side of the split; test_size gives {n_test} test and {n - n_test} "
            "training samples"
        )
    take = _stratified_counts(counts, n_test)
    test, train = [], []
    for c, k in zip(classes, take, strict=True):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[:k])
        train.append(members[k:])
    return np.concatenate([rng.permutation(np.concatenate(test)),
                           rng.permutation(np.concatenate(train))])


def train_test_split(
    X: Any,
    y: Any,
    test_size: float | int = 0.2,
    *,
    seed: int = 0,
    stratify: bool = False,
) -> tuple[Any, Any, Any, Any]:
    """``X_train, X_test, y_train, y_test``: a seeded random split of the rows of ``X`` and ``y``.

    Works on any backend's arrays and returns arrays on the same backend and device. The
    permutation is drawn on the host (``backend.rng(seed)``), moved to the device once and
    applied with ``xp.take``, so the split is the same on every backend.

    Args:
        X: features, an array of any backend.
        y: targets with as many rows as ``X``, on the same backend and device.
        test_size: a fraction in (0, 1) (the test set gets ``ceil(test_size * n)`` rows) or
            a number of test rows.
        seed: the host generator's seed.
        stratify: keep each class's share of ``y`` (class labels) in both parts, to the
            nearest sample; every class needs at least one sample on each side.

    Raises:
        DatasetError: bad ``test_size``, a side of the split would be empty, or ``y`` has
            other than one row per row of ``X``.
        BackendMismatchError: ``X`` and ``y`` live on different backends or devices.
    """
    for array, what in ((X, "X"), (y, "y")):
        if not hasattr(array, "shape") or len(array.shape) == 0:
            raise DatasetError(f"{what} must be an array with one row per sample, got {array!r}")
    backend = backend_of(X)
    other = backend_of(y)
    if other != backend:
        raise BackendMismatchError(
            f"X is on {backend.name} device {backend.device_name!r} but y is on {other.name} "
            f"device {other.device_name!r}; create both on one backend (the loaders take "
            "backend= and device=)"
        )
    n = int(X.shape[0])
    if int(y.shape[0]) != n:
        raise DatasetError(f"X has {n} rows but y has {y.shape[0]}; they must match")
    if n < 2:
        raise DatasetError(f"a dataset of {n} samples is too small to split into train and test")
    n_test = _test_count(test_size, n)
    labels = _class_labels(y, "y (stratify=True)") if stratify else None
    order = _split_indices(n, n_test, backend.rng(seed), labels)
    xp = backend.xp
    index = backend.asarray(order, dtype="int64")
    test, train = index[:n_test], index[n_test:]
    return (
        xp.take(X, train, axis=0),
        xp.take(X, test, axis=0),
        xp.take(y, train, axis=0),
        xp.take(y, test, axis=0),
    )


# -- standardisation ------------------------------------------------------------------------
class Standardizer:
    """Per-feature ``(x - mean) / std`` with the statistics of the data it was fitted on.

    ``mean`` and ``std`` (population std, ``correction=0``) are computed with the backend's
    ``xp`` and stay on its device. Features whose std is at most ``eps`` (constant pixels, for
    example) are only centred: their scale is 1, so a test value never gets divided by ~0.

    Attributes (after :meth:`fit`):
        mean: ``X.shape[1:]`` per-feature means.
        scale: ``X.shape[1:]`` per-feature divisors (the std, or 1 where the std <= eps).
        backend: the Backend of the fitted data; transform only accepts arrays there.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps >= 0):
            raise DatasetError(f"eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)
        self.mean: Any = None
        self.scale: Any = None
        self.backend: Backend | None = None

    def __repr__(self) -> str:
        where = "unfitted" if self.backend is None else f"fitted on {self.backend!r}"
        return f"Standardizer(eps={self.eps}, {where})"

    def _check(self, X: Any, backend: Backend, what: str) -> None:
        xp = backend.xp
        if not hasattr(X, "dtype") or not xp.isdtype(X.dtype, "real floating"):
            dtype = getattr(X, "dtype", type(X).__name__)
            raise DatasetError(f"{what} must be a floating array, got {dtype}")
        if X.ndim < 1 or X.shape[0] < 1:
            raise DatasetError(f"{what} must hold at least one sample, got shape {X.shape}")

    def fit(self, X: Any) -> Standardizer:
        """Compute the per-feature mean and scale of ``X`` (rows are samples)."""
        backend = backend_of(X)
        self._check(X, backend, "X")
        xp = backend.xp
        std = xp.std(X, axis=0)
        self.mean = xp.mean(X, axis=0)
        self.scale = xp.where(std > self.eps, std, xp.ones_like(std))
        self.backend = backend
        return self

    def transform(self, X: Any) -> Any:
        """``(X - mean) / scale``, on ``X``'s backend."""
        self._fitted_backend(X)
        return (X - self.mean) / self.scale

    def inverse_transform(self, X: Any) -> Any:
        """``X * scale + mean``: undo :meth:`transform`."""
        self._fitted_backend(X)
        return X * self.scale + self.mean

    def fit_transform(self, X: Any) -> Any:
        return self.fit(X).transform(X)

    def _fitted_backend(self, X: Any) -> Backend:
        if self.backend is None:
            raise DatasetError("this Standardizer is not fitted; call fit(X_train) first")
        backend = backend_of(X)
        if backend != self.backend:
            raise BackendMismatchError(
                f"the Standardizer was fitted on {self.backend.name} device "
                f"{self.backend.device_name!r} but X is on {backend.name} device "
                f"{backend.device_name!r}; fit and transform arrays of one backend"
            )
        self._check(X, backend, "X")
        if tuple(X.shape[1:]) != tuple(self.mean.shape):
            raise DatasetError(
                f"X has samples of shape {tuple(X.shape[1:])} but the Standardizer was fitted "
                f"on samples of shape {tuple(self.mean.shape)}"
            )
        return backend


def standardize(X_train: Any, *others: Any, eps: float = 1e-8) -> Any:
    """Standardise ``X_train`` and ``others`` with the mean and std of ``X_train``.

    ``X_train, X_test = standardize(X_train, X_test)``; with no ``others`` it returns the one
    array. See :class:`Standardizer` for the formula and the ``eps`` rule.
    """
    scaler = Standardizer(eps).fit(X_train)
    if not others:
        return scaler.transform(X_train)
    return tuple(scaler.transform(X) for X in (X_train, *others))


# -- specs ----------------------------------------------------------------------------------
def load(
    spec: str,
    *,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
    **options: Any,
) -> Dataset:
    """The Dataset named by a spec string, as the command line takes it.

    ``digits`` (10 classes), ``digits01`` (digits 0 and 1, relabelled 0 and 1),
    ``mnist:PATH`` (the training split of the IDX files in the folder PATH; pass
    ``split="test"`` or ``download=True`` as options), ``synthetic`` (two-class Gaussian
    blobs with the defaults of :func:`synthetic_classification`). ``options`` go to the
    loader.

    Raises:
        DatasetError: an unknown spec (the message lists the valid ones) or an error of the
            loader.
    """
    where = {"backend": backend, "device": device, "dtype": dtype}
    text = spec.strip() if isinstance(spec, str) else None
    if text == "digits":
        return digits(**where, **options)
    if text == "digits01":
        return digits((0, 1), **where, **options)
    if text == "synthetic":
        return synthetic_classification(**where, **options)
    if text is not None and (text == "mnist" or text.startswith("mnist:")):
        folder = text[len("mnist:"):].strip()
        if not folder:
            raise DatasetError(
                "the mnist spec needs the folder of the IDX files: mnist:PATH, "
                "e.g. mnist:~/data/mnist"
            )
        return mnist(folder, **where, **options)
    valid = "; ".join(f"{name} ({what})" for name, what in SPECS.items())
    raise DatasetError(f"unknown dataset {spec!r}; valid datasets: {valid}")
