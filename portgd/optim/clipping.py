"""Gradient clipping on name-keyed dicts: by value, by global norm, and the global norm.

Every function takes ``{name: array}`` (``None`` entries pass through), returns a new dict
with the same keys, and computes on the gradients' device without reading to the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._checks import check_real
from .._registry import backend_of
from ..errors import BackendMismatchError, InputError, PortgdError
from .rules import Array

if TYPE_CHECKING:
    from portgd.backends import Backend

__all__ = ["CLIP_NORM_EPS", "clip_by_global_norm", "clip_by_value", "global_norm"]

#: The ``eps`` that ``clip_norm=`` uses, as ``torch.nn.utils.clip_grad_norm_``.
CLIP_NORM_EPS = 1e-6


def _describe(x: Any) -> str:
    try:
        found = backend_of(x)
    except PortgdError:
        return f"a {type(x).__module__}.{type(x).__name__}"
    return f"{found.name} on device {found.device_name!r}"


def _common_backend(grads: Mapping[str, Array], owner: str) -> Backend:
    """The Backend holding every array of ``grads`` (non-empty, no None values)."""
    first_name, first = next(iter(grads.items()))
    backend = backend_of(first)
    for name, g in grads.items():
        if not backend.holds(g):
            raise BackendMismatchError(
                f"{owner}: gradient {name!r} is {_describe(g)} but gradient {first_name!r} "
                f"is {backend.name} on device {backend.device_name!r}; all gradients must "
                f"live on one backend and device."
            )
    return backend


def _present(grads: Mapping[str, Array | None], owner: str) -> dict[str, Array]:
    if not isinstance(grads, Mapping):
        raise InputError(f"{owner}: grads must be a dict {{name: array}}, got {type(grads)}")
    return {name: g for name, g in grads.items() if g is not None}


def _clip_value(grads: dict[str, Array], limit: float, xp: Any) -> dict[str, Array]:
    return {name: xp.clip(g, min=-limit, max=limit) for name, g in grads.items()}


def _global_norm(grads: dict[str, Array], xp: Any) -> Array:
    total = None
    for g in grads.values():
        square_sum = xp.sum(g * g)
        total = square_sum if total is None else total + square_sum
    return xp.sqrt(total)


def _clip_global_norm(
    grads: dict[str, Array], max_norm: float, eps: float, xp: Any
) -> dict[str, Array]:
    if not grads:
        return {}
    scale = xp.clip(max_norm / (_global_norm(grads, xp) + eps), max=1.0)
    return {
        name: g * (scale if scale.dtype == g.dtype else xp.astype(scale, g.dtype))
        for name, g in grads.items()
    }


def clip_by_value(grads: Mapping[str, Array | None], limit: float) -> dict[str, Array | None]:
    """Clamp every gradient entry to ``[-limit, limit]`` (torch's ``clip_grad_value_``).

    Returns a new dict with the same keys; ``None`` entries pass through. Shapes and dtypes
    are kept.
    """
    limit = check_real("clip_by_value", "limit", limit, low=0.0)
    present = _present(grads, "clip_by_value")
    if not present:
        return dict(grads)
    xp = _common_backend(present, "clip_by_value").xp
    return {**grads, **_clip_value(present, limit, xp)}


def global_norm(grads: Mapping[str, Array | None]) -> Array:
    """The 2-norm of all gradients together, ``sqrt(sum_i sum(g_i ** 2))``.

    A 0-d array on the gradients' device (read it with ``portgd.to_numpy`` when you need
    the number; that is a device synchronisation).
    """
    present = _present(grads, "global_norm")
    if not present:
        raise InputError("global_norm: no gradients given")
    return _global_norm(present, _common_backend(present, "global_norm").xp)


def clip_by_global_norm(
    grads: Mapping[str, Array | None], max_norm: float, eps: float = 1e-6
) -> dict[str, Array | None]:
    """Scale all gradients together so that their global norm is at most about ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: with ``n = global_norm(grads)``, every gradient is
    multiplied by ``min(1, max_norm / (n + eps))``. The factor is computed on the device
    (no host read), so gradients whose norm is below ``max_norm`` are multiplied by 1.
    Returns a new dict with the same keys; ``None`` entries pass through.
    """
    max_norm = check_real("clip_by_global_norm", "max_norm", max_norm, low=0.0)
    eps = check_real("clip_by_global_norm", "eps", eps, low=0.0)
    present = _present(grads, "clip_by_global_norm")
    if not present:
        return dict(grads)
    xp = _common_backend(present, "clip_by_global_norm").xp
    return {**grads, **_clip_global_norm(present, max_norm, eps, xp)}
