"""Checks the command line makes before the first epoch, so that nothing fails after training.

* :func:`output_file`: an output path is a file name in an existing folder that this process
  can create files in, with an accepted suffix; probed by creating (and removing) a file.
* :func:`plot_file`: matplotlib is installed and knows the image format of the suffix.
* :func:`training_memory` and :func:`check_memory`: an estimate of what training needs
  against the memory the device has free, refused with the numbers and what to change.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

PLOT_INSTALL_HINT = "pip install 'portgd[plot]'"


#: Memory the estimate leaves to the rest of the process and the system.
HEADROOM = 0.9


def output_file(path: str, option: str, suffixes: Sequence[str] | None = None) -> Path:
    """``path`` as a Path once it is known that a file can be written there; else InputError.

    ``suffixes`` (lower case, with the dot) are the accepted file name endings.
    """
    target = Path(path).expanduser()
    if not str(path).strip():
        raise InputError(f"{option} needs a file name, got an empty string")
    if target.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name inside it")
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise InputError(
            f"{option} {path}: the file name must end in {' or '.join(suffixes)}, "
            f"e.g. {target.with_suffix(suffixes[0]).name}"
        )
    folder = target.parent
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(prefix=".portgd-probe-", dir=folder)
    except OSError as exc:
        raise InputError(
            f"{option} {path}: cannot create files in {folder} ({exc.strerror or exc}); "
            f"choose a folder you can write to"
        ) from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return target


def plot_file(path: str, option: str = "--plot") -> Path:
    """Check matplotlib is installed, knows the suffix's format and the file can be written."""
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError(f"{option} needs matplotlib, which is not installed; install it with "
                         f"{PLOT_INSTALL_HINT}, or leave out {option}")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes(), key=lambda f: (f != "png", f))
    return output_file(path, option, [f".{name}" for name in formats])


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes training is expected to hold at its peak, by kind.

    ``parameters``: weights and biases; ``gradients``: one gradient per parameter;
    ``optimizer``: the optimizer's state arrays; ``activations``: what one batch's forward
    and backward pass keep (each layer's output and its gradient, twice for the activation
    layers, at the training or evaluation batch size); ``data``: the features and targets
    on the device plus the shuffled copy of each epoch.
    """

    parameters: int
    gradients: int
    optimizer: int
    activations: int
    data: int
    n_parameters: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations + self.data

    def describe(self) -> str:
        return (f"{_gib(self.total)}: {self.n_parameters:,} parameters "
                f"({_gib(self.parameters)}), gradients {_gib(self.gradients)}, optimizer state "
                f"{_gib(self.optimizer)}, activations {_gib(self.activations)}, data "
                f"{_gib(self.data)}")


def training_memory(
    widths: Sequence[int],
    *,
    batch_size: int,
    n_train: int,
    n_eval: int,
    n_targets: int,
    itemsize: int,
    optimizer_slots: int,
) -> MemoryEstimate:
    """Estimate the peak memory of training an MLP with layer ``widths`` (input first).

    Parameters ``P = sum(a*b + b)`` over consecutive widths; gradients ``P``; optimizer state
    ``optimizer_slots * P``, the slots being the optimizer's state arrays per parameter
    (``len(optimizer.state_keys())``); activations ``4 * B * sum(widths[1:])`` with
    ``B`` the batch size (training and evaluation both go batch by batch); data
    ``2 * n_train * (widths[0] + n_targets) + n_eval * (widths[0] + n_targets)``; all times
    ``itemsize`` bytes. Python ints, so a width of 10**5 does not overflow.
    """
    n_params = sum(a * b + b for a, b in itertools.pairwise(widths))
    batch = min(batch_size, max(n_train, 1))
    activations = 4 * batch * sum(widths[1:])
    row = widths[0] + n_targets
    data = 2 * n_train * row + n_eval * row
    return MemoryEstimate(
        parameters=n_params * itemsize,
        gradients=n_params * itemsize,
        optimizer=optimizer_slots * n_params * itemsize,
        activations=activations * itemsize,
        data=data * itemsize,
        n_parameters=n_params,
    )


def host_available_memory() -> int | None:
    """Bytes of memory the host can still give (Linux ``MemAvailable``); None if unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(backend: Any) -> int | None:
    """Free bytes on ``backend``'s device: the backend's ``free_memory()`` if it has one, the
    host's available memory for host devices, None (no check) for other devices."""
    probe = getattr(backend, "free_memory", None)
    if callable(probe):
        try:
            return int(probe())
        except Exception:  # a probe that fails must not stop training; the check is skipped
            return None
    if "cuda" in str(backend.device_name).lower() or "gpu" in str(backend.device_name).lower():
        return None
    return host_available_memory()


def check_memory(estimate: MemoryEstimate, backend: Any, free: int | None = None) -> None:
    """InputError if ``estimate`` exceeds ``HEADROOM`` of the free memory of the device."""
    free = available_memory(backend) if free is None else free
    if free is None or estimate.total <= HEADROOM * free:
        return
    raise InputError(
        f"training would need about {estimate.describe()}; {backend.name} "
        f"{backend.device_name} has {_gib(free)} free. Use smaller --hidden widths, a smaller "
        f"--batch-size, --dtype float32 or an optimizer with less state (sgd without "
        f"--momentum keeps none)"
    )

