"""Optimizer snapshots (``state_dict``): making them, checking them, rebuilding from them.

A snapshot is a dict: ``format`` (:data:`STATE_DICT_FORMAT`), ``type`` (class name),
``config`` (constructor keyword arguments), ``step_count``, ``param_steps`` (``{name: int}``)
and ``state`` (``{name: {key: numpy.ndarray}}``, host copies, the only non-JSON part).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import CheckpointError, InputError

if TYPE_CHECKING:
    from .optimizer import Optimizer

__all__ = ["STATE_DICT_FORMAT", "Restored", "build", "parse", "snapshot"]

#: The ``format`` tag of :meth:`Optimizer.state_dict`.
STATE_DICT_FORMAT = "portgd.optimizer/1"


def snapshot(optimizer: Optimizer) -> dict[str, Any]:
    """``optimizer``'s snapshot; reading its state is a device synchronisation."""
    config = optimizer.config()
    if callable(config["lr"]):
        raise InputError(
            f"{type(optimizer).__name__}.state_dict: the learning rate is a custom callable "
            f"({config['lr']!r}) that cannot be saved; use a float or a schedule from "
            f"portgd.schedules (StepDecay, ExponentialDecay, CosineDecay)"
        )
    if "betas" in config:
        config["betas"] = list(config["betas"])
    state: dict[str, dict[str, Any]] = {}
    backend = optimizer.backend
    for name, entry in optimizer.state.items():
        assert backend is not None
        state[name] = {k: backend.to_numpy(v) for k, v in entry.items()}
    for name, host in optimizer._pending.items():
        state[name] = {k: v.copy() for k, v in host.items()}
    return {
        "format": STATE_DICT_FORMAT,
        "type": type(optimizer).__name__,
        "config": config,
        "step_count": optimizer.step_count,
        "param_steps": dict(optimizer.param_steps),
        "state": state,
    }


class Restored(NamedTuple):
    """A checked snapshot: a fresh optimizer of its configuration, counters, host state."""

    fresh: Optimizer
    step_count: int
    param_steps: dict[str, int]
    host_state: dict[str, dict[str, Any]]


def parse(cls: type[Optimizer], state_dict: Any) -> Restored:
    """Check ``state_dict`` for an optimizer of class ``cls``; CheckpointError says what is
    wrong (malformed, another optimizer's, state keys that do not fit the configuration)."""
    owner = cls.__name__
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{owner}: a state dict is a dict, got {type(state_dict)}")
    required = ("type", "config", "step_count", "param_steps", "state")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointError(
            f"{owner}: the optimizer state dict lacks {missing}; it needs {list(required)}"
        )
    fmt = state_dict.get("format", STATE_DICT_FORMAT)
    if fmt != STATE_DICT_FORMAT:
        raise CheckpointError(
            f"{owner}: unknown state dict format {fmt!r}; this portgd reads "
            f"{STATE_DICT_FORMAT!r}"
        )
    if state_dict["type"] != owner:
        raise CheckpointError(
            f"this state dict belongs to a {state_dict['type']} optimizer, not {owner}; "
            f"rebuild the right one with portgd.optim.optimizer_from_state_dict(d)"
        )
    fresh = build(cls, state_dict["config"])
    steps = _counter(owner, "step_count", state_dict["step_count"])
    saved_state = state_dict["state"]
    saved_steps = state_dict["param_steps"]
    if not isinstance(saved_state, Mapping) or not isinstance(saved_steps, Mapping):
        raise CheckpointError(f"{owner}: 'state' and 'param_steps' must be dicts")
    if set(saved_state) != set(saved_steps):
        raise CheckpointError(
            f"{owner}: 'state' has entries for {sorted(saved_state)} but 'param_steps' "
            f"for {sorted(saved_steps)}; they must name the same parameters"
        )
    from portgd.backends._base import is_host_array  # imports NumPy: only when loading

    keys = set(fresh.state_keys())
    host: dict[str, dict[str, Any]] = {}
    for name, entry in saved_state.items():
        if not isinstance(entry, Mapping) or set(entry) != keys:
            found = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
            raise CheckpointError(
                f"{owner}: state of parameter {name!r} has keys {found}, expected "
                f"{sorted(keys)} for this configuration"
            )
        for key, value in entry.items():
            if not is_host_array(value):
                raise CheckpointError(
                    f"{owner}: state {name!r}/{key!r} is a {type(value).__name__}; a "
                    f"state dict holds host NumPy arrays (opt.state_dict() makes them)"
                )
        host[name] = {key: value.copy() for key, value in entry.items()}
    param_steps = {name: _counter(owner, f"param_steps[{name!r}]", n)
                   for name, n in saved_steps.items()}  # fmt: skip
    return Restored(fresh, steps, param_steps, host)


def _counter(owner: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{owner}: {what} must be an int >= 0, got {value!r}")
    return value


def build(cls: type[Optimizer], config: Any) -> Optimizer:
    """``cls(**config)``; an invalid configuration is a CheckpointError."""
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{cls.__name__}: 'config' must be a dict, got {config!r}")
    try:
        return cls(**config)
    except (InputError, TypeError) as exc:
        raise CheckpointError(
            f"{cls.__name__}: the state dict's config {dict(config)!r} is invalid: {exc}"
        ) from exc
