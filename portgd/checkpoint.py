"""Checkpoints: one ``.npz`` file that cannot execute code when loaded.

Layout (see docs/checkpoints.md): a NumPy ``.npz`` archive read with ``allow_pickle=False``.
The entry ``header`` holds UTF-8 JSON: format name and version, portgd version, the model's
architecture, the optimizer's configuration and counters, the host generator's state and the
caller's metadata. Arrays live in entries ``param/<name>`` and ``optim/<param>/<key>``; the
JSON refers to them by entry name. Files are written atomically (temporary file in the same
folder, fsync, rename), so an interrupted save leaves the previous checkpoint intact.

This is a host-I/O module: it uses NumPy, the host format, directly.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import __version__
from ._files import write_atomically
from .errors import BackendError, CheckpointError, PortgdError
from .model import Sequential
from .optim import optimizer_from_state_dict

FORMAT = "portgd-checkpoint"
FORMAT_VERSION = 1
HEADER = "header"


class Checkpoint(NamedTuple):
    """What :func:`load` returns: the model, the optimizer (or None) and the metadata."""

    model: Sequential
    optimizer: Any
    metadata: dict[str, Any]


def _jsonable(value: Any, where: str) -> Any:
    """``value`` with NumPy scalars made Python numbers; TypeError names what cannot be saved."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(
        f"cannot save {where} = {value!r} ({type(value).__name__}) in a checkpoint header; "
        f"metadata must be JSON-like (numbers, strings, lists, dicts)"
    )


def save(path: str | os.PathLike[str], model: Sequential, optimizer: Any = None,
         **metadata: Any) -> Path:
    """Write ``model`` (and ``optimizer``, and JSON-like ``metadata``) to ``path`` atomically.

    The model's parameters, architecture and host generator state are saved, so that
    :func:`load` followed by ``fit`` continues exactly where an uninterrupted run would.
    Returns the path written.
    """
    target = Path(path)
    arrays: dict[str, np.ndarray] = {
        f"param/{name}": value for name, value in model.state_dict().items()
    }
    optimizer_header = None
    if optimizer is not None:
        state = optimizer.state_dict()
        optimizer_header = {k: v for k, v in state.items() if k != "state"}
        refs: dict[str, dict[str, str]] = {}
        for name, entry in state["state"].items():
            refs[name] = {}
            for key, value in entry.items():
                arrays[f"optim/{name}/{key}"] = np.asarray(value)
                refs[name][key] = f"optim/{name}/{key}"
        optimizer_header["state"] = refs
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "portgd_version": __version__,
        "model": model.config(),
        "params": sorted(model.params),
        "rng": model.rng.bit_generator.state,
        "optimizer": optimizer_header,
        "metadata": metadata,
    }
    encoded = json.dumps(_jsonable(header, "header")).encode("utf-8")
    arrays[HEADER] = np.frombuffer(encoded, dtype=np.uint8)
    _write_atomically(target, arrays)
    return target


def _write_atomically(target: Path, arrays: dict[str, np.ndarray]) -> None:
    if not target.parent.is_dir():
        raise CheckpointError(
            f"cannot save to {target}: the folder {target.parent} does not exist"
        )
    for name, value in arrays.items():
        if value.dtype.hasobject:  # would be pickled, and load refuses pickles
            raise CheckpointError(f"cannot save {name}: it holds Python objects, not numbers")
    try:
        write_atomically(target, lambda handle: np.savez(handle, **arrays))
    except OSError as exc:
        raise CheckpointError(
            f"cannot save to {target}: {exc.strerror or exc}; the previous file, if any, is "
            f"unchanged"
        ) from None


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is corrupt or truncated, or not a checkpoint (it is not an .npz "
            f"archive); save the checkpoint again or use an earlier one"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CheckpointError(
                f"{path} contains pickled Python objects; portgd refuses to load them because "
                f"unpickling can execute code. Only load checkpoints written by portgd.save."
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            f"save the checkpoint again or use an earlier one"
        ) from None
    if HEADER not in arrays:
        raise CheckpointError(f"{path} is an .npz file but not a portgd checkpoint (no header)")
    try:
        header = json.loads(arrays.pop(HEADER).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has a corrupt header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a portgd checkpoint (unknown header format)")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version!r} (written by portgd "
            f"{header.get('portgd_version', '?')}); this portgd {__version__} reads format "
            f"{FORMAT_VERSION}. Use a matching portgd version."
        )
    return header, arrays


def load(path: str | os.PathLike[str], backend: Any = None, device: Any = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save` onto ``backend``/``device`` (any backend).

    Returns ``Checkpoint(model, optimizer, metadata)``; ``optimizer`` is None when none was
    saved. Raises CheckpointError for a missing, corrupt, truncated, pickled, foreign or
    incompatible file.
    """
    path = Path(path)
    header, arrays = _read(path)
    try:
        model = Sequential.from_config(header["model"], backend=backend, device=device)
        params = {name: arrays[f"param/{name}"] for name in header["params"]}
        model.load_state_dict(params)
        model.rng.bit_generator.state = header["rng"]
        optimizer = None
        if header.get("optimizer") is not None:
            saved = dict(header["optimizer"])
            saved["state"] = {
                name: {key: arrays[ref] for key, ref in refs.items()}
                for name, refs in saved["state"].items()
            }
            optimizer = optimizer_from_state_dict(saved)
            optimizer.to(model.backend)
    except (CheckpointError, BackendError):
        raise  # already says what is wrong: an unusable backend, a dtype the device lacks
    except (PortgdError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} does not describe a valid model ({type(exc).__name__}: {exc})"
        ) from None
    return Checkpoint(model, optimizer, dict(header.get("metadata") or {}))
