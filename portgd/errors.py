"""The portgd exception hierarchy.

Every error portgd raises on purpose derives from :class:`PortgdError`, so a caller
(and the command line) can catch one type. Each subclass also derives from the builtin
exception a NumPy or PyTorch user would expect (``ValueError``, ``LookupError``, ...).
Messages say what happened and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "PortgdError",
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "DeviceNotFoundError",
    "DTypeNotSupportedError",
    "BackendMismatchError",
    "ShapeError",
    "InputError",
    "NonFiniteLossError",
    "CheckpointError",
    "DatasetError",
    "DistributedError",
]


class PortgdError(Exception):
    """Base class of every error portgd raises on purpose."""


class BackendError(PortgdError):
    """A problem with a backend: its name, availability, devices or dtypes."""


class BackendNotFoundError(BackendError, LookupError):
    """No backend is registered under the requested name."""


class BackendUnavailableError(BackendError, RuntimeError):
    """The backend is registered but cannot run here (library missing, no GPU, ...)."""


class DeviceNotFoundError(BackendError, ValueError):
    """The backend has no device matching the requested specifier."""


class DTypeNotSupportedError(BackendError, TypeError):
    """The backend or device does not support the requested dtype.

    ``alternatives`` names the float dtypes that work there (the message suggests the last,
    as ``dtype='float32'``; the command line says ``--dtype float32`` instead).
    """

    def __init__(self, message: str, alternatives: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.alternatives = tuple(alternatives)


class BackendMismatchError(BackendError, ValueError):
    """An array lives on another backend or device than the one it is used with."""


class ShapeError(PortgdError, ValueError):
    """An array has the wrong shape for the layer, loss or function it is given to."""


class InputError(PortgdError, ValueError):
    """An argument has a value outside what the function accepts."""


class NonFiniteLossError(PortgdError, FloatingPointError):
    """The training loss became NaN or infinite."""


class CheckpointError(PortgdError, ValueError):
    """A checkpoint file is missing, corrupt, unsafe or incompatible."""


class DatasetError(PortgdError, ValueError):
    """A dataset is missing, malformed or unsuitable for the requested use."""


class DistributedError(PortgdError, RuntimeError):
    """The processes of a data-parallel job disagree or cannot run as asked."""
