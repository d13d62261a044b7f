"""What fetch, extract and stage show a person: one-line notes and progress bars.

One place, so that quiet=True silences the same things everywhere and the bars
look alike; tqdm.auto draws a widget in a notebook and text in a terminal, and
is imported only when a bar is made. Without ipywidgets a notebook gets tqdm's
text bar, quietly: tqdm's "IProgress not found" warning would be the only red
text in an otherwise clean cell, and there is nothing the user has to do.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any


def say(quiet: bool, message: str, bar: Any = None) -> None:
    """Print a note unless quiet (flushed, so it shows before a long step starts).

    With `bar` (a bar from `progress`) the note is written through tqdm, so it
    appears above a text bar instead of breaking it.
    """
    if quiet:
        return
    if bar is not None and not getattr(bar, "disable", True):
        bar.write(message, file=sys.stdout)
        return
    print(message, flush=True)


def _tqdm_class() -> type:
    with warnings.catch_warnings():
        # tqdm.autonotebook warns once, at import, when a notebook has no ipywidgets; it then
        # uses its text bar, which is what we want.
        warnings.filterwarnings("ignore", message=r".*IProgress not found.*")
        warnings.filterwarnings("ignore", category=Warning, module=r"tqdm\..*")
        from tqdm.auto import tqdm
    return tqdm


def progress(description: str, *, total: int | None = None, quiet: bool = False, unit: str = "file",
             **options: Any):
    """A tqdm.auto bar that disappears when done (leave=False); disabled when quiet.

    Args:
        description: the short label in front of the bar (a file name, not a temp path).
        total: the expected count (files, or bytes with unit="B"); None when unknown.
        quiet: no bar at all.
        unit: what is counted; "B" also scales the numbers (KiB, MiB, ...).
        **options: passed on to tqdm (e.g. mininterval).

    Returns:
        The bar; use it as a context manager, or call close().
    """
    tqdm = _tqdm_class()
    if unit == "B":
        options.setdefault("unit_scale", True)
        options.setdefault("unit_divisor", 1024)
    options.setdefault("mininterval", 0.5)  # a notebook cell's output stays small
    return tqdm(total=total, unit=unit, desc=description, disable=quiet, leave=False, **options)
