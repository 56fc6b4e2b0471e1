"""PyTorch on the CPU or a CUDA GPU, through array-api-compat's torch namespace."""

from __future__ import annotations

from typing import Any

import numpy as np

from portgd.errors import BackendUnavailableError

from ._base import Backend, backend_factory, unknown_device
from .torch_fast import fast_paths

INSTALL_HINT = "pip install 'portgd[torch]'"


class TorchBackend(Backend):
    def __init__(self, torch: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._torch = torch

    def to_numpy(self, x: Any) -> np.ndarray:
        host = x.detach().cpu().numpy()
        return host.copy() if x.device.type == "cpu" else host  # .numpy() of a CPU tensor is a view

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)


def _parse_device(torch: Any, device: Any) -> Any:
    if device is None:
        return torch.device("cpu")
    if isinstance(device, int) and not isinstance(device, bool):
        return torch.device("cuda", device)
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return None
    if parsed.type == "cuda" and parsed.index is None:
        parsed = torch.device("cuda", 0)
    return parsed


@backend_factory(library="torch", install_hint=INSTALL_HINT)
def create(device: Any = None) -> Backend:
    """The torch backend on ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or an int N."""
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            f"torch is not installed ({exc}); install it with {INSTALL_HINT}"
        ) from exc
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = [torch.device("cpu")] + [torch.device("cuda", i) for i in range(cuda_count)]
    chosen = _parse_device(torch, device)
    if chosen not in devices:
        names = [str(d) for d in devices]
        error = unknown_device("torch", device, names)
        if chosen is not None and chosen.type == "cuda" and cuda_count == 0:
            error.args = (f"{error.args[0]} torch.cuda.is_available() is False: this torch "
                          "build or machine has no usable CUDA GPU.",)
        raise error
    backend = TorchBackend(
        torch,
        "torch",
        xp,
        chosen,
        library="torch",
        version=torch.__version__,
        array_types=(torch.Tensor,),
        devices=devices,
    )
    if chosen.type == "cpu":  # not yet run on a GPU: CUDA keeps the generic paths
        backend.fast.update(fast_paths(torch, xp))
    return backend
