"""One checkpoint folder shared by several writers (two notebooks, a notebook and a `!python`).

Every writer that changes the folder holds one inter-process lock
(`_fsio.locked`, a filelock kept beside the folder so the folder itself holds
only checkpoints and the manifest) for two short moments: to reserve the next
sequence number, by creating its temp file exclusively (the temp names the
final file, so every other writer sees the number as taken), and to publish:
the final name must still be free (never os.replace over another writer's
file), then the manifest is re-read, merged and rewritten before the lock is
released. The write itself runs unlocked, so writers do not wait for each
other's disk time. A writer stuck holding the lock for `LOCK_TIMEOUT` seconds
makes the others raise BusyError naming its process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .. import _fsio
from ..errors import CheckpointWriteError
from . import manifest

LOCK_TIMEOUT = 300.0


@contextlib.contextmanager
def lock(directory: Path) -> Iterator[None]:
    """Hold the folder's writer lock (beside the folder; inside it when the parent is read-only)."""
    target = directory if os.access(directory.parent, os.W_OK) else directory / manifest.MANIFEST_NAME
    with _fsio.locked(target, "The checkpoint folder", timeout=LOCK_TIMEOUT):
        yield


def taken_seqs(directory: Path) -> list[int]:
    """Sequence numbers in use: listed, published, or reserved by a temp file (live or not)."""
    seqs = [entry.seq for entry in manifest.read(directory)[0] or []]
    try:
        names = os.listdir(directory)
    except OSError:
        return seqs
    for name in names:
        if _fsio.is_temp_name(name):
            name = name[1:-len(_fsio.TEMP_SUFFIX)].rsplit(".", 1)[0]  # the final name it will become
        if manifest.FILE_RE.match(name):
            seqs.append(manifest.seq_of(name))
    return seqs


def reserve(directory: Path, epoch: int | None, step: int | None, *, clean: bool = False,
            ) -> tuple[int, Path, Path]:
    """Take the next sequence number: (seq, final path, temp path); the temp exists, empty, afterwards.

    clean=True first retires the temps of dead writers that sat idle (`_fsio.is_stale_temp`).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fsio.write_error(exc, "the checkpoint folder", directory) from exc
    with lock(directory):
        if clean:
            _fsio.remove_stale_temps(directory)
        seq = max(taken_seqs(directory), default=0) + 1
        final = directory / manifest.file_name(seq, epoch, step)
        tmp = _fsio.temp_path(final)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError as exc:
            raise _fsio.write_error(exc, "checkpoint", final) from exc
    return seq, final, tmp


def publish(tmp: Path, final: Path) -> None:
    """Rename the finished temp to its reserved name (call under `lock`); never replaces a file."""
    if os.path.lexists(final):
        _fsio.retire(tmp)
        raise CheckpointWriteError(
            f"Could not publish checkpoint {final}: a file of that name appeared although this "
            "writer had reserved it (a program other than colabkit, or an old colabkit version, "
            "writes into the folder). Nothing was overwritten. To fix: give each program its own "
            "checkpoint folder."
        )
    os.replace(tmp, final)  # made durable by the manifest's folder fsync that follows
