"""Drive API: what mirroring checkpoints costs the training loop, and what a re-sync sends.

Google cannot be reached from here, so httplib2.Http is replaced by a small
in-memory stand-in that answers like Drive v2 (list, create, resumable upload,
delete); pydrive2, googleapiclient and colabkit run for real. The figures measure
colabkit's own work, not the network:

* save() with remote="drive:…" vs. save() without: the upload runs in a
  background thread, so the training loop should barely notice it;
* sync_up of an unchanged folder vs. the first sync_up of it: only a listing
  and local md5s, no bytes sent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from ._common import Figure, best_time

FOLDER = "application/vnd.google-apps.folder"


class _DriveLike:
    """An httplib2.Http stand-in with Drive v2's answers, all objects sharing one store."""

    files: dict[str, dict] = {}
    sessions: dict[str, dict] = {}
    sent = 0
    ids = itertools.count(1)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def request(self, uri, method="GET", body=None, headers=None, redirections=1, connection_type=None):
        import httplib2

        url = urlparse(uri)
        query = parse_qs(url.query)
        if hasattr(body, "read"):
            body = body.read()
        if method == "GET" and url.path.endswith("/drive/v2/files"):
            return httplib2.Response({"status": "200"}), json.dumps({"items": self._match(query["q"][0])})
        if method == "DELETE":  # files.delete: the mirror retires checkpoints for good
            self.files.pop(url.path.rsplit("/", 1)[1], None)
            return httplib2.Response({"status": "204"}), b""
        if method == "POST" and url.path.endswith("/trash"):
            item = self.files.pop(url.path.split("/")[-2])
            return httplib2.Response({"status": "200"}), json.dumps(item)
        if method == "POST" and url.path.endswith("/drive/v2/files") and "/upload/" not in url.path:
            item = {**json.loads(body), "id": f"F{next(self.ids)}"}
            self.files[item["id"]] = item
            return httplib2.Response({"status": "200"}), json.dumps(item)
        if "/upload/drive/v2/files" in url.path:  # start a resumable upload (insert or update)
            known = url.path.rsplit("/", 1)[1]
            item = dict(self.files[known]) if known in self.files else {**json.loads(body), "id": f"F{next(self.ids)}"}
            session = f"S{next(self.ids)}"
            self.sessions[session] = item
            return httplib2.Response({"status": "200", "location": f"https://upload.invalid/{session}"}), b""
        if method == "PUT" and url.netloc == "upload.invalid":
            item = self.sessions.pop(url.path.strip("/"))
            item.update(fileSize=str(len(body)), md5Checksum=hashlib.md5(body).hexdigest())
            self.files[item["id"]] = item
            _DriveLike.sent += len(body)
            return httplib2.Response({"status": "200"}), json.dumps(item)
        raise AssertionError(f"unexpected request {method} {uri}")

    def _match(self, q: str) -> list[dict]:
        parent = re.match(r"'([^']*)' in parents", q).group(1)
        title = re.search(r"title = '([^']*)'", q)
        folders = "mimeType = " in q
        return [f for f in self.files.values()
                if any(p["id"] == parent for p in f.get("parents", []))
                and (title is None or f["title"] == title.group(1))
                and (not folders or f.get("mimeType") == FOLDER)]

    def close(self) -> None:
        pass


def _client():
    import httplib2
    from google.oauth2.credentials import Credentials

    from colabkit._drive_api import session

    httplib2.Http = _DriveLike  # the transport boundary; this process only runs benchmarks
    client = session.connect_drive(credentials=Credentials(token="bench"))
    session.set_default_client(client)
    return client


def run(quick: bool = False) -> list[Figure]:
    import torch

    from colabkit._checkpoint.manager import CheckpointManager

    client = _client()
    repeat = 3 if quick else 7
    figures = []
    with tempfile.TemporaryDirectory(prefix="colabkit-bench-drive-") as scratch:
        root = Path(scratch)
        state = {"weight": torch.randn((2 if quick else 8) * 1024 * 1024)}  # 8 / 32 MB of float32
        plain = CheckpointManager(root / "plain", keep_last=2)
        mirrored = CheckpointManager(root / "mirrored", keep_last=2, remote="drive:bench/ckpt")
        base = best_time(lambda: plain.save(state), repeat)
        with_remote = best_time(lambda: mirrored.save(state), repeat, setup=mirrored.wait)
        mirrored.close()
        figures.append(Figure(
            "save() with remote='drive:…' / save() without (loop time)", with_remote / base, 1.3, "lower",
            f"{base * 1e3:.0f} ms vs {with_remote * 1e3:.0f} ms for {state['weight'].numel() * 4 >> 20} MB "
            f"(best of {repeat}); the upload itself runs in the background"))

        data = root / "data"
        data.mkdir()
        for index in range(20 if quick else 100):
            (data / f"part-{index:03d}.bin").write_bytes(bytes([index]) * 100_000)
        _DriveLike.sent = 0
        first = best_time(lambda: client.sync_up(data, "bench/data"), 1)
        sent_first = _DriveLike.sent
        again = best_time(lambda: client.sync_up(data, "bench/data"), repeat)
        sent_again = _DriveLike.sent - sent_first
        figures.append(Figure(
            "sync_up of an unchanged folder / its first sync_up (time)", again / first, 0.5, "lower",
            f"{first * 1e3:.0f} ms vs {again * 1e3:.0f} ms; bytes sent: {sent_first} then {sent_again} "
            f"over {repeat} re-syncs"))
    return figures
