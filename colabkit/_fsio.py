"""Hashing files and publishing them only complete, for every module that writes.

One way to publish: write a temp file in the same folder, fsync, os.replace,
fsync the folder; a reader sees the old file or the new one, never half of one.
No symlinks or hard links (Google Drive's mount supports neither). Write errors
of checkpoints and models become a CheckpointWriteError that names the cause
and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import CheckpointWriteError, ConfigError

HASH_ALGORITHMS = ("sha256", "sha1", "md5")
TEMP_SUFFIX = ".tmp"
_HEX_LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32}
_READ_BLOCK = 8 << 20  # large reads: hashing, not syscalls, dominates (hashlib releases the GIL)


def parse_hash(spec: str) -> tuple[str, str]:
    """Split "sha256:abc…" (also md5:, sha1:, or a bare sha256 hex) into (algorithm, hex digest)."""
    forms = "Give it as 'sha256:<64 hex digits>', 'sha1:<40 hex>' or 'md5:<32 hex>'."
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"The hash {spec!r} is empty. {forms}")
    text = spec.strip()
    algorithm, sep, digest = text.partition(":")
    if not sep:
        algorithm, digest = "sha256", text
    algorithm = algorithm.lower()
    if algorithm not in _HEX_LENGTHS:
        raise ConfigError(f"The hash {spec!r} names an unsupported algorithm {algorithm!r}. {forms}")
    digest = digest.lower()
    if not re.fullmatch(r"[0-9a-f]+", digest) or len(digest) != _HEX_LENGTHS[algorithm]:
        raise ConfigError(
            f"The hash {spec!r} is not a {algorithm} digest ({_HEX_LENGTHS[algorithm]} hex digits). {forms}"
        )
    return algorithm, digest


class MultiHasher:
    """Feeds the same bytes to several hashlib objects and counts them."""

    def __init__(self, algorithms: tuple[str, ...] | list[str] = ("sha256",)) -> None:
        self._hashes = {name: hashlib.new(name) for name in dict.fromkeys(algorithms)}
        self.count = 0

    def update(self, data: bytes | memoryview) -> None:
        for digest in self._hashes.values():
            digest.update(data)
        self.count += len(data)

    def hexdigests(self) -> dict[str, str]:
        return {name: digest.hexdigest() for name, digest in self._hashes.items()}


def _hash_stream(path: str | os.PathLike, algorithms: tuple[str, ...]) -> MultiHasher:
    hasher = MultiHasher(algorithms)
    buffer = bytearray(_READ_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while True:
            read = stream.readinto(buffer)
            if not read:
                break
            hasher.update(view[:read])
    return hasher


def hash_file(path: str | os.PathLike, algorithms: str | tuple[str, ...] = "sha256") -> dict[str, str]:
    """Hex digests of a file's bytes, one pass for all `algorithms`: {"sha256": "…"}."""
    names = (algorithms,) if isinstance(algorithms, str) else tuple(algorithms)
    return _hash_stream(path, names).hexdigests()


def sha256_file(path: str | os.PathLike) -> tuple[int, str]:
    """(size, "sha256:<hex>") of a file, in one read."""
    hasher = _hash_stream(path, ("sha256",))
    return hasher.count, "sha256:" + hasher.hexdigests()["sha256"]


def temp_path(final: Path, tag: str = "") -> Path:
    """A hidden, unique temp name next to `final`: `.NAME.[tag-]<pid>-<random>.tmp`.

    Same folder, so os.replace is atomic; the pid lets a later run tell a dead
    writer's leftover from a live one's file in progress.
    """
    prefix = f"{tag}-" if tag else ""
    return final.with_name(f".{final.name}.{prefix}{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def process_alive(pid: int) -> bool:
    """Whether process `pid` still exists (so a temp file it owns may still be growing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def temp_owner_pid(name: str) -> int | None:
    """The pid embedded in a temp name, when it has one."""
    try:
        return int(name[: -len(TEMP_SUFFIX)].rsplit(".", 1)[1].split("-")[-2])
    except (IndexError, ValueError):
        return None


@contextlib.contextmanager
def atomic_destination(destination: str | os.PathLike, tag: str = "") -> Iterator[Path]:
    """Yield a temp path next to `destination`; on success fsync it and os.replace it into place.

    On any exception the temp file is removed and `destination` is left as it was.
    """
    final = Path(destination)
    tmp = temp_path(final, tag)
    try:
        _create_exclusive(tmp)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            fsync_fd(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(final.parent)


def publish(write: Callable[[Path], None], final: Path) -> None:
    """Run write(temp), then fsync and os.replace onto `final`; the temp never survives a failure."""
    with atomic_destination(final) as tmp:
        write(tmp)


def write_bytes_atomic(final: Path, data: bytes) -> None:
    """Atomically replace `final` with `data` (small files such as manifests)."""
    with atomic_destination(final) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old or the new content, never a mix."""
    write_bytes_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where the filesystem cannot)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_fd(fd: int) -> None:
    """os.fsync, except on filesystems that do not implement it (EINVAL, ENOTSUP)."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


def fsync_and_hash(path: Path) -> tuple[int, str]:
    """fsync `path` while hashing it: the disk flush and the hash overlap."""
    failure: list[BaseException] = []

    def flush() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                fsync_fd(fd)
            finally:
                os.close(fd)
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the caller's thread
            failure.append(exc)

    flusher = threading.Thread(target=flush, name="colabkit-fsync")
    flusher.start()
    try:
        result = sha256_file(path)
    finally:
        flusher.join()
    if failure:
        raise failure[0]
    return result


def remove_quietly(path: Path) -> None:
    """Delete `path` if it can be: cleanup after a failure must not hide that failure."""
    try:
        os.unlink(path)
    except OSError:  # already gone, or not ours to delete
        pass


def _create_exclusive(tmp: Path) -> None:
    """Create the temp file ourselves, so that permission problems keep their errno."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)


_ADVICE = {
    errno.ENOSPC: ("the disk (or Google Drive) is full",
                   "free space (delete old files, empty Drive's trash), lower keep_last, or "
                   "choose another directory"),
    errno.EDQUOT: ("the storage quota is exhausted (Google Drive's 15 GB free tier counts everything)",
                   "free space on Drive or empty its trash, lower keep_last, or choose another "
                   "directory (e.g. a local one, copied to Drive at the end)"),
    errno.EFBIG: ("the file is larger than this system allows",
                  "choose a directory on another filesystem, or save less state (e.g. no optimizer)"),
    errno.EACCES: ("permission was denied",
                   "choose a directory you can write to, or fix its permissions"),
    errno.EPERM: ("the operation is not permitted",
                  "choose a directory you can write to, or fix its permissions"),
    errno.EROFS: ("the filesystem is read-only (Drive mounted with readonly=True?)",
                  "remount Drive writable (colabkit.mount_drive(force_remount=True)) or choose "
                  "another directory"),
    errno.ENOTCONN: ("the Drive mount is gone (Transport endpoint is not connected)",
                     "remount Drive (colabkit.mount_drive(force_remount=True)) and save again"),
    errno.EIO: ("an I/O error occurred (often a dropped Drive connection)",
                "remount Drive (colabkit.mount_drive(force_remount=True)) or choose another directory"),
}


def write_error(exc: OSError, what: str, target: Path) -> CheckpointWriteError:
    """A CheckpointWriteError naming the cause of `exc` and the fix."""
    cause, fix = _ADVICE.get(exc.errno or -1, (exc.strerror or str(exc), "check the directory and try again"))
    error = CheckpointWriteError(
        f"Could not write {what} {target}: {cause} ({exc.strerror or exc}). "
        f"Nothing was lost: earlier files are intact and no partial file was left. "
        f"To fix: {fix}."
    )
    error.errno = exc.errno or errno.EIO  # message stays the str(); errno for programs
    return error
