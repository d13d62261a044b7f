"""CheckpointMirror: a Drive folder kept a copy of a local checkpoint folder, through DriveClient.

CheckpointManager(remote="drive:<folder>") builds one; it knows nothing of
manifests itself (`describe` and `is_checkpoint` come from the checkpoint
package) and talks to Drive only through DriveClient's public methods.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Callable

from .. import _fsio
from ..errors import ConfigError, DriveAPINotFoundError
from .client import DriveClient, DriveFile, file_md5, path_parts
from .config import require_pydrive2
from .session import default_client

log = logging.getLogger(__name__)

REMOTE_PREFIX = "drive:"


def parse_remote(remote: str) -> str:
    """The Drive folder path of a `remote="drive:<folder>"` setting."""
    folder = remote[len(REMOTE_PREFIX):].strip().strip("/") if isinstance(remote, str) else ""
    if not isinstance(remote, str) or not remote.startswith(REMOTE_PREFIX) or not folder:
        raise ConfigError(
            f"remote={remote!r} is not understood; give 'drive:<folder>', e.g. "
            "remote='drive:ML2022/checkpoints' (a folder path in My Drive, created if needed)."
        )
    path_parts(folder)  # refuses '..'
    return folder


class CheckpointMirror:
    """Keeps a Drive folder a copy of a checkpoint folder, in a background thread.

    Each round uploads the files the local manifest lists (those not already on
    Drive with the same size and md5), then the manifest itself, then deletes
    for good (files.delete, not the trash, which would keep counting against
    the quota for 30 days) the checkpoint files the manifest no longer lists:
    Drive only ever lists complete files. Only files in the mirror's own folder
    whose names follow the checkpoint naming (`is_checkpoint`) are ever
    deleted; anything else there (the user's notes, other models, folders,
    Google Docs) is never touched. A failed round is logged and kept in
    `last_error`; the next `schedule()` (the next save) tries again. Local files
    are only read, never changed; restored files are published atomically.

    It uses only DriveClient's public methods.

    `describe(manifest_bytes)` returns ([(file, "algorithm:hex" or None), ...] oldest
    first, the best file or None); `is_checkpoint(name)` says which remote files
    the mirror may retire.
    """

    def __init__(self, folder: str, directory: Path, *, manifest_name: str,
                 describe: Callable[[bytes], tuple[list[tuple[str, str | None]], str | None]],
                 is_checkpoint: Callable[[str], bool], client: DriveClient | None = None) -> None:
        require_pydrive2()
        self.folder = folder
        self.directory = Path(directory)
        self.manifest_name = manifest_name
        self._describe = describe
        self._is_checkpoint = is_checkpoint
        # sign in now, in the caller's thread: Colab's sign-in cannot run in the background one
        self.client = client if client is not None else default_client()
        self._cond = threading.Condition()
        self._pending = False
        self._thread: threading.Thread | None = None
        self._sent: dict[str, tuple[int, int, str]] = {}  # file -> (size, mtime_ns, md5) on Drive
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"CheckpointMirror({REMOTE_PREFIX}{self.folder})"

    def schedule(self) -> None:
        """Ask for a mirror round soon; returns at once."""
        with self._cond:
            self._pending = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="colabkit-drive-mirror", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the pending rounds are done; the last round's error, or None."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and self._thread is None, timeout)
            return self.last_error

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                self._pending = False
            try:
                self.mirror_once()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - logged and retried on the next save
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Mirroring checkpoints to Drive (%s%s) failed; the local checkpoints are "
                            "safe and the next save tries again. %s", REMOTE_PREFIX, self.folder, self.last_error)

    def mirror_once(self) -> None:
        """One round, in the calling thread."""
        client = self.client
        for _ in range(5):  # a checkpoint retired while uploading: read the newer manifest
            try:
                data = (self.directory / self.manifest_name).read_bytes()
            except FileNotFoundError:
                return
            files, _best = self._describe(data)
            folder_id = client.ensure_folder(self.folder)
            remote = {f.name: f for f in client.children(folder_id) if not f.is_folder}
            try:
                for name, _digest in files:
                    self._put(client, self.directory / name, folder_id, remote.get(name))
            except FileNotFoundError:
                continue
            with tempfile.TemporaryDirectory(prefix="colabkit-mirror-") as scratch:
                copy = Path(scratch) / self.manifest_name
                copy.write_bytes(data)  # exactly the manifest whose files were just sent
                client.upload_to(copy, folder_id, name=self.manifest_name, replace=remote.get(self.manifest_name))
            listed = {name for name, _ in files}
            for name, item in remote.items():
                if (name not in listed and name != self.manifest_name and item.md5 is not None
                        and self._is_checkpoint(name)):  # a Google Doc is never one of ours
                    self._retire(client, item)
            return

    def _retire(self, client: DriveClient, item: DriveFile) -> None:
        """Delete a retired checkpoint for good; one already gone is fine."""
        try:
            client.delete(item.id)
        except DriveAPINotFoundError:
            pass
        self._sent.pop(item.name, None)

    def _put(self, client: DriveClient, path: Path, folder_id: str, there: DriveFile | None) -> None:
        st = path.stat()
        sent = self._sent.get(path.name)
        if there is not None and sent is not None and sent == (st.st_size, st.st_mtime_ns, there.md5):
            return
        md5 = file_md5(path)
        if there is None or there.size != st.st_size or there.md5 != md5:
            client.upload_to(path, folder_id, name=path.name, replace=there, md5=md5)
        self._sent[path.name] = (st.st_size, st.st_mtime_ns, md5)

    def restore(self, progress: bool = True) -> list[Path]:
        """Download the newest checkpoint that verifies (and the best one) into the empty folder.

        Each file is checked against Drive's md5 while it arrives and against the
        hash in Drive's copy of the manifest (xxh3-128, or sha256 in folders of
        earlier versions); a file that fails is removed and the next older one is
        tried. Returns the files written (none: nothing on Drive).
        """
        client = self.client
        folder_id = client.folder_id(self.folder)
        if folder_id is None:
            return []
        remote = {f.name: f for f in client.children(folder_id) if not f.is_folder}
        self.directory.mkdir(parents=True, exist_ok=True)
        files: list[tuple[str, str | None]] = []
        best = None
        if self.manifest_name in remote:
            with tempfile.TemporaryDirectory(prefix="colabkit-mirror-") as scratch:
                copy = Path(scratch) / self.manifest_name
                meta = remote[self.manifest_name]
                client.download(meta, copy, progress=False)
                try:
                    files, best = self._describe(copy.read_bytes())
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("Drive's copy of %s is damaged (%s); using the files alone.", self.manifest_name, exc)
        if not files:
            files = [(name, None) for name in sorted(remote) if self._is_checkpoint(name)]
        restored: list[Path] = []
        newest_done = False
        for name, expected in reversed(files):
            if newest_done and name != best:
                continue
            path = self._fetch_verified(client, remote.get(name), expected, progress)
            if path is not None:
                restored.append(path)
                newest_done = True
                if best is None or any(p.name == best for p in restored):
                    break
        if restored:
            log.info("Drive: restored %s from %s%s", [p.name for p in restored], REMOTE_PREFIX, self.folder)
        return restored

    def _fetch_verified(self, client: DriveClient, item: DriveFile | None, expected: str | None,
                        progress: bool) -> Path | None:
        if item is None or item.md5 is None:
            return None
        reason = _fsio.unsafe_name_reason(item.name)
        if reason:  # Drive's copy of the manifest is outside input too
            log.warning("Drive's checkpoint title %r is not a safe file name (%s); skipping it.", item.name, reason)
            return None
        target = self.directory / item.name
        client.download(item, target, progress=progress)
        if expected is not None:
            algorithm, _, digest = expected.rpartition(":")  # "xxh3_128:<hex>", "sha256:<hex>" or bare sha256 hex
            algorithm = algorithm or "sha256"
            if _fsio.hash_file(target, algorithm)[algorithm] != digest:
                _fsio.retire(target)
                log.warning("Drive's copy of %s does not match the manifest's hash; trying an older one.",
                            item.name)
                return None
        st = target.stat()
        self._sent[item.name] = (st.st_size, st.st_mtime_ns, item.md5)
        return target

