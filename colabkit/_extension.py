"""IPython entry point: `%load_ext colabkit`, also called on `import colabkit` in a shell."""

from __future__ import annotations

from typing import Any

_REGISTERED_ATTR = "_colabkit_registered"


def load_ipython_extension(ipython: Any) -> None:
    """Register colabkit's magics and hooks on `ipython`, once."""
    if getattr(ipython, _REGISTERED_ATTR, False):
        return
    from .magics import ColabkitMagics

    ipython.register_magics(ColabkitMagics)
    for hook in _shell_hooks():
        hook(ipython)
    setattr(ipython, _REGISTERED_ATTR, True)


def _shell_hooks() -> list:
    """Extra per-shell set-up contributed by feature modules (e.g. error hints)."""
    from ._hints.shell import register as register_error_hints

    return [register_error_hints]
