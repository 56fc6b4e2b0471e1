"""Argument checks the loaders share."""

from __future__ import annotations

import numbers
from typing import Any

from ..errors import DatasetError


def _count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DatasetError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise DatasetError(f"{what} must be at least {minimum}, got {value}")
    return int(value)
