"""fetch with several real processes on one folder, the one stale-temp rule, and Drive's trash rule."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import colabkit
from colabkit._fetch.cache import MANIFEST_NAME
from colabkit._fetch.sources import parse_source

from tests._data_helpers import LocalServer

FETCH_AND_HASH = r"""
import hashlib, sys
import colabkit
path = colabkit.fetch(sys.argv[1], quiet=True)
print(path, hashlib.sha256(path.read_bytes()).hexdigest(), flush=True)
"""


@pytest.fixture
def server():
    srv = LocalServer()
    yield srv
    srv.close()


def _paced(body: bytes, served: list):
    """A handler that sends `body` in 1 MiB pieces with pauses, so that downloads overlap."""

    def handler(request):
        served.append(request.headers.get("Range"))
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Content-Type", "application/octet-stream")
        request.end_headers()
        for start in range(0, len(body), 2**20):
            request.wfile.write(body[start:start + 2**20])
            time.sleep(0.03)

    return handler


@pytest.mark.slow
def test_three_processes_fetching_one_source_into_one_folder_all_get_the_verified_file(server, tmp_path):
    body = os.urandom(20 * 2**20)
    served: list = []
    server.state.custom["/data/train.bin"] = _paced(body, served)
    folder = tmp_path / "shared"
    folder.mkdir()
    workers = [subprocess.Popen([sys.executable, "-c", FETCH_AND_HASH, server.url("/data/train.bin")],
                                cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    results = [worker.communicate(timeout=120) for worker in workers]
    expected = hashlib.sha256(body).hexdigest()
    for worker, (out, err) in zip(workers, results):
        assert worker.returncode == 0, err
        path, digest = out.split()
        assert Path(path) == folder / "train.bin" and digest == expected
    assert (folder / "train.bin").read_bytes() == body
    assert len(served) == 1  # one download; the others waited for it and found it stamped
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME, "train.bin"]


def _partial(folder: Path, source: str, name: str, pid: int, data: bytes) -> Path:
    """What an interrupted download leaves: colabkit's temp folder holding gdown's .part file."""
    from colabkit._fetch.transfer import staging_token

    staging = folder / f".colabkit-{staging_token(parse_source(source), name)}.part-{pid}-0badc0de.tmp"
    staging.mkdir()
    (staging / f"{name}abcd1234.part").write_bytes(data)
    return staging


def test_a_dead_writers_partial_is_resumed(server, tmp_path):
    body = os.urandom(2 * 2**20)
    server.state.files["/big.bin"] = body
    url = server.url("/big.bin")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    folder = Path.cwd()
    _partial(folder, url, "big.bin", int(dead), body[:2**20])
    path = colabkit.fetch(url, quiet=True)
    assert path.read_bytes() == body
    ranges = [r.headers.get("Range") for r in server.state.requests if r.headers.get("Range")]
    assert ranges == [f"bytes={2**20}-"]  # resumed from the partial, not downloaded again
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME, "big.bin"]


def test_a_live_writers_partial_is_never_touched(server):
    body = os.urandom(300_000)
    server.state.files["/big.bin"] = body
    url = server.url("/big.bin")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        staging = _partial(Path.cwd(), url, "big.bin", live.pid, b"not yours to delete")
        old = time.time() - 7200
        os.utime(staging, (old, old))  # long idle, but its owner still runs
        path = colabkit.fetch(url, quiet=True)
        assert path.read_bytes() == body
        assert (staging / "big.binabcd1234.part").read_bytes() == b"not yours to delete"
    finally:
        live.kill()
        live.wait()


def test_a_superseded_copy_on_the_drive_mount_is_truncated_before_it_is_unlinked(server, fake_colab):
    """Drive keeps deleted files in its trash for 30 days: what fetch replaces must cost 0 bytes there."""
    folder = fake_colab.mydrive / "data"
    folder.mkdir(parents=True)
    server.state.files["/w.bin"] = b"old" * 100_000
    path = colabkit.fetch(server.url("/w.bin"), str(folder) + "/", quiet=True)
    with open(path, "rb") as old_copy:  # watch the superseded inode through an open descriptor
        server.state.files["/w.bin"] = b"new" * 100_000
        path.write_bytes(b"changed locally")  # the stamp no longer matches: fetched again
        stale_size = os.fstat(old_copy.fileno()).st_size
        assert stale_size == len(b"changed locally")
        assert colabkit.fetch(server.url("/w.bin"), str(folder) + "/", quiet=True).read_bytes() == b"new" * 100_000
        info = os.fstat(old_copy.fileno())
        assert info.st_nlink == 0 and info.st_size == 0  # unlinked, and truncated first
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME, "w.bin"]


def test_a_superseded_copy_off_the_mount_is_simply_replaced(server):
    server.state.files["/w.bin"] = b"old" * 1000
    path = colabkit.fetch(server.url("/w.bin"), quiet=True)
    with open(path, "rb") as old_copy:
        path.write_bytes(b"changed")
        server.state.files["/w.bin"] = b"new" * 1000
        colabkit.fetch(server.url("/w.bin"), quiet=True)
        assert os.fstat(old_copy.fileno()).st_size == len(b"changed")  # no truncation needed off Drive


HOLD_LOCK = r"""
import sys, time
from pathlib import Path
from colabkit._fetch.cache import folder_lock
from colabkit._fetch.options import Options

with folder_lock(Path(sys.argv[1]).absolute(), Options(quiet=True, retries=0, timeout=1, max_size=1)):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_fetch_that_waits_past_its_deadline_gets_a_busy_error_naming_the_holder(server):
    server.state.files["/a.bin"] = b"a"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(Path.cwd())], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(colabkit.errors.BusyError) as info:
            colabkit.fetch(server.url("/a.bin"), deadline=1, quiet=True)
        assert time.monotonic() - start < 5
        message = str(info.value)
        assert f"process {holder.pid}" in message and str(Path.cwd()) in message and "fetch again" in message
        assert server.state.count() == 0
    finally:
        holder.kill()
        holder.wait()
    assert colabkit.fetch(server.url("/a.bin"), quiet=True).read_bytes() == b"a"  # free again
