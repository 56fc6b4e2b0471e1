"""Optimizers by name: :func:`make_optimizer` and :func:`optimizer_from_state_dict`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import CheckpointError, InputError
from .optimizer import Optimizer
from .optimizers import SGD, AdaGrad, Adam, AdamW, RMSprop
from .state import build

__all__ = ["OPTIMIZERS", "make_optimizer", "optimizer_from_state_dict"]

#: Optimizer classes by their type name (the ``"type"`` of a state dict).
OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.__name__: cls for cls in (SGD, AdaGrad, RMSprop, Adam, AdamW)
}

#: Names accepted by :func:`make_optimizer`: (class, default keyword arguments).
_FACTORY: dict[str, tuple[type[Optimizer], dict[str, Any]]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "adagrad": (AdaGrad, {}),
    "rmsprop": (RMSprop, {}),
    "adam": (Adam, {}),
    "adamw": (AdamW, {}),
}


def make_optimizer(name: str, **kwargs: Any) -> Optimizer:
    """An optimizer by name: ``"sgd"``, ``"momentum"`` (SGD with ``momentum=0.9``),
    ``"adagrad"``, ``"rmsprop"``, ``"adam"`` or ``"adamw"``; keyword arguments go to its
    constructor (and override ``"momentum"``'s 0.9)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _FACTORY:
        raise InputError(
            f"unknown optimizer {name!r}; choose one of {', '.join(_FACTORY)}"
        )
    cls, defaults = _FACTORY[key]
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(
            f"optimizer {name!r} ({cls.__name__}) takes no argument {', '.join(unknown)}; "
            f"it takes {', '.join(accepted)}"
        )
    return cls(**{**defaults, **kwargs})


def optimizer_from_state_dict(state_dict: Mapping[str, Any]) -> Optimizer:
    """A new optimizer of the saved type and configuration with the saved state loaded."""
    if not isinstance(state_dict, Mapping) or "type" not in state_dict:
        raise CheckpointError("an optimizer state dict is a dict with a 'type' key")
    cls = OPTIMIZERS.get(state_dict["type"])
    if cls is None:
        raise CheckpointError(
            f"unknown optimizer type {state_dict['type']!r} in the state dict; known: "
            f"{', '.join(OPTIMIZERS)}"
        )
    if "config" not in state_dict:
        raise CheckpointError(f"{cls.__name__}: the optimizer state dict lacks 'config'")
    opt = build(cls, state_dict["config"])
    opt.load_state_dict(state_dict)
    return opt
