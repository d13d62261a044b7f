"""Downloads: colabkit.fetch against the tools a user would pick instead, side by side in one run.

* download throughput from 127.0.0.1: fetch (hashing, bounds, lock, publish) vs bare
  `gdown.download`, gdown feeding a sha256 as it downloads (the least fetch must do:
  the ratio is colabkit's own overhead), `curl -s -o` and `pooch.retrieve`, each round
  in a rotated order; the figure is the median of per-round paired ratios (fetch time /
  peer time), with the range and N. On a machine without a spare core the gap to bare
  gdown is sha256 itself (profiled: CPU per MiB of fetch = gdown+sha256);
* verify=True of a fetched file vs hashlib.sha256 over the same (page-cached) file in
  this process (not coreutils sha256sum, slower here than hashlib);
* a cache hit (a repeat fetch of a stamped file) vs that same sha256, i.e. what a cache
  that re-hashed on every call would cost.

The server is a separate process sending with os.sendfile, so it is not what limits
any client, and it does not share this process's GIL. Peers that are not installed
(pooch, curl) are skipped with a note.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ._common import Figure, fsync_file

_SERVER = r"""
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

root = sys.argv[1]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        path = os.path.join(root, os.path.basename(self.path))
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.flush()
        with open(path, "rb") as f:
            offset = 0
            while offset < size:
                offset += os.sendfile(self.connection.fileno(), f.fileno(), offset, size - offset)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _write_random(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as stream:
        stream.writelines(block for _ in range(size // len(block)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as stream:
        for block in iter(lambda: stream.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _paired(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    ratios = [a / b for a, b in zip(ours, theirs)]
    return statistics.median(ratios), min(ratios), max(ratios)


def run(quick: bool = False) -> list[Figure]:
    from colabkit._fetch.api import fetch

    size = (64 if quick else 512) * 2**20
    rounds = 3 if quick else 7
    mib = size / 2**20
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-fetch-", dir=os.environ.get("COLABKIT_BENCH_DIR")) as tmp:
        root = Path(tmp)
        served = root / "served"
        served.mkdir()
        _write_random(served / "big.bin", size)
        server = subprocess.Popen([sys.executable, "-c", _SERVER, str(served)], stdout=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{server.stdout.readline().strip()}/big.bin"
            return _figures(root, url, size, mib, rounds, fetch)
        finally:
            server.kill()
            server.wait()


def _figures(root: Path, url: str, size: int, mib: float, rounds: int, fetch) -> list[Figure]:
    import gdown

    counter = iter(range(1_000_000))

    def fresh() -> Path:
        folder = root / f"d{next(counter)}"
        folder.mkdir()
        return folder

    contenders: dict[str, Callable[[Path], object]] = {
        "colabkit": lambda d: fetch(url, d / "big.bin", quiet=True),
        "gdown": lambda d: gdown.download(url, str(d / "big.bin"), quiet=True),
        # what fetch must do at least (the sha256 it stamps and prints): isolates colabkit's own overhead
        "gdown+sha256": lambda d: gdown.download(url, str(d / "big.bin"), quiet=True, hasher=hashlib.sha256()),
        # ...and durable as fetch's stamp is: its fsync commits ext4's journal, which writes the new
        # file's data first (data=ordered), so a stamp never outlives the bytes it vouches for
        "gdown+sha256+fsync": lambda d: fsync_file(gdown.download(url, str(d / "big.bin"), quiet=True,
                                                                hasher=hashlib.sha256())),
    }
    notes = []
    if shutil.which("curl"):
        contenders["curl"] = lambda d: subprocess.run(["curl", "-s", "-f", "-o", str(d / "big.bin"), url], check=True)
    else:
        notes.append("curl not installed: skipped")
    try:
        import pooch
    except ImportError:
        notes.append("pooch not installed (pip install pooch): skipped")
    else:
        import logging

        pooch.get_logger().setLevel(logging.WARNING)  # pooch logs every download at INFO
        contenders["pooch"] = lambda d: pooch.retrieve(url, known_hash=None, fname="big.bin", path=d,
                                                       progressbar=False)
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]  # rotated
        for name in order:
            folder = fresh()
            # untimed: the previous contender's 512 MiB are written back now, not during the next one
            # (without it the write-back landed on whoever came next: spreads of 1.3-4.7x)
            os.sync()
            times[name].append(_timed(lambda run=contenders[name], into=folder: run(into)))
            shutil.rmtree(folder)
    speeds = {name: mib / statistics.median(values) for name, values in times.items()}
    figures = []
    for peer in names[1:]:
        median, low, high = _paired(times["colabkit"], times[peer])
        target = {"gdown": 1.10, "gdown+sha256": 1.05, "gdown+sha256+fsync": 1.05, "pooch": 1.0}.get(peer, 1.25)
        figures.append(Figure(
            f"fetch download time / {peer} ({mib:.0f} MiB from 127.0.0.1)", median, target, "lower",
            f"median of {rounds} paired ratios, range {low:.2f}-{high:.2f}; fetch {speeds['colabkit']:.0f} MiB/s, "
            f"{peer} {speeds[peer]:.0f} MiB/s (medians); rotated order; {os.cpu_count()} CPUs, "
            f"load {os.getloadavg()[0]:.1f}" + (f"; {'; '.join(notes)}" if notes else ""),
        ))

    # verify and cache hit, on one fetched copy
    folder = fresh()
    path = fetch(url, folder / "big.bin", quiet=True)
    verify_times, hash_times, hit_times = [], [], []
    for round_ in range(rounds):
        pair = [lambda: verify_times.append(_timed(lambda: fetch(url, path, quiet=True, verify=True))),
                lambda: hash_times.append(_timed(lambda: _sha256(path)))]
        for action in (pair if round_ % 2 == 0 else pair[::-1]):
            action()
        hit_times.append(min(_timed(lambda: fetch(url, path, quiet=True)) for _ in range(5)))
    median, low, high = _paired(verify_times, hash_times)
    figures.append(Figure(
        "fetch(verify=True) time / hashlib.sha256 of the file", median, 1.10, "lower",
        f"median of {rounds} paired ratios, range {low:.2f}-{high:.2f}; verify "
        f"{mib / statistics.median(verify_times):.0f} MiB/s, hashlib {mib / statistics.median(hash_times):.0f} MiB/s",
    ))
    median, low, high = _paired(hit_times, hash_times)
    figures.append(Figure(
        f"fetch cache hit / one sha256 of the file ({mib:.0f} MiB)", median, 0.05, "lower",
        f"median of {rounds} paired ratios, range {low:.4f}-{high:.4f}; hit {statistics.median(hit_times) * 1e3:.2f} ms "
        "(best of 5 per round), no request, no hashing",
    ))
    return figures
