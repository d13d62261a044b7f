"""The bounds of one fetch: retries, timeout, the total deadline, max_size and the backend.

Checked once by fetch() and passed down, so every transfer of one call (a
Drive folder's files included) shares one deadline and one size budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

DEFAULT_MAX_SIZE = 50 * 2**30  # 50 GiB: beyond any course dataset, well below a Colab VM's disk
DEFAULT_DEADLINE = 6 * 3600.0  # seconds; a Colab session lasts at most 12 hours


@dataclass(frozen=True)
class Options:
    """The checked arguments of one fetch() call that every transfer in it obeys."""

    quiet: bool
    retries: int
    timeout: float
    max_size: int
    private: bool = False
    ends: float | None = None  # time.monotonic() when the deadline passes
    deadline: float | None = None

    def left(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.ends is None else self.ends - time.monotonic()
