"""Whether error hints are shown: one flag for scripts and shells (`colabkit.hints()` sets it)."""

from __future__ import annotations

_enabled = True


def enabled() -> bool:
    """Whether hints are shown."""
    return _enabled


def set_enabled(flag: bool) -> None:
    """Show hints (True) or not (False) from now on."""
    global _enabled
    _enabled = bool(flag)
