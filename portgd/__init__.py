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
    "DTypeNotSupportedError",
    "InputError",
    "NonFiniteLossError",
    "PortgdError",
    "ShapeError",
]

from . import callbacks, init, layers, losses, metrics
from .history import History
from .linear import LinearSolution, solve_linear
from .model import Sequential

__all__ += [
    "History", "LinearSolution", "Sequential", "solve_linear",
    "callbacks", "init", "layers", "losses", "metrics",
]  # fmt: skip
