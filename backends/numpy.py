"""NumPy on the CPU: the reference backend (NumPy 2 implements the array API itself)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend, backend_factory, unknown_device
from .numpy_fast import FAST_PATHS


@backend_factory(library="numpy", install_hint="pip install 'numpy>=2'")
def create(device: Any = None) -> Backend:
    """The NumPy backend; its only device is ``"cpu"``."""
    if device not in (None, "cpu"):
        error = unknown_device("numpy", device, ["cpu"])
        error.args = (f"{error.args[0]} For a GPU use the cupy or torch backend.",)
        raise error
    backend = Backend(
        "numpy",
        np,
        "cpu",
        library="numpy",
        version=np.__version__,
        array_types=(np.ndarray, np.generic),
    )
    backend.fast.update(FAST_PATHS)
    return backend
