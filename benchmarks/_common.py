"""What every benchmark shares: the Figure it reports, and timers that take the best of repeats."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass
class Figure:
    """One measured ratio against a baseline taken in the same run.

    `better` says which way is good: "lower" (ratio <= target passes) or "higher".
    """

    name: str
    ratio: float
    target: float
    better: str = "lower"
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.ratio <= self.target if self.better == "lower" else self.ratio >= self.target

    def line(self) -> str:
        sign = "<=" if self.better == "lower" else ">="
        verdict = "ok" if self.met else "MISSED"
        text = f"{self.name:<58} {self.ratio:8.3f}  (target {sign} {self.target:g})  {verdict}"
        return text + (f"\n    {self.detail}" if self.detail else "")


def best_time(action: Callable[[], object], repeat: int = 5, setup: Callable[[], object] | None = None) -> float:
    """The fastest of `repeat` runs of `action`, in seconds (setup is not timed)."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def best_in_turns(
    *actions: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None
) -> list[float]:
    """The best time of each action, timed one after another in each of `repeat` rounds.

    Interleaving lets noise from other processes hit every contender alike;
    `setup` (not timed) runs before each action, e.g. to let background work finish.
    """
    best = [float("inf")] * len(actions)
    for _ in range(repeat):
        for index, action in enumerate(actions):
            best[index] = min(best[index], best_time(action, 1, setup=setup))
    return best


def fsync_file(path: str | os.PathLike) -> None:
    """fsync a file by path: what a durable write waits for, for baselines that must match it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def python_with_cached_bytecode() -> Iterator[Callable[[str], None]]:
    """A `python -c CODE` runner whose bytecode is cached in a private temporary folder.

    Some machines set PYTHONDONTWRITEBYTECODE; with a cache, an import is timed
    as a user's warm notebook sees it (after `pip install`), not with compiling.
    """
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-pyc-") as pycache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pycache

        def python(code: str) -> None:
            subprocess.run([sys.executable, "-c", code], check=True, env=env)

        yield python
