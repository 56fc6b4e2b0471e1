"""Fast paths for the torch backend on the CPU: the in-place optimizer rules of
``backends/inplace.py`` made from torch's functions, and torch calls for a few operations of
every training step that skip array-api-compat's Python wrappers. Each gives the generic
path's numbers bit for bit (tests/test_fast_paths.py and the conformance suite check them).
They are not registered on CUDA devices: they have not been run on a GPU yet.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .inplace import in_place_rules


def _outside_autograd(torch: Any, rule: Callable[..., Any]) -> Callable[..., Any]:
    """``rule`` run under ``torch.no_grad()`` for a parameter that requires grad: torch
    refuses ``out=`` arguments where autograd records, and an optimizer's update is not part
    of any graph (``torch.optim`` steps the same way). portgd's own parameters never require
    grad and take the plain call."""

    @functools.wraps(rule)  # keeps the signature: inspect still finds may_overwrite_grad
    def update(param: Any, *args: Any, **kwargs: Any) -> Any:
        if param.requires_grad:
            with torch.no_grad():
                return rule(param, *args, **kwargs)
        return rule(param, *args, **kwargs)

    return update


def fast_paths(torch: Any, xp: Any) -> dict[str, Callable[..., Any]]:
    """The fast-path table of the torch backend; ``xp`` is array-api-compat's namespace,
    whose ``sum`` and ``max`` stay the path for ``axis=None``."""

    def relu_backward(x: Any, dout: Any) -> Any:
        """``dout * (x > 0)`` with the 0/1 mask written as floats by the comparison itself:
        torch's kernels that read or write booleans run several times slower on the CPU
        (``dout * (x > 0)`` took 300-370 us for a 1024x256 float32 batch here, this 53 us).
        ``x`` and ``dout`` have the same shape (``ReLU.backward``'s input and gradient).
        Autograd refuses ``out=`` arguments, so a ``dout`` that requires grad takes the
        plain product."""
        if dout.requires_grad:
            return dout * (x > 0)
        mask = torch.gt(x, 0.0, out=torch.empty_like(dout))
        return torch.mul(dout, mask, out=mask)

    def add_bias(y: Any, bias: Any) -> Any:
        """``y + bias`` written into ``y``, Dense's fresh product (one allocation less)."""
        return torch.add(y, bias, out=y)

    def reduce_sum(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
        """``xp.sum``: along an axis, the ``torch.sum`` call the wrapper would make."""
        if axis is None:
            return xp.sum(x, keepdims=keepdims)
        return torch.sum(x, axis, keepdim=keepdims)

    def reduce_max(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
        """``xp.max``: along an axis, the ``torch.amax`` call the wrapper would make."""
        if axis is None:
            return xp.max(x, keepdims=keepdims)
        return torch.amax(x, axis, keepdim=keepdims)

    rules = in_place_rules(add=torch.add, subtract=torch.sub, multiply=torch.mul,
                           divide=torch.div, sqrt=torch.sqrt, maximum=torch.maximum,
                           empty_like=torch.empty_like, copy=torch.clone)
    return {
        **{name: _outside_autograd(torch, rule) for name, rule in rules.items()},
        "relu_backward": relu_backward,
        "add_bias": add_bias,
        "sum": reduce_sum,
        "max": reduce_max,
    }
