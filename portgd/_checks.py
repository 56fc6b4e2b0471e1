"""Argument checks shared by the modules that validate user input."""

from __future__ import annotations

import math
from typing import Any

from .errors import InputError


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (not a bool), else InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}")
    return value


def check_real(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite Python float inside the given range, else InputError.

    The message names the owner, the argument and the allowed range, e.g.
    ``"Adam: betas[0] must be in [0, 1), got 1.0"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{owner}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{owner}: {name} must be finite, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if low is not None and high is not None:
            allowed = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
                       f"{')' if high_open else ']'}")  # fmt: skip
        elif low is not None:
            allowed = f"{'>' if low_open else '>='} {low:g}"
        else:
            allowed = f"{'<' if high_open else '<='} {high:g}"
        raise InputError(f"{owner}: {name} must be {allowed}, got {value!r}")
    return value
