"""portgd: gradient descent and multi-layer perceptrons on any array-API library.

The same code runs on NumPy, CuPy, PyTorch, array-api-strict or a backend you register::

    import portgd
    portgd.set_backend("cupy")            # or: with portgd.use_backend("torch", "cuda:0"):
    print(portgd.available_backends())
"""

from ._registry import (
    BackendInfo,
    available_backends,
    backend_names,
    backend_of,
    get_backend,
    register_backend,
    set_backend,
    to_numpy,
    use_backend,
)
from .errors import (
    BackendError,
    BackendMismatchError,
    BackendNotFoundError,
    BackendUnavailableError,
    CheckpointError,
    DatasetError,
    DeviceNotFoundError,
    DistributedError,
    DTypeNotSupportedError,
    InputError,
    NonFiniteLossError,
    PortgdError,
    ShapeError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # backends
    "BackendInfo",
    "available_backends",
    "backend_names",
    "backend_of",
    "get_backend",
    "register_backend",
    "set_backend",
    "to_numpy",
    "use_backend",
    # errors
    "BackendError",
    "BackendMismatchError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "CheckpointError",
    "DatasetError",
    "DeviceNotFoundError",
    "DistributedError",
    "DTypeNotSupportedError",
    "InputError",
    "NonFiniteLossError",
    "PortgdError",
    "ShapeError",
]

from . import callbacks, init, layers, losses, metrics, optim, schedules, training
from .history import History
from .linear import LinearSolution, solve_linear
from .model import Sequential, mlp

__all__ += [
    "History", "LinearSolution", "Sequential", "mlp", "solve_linear",
    "callbacks", "init", "layers", "losses", "metrics", "optim", "schedules", "training",
    "Checkpoint", "datasets", "load", "save",
]  # fmt: skip

# Host-I/O modules import NumPy; they load on first use so that `import portgd` stays light.
_LAZY = {
    "datasets": ("portgd.datasets", None),
    "save": ("portgd.checkpoint", "save"),
    "load": ("portgd.checkpoint", "load"),
    "Checkpoint": ("portgd.checkpoint", "Checkpoint"),
}


def __dir__() -> list[str]:
    """The module's names and the lazily loaded ones (``save``, ``load``, ``datasets``, ...)."""
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'portgd' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
