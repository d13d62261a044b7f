"""Error hints in IPython and Colab: shown after a failing cell's traceback.

Hooks only the shell's `pre_run_cell` / `post_run_cell` events; the shell's
custom exception handlers (Colab installs its own with `set_custom_exc`) and
its traceback display are left exactly as they are. After the cell, the hint
for its error (`ExecutionResult.error_in_exec`) is displayed once, so it comes
after the traceback; recognised warnings raised during the cell (MSELoss's
shape warning) are displayed as hints too. Works on IPython 7.34 (Colab's pin,
which does not display exception notes) and current IPython.
"""

from __future__ import annotations

import warnings
from typing import Any

from . import state
from .excepthook import chain_showwarning, is_ours
from .rules import Hint, explain

_ATTR = "_colabkit_hints"


class _CellHints:
    """Per-shell state: the hints collected while one cell runs."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.pending: list[Hint] = []
        self.showwarning: Any = None  # ours, while a cell runs

    def pre_run_cell(self, info: Any = None) -> None:
        self.pending = []
        self.showwarning = None
        # a script-style hook (install_excepthook) already prints warning hints
        if state.enabled() and not is_ours(warnings.showwarning):
            self.showwarning = chain_showwarning(self._collect)
            warnings.showwarning = self.showwarning

    def _collect(self, hint: Hint, file: Any = None) -> None:
        if hint not in self.pending:
            self.pending.append(hint)

    def post_run_cell(self, result: Any = None) -> None:
        try:
            self._restore_showwarning()
            found = list(self.pending)
            self.pending = []
            error = getattr(result, "error_in_exec", None)
            if error is not None and state.enabled():
                hint = explain(error)
                if hint is not None and hint not in found:
                    found.append(hint)
            if found:
                from IPython.display import display

                for hint in found:
                    display(hint)
        except Exception:  # a hint must never turn into a second error in the user's cell
            pass

    def _restore_showwarning(self) -> None:
        """Put back the showwarning we chained to, unless the cell replaced ours since."""
        ours, self.showwarning = self.showwarning, None
        if ours is not None and warnings.showwarning is ours:
            warnings.showwarning = ours.__wrapped__


def register(shell: Any) -> None:
    """Hook `shell`'s cell events so hints follow a failing cell, once per shell.

    Args:
        shell: a running IPython InteractiveShell (Colab's, Jupyter's, or a plain one).
    """
    if getattr(shell, _ATTR, None) is not None:
        return
    cell_hints = _CellHints(shell)
    shell.events.register("pre_run_cell", cell_hints.pre_run_cell)
    shell.events.register("post_run_cell", cell_hints.post_run_cell)
    setattr(shell, _ATTR, cell_hints)
