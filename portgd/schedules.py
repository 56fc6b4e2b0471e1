"""Learning-rate schedules: host-side functions of the optimizer's step count.

A schedule is a small object called as ``schedule(step) -> float``. ``step`` is the number
of optimizer steps already taken (``opt.step_count`` before the update), a Python int, so
evaluating a schedule never touches the device. The first update uses ``schedule(0)``.

Every schedule has ``config()``, a JSON-serialisable dict holding its type name and its
constructor arguments; :func:`schedule_from_config` rebuilds it. Optimizers store that dict
in their ``state_dict()``.

Step counts are optimizer steps (mini-batches), not epochs: a schedule meant to change once
per epoch takes ``step_size = batches_per_epoch * epochs_between_changes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._checks import check_real
from .errors import InputError

__all__ = [
    "CosineDecay",
    "ExponentialDecay",
    "Schedule",
    "StepDecay",
    "schedule_from_config",
]


def _count(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{owner}: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


def _step(owner: str, step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(
            f"{owner}: step must be a non-negative Python int (optimizer steps taken), "
            f"got {step!r}"
        )
    return step


class Schedule:
    """Base class of learning-rate schedules: ``schedule(step) -> float``."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The constructor arguments plus ``"type"``, JSON-serialisable."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.config() == self.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` steps (torch's ``StepLR``).

    ``lr_t = lr * gamma ** (t // step_size)``.
    """

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.lr = check_real("StepDecay", "lr", lr, low=0.0)
        self.step_size = _count("StepDecay", "step_size", step_size, 1)
        self.gamma = check_real("StepDecay", "gamma", gamma, low=0.0, low_open=True)

    def __call__(self, step: int) -> float:
        step = _step("StepDecay", step)
        return self.lr * self.gamma ** (step // self.step_size)

    def config(self) -> dict[str, Any]:
        return {"type": "StepDecay", "lr": self.lr, "step_size": self.step_size,
                "gamma": self.gamma}  # fmt: skip


class ExponentialDecay(Schedule):
    """Multiply the rate by ``gamma`` every step (torch's ``ExponentialLR``).

    ``lr_t = lr * gamma ** t``.
    """

    def __init__(self, lr: float, gamma: float) -> None:
        self.lr = check_real("ExponentialDecay", "lr", lr, low=0.0)
        self.gamma = check_real("ExponentialDecay", "gamma", gamma, low=0.0, low_open=True)

    def __call__(self, step: int) -> float:
        step = _step("ExponentialDecay", step)
        return self.lr * self.gamma**step

    def config(self) -> dict[str, Any]:
        return {"type": "ExponentialDecay", "lr": self.lr, "gamma": self.gamma}


class CosineDecay(Schedule):
    """Linear warm-up, then half a cosine from ``lr`` down to ``min_lr``.

    With ``W = warmup_steps`` and ``T = total_steps``::

        lr_t = lr * t / W                                          for t < W
        lr_t = min_lr + (lr - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2   for W <= t < T
        lr_t = min_lr                                              for t >= T

    So the very first update (``t = 0``) has rate 0 when ``W > 0``, the rate reaches ``lr``
    at ``t = W`` and ``min_lr`` at ``t = T``. Without warm-up this is torch's
    ``CosineAnnealingLR`` with ``T_max = T`` and ``eta_min = min_lr``, held at ``min_lr``
    after ``T`` instead of rising again.
    """

    def __init__(
        self, lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0
    ) -> None:
        self.lr = check_real("CosineDecay", "lr", lr, low=0.0)
        self.total_steps = _count("CosineDecay", "total_steps", total_steps, 1)
        self.warmup_steps = _count("CosineDecay", "warmup_steps", warmup_steps, 0)
        self.min_lr = check_real("CosineDecay", "min_lr", min_lr, low=0.0)
        if self.warmup_steps >= self.total_steps:
            raise InputError(
                f"CosineDecay: warmup_steps must be < total_steps, got "
                f"warmup_steps={self.warmup_steps}, total_steps={self.total_steps}"
            )
        if self.min_lr > self.lr:
            raise InputError(
                f"CosineDecay: min_lr must be <= lr, got min_lr={self.min_lr}, lr={self.lr}"
            )

    def __call__(self, step: int) -> float:
        step = _step("CosineDecay", step)
        if step < self.warmup_steps:
            return self.lr * step / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress)) / 2

    def config(self) -> dict[str, Any]:
        return {"type": "CosineDecay", "lr": self.lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_lr": self.min_lr}  # fmt: skip


SCHEDULES: dict[str, type[Schedule]] = {
    "StepDecay": StepDecay,
    "ExponentialDecay": ExponentialDecay,
    "CosineDecay": CosineDecay,
}


def schedule_from_config(config: Mapping[str, Any]) -> Schedule:
    """Rebuild a schedule from its ``config()`` dict (``{"type": "CosineDecay", ...}``)."""
    if not isinstance(config, Mapping) or "type" not in config:
        raise InputError(
            f"a schedule config is a dict with a 'type' key, got {config!r}"
        )
    kwargs = dict(config)
    name = kwargs.pop("type")
    cls = SCHEDULES.get(name)
    if cls is None:
        raise InputError(
            f"unknown schedule type {name!r}; known types: {', '.join(SCHEDULES)}"
        )
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(f"bad arguments for {name}: {exc}") from exc
