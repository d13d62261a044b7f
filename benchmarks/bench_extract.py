"""Extraction against the tools a user would pick instead, side by side in one run.

* tar.gz of many small files: colabkit.extract vs `tar xzf` (target <= 1.5x),
  with tarfile.extractall(filter="data") and pooch's Untar alongside;
* zip of many small files: colabkit.extract vs `unzip -q` (target <= 1.15x),
  with zipfile.extractall and pooch's Unzip alongside;
* one big member (tar.gz and zip) vs the native tool (target <= 1.1x);
* optionally, how colabkit's cost per file grows from 1k to 10k to 50k files.

Every round runs each contender once into a new folder, in an order rotated
each round; a figure is the median of the per-round ratios colabkit/native,
with their spread and N. Outputs are kept until the race ends (on ext4, files
created soon after thousands were deleted are slow to create, whoever comes
next), and the disk is synced, untimed, before each contender.
colabkit's side includes all its safety checks and the content hash of
the archive it records.

    python -m benchmarks extract                       # 20,000 files, 128 MiB member
    python -m benchmarks.bench_extract --full          # the issue's sizes: 1 GiB member
    python -m benchmarks.bench_extract --scaling       # also 1k / 10k / 50k files
    python -m benchmarks.bench_extract --dir /dev/shm  # on a RAM disk: colabkit's own cost, no disk noise
(COLABKIT_BENCH_FULL=1, COLABKIT_BENCH_SCALING=1 and COLABKIT_BENCH_DIR=... do the same under
`python -m benchmarks`.)
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

from ._common import Figure


def _small_files(count: int) -> dict[str, bytes]:
    # image-dataset shaped: folders of a few hundred files of a few KiB, partly compressible
    return {f"food/{i % 11}/{i:06d}.jpg": os.urandom(1500) + bytes(1500) for i in range(count)}


def _write_archives(folder: Path, stem: str, files: dict[str, bytes]) -> tuple[Path, Path]:
    tgz, zipped = folder / f"{stem}.tar.gz", folder / f"{stem}.zip"
    with tarfile.open(tgz, "w:gz", compresslevel=6) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return tgz, zipped


def _big_member(folder: Path, size: int) -> tuple[Path, Path]:
    source = folder / "big-src"
    source.mkdir()
    block = os.urandom(1 << 20)
    with open(source / "weights.bin", "wb") as handle:
        for i in range(size >> 20):  # half random, half zeros: gzip has real work on both
            handle.write(block if i % 2 else bytes(1 << 20))
    tgz, zipped = folder / "big.tar.gz", folder / "big.zip"
    subprocess.run(["tar", "czf", str(tgz), "-C", str(source), "weights.bin"], check=True)
    subprocess.run(["zip", "-q", "-1", str(zipped), "weights.bin"], check=True, cwd=source) \
        if shutil.which("zip") else _py_zip(zipped, source / "weights.bin")
    shutil.rmtree(source)
    return tgz, zipped


def _py_zip(path: Path, member: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.write(member, member.name)


def _contenders(archive: Path, kind: str) -> dict[str, Callable[[Path], object]]:
    import colabkit

    def ours(out: Path) -> object:
        return colabkit.extract(archive, to=out, quiet=True)

    if kind == "tar":
        def native(out: Path) -> object:
            out.mkdir()
            return subprocess.run(["tar", "xzf", str(archive), "-C", str(out)], check=True)

        def stdlib(out: Path) -> object:
            with tarfile.open(archive) as tf:
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(out, **extra)
    else:
        def native(out: Path) -> object:
            return subprocess.run(["unzip", "-q", str(archive), "-d", str(out)], check=True)

        def stdlib(out: Path) -> object:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(out)

    contenders = {"colabkit": ours, "native": native, "stdlib": stdlib}
    try:
        import pooch
    except ImportError:
        return contenders
    processor = pooch.Untar if kind == "tar" else pooch.Unzip

    def with_pooch(out: Path) -> object:
        return processor(extract_dir=str(out))(str(archive), "download", None)

    pooch.get_logger().setLevel("WARNING")  # it logs every extraction
    contenders["pooch"] = with_pooch
    return contenders


def _race(archive: Path, kind: str, scratch: Path, rounds: int) -> dict[str, list[float]]:
    """Per-round times of every contender, order rotated each round, each into a new folder."""
    contenders = _contenders(archive, kind)
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    counter = itertools.count()
    scratch = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=scratch))
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            out = scratch / f"{name}-{next(counter)}"
            os.sync()  # untimed: the previous contender's files are written back now, not during this one
            start = time.perf_counter()
            contenders[name](out)
            times[name].append(time.perf_counter() - start)
    # outputs are deleted only after the race: on ext4 (as here) files created soon after thousands
    # were deleted are much slower to create, whoever comes next (spreads of 0.75-4.8x before)
    shutil.rmtree(scratch, ignore_errors=True)
    return times


def _figure(label: str, times: dict[str, list[float]], target: float, native_name: str) -> Figure:
    ratios = [ours / native for ours, native in zip(times["colabkit"], times["native"])]
    median = statistics.median(ratios)
    peers = ", ".join(
        f"{name} {statistics.median(values) * 1e3:.0f} ms"
        for name, values in times.items()
    ).replace("native", native_name)
    others = "; ".join(
        f"colabkit/{name} {statistics.median(o / p for o, p in zip(times['colabkit'], values)):.2f}"
        for name, values in times.items() if name not in ("colabkit", "native")
    )
    note = "" if "pooch" in times else "; pooch not installed (pip install pooch), skipped"
    return Figure(
        label, median, target, "lower",
        f"median of {len(ratios)} paired rounds, spread {min(ratios):.2f}-{max(ratios):.2f}; medians: {peers}; "
        f"{others}{note}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
    )


def _scaling(root: Path, rounds: int) -> list[Figure]:
    """colabkit's time per file at 1k, 10k and 50k files, against tar's and unzip's at the same sizes."""
    per_file: dict[str, list[float]] = {"tar": [], "zip": []}
    detail: list[str] = []
    for count in (1_000, 10_000, 50_000):
        folder = root / f"scale-{count}"
        folder.mkdir()
        tgz, zipped = _write_archives(folder, "s", _small_files(count))
        for kind, archive in (("tar", tgz), ("zip", zipped)):
            times = _race(archive, kind, folder, rounds)
            ours = statistics.median(times["colabkit"]) / count
            ratio = statistics.median(o / n for o, n in zip(times["colabkit"], times["native"]))
            per_file[kind].append(ours)
            detail.append(f"{kind} {count}: {ours * 1e6:.0f} us/file ({ratio:.2f}x native)")
        shutil.rmtree(folder)
    growth = max(per_file[k][-1] / per_file[k][0] for k in per_file)
    return [Figure("extract cost per file, 50k files / 1k files (no super-linear step)", growth, 1.5, "lower",
                   "; ".join(detail))]


def run(quick: bool = False, full: bool | None = None, scaling: bool | None = None,
        where: str | None = None) -> list[Figure]:
    full = os.environ.get("COLABKIT_BENCH_FULL") == "1" if full is None else full
    where = where or os.environ.get("COLABKIT_BENCH_DIR") or None
    scaling = os.environ.get("COLABKIT_BENCH_SCALING") == "1" if scaling is None else scaling
    count = 2_000 if quick else 20_000
    big = (1 << 30) if full else (16 << 20 if quick else 128 << 20)
    rounds = 3 if quick else 5
    figures = []
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-extract-", dir=where) as folder:
        root = Path(folder)
        tgz, zipped = _write_archives(root, "small", _small_files(count))
        figures.append(_figure(f"extract tar.gz of {count:,} small files / tar xzf",
                               _race(tgz, "tar", root, rounds), 1.5, "tar xzf"))
        figures.append(_figure(f"extract zip of {count:,} small files / unzip -q",
                               _race(zipped, "zip", root, rounds), 1.15, "unzip -q"))
        big_tgz, big_zip = _big_member(root, big)
        size = f"{big >> 20} MiB" if big < (1 << 30) else f"{big >> 30} GiB"
        figures.append(_figure(f"extract tar.gz, one {size} member / tar xzf",
                               _race(big_tgz, "tar", root, max(3, rounds // 2)), 1.1, "tar xzf"))
        figures.append(_figure(f"extract zip, one {size} member / unzip -q",
                               _race(big_zip, "zip", root, max(3, rounds // 2)), 1.1, "unzip -q"))
        if scaling:
            figures.extend(_scaling(root, 3))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_extract", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 files, 16 MiB member, 3 rounds")
    parser.add_argument("--full", action="store_true", help="the issue's sizes: a 1 GiB member")
    parser.add_argument("--scaling", action="store_true", help="also 1k / 10k / 50k files")
    parser.add_argument("--dir", help="where to race (default: the temp folder); /dev/shm leaves the disk's noise out")
    args = parser.parse_args(argv)
    for figure in run(quick=args.quick, full=args.full, scaling=args.scaling, where=args.dir):
        print(figure.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
