"""Datasets: the fetch cache hit and hash verification, each against a baseline.

* cache hit: a repeat `fetch` of a present, stamped file vs. one sha256 of it
  (what a cache that re-hashes on every call would cost);
* verify=True throughput vs. `sha256sum` on the same (page-cached) file.

Staging has its own benchmark: bench_stage.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ._common import Figure, best_time


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _serve(folder: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _write_random(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as stream:
        for _ in range(size // len(block)):
            stream.write(block)


def _sha256_once(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_figures(root: Path, quick: bool) -> list[Figure]:
    from colabkit._fetch import fetch

    size = (50 if quick else 200) * 2**20
    served = root / "served"
    served.mkdir()
    _write_random(served / "big.bin", size)
    dest = root / "dest"
    repeat = 3 if quick else 5
    with _serve(served) as base:
        url = f"{base}/big.bin"
        path = fetch(url, dest / "big.bin", quiet=True)  # the one real download
        hit = best_time(lambda: fetch(url, dest / "big.bin", quiet=True), repeat * 4)
        once = best_time(lambda: _sha256_once(path), repeat)
        verify = best_time(lambda: fetch(url, dest / "big.bin", quiet=True, verify=True), repeat)
        tool = best_time(lambda: subprocess.run(["sha256sum", str(path)], check=True, capture_output=True), repeat)
    mib = size / 2**20
    return [
        Figure(f"fetch cache hit / one sha256 of the file ({mib:.0f} MiB)", hit / once, 0.05, "lower",
               f"hit {hit * 1e3:.2f} ms, sha256 {once * 1e3:.0f} ms (best of {repeat})"),
        Figure("fetch(verify=True) throughput / sha256sum", tool / verify, 0.9, "higher",
               f"verify {mib / verify:.0f} MiB/s, sha256sum {mib / tool:.0f} MiB/s"),
    ]


def run(quick: bool = False) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-data-") as folder:
        root = Path(folder)
        return _fetch_figures(root, quick)
