"""`colabkit.hints()`: turn error hints on or off, in shells and scripts."""

from __future__ import annotations

import sys

from . import state
from .state import enabled as hints_enabled

__all__ = ["hints", "hints_enabled"]


def hints(enabled: bool = True) -> None:
    """Turn colabkit's error hints on (default) or off, in notebooks, shells and scripts.

    Hints are on after `import colabkit` in a notebook; `%colab_hints off` does
    the same as `hints(False)`. Turning them on inside IPython also hooks the
    running shell, for when `import colabkit` happened before IPython started.

    Args:
        enabled: True to show hints after recognised errors and warnings, False to stop.
    """
    state.set_enabled(enabled)
    if enabled and "IPython" in sys.modules:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            from .shell import register

            register(shell)
