"""One rule for the numbers users pass: counts, sizes in bytes and durations.

A count or a size is a whole number (an `int`, never `True`/`False` nor a
float such as `3.0`); a duration is a finite real number of seconds (or
minutes, as the caller names it). Every refusal is a ConfigError that names
the argument, the value and what to give instead.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError


def check_count(value: Any, name: str, minimum: int = 0, hint: str = "") -> int:
    """`value` when it is a whole number >= `minimum`; else a ConfigError naming `name`.

    Example:
        >>> check_count(3, "retries")
        3
        >>> check_count(3.0, "retries")
        Traceback (most recent call last):
        ...
        colabkit.errors.ConfigError: retries=3.0: give a whole number >= 0.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = f" ({hint})" if hint else ""
        raise ConfigError(f"{name}={value!r}: give a whole number >= {minimum}{extra}.")
    return value


def check_size(value: Any, name: str, minimum: int = 1, hint: str = "") -> int:
    """A size in bytes: the count rule with `minimum` defaulting to 1."""
    return check_count(value, name, minimum, hint or "a size in bytes, e.g. 2 * 1024**3 for 2 GiB")


def check_duration(value: Any, name: str, unit: str = "seconds", allow_zero: bool = False) -> float:
    """`value` as a float when it is a finite number > 0 (>= 0 with `allow_zero`)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value!r}: give a number of {unit} {bound}.")
    return float(value)
