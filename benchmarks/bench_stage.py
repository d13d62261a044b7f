"""Staging against the tools a user would pick instead, side by side in one run.

* first copy of a folder of small files: `stage` (default workers on a local
  disk: one, which hands a new folder to cp) vs `cp -r`; the 8-worker Python
  path that a Drive source uses, and the one-thread Python path (what the cp
  fast path saves), alongside;
* a re-run with nothing changed: `stage` vs `rsync -a` (skipped with a note
  when rsync is absent) and `cp -ru`;
* the Drive mount is latency-bound: the worker pool's gain with an injected
  per-file latency (each open of a source file sleeps, releasing the GIL as a
  FUSE round trip does), workers=8 vs workers=1;
* growth with size: cost per file at 1k and 10k files (and 50k with
  COLABKIT_BENCH_STAGE_50K=1, slow), first copy and re-run, each paired with
  its peer in the same round.

Every ratio is the median of per-round paired ratios (the order of the
contenders rotates each round), with its spread (min-max) and N rounds.

    python -m benchmarks stage [--quick]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from ._common import Figure

LATENCY = 0.005  # seconds per source file opened, for the Drive figure (Drive's own is ~10-100 ms)


def _make_tree(src: Path, count: int) -> None:
    """`count` files of 0.5-8 KiB in 20 class folders: an image dataset's shape."""
    for i in range(count):
        folder = src / f"class{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(os.urandom(512 + (i * 37) % 7680))


def _rounds(contenders: dict[str, Callable[[], None]], rounds: int,
            setup: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per contender per round; the order rotates every round (the file system's state drifts)."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            if setup is not None:
                setup()
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _paired(times: dict[str, list[float]], ours: str, peer: str) -> tuple[float, str]:
    ratios = [a / b for a, b in zip(times[ours], times[peer])]
    return statistics.median(ratios), f"spread {min(ratios):.2f}-{max(ratios):.2f}, N={len(ratios)}"


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ms"


class _Targets:
    """Fresh target folders, none deleted until the end.

    On ext4 without a journal (as here) creating a file skips inodes freed
    within the last minutes: deleting thousands of files before each run made
    file creation, the same for cp and stage, ten times slower than the copying.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        root.mkdir()

    def new(self) -> Path:
        self.count += 1
        return self.root / str(self.count)


@contextlib.contextmanager
def _without_cp():
    """No cp on PATH: stage takes its Python path for a new folder too."""
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = ""
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def _first_copy(src: Path, targets: _Targets, rounds: int, count: int) -> list[Figure]:
    from colabkit._stage import stage

    cp = shutil.which("cp")

    def python_path() -> None:
        with _without_cp():
            stage(src, targets.new(), workers=1, quiet=True)

    contenders = {
        "cp -r": lambda: subprocess.run([cp, "-r", str(src), str(targets.new())], check=True),
        "stage": lambda: stage(src, targets.new(), quiet=True),
        "stage workers=8": lambda: stage(src, targets.new(), workers=8, quiet=True),
        "stage Python path": python_path,
    }
    times = _rounds(contenders, rounds)
    ratio, spread = _paired(times, "stage", "cp -r")
    eight, eight_spread = _paired(times, "stage workers=8", "cp -r")
    python, python_spread = _paired(times, "stage Python path", "cp -r")
    detail = (f"cp -r {_ms(times['cp -r'])}, stage {_ms(times['stage'])} (one worker: cp copies, links then "
              f"checked); {spread}")
    return [
        Figure(f"stage {count} small files, first copy / cp -r", ratio, 1.05, "lower", detail),
        Figure(f"stage {count} files workers=8 (a Drive source's path) / cp -r", eight, 2.0, "lower",
               f"workers=8 {_ms(times['stage workers=8'])} on a local disk, where threads only contend; "
               f"{eight_spread}"),
        Figure(f"stage {count} files, Python path one worker (no cp) / cp -r", python, 1.5, "lower",
               f"{_ms(times['stage Python path'])}: what the cp fast path saves; {python_spread}"),
    ]


def _no_change(src: Path, targets: _Targets, rounds: int, count: int) -> list[Figure]:
    from colabkit._stage import stage

    mine, by_rsync, by_cp = targets.new(), targets.new(), targets.new()
    stage(src, mine, quiet=True)
    contenders: dict[str, Callable[[], None]] = {"stage": lambda: stage(src, mine, quiet=True)}
    rsync, cp = shutil.which("rsync"), shutil.which("cp")
    subprocess.run([cp, "-r", "--preserve=timestamps", str(src), str(by_cp)], check=True)
    contenders["cp -ru"] = lambda: subprocess.run([cp, "-ru", f"{src}/.", f"{by_cp}/"], check=True)
    if rsync:
        subprocess.run([rsync, "-a", f"{src}/", f"{by_rsync}/"], check=True)
        contenders["rsync -a"] = lambda: subprocess.run([rsync, "-a", f"{src}/", f"{by_rsync}/"], check=True)
    times = _rounds(contenders, rounds)
    cp_ratio, cp_spread = _paired(times, "stage", "cp -ru")
    if not rsync:
        return [Figure(f"stage {count} files, nothing changed / cp -ru (rsync absent: apt-get install rsync)",
                       cp_ratio, 1.5, "lower", f"stage {_ms(times['stage'])}, cp -ru {_ms(times['cp -ru'])}; "
                       f"{cp_spread}")]
    ratio, spread = _paired(times, "stage", "rsync -a")
    return [Figure(
        f"stage {count} files, nothing changed / rsync -a", ratio, 1.0, "lower",
        f"stage {_ms(times['stage'])}, rsync -a {_ms(times['rsync -a'])}, cp -ru {_ms(times['cp -ru'])} "
        f"(stage / cp -ru {cp_ratio:.2f}; cp -ru compares mtimes only, one way); {spread}",
    )]


@contextlib.contextmanager
def _slow_source(root: Path, latency: float):
    """Every os.open of a path under `root` first sleeps `latency` (a FUSE round trip releases the GIL too)."""
    real_open = os.open
    prefix = f"{root}/"

    def slow_open(path, flags, mode=0o777, *, dir_fd=None):
        if isinstance(path, str) and path.startswith(prefix) and not flags & os.O_DIRECTORY:
            time.sleep(latency)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    os.open = slow_open
    try:
        yield
    finally:
        os.open = real_open


def _drive_latency(root: Path, targets: _Targets, rounds: int, count: int) -> Figure:
    from colabkit._stage import stage

    src = root / "slow"
    _make_tree(src, count)
    contenders = {
        "workers=1": lambda: stage(src, targets.new(), workers=1, quiet=True),
        "workers=8": lambda: stage(src, targets.new(), workers=8, quiet=True),
    }
    with _slow_source(src, LATENCY), _without_cp():
        times = _rounds(contenders, rounds)
    ratio, spread = _paired(times, "workers=8", "workers=1")
    floor = count * LATENCY
    return Figure(
        f"Drive-like source ({LATENCY * 1e3:.0f} ms per file, {count} files): workers=8 / workers=1", ratio, 0.25,
        "lower", f"workers=1 {_ms(times['workers=1'])} (latency alone {floor * 1e3:.0f} ms), workers=8 "
        f"{_ms(times['workers=8'])}: {1 / ratio:.1f}x faster; {spread}",
    )


def _growth(root: Path, targets: _Targets, sizes: list[int], rounds: int) -> list[Figure]:
    """Cost per file of a first copy and of a re-run at each size: no super-linear step.

    Each is timed in rounds with its peer (cp -r; rsync -a, or cp -ru without
    rsync), whose ratio is shown too: when the disk drifts between sizes the
    peer drifts alike, which tells drift from a step of colabkit's own.
    """
    from colabkit._stage import stage

    cp, rsync = shutil.which("cp"), shutil.which("rsync")
    per_file: dict[int, tuple[float, float]] = {}
    ratios: dict[int, tuple[float, float]] = {}
    for count in sizes:
        src = root / f"grow{count}"
        _make_tree(src, count)
        kept, peer_kept = targets.new(), targets.new()
        stage(src, kept, quiet=True)
        subprocess.run([cp, "-r", "--preserve=timestamps", str(src), str(peer_kept)], check=True)
        again_peer = ([rsync, "-a", f"{src}/", f"{peer_kept}/"] if rsync else [cp, "-ru", f"{src}/.", f"{peer_kept}/"])
        times = _rounds({
            "first": lambda: stage(src, targets.new(), quiet=True),
            "cp -r": lambda: subprocess.run([cp, "-r", str(src), str(targets.new())], check=True),
            "again": lambda: stage(src, kept, quiet=True),
            "peer again": lambda: subprocess.run(again_peer, check=True),
        }, rounds)
        per_file[count] = (statistics.median(times["first"]) / count, statistics.median(times["again"]) / count)
        ratios[count] = (_paired(times, "first", "cp -r")[0], _paired(times, "again", "peer again")[0])
    small, large = sizes[0], sizes[-1]
    peer = "rsync -a" if rsync else "cp -ru"
    line = ", ".join(f"{n}: {per_file[n][0] * 1e6:.0f} / {per_file[n][1] * 1e6:.1f} us "
                     f"({ratios[n][0]:.2f}x cp -r / {ratios[n][1]:.2f}x {peer})" for n in sizes)
    return [
        Figure(f"stage growth: per-file cost of a first copy, {large} / {small} files",
               per_file[large][0] / per_file[small][0], 1.5, "lower",
               f"per file (first copy / re-run) {line}; N={rounds} per size"),
        Figure(f"stage growth: per-file cost of a re-run, {large} / {small} files",
               per_file[large][1] / per_file[small][1], 1.5, "lower",
               "no super-linear step; the ratios to the peers rise with size as their start-up cost amortises"),
    ]


def run(quick: bool = False) -> list[Figure]:
    count = 2000 if quick else 20000
    rounds = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-stage-") as folder:
        root = Path(folder)
        src = root / "small"
        _make_tree(src, count)
        targets = _Targets(root / "copies")
        figures = _first_copy(src, targets, rounds, count)
        figures += _no_change(src, targets, rounds * 2, count)
        figures.append(_drive_latency(root, targets, max(3, rounds // 2), 200 if quick else 400))
        sizes = [1000, 10000] + ([50000] if os.environ.get("COLABKIT_BENCH_STAGE_50K") == "1" else [])
        figures += _growth(root, targets, sizes, 3)
        load = f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, local disk"
        for figure in figures:
            figure.detail += f"; {load}"
        return figures


if __name__ == "__main__":  # python -m benchmarks.bench_stage
    for item in run(quick=bool(os.environ.get("QUICK"))):
        print(item.line())
