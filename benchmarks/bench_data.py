"""Datasets: staging against `cp -r` (the fetch figures live in bench_fetch.py).

* staging 5,000 small files vs. `cp -r` on the same disk, with the default
  workers (one thread on a local disk); explicit workers=8 and a repeat stage
  (everything skipped) are reported alongside.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ._common import Figure, best_time


def _stage_figure(root: Path, quick: bool) -> Figure:
    from colabkit._stage import default_workers, stage

    count = 1000 if quick else 5000
    src = root / "small"
    for i in range(count):
        folder = src / f"class{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(os.urandom(512 + (i * 37) % 7680))
    copies = root / "copies"
    numbers = iter(range(1_000_000))
    repeat = 5 if quick else 9

    def timed(action) -> float:
        # each run copies into a new folder, and none is deleted until the end: on ext4
        # without a journal (as here) creating a file skips inodes freed within the last
        # minutes, and deleting 5,000 files before each run made file creation, the same
        # for cp and stage, ten times slower than the copying itself
        target = copies / str(next(numbers))
        start = time.perf_counter()
        action(target)
        return time.perf_counter() - start

    # interleaved, best of each: a shared machine's load hits both sides alike
    workers = default_workers(src)
    def copy(target: Path) -> None:
        subprocess.run(["cp", "-r", str(src), str(target)], check=True)

    cp_times, stage_times, eight = [], [], float("inf")
    copies.mkdir()
    for round_ in range(repeat):
        # alternate which side goes first: the file system's state drifts within a run
        if round_ % 2:
            stage_times.append(timed(lambda target: stage(src, target, quiet=True)))
            cp_times.append(timed(copy))
        else:
            cp_times.append(timed(copy))
            stage_times.append(timed(lambda target: stage(src, target, quiet=True)))
        eight = min(eight, timed(lambda target: stage(src, target, workers=8, quiet=True)))
    cp, staged = min(cp_times), min(stage_times)
    paired = statistics.median(c / s for c, s in zip(cp_times, stage_times))
    target = copies / "again"
    stage(src, target, quiet=True)
    again = best_time(lambda: stage(src, target, quiet=True), repeat)
    shutil.rmtree(copies)
    return Figure(
        f"stage {count} small files / cp -r throughput (workers={workers})", cp / staged, 0.9, "higher",
        f"cp -r {cp * 1e3:.0f} ms, stage {staged * 1e3:.0f} ms (default workers={workers}: source on local disk), "
        f"workers=8 {eight * 1e3:.0f} ms, median of per-round ratios {paired:.2f}, repeat stage (all skipped) {again * 1e3:.0f} ms; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, local disk",
    )


def run(quick: bool = False) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-data-") as folder:
        root = Path(folder)
        return [_stage_figure(root, quick)]
