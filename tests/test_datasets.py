"""Datasets: digits, MNIST IDX files and download, synthetic data, splitting, standardising.

No test touches the network: an autouse fixture makes urllib.request.urlopen fail, and the
download tests replace the fetch function.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import math
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
from helpers import modules_loaded_by

import portgd
from portgd import datasets
from portgd.datasets import (
    Dataset,
    Standardizer,
    _digits,
    _mnist,
    check_labels,
    digits,
    load,
    mnist,
    read_idx,
    standardize,
    synthetic_classification,
    synthetic_regression,
    train_test_split,
)
from portgd.errors import BackendMismatchError, DatasetError, DTypeNotSupportedError

DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def same_device(backend, x) -> bool:
    return backend.same_device(backend.device_of(x), backend.device)


# -- IDX helpers ----------------------------------------------------------------------------
IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D,
             "float64": 0x0E}  # fmt: skip


def idx_bytes(values: np.ndarray) -> bytes:
    header = bytes([0, 0, IDX_CODES[values.dtype.name], values.ndim])
    dims = np.asarray(values.shape, dtype=">u4").tobytes()
    return header + dims + values.astype(values.dtype.newbyteorder(">")).tobytes()


def tiny_mnist(n: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    return images, labels


def write_split(folder, split="train", *, n=5, gz_images=False, gz_labels=False, seed=1):
    images, labels = tiny_mnist(n, seed)
    image_stem, label_stem = datasets.MNIST_SPLITS[split]
    for stem, values, gz in ((image_stem, images, gz_images), (label_stem, labels, gz_labels)):
        payload = idx_bytes(values)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)
    return images, labels


# -- import ---------------------------------------------------------------------------------
def test_importing_datasets_imports_no_array_library():
    libraries = ("numpy", "torch", "cupy", "array_api_strict", "sklearn", "urllib.request")
    assert modules_loaded_by("import portgd.datasets", libraries) == []


# -- digits ---------------------------------------------------------------------------------
def test_digits_shape_range_and_classes():
    ds = digits(backend="numpy")
    X, y = ds
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.bincount(y).tolist() == DIGIT_COUNTS
    assert (ds.name, ds.num_classes, ds.feature_shape, ds.task) == ("digits", 10, (8, 8),
                                                                   "classification")


def test_digits_equal_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    X, y = digits(backend="numpy", dtype="float64")
    np.testing.assert_array_equal(X * 16, reference.data)
    np.testing.assert_array_equal(y, reference.target)
    assert np.bincount(y).tolist() == np.bincount(reference.target).tolist()


def test_digits_zero_vs_one_is_binary():
    X, y = digits((0, 1), backend="numpy")
    assert X.shape == (360, 64)
    assert set(np.unique(y).tolist()) == {0, 1}
    assert np.bincount(y).tolist() == [178, 182]
    swapped = digits((1, 0), backend="numpy")
    assert swapped.name == "digits10"
    np.testing.assert_array_equal(swapped.y, 1 - y)  # same samples, same order, labels swapped
    np.testing.assert_array_equal(swapped.X, X)


def test_digits_subset_relabels_in_given_order():
    ds = digits((7, 3, 9), backend="numpy")
    assert ds.num_classes == 3 and ds.name == "digits739"
    assert np.bincount(ds.y).tolist() == [DIGIT_COUNTS[7], DIGIT_COUNTS[3], DIGIT_COUNTS[9]]


def test_digits_arrays_are_fresh():
    first = digits(backend="numpy")
    first.X[0, 0] = 99.0
    first.y[0] = 7
    second = digits(backend="numpy")
    assert second.X[0, 0] == 0.0 and second.y[0] == 0


def test_digits_on_every_backend(backend):
    ds = digits((0, 1), backend=backend)
    reference = digits((0, 1), backend="numpy")
    assert ds.backend == backend
    assert same_device(backend, ds.X) and same_device(backend, ds.y)
    np.testing.assert_array_equal(backend.to_numpy(ds.X), reference.X)
    np.testing.assert_array_equal(backend.to_numpy(ds.y), reference.y)
    assert ds.y.dtype == backend.index_dtype
    expected = "int64" if backend.supports("int64") else "int32"
    assert backend.to_numpy(ds.y).dtype == np.dtype(expected)


@pytest.mark.parametrize("classes", [(3,), (1, 1), (0, 10), (-1, 2), ("0", "1"), (True, 0), 5])
def test_digits_bad_classes(classes):
    with pytest.raises(DatasetError, match="classes"):
        digits(classes, backend="numpy")


@pytest.fixture
def fresh_digits_cache():
    _digits._digits_host.cache_clear()
    yield
    _digits._digits_host.cache_clear()


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch, fresh_digits_cache):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    with pytest.raises(DatasetError, match=r"pip install 'portgd\[data\]'"):
        digits(backend="numpy")


def test_digits_dtype():
    X64 = digits(backend="numpy", dtype="float64").X
    assert X64.dtype == np.float64
    np.testing.assert_array_equal(X64, digits(backend="numpy").X)  # k/16 is exact
    with pytest.raises(DatasetError, match="floating dtype"):
        digits(backend="numpy", dtype="int32")
    with pytest.raises(DTypeNotSupportedError):
        digits(backend="array_api_strict", device="no_float64", dtype="float64")


# -- IDX and MNIST --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    values = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype)
    payload = idx_bytes(values)
    path = tmp_path / "values.idx"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    read = read_idx(path)
    assert read.dtype == np.dtype(dtype) and read.dtype.isnative
    np.testing.assert_array_equal(read, values)


@pytest.mark.parametrize(("gz_images", "gz_labels"), [(False, False), (True, True), (True, False)])
def test_mnist_reads_raw_and_gzipped_files(tmp_path, gz_images, gz_labels):
    images, labels = write_split(tmp_path, gz_images=gz_images, gz_labels=gz_labels)
    ds = mnist(tmp_path, backend="numpy")
    assert ds.X.shape == (5, 784) and ds.X.dtype == np.float32
    assert ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.X, images.reshape(5, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.X.min() == 0.0 and ds.X.max() == 1.0
    assert (ds.name, ds.num_classes, ds.feature_shape) == ("mnist", 10, (28, 28))
    assert ds.info["split"] == "train"


def test_mnist_test_split_on_every_backend(tmp_path, backend):
    images, labels = write_split(tmp_path, "test", n=3, seed=2)
    ds = mnist(str(tmp_path), split="test", backend=backend)
    assert same_device(backend, ds.X) and same_device(backend, ds.y)
    np.testing.assert_array_equal(
        backend.to_numpy(ds.X), images.reshape(3, -1).astype(np.float32) / 255
    )
    np.testing.assert_array_equal(backend.to_numpy(ds.y), labels)


IMAGES = "train-images-idx3-ubyte"
LABELS = "train-labels-idx1-ubyte"


def _replace(name, payload):
    def damage(folder):
        (folder / name).write_bytes(payload(folder / name))

    return damage


def _retype_images(folder):
    images, _ = tiny_mnist()
    (folder / IMAGES).write_bytes(idx_bytes(images.astype(np.int32)))


def _swap_files(folder):
    images, labels = (folder / IMAGES).read_bytes(), (folder / LABELS).read_bytes()
    (folder / IMAGES).write_bytes(labels)
    (folder / LABELS).write_bytes(images)


def _gzip_damaged(folder):
    payload = gzip.compress((folder / IMAGES).read_bytes())
    (folder / IMAGES).unlink()
    (folder / f"{IMAGES}.gz").write_bytes(payload[: len(payload) // 2])


def _labels_out_of_range(folder):
    _, labels = tiny_mnist()
    labels[2] = 10
    (folder / LABELS).write_bytes(idx_bytes(labels))


MALFORMED = {
    "empty": (_replace(IMAGES, lambda p: b""), IMAGES, "too few"),
    "wrong magic": (_replace(IMAGES, lambda p: b"PK" + p.read_bytes()[2:]), IMAGES,
                    "magic number"),
    "unknown type code": (_replace(LABELS, lambda p: b"\x00\x00\x07" + p.read_bytes()[3:]),
                          LABELS, "magic number 0x00000701"),
    "zero dimensions": (_replace(LABELS, lambda p: b"\x00\x00\x08\x00"), LABELS, "0 dimensions"),
    "truncated header": (_replace(IMAGES, lambda p: p.read_bytes()[:9]), IMAGES, "truncated"),
    "truncated data": (_replace(IMAGES, lambda p: p.read_bytes()[:-100]), IMAGES, "truncated"),
    "extra bytes": (_replace(LABELS, lambda p: p.read_bytes() + b"\x00"), LABELS, "extra bytes"),
    "count mismatch": (_replace(LABELS, lambda p: idx_bytes(tiny_mnist()[1][:4])), LABELS,
                       "5 images but"),
    "missing labels": (lambda folder: (folder / LABELS).unlink(), LABELS, "download=True"),
    "damaged gzip": (_gzip_damaged, IMAGES, "damaged gzip"),
    "labels out of range": (_labels_out_of_range, LABELS, "label 10"),
    "images not uint8": (_retype_images, IMAGES, "uint8"),
    "files swapped": (_swap_files, IMAGES, "labels file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_mnist_is_a_dataset_error_naming_the_file(tmp_path, case):
    damage, culprit, hint = MALFORMED[case]
    write_split(tmp_path)
    damage(tmp_path)
    with pytest.raises(DatasetError) as err:
        mnist(tmp_path, backend="numpy")
    message = str(err.value)
    assert culprit in message, message
    assert hint in message, message


def test_mnist_missing_folder_and_bad_split(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*download=True"):
        mnist(tmp_path / "nowhere", backend="numpy")
    with pytest.raises(DatasetError, match="'train' or 'test'"):
        mnist(tmp_path, split="validation", backend="numpy")
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        mnist(tmp_path, split="test", backend="numpy")


# -- MNIST download (fetch replaced; no network) --------------------------------------------
class FakeMirror:
    """Serves tiny gzipped IDX files in place of the official ones and counts requests."""

    def __init__(self, *, fail_mirrors=(), corrupt=False):
        images, labels = tiny_mnist()
        self.images, self.labels = images, labels
        self.files = {
            f"{IMAGES}.gz": gzip.compress(idx_bytes(images)),
            f"{LABELS}.gz": gzip.compress(idx_bytes(labels)),
        }
        self.fail_mirrors = fail_mirrors
        self.corrupt = corrupt
        self.requests = []

    def register(self, monkeypatch):
        for name, payload in self.files.items():
            archive = datasets.Archive(hashlib.sha256(payload).hexdigest(), len(payload))
            monkeypatch.setitem(datasets.MNIST_ARCHIVES, name, archive)
        monkeypatch.setattr(_mnist, "_fetch", self)

    def __call__(self, url, *, max_bytes, timeout):
        self.requests.append(url)
        mirror, name = url.rsplit("/", 1)
        if mirror + "/" in self.fail_mirrors:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        payload = self.files[name]
        return payload[:-1] + bytes([payload[-1] ^ 1]) if self.corrupt else payload


def test_download_fetches_verifies_and_reads(tmp_path, monkeypatch):
    fake = FakeMirror()
    fake.register(monkeypatch)
    folder = tmp_path / "new" / "mnist"
    ds = mnist(folder, download=True, backend="numpy")
    np.testing.assert_array_equal(ds.y, fake.labels)
    np.testing.assert_array_equal(ds.X, fake.images.reshape(5, -1).astype(np.float32) / 255)
    assert sorted(os.listdir(folder)) == [f"{IMAGES}.gz", f"{LABELS}.gz"]  # no temp files
    assert fake.requests == [datasets.MNIST_MIRRORS[0] + f"{IMAGES}.gz",
                             datasets.MNIST_MIRRORS[0] + f"{LABELS}.gz"]  # fmt: skip
    mnist(folder, download=True, backend="numpy")
    assert len(fake.requests) == 2, "files already there are not fetched again"


def test_download_falls_back_to_the_next_mirror(tmp_path, monkeypatch):
    fake = FakeMirror(fail_mirrors=(datasets.MNIST_MIRRORS[0],))
    fake.register(monkeypatch)
    paths = datasets.download_mnist(tmp_path, splits="train")
    assert [p.name for p in paths] == [f"{IMAGES}.gz", f"{LABELS}.gz"]
    assert all(url.startswith(datasets.MNIST_MIRRORS[1]) for url in fake.requests[1::2])


def test_download_with_wrong_checksum_raises_and_writes_nothing(tmp_path, monkeypatch):
    fake = FakeMirror(corrupt=True)
    fake.register(monkeypatch)
    with pytest.raises(DatasetError) as err:
        mnist(tmp_path, download=True, backend="numpy")
    message = str(err.value)
    assert "SHA-256 checksum mismatch" in message and f"{IMAGES}.gz" in message
    assert os.listdir(tmp_path) == []
    assert len(fake.requests) == len(datasets.MNIST_MIRRORS)  # every mirror was tried


def test_download_against_the_real_checksums_rejects_other_files(tmp_path, monkeypatch):
    fake = FakeMirror()
    monkeypatch.setattr(_mnist, "_fetch", fake)  # official checksums left in place
    with pytest.raises(DatasetError, match="expected 440fcabf"):
        mnist(tmp_path, download=True, backend="numpy")
    assert os.listdir(tmp_path) == []


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    fake = FakeMirror(fail_mirrors=datasets.MNIST_MIRRORS)
    fake.register(monkeypatch)
    with pytest.raises(DatasetError) as err:
        mnist(tmp_path, download=True, backend="numpy")
    message = str(err.value)
    assert "could not download" in message and "network" in message
    assert "Temporary failure in name resolution" in message
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    FakeMirror().register(monkeypatch)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DatasetError, match="No space left on device"):
        mnist(tmp_path, download=True, backend="numpy")
    assert os.listdir(tmp_path) == []


class FakeResponse(io.BytesIO):
    pass


def test_fetch_streams_and_caps_the_size(monkeypatch):
    seen = []

    def urlopen(request, timeout):
        seen.append((request.full_url, request.get_header("User-agent"), timeout))
        return FakeResponse(b"x" * 3000)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert _mnist._fetch("https://example.test/f.gz", max_bytes=3000, timeout=5.0) == b"x" * 3000
    assert seen == [("https://example.test/f.gz", f"portgd/{portgd.__version__}", 5.0)]
    with pytest.raises(ValueError, match="more than the expected 2999 bytes"):
        _mnist._fetch("https://example.test/f.gz", max_bytes=2999, timeout=5.0)


def test_oversized_download_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: FakeResponse(b"x" * 10))
    monkeypatch.setitem(datasets.MNIST_ARCHIVES, f"{IMAGES}.gz", datasets.Archive("0" * 64, 9))
    with pytest.raises(DatasetError, match="more than the expected 9 bytes"):
        datasets.download_mnist(tmp_path, splits=["train"])
    assert os.listdir(tmp_path) == []


def test_recorded_archives_are_complete():
    stems = [stem for pair in datasets.MNIST_SPLITS.values() for stem in pair]
    assert sorted(datasets.MNIST_ARCHIVES) == sorted(f"{stem}.gz" for stem in stems)
    for archive in datasets.MNIST_ARCHIVES.values():
        assert len(archive.sha256) == 64 and int(archive.sha256, 16) >= 0
        assert archive.size > 0


# -- synthetic data -------------------------------------------------------------------------
def test_synthetic_classification_is_seeded():
    a = synthetic_classification(backend="numpy")
    b = synthetic_classification(backend="numpy")
    c = synthetic_classification(seed=1, backend="numpy")
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)
    assert a.X.shape == (1000, 20) and a.X.dtype == np.float32
    assert a.y.shape == (1000,) and a.y.dtype == np.int64
    assert np.bincount(a.y).tolist() == [500, 500]


def test_synthetic_classification_geometry():
    ds = synthetic_classification(3000, 5, 3, class_sep=3.0, backend="numpy", dtype="float64")
    centers = ds.info["centers"]
    assert centers.shape == (3, 5)
    distances = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    np.testing.assert_allclose(distances[~np.eye(3, dtype=bool)], 3.0 * math.sqrt(2), rtol=1e-12)
    for k in range(3):
        members = ds.X[ds.y == k]
        assert np.linalg.norm(members.mean(axis=0) - centers[k]) < 0.15
        np.testing.assert_allclose(members.std(axis=0), 1.0, atol=0.08)
    nearest = np.argmin(np.linalg.norm(ds.X[:, None] - centers[None], axis=-1), axis=1)
    assert 0.93 < np.mean(nearest == ds.y) < 0.99  # sep 3*sqrt(2) with 3 classes: ~4% overlap


def test_synthetic_classification_more_classes_than_features():
    ds = synthetic_classification(10, 1, 3, backend="numpy")
    np.testing.assert_allclose(np.abs(ds.info["centers"]), 3.0)
    assert np.bincount(ds.y).tolist() == [4, 3, 3]


def test_synthetic_regression_matches_its_teacher():
    exact = synthetic_regression(500, 4, 2, noise=0.0, backend="numpy", dtype="float64")
    coef, intercept = exact.info["coef"], exact.info["intercept"]
    assert exact.X.shape == (500, 4) and exact.y.shape == (500, 2)
    assert exact.num_classes is None and exact.task == "regression"
    np.testing.assert_allclose(exact.y, exact.X @ coef + intercept, rtol=0, atol=1e-12)
    noisy = synthetic_regression(500, 4, 2, noise=0.1, backend="numpy", dtype="float64")
    np.testing.assert_array_equal(noisy.info["coef"], coef)  # teacher depends on the seed only
    np.testing.assert_array_equal(noisy.X, exact.X)
    residual = noisy.y - (noisy.X @ coef + intercept)
    assert abs(residual.std() - 0.1) < 0.006
    bigger = synthetic_regression(800, 4, 2, backend="numpy", dtype="float64")
    np.testing.assert_array_equal(bigger.info["coef"], coef)


def test_synthetic_data_identical_on_every_backend(backend):
    for make in (synthetic_classification, synthetic_regression):
        ds = make(200, backend=backend)
        reference = make(200, backend="numpy")
        assert same_device(backend, ds.X) and same_device(backend, ds.y)
        np.testing.assert_array_equal(backend.to_numpy(ds.X), reference.X)
        np.testing.assert_array_equal(backend.to_numpy(ds.y), reference.y)


@pytest.mark.parametrize(
    "call",
    [
        lambda: synthetic_classification(n_classes=1),
        lambda: synthetic_classification(3, n_classes=4),
        lambda: synthetic_classification(n_samples=True),
        lambda: synthetic_classification(n_features=2.5),
        lambda: synthetic_classification(class_sep=-1.0),
        lambda: synthetic_regression(noise=float("nan")),
        lambda: synthetic_regression(n_targets=0),
    ],
)
def test_synthetic_bad_arguments(call):
    with pytest.raises(DatasetError):
        call()


# -- train_test_split -----------------------------------------------------------------------
def test_split_sizes_and_pairing():
    X = np.repeat(np.arange(50, dtype=np.float32)[:, None], 3, axis=1)
    y = np.arange(50, dtype=np.int64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, 0.2, seed=3)
    assert (X_train.shape, X_test.shape, y_train.shape, y_test.shape) == (
        (40, 3), (10, 3), (40,), (10,))  # fmt: skip
    np.testing.assert_array_equal(X_train[:, 0], y_train)
    np.testing.assert_array_equal(X_test[:, 2], y_test)
    assert sorted(np.concatenate([y_train, y_test]).tolist()) == list(range(50))
    assert train_test_split(X, y, 7)[1].shape == (7, 3)
    assert train_test_split(X[:10], y[:10], 0.7)[1].shape == (7, 3)  # not 8: 0.7*10 rounding
    assert train_test_split(X[:10], y[:10], 0.25)[1].shape == (3, 3)  # ceil
    again = train_test_split(X, y, 0.2, seed=3)
    np.testing.assert_array_equal(again[3], y_test)
    assert not np.array_equal(train_test_split(X, y, 0.2, seed=4)[3], y_test)


@pytest.mark.parametrize("stratify", [False, True])
def test_split_identical_on_every_backend(backend, stratify):
    X_host, y_host = digits(backend="numpy")
    expected = train_test_split(X_host, y_host, 0.25, seed=7, stratify=stratify)
    X, y = digits(backend=backend)
    parts = train_test_split(X, y, 0.25, seed=7, stratify=stratify)
    for part, want in zip(parts, expected, strict=True):
        assert same_device(backend, part)
        np.testing.assert_array_equal(backend.to_numpy(part), want)


def test_stratify_keeps_class_ratios():
    y = np.repeat(np.arange(3), [80, 20, 10])
    X = np.arange(110, dtype=np.float64)[:, None]
    _, _, y_train, y_test = train_test_split(X, y, 0.2, seed=0, stratify=True)
    assert np.bincount(y_test).tolist() == [16, 4, 2]
    assert np.bincount(y_train).tolist() == [64, 16, 8]
    X_digits, y_digits = digits(backend="numpy")
    _, _, _, y_test = train_test_split(X_digits, y_digits, 0.3, stratify=True)
    share = np.bincount(y_test) / np.bincount(y_digits)
    assert y_test.shape == (540,)
    assert np.all(np.abs(np.bincount(y_test) - 0.3 * np.bincount(y_digits)) <= 1), share


def test_stratify_tiny_classes_keep_one_on_each_side():
    y = np.array([0] * 18 + [1, 1])
    _, _, y_train, y_test = train_test_split(np.zeros((20, 1)), y, 0.1, stratify=True)
    assert np.bincount(y_test).tolist() == [1, 1]
    assert np.bincount(y_train).tolist() == [17, 1]


@pytest.mark.parametrize(
    ("test_size", "n", "match"),
    [
        (0.0, 10, r"fraction in \(0, 1\)"),
        (1.0, 10, r"fraction in \(0, 1\)"),
        (1.5, 10, r"fraction in \(0, 1\)"),
        (-2, 10, "at least 1 sample"),
        (10, 10, "too small"),
        (0.99, 10, "too small"),
        (True, 10, "fraction"),
        ("0.2", 10, "fraction"),
        (0.5, 1, "too small"),
    ],
)
def test_split_bad_sizes(test_size, n, match):
    with pytest.raises(DatasetError, match=match):
        train_test_split(np.zeros((n, 2)), np.zeros(n), test_size)


def test_split_errors():
    X = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(DatasetError, match="X has 10 rows but y has 9"):
        train_test_split(X, np.zeros(9), 0.2)
    with pytest.raises(DatasetError, match="class 1 has 1"):
        train_test_split(X, np.array([0] * 9 + [1]), 0.2, stratify=True)
    with pytest.raises(DatasetError, match="whole class indices"):
        train_test_split(X, np.linspace(0, 1, 10), 0.2, stratify=True)
    with pytest.raises(DatasetError, match="at least 3 samples on each side"):
        train_test_split(X, np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2]), 2, stratify=True)
    with pytest.raises(DatasetError, match="must be an array"):
        train_test_split([[1.0]] * 10, [0] * 10)
    torch = pytest.importorskip("torch")
    with pytest.raises(BackendMismatchError, match=r"X is on numpy .* y is on torch"):
        train_test_split(X, torch.zeros(10), 0.2)


# -- standardize ----------------------------------------------------------------------------
def test_standardize_numbers(backend):
    X_train = backend.asarray([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]], dtype="float32")
    X_test = backend.asarray([[7.0, 4.0]], dtype="float32")
    train, test = standardize(X_train, X_test)
    assert same_device(backend, train) and same_device(backend, test)
    z = math.sqrt(1.5)  # 2 / sqrt(8/3)
    np.testing.assert_allclose(backend.to_numpy(train), [[-z, 0], [0, 0], [z, 0]], rtol=1e-6)
    # the constant feature keeps scale 1: 4 - 2 = 2, not 2 / 1e-8
    np.testing.assert_allclose(backend.to_numpy(test), [[2 * z, 2.0]], rtol=1e-6)
    alone = standardize(X_train)
    np.testing.assert_array_equal(backend.to_numpy(alone), backend.to_numpy(train))


def test_standardizer_fit_transform_inverse(backend):
    X = synthetic_regression(100, 3, backend=backend, dtype="float32").X
    scaler = Standardizer().fit(X)
    Z = scaler.transform(X)
    host = backend.to_numpy(Z)
    np.testing.assert_allclose(host.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(host.std(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        backend.to_numpy(scaler.inverse_transform(Z)), backend.to_numpy(X), atol=1e-6
    )
    X_host = backend.to_numpy(X)
    np.testing.assert_allclose(backend.to_numpy(scaler.mean), X_host.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(scaler.scale), X_host.std(axis=0), rtol=1e-5)


def test_standardizer_errors():
    with pytest.raises(DatasetError, match="not fitted"):
        Standardizer().transform(np.zeros((2, 2)))
    with pytest.raises(DatasetError, match="floating"):
        Standardizer().fit(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(DatasetError, match="at least one sample"):
        Standardizer().fit(np.zeros((0, 2)))
    with pytest.raises(DatasetError, match="eps"):
        Standardizer(eps=-1.0)
    scaler = Standardizer().fit(np.ones((3, 2)))
    with pytest.raises(DatasetError, match=r"shape \(3,\)"):
        scaler.transform(np.ones((3, 3)))
    torch = pytest.importorskip("torch")
    with pytest.raises(BackendMismatchError, match="fitted on numpy"):
        scaler.transform(torch.ones(3, 2))


# -- labels ---------------------------------------------------------------------------------
def test_check_labels_accepts_fitting_labels(backend):
    check_labels(np.array([0, 1, 2, 1]), 3)
    check_labels(np.array([[0], [1]]), 2)
    check_labels(np.array([0.0, 1.0]), 2)
    check_labels(np.array([True, False]), 2)
    check_labels(backend.asarray([0, 1, 1], dtype=backend.index_dtype), 2)


@pytest.mark.parametrize(
    ("labels", "num_classes", "match"),
    [
        (np.array([0, 1, 2]), 2, r"0\.\.1 for 2 classes, found 2"),
        (np.array([-1, 0]), 2, "found -1"),
        (np.arange(20), 3, r"found 3, 4, 5, 6, 7, \.\.\."),
        (np.array([0.0, 0.5]), 2, "whole class indices"),
        (np.array([0.0, np.nan]), 2, "whole class indices"),
        (np.eye(3), 3, "one-hot"),
        (np.array(["a", "b"]), 2, "dtype"),
        (np.array([0, 1]), 1, "at least 2"),
    ],
)
def test_check_labels_rejects(labels, num_classes, match):
    with pytest.raises(DatasetError, match=match):
        check_labels(labels, num_classes)


# -- Dataset and specs ----------------------------------------------------------------------
def test_dataset_record():
    ds = synthetic_classification(100, 4, backend="numpy")
    X, y = ds
    assert X is ds.X and y is ds.y
    assert (ds.n_samples, ds.n_features) == (100, 4)
    assert repr(ds) == (
        "Dataset('synthetic', X=(100, 4) float32, y=(100,) int64, num_classes=2, "
        "backend=numpy on 'cpu')"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.X = None
    with pytest.raises(TypeError):
        ds.info["seed"] = 1
    train, test = ds.split(0.25, seed=1, stratify=True)
    assert (train.n_samples, test.n_samples) == (75, 25)
    assert train.name == "synthetic" and test.num_classes == 2
    np.testing.assert_array_equal(test.y, train_test_split(X, y, 0.25, seed=1, stratify=True)[3])


def test_load_specs(tmp_path):
    assert load("digits", backend="numpy").num_classes == 10
    binary = load("digits01", backend="numpy")
    assert (binary.name, binary.num_classes, binary.n_samples) == ("digits01", 2, 360)
    synthetic = load("synthetic", backend="numpy", seed=5)
    np.testing.assert_array_equal(synthetic.X, synthetic_classification(seed=5).X)
    write_split(tmp_path)
    assert load(f"mnist:{tmp_path}", backend="numpy").n_samples == 5
    write_split(tmp_path, "test", n=2)
    assert load(f"mnist:{tmp_path}", backend="numpy", split="test").n_samples == 2


def test_load_on_a_chosen_backend():
    ds = load("digits01", backend="array_api_strict", device="device1")
    assert ds.backend.device_name == "device1"
    with portgd.use_backend("array_api_strict"):
        assert load("synthetic").backend.name == "array_api_strict"


@pytest.mark.parametrize("spec", ["mnist", "mnist:", "mnist:  "])
def test_load_mnist_needs_a_folder(spec):
    with pytest.raises(DatasetError, match="mnist:PATH"):
        load(spec, backend="numpy")


@pytest.mark.parametrize("spec", ["cifar10", "Digits", "", None])
def test_load_unknown_spec_lists_the_valid_ones(spec):
    with pytest.raises(DatasetError) as err:
        load(spec, backend="numpy")
    message = str(err.value)
    for name in ("digits", "digits01", "mnist:PATH", "synthetic"):
        assert name in message


def test_dataset_is_exported_type():
    assert isinstance(digits(backend="numpy"), Dataset)
