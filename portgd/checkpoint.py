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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import __version__
from ._files import write_atomically
from .errors import BackendError, CheckpointError, PortgdError
from .io.npz import open_npz
from .layers import layer_from_config
from .model import Sequential, param_name
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


ADVICE = "save the checkpoint again or use an earlier one"


def _parse_header(path: Path, value: np.ndarray) -> dict[str, Any]:
    """The header object from the ``header`` entry (a 1-D uint8 array of UTF-8 JSON)."""
    if value.dtype != np.uint8 or value.ndim != 1:
        raise CheckpointError(
            f"{path}: member 'header.npy' is a {value.dtype} array shaped {value.shape}, not "
            f"1-D uint8 (UTF-8 JSON); {ADVICE}"
        )
    try:
        header = json.loads(value.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError: ValueError
        raise CheckpointError(f"{path} has a corrupt header ({str(exc)[:120]}); {ADVICE}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a portgd checkpoint (unknown header format)")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version!r} (written by portgd "
            f"{header.get('portgd_version', '?')}); this portgd {__version__} reads format "
            f"{FORMAT_VERSION}. Use a matching portgd version."
        )
    return header


def _require(path: Path, ok: bool, what: str) -> None:
    if not ok:
        raise CheckpointError(f"{path} has a malformed header: {what}; {ADVICE}")


def _check_layout(path: Path, header: dict[str, Any]) -> dict[str, str]:
    """The header's structure, checked; ``{entry name: parameter name}`` of every array it
    names: ``param/<name>`` and the optimizer's state entries of each parameter.
    """
    model, params = header.get("model"), header.get("params")
    _require(path, isinstance(model, dict) and isinstance(model.get("layers"), list)
             and all(isinstance(layer, dict) for layer in model["layers"]),
             "'model' must be an object whose 'layers' is a list of objects")
    _require(path, isinstance(params, list) and all(isinstance(p, str) for p in params)
             and len(set(params)) == len(params),
             "'params' must be a list of distinct parameter names")
    _require(path, isinstance(header.get("rng"), dict), "'rng' must be an object")
    _require(path, isinstance(header.get("metadata", {}) or {}, dict),
             "'metadata' must be an object")
    entries = {f"param/{name}": name for name in params}
    optimizer = header.get("optimizer")
    if optimizer is not None:
        state = optimizer.get("state") if isinstance(optimizer, dict) else None
        _require(path, isinstance(state, dict) and all(
            isinstance(refs, dict) and all(isinstance(r, str) for r in refs.values())
            for refs in state.values()),
            "'optimizer' must be null or an object whose 'state' maps parameter names to "
            "{key: entry name}")
        for name, refs in state.items():
            _require(path, name in params,
                     f"the optimizer holds state for {name!r}, which is not a parameter")
            for ref in refs.values():
                _require(path, ref not in entries and ref != HEADER,
                         f"the entry {ref!r} is named twice")
                entries[ref] = name
    return entries


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, np.ndarray]]:
    """The header, the entries it names (see :func:`_check_layout`) and their arrays.

    Each entry is validated before use (see :mod:`portgd.io.npz`).

    Entries the header does not name are ignored (never read).
    """
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist")
    with open_npz(path, CheckpointError, ADVICE) as archive:
        if HEADER not in archive.names:
            raise CheckpointError(
                f"{path} is an .npz file but not a portgd checkpoint (no header)"
            )
        header = _parse_header(path, archive.array(HEADER))
        entries = _check_layout(path, header)
        arrays = {}
        for entry in entries:
            value = archive.array(entry)
            if value.dtype.kind != "f":
                raise CheckpointError(
                    f"{path}: member {entry + '.npy'!r} holds {value.dtype} numbers; parameters "
                    f"and optimizer state are floats; {ADVICE}"
                )
            arrays[entry] = value
    return header, entries, arrays


def _check_shapes(path: Path, header: dict[str, Any], entries: dict[str, str],
                  arrays: dict[str, np.ndarray]) -> None:
    """Every array has the shape the architecture gives its parameter.

    Checked before the model is built, so a header declaring huge layers over small
    arrays is refused before anything is allocated.
    """
    layers = [layer_from_config(config) for config in header["model"]["layers"]]
    shapes = {param_name(i, name): shape for i, layer in enumerate(layers)
              for name, shape in layer.param_shapes().items()}
    if sorted(shapes) != sorted(header["params"]):
        raise CheckpointError(
            f"{path} does not describe a valid model: the header lists the parameters "
            f"{sorted(header['params'])} but its layers have {sorted(shapes)}; {ADVICE}"
        )
    for entry, name in entries.items():
        if arrays[entry].shape != shapes[name]:
            raise CheckpointError(
                f"{path} does not describe a valid model: member {entry + '.npy'!r} is shaped "
                f"{arrays[entry].shape}, but the layers give parameter {name!r} the shape "
                f"{shapes[name]}; {ADVICE}"
            )


def load(path: str | os.PathLike[str], backend: Any = None, device: Any = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save` onto ``backend``/``device`` (any backend).

    Returns ``Checkpoint(model, optimizer, metadata)``; ``optimizer`` is None when none was
    saved. Raises CheckpointError for a missing, corrupt, truncated, pickled, foreign or
    incompatible file.
    """
    path = Path(path)
    header, entries, arrays = _read(path)
    try:
        _check_shapes(path, header, entries, arrays)
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
    except (PortgdError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(
            f"{path} does not describe a valid model ({type(exc).__name__}: {exc})"
        ) from None
    return Checkpoint(model, optimizer, dict(header.get("metadata") or {}))
