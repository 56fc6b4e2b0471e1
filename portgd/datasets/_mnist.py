"""MNIST: the official archives, their verified download, and the loader of the IDX files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .._files import write_atomically
from ..errors import DatasetError
from ._dataset import Dataset, _build, _host_float, _target
from ._idx import read_idx


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

    from .. import __version__

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
    ``y`` is the digit in the backend's index dtype (int64, else int32), ``(n,)``.

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
