"""Error hints: what they cost a cell that works, an error, and `import colabkit`.

- a working cell in a real InteractiveShell with colabkit's hooks, against the
  same cell in a shell without them (hints must not slow every cell);
- explain() on an error it does not know (every rule tried), against formatting
  that error's traceback, which the user pays for anyway;
- importing the hint module after `import colabkit`, against `import colabkit`,
  with bytecode cached (as after `pip install`) in a temporary pycache prefix,
  so that neither side pays for compiling sources.
"""

from __future__ import annotations

import traceback

from ._common import Figure, best_in_turns, best_time, python_with_cached_bytecode

CELL = "x = sum(range(50))"


def _cell_times(cells: int, repeat: int) -> tuple[float, float]:
    """Best time for `cells` working cells without and with the hooks, measured in turns."""
    from IPython.core.interactiveshell import InteractiveShell

    from colabkit._hints.shell import _CellHints

    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    hooks = _CellHints(shell)
    shell.run_cell(CELL)  # warm up

    def run_cells():
        for _ in range(cells):
            shell.run_cell(CELL, store_history=False)

    bare = hooked = float("inf")
    try:
        for _ in range(repeat):
            bare = min(bare, best_time(run_cells, 1))
            shell.events.register("pre_run_cell", hooks.pre_run_cell)
            shell.events.register("post_run_cell", hooks.post_run_cell)
            hooked = min(hooked, best_time(run_cells, 1))
            shell.events.unregister("pre_run_cell", hooks.pre_run_cell)
            shell.events.unregister("post_run_cell", hooks.post_run_cell)
    finally:
        InteractiveShell.clear_instance()
    return bare, hooked


def run(quick: bool = False) -> list[Figure]:
    from colabkit._hints import rules as error_hints

    repeat = 5 if quick else 15
    cells = 100 if quick else 200
    bare, hooked = _cell_times(cells, repeat)

    def unknown_error() -> BaseException:
        try:
            import json

            json.loads("{not json")
        except ValueError as exc:
            return exc
        raise AssertionError("json accepted bad input")

    exc = unknown_error()
    calls = 200 if quick else 1000
    explain_time, format_time = best_in_turns(lambda: [error_hints.explain(exc) for _ in range(calls)],
                                              lambda: [traceback.format_exception(exc) for _ in range(calls)],
                                              repeat=repeat)

    import_repeat = 5 if quick else 15
    with python_with_cached_bytecode() as python:
        python("import colabkit, colabkit._hints.rules")  # writes the bytecode once
        colabkit_only, with_hints = best_in_turns(lambda: python("import colabkit"),
                                                  lambda: python("import colabkit, colabkit._hints.rules"),
                                                  repeat=import_repeat)

    return [
        Figure("working cell with hint hooks / without (InteractiveShell)", hooked / bare, 1.10, "lower",
               f"{bare / cells * 1e6:.0f} us vs {hooked / cells * 1e6:.0f} us per cell, best of {repeat}"),
        Figure("explain(unknown error) / format its traceback", explain_time / format_time, 1.0, "lower",
               f"{explain_time / calls * 1e6:.1f} us vs {format_time / calls * 1e6:.1f} us per error"),
        Figure("import colabkit + error_hints / import colabkit", with_hints / colabkit_only, 1.10, "lower",
               f"{colabkit_only * 1e3:.0f} ms vs {with_hints * 1e3:.0f} ms, best of {import_repeat}"),
    ]
