"""Hints in scripts: after the traceback of an uncaught error, and after recognised warnings.

`install_excepthook()` chains onto the excepthook and `warnings.showwarning`
that were there before; both stay in charge of what they printed. The shell
integration (`shell.py`) reuses `chain_showwarning` for warnings raised in a cell.
"""

from __future__ import annotations

import sys
import warnings as _warnings
from typing import Any, Callable

from . import state
from .rules import Hint, explain

MARK = "_colabkit_hints"  # attribute set on every hook colabkit installs


def is_ours(hook: Any) -> bool:
    """Whether `hook` (an excepthook or showwarning) is one colabkit installed."""
    return bool(getattr(hook, MARK, False))


def chain_showwarning(on_hint: Callable[[Hint, Any], None]) -> Callable[..., Any]:
    """A warnings.showwarning that shows the warning as before, then hands its hint to `on_hint`.

    Args:
        on_hint: called as on_hint(hint, file) for a recognised warning while hints are on.

    Returns:
        The new showwarning; the one it chains to is its `__wrapped__`.
    """
    previous = _warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        previous(message, category, filename, lineno, file, line)
        if not state.enabled():
            return
        try:
            warning = message if isinstance(message, Warning) else category(str(message))
            hint = explain(warning)
        except Exception:
            return
        if hint is not None:
            on_hint(hint, file)

    showwarning.__wrapped__ = previous  # type: ignore[attr-defined]
    setattr(showwarning, MARK, True)
    return showwarning


def _print_hint(hint: Hint, file: Any = None) -> None:
    stream = file if file is not None else sys.stderr
    try:
        print(str(hint), file=stream, flush=True)
    except Exception:  # a closed stream must not turn into a second error
        pass


def install_excepthook(*, warnings: bool = True) -> None:
    """In a script: print a hint after the normal traceback of an uncaught PyTorch error.

    The traceback is printed by the excepthook that was there before (Python's
    or another library's), unchanged; the hint follows it on stderr. In IPython
    and Colab this is not needed: loading colabkit hooks the shell.
    Calling it again does nothing. `colabkit.hints(False)` silences it.

    Args:
        warnings: also print the hint right after a recognised warning, such
            as MSELoss's silent shape-broadcasting warning.
    """
    if not is_ours(sys.excepthook):
        previous = sys.excepthook

        def excepthook(etype, value, tb):
            previous(etype, value, tb)
            if state.enabled():
                hint = explain(value)
                if hint is not None:
                    _print_hint(hint)

        excepthook.__wrapped__ = previous  # type: ignore[attr-defined]
        setattr(excepthook, MARK, True)
        sys.excepthook = excepthook
    if warnings and not is_ours(_warnings.showwarning):
        _warnings.showwarning = chain_showwarning(_print_hint)
