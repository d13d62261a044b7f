"""The one publish layer: every module that writes a file goes through here.

- Temp names: `.NAME.[tag-]<pid>-<random>.tmp` beside the final file, so
  os.replace is atomic and a later run can tell a dead writer's leftover
  (`is_stale_temp`: owner process gone *and* idle for `STALE_AFTER` seconds)
  from a live writer's file in progress.
- Publishing: write the temp, fsync, os.replace, fsync the folder; a reader
  sees the old file or the new one, never half of one. No symlinks or hard
  links (Google Drive's mount supports neither).
- Retiring: what colabkit deletes or replaces on the Drive mount is truncated
  first, so Drive's trash keeps a 0-byte copy instead of using quota.
- Locks: `locked(target)` is a filelock beside the target (or, beside=False,
  in the machine's temp folder), for two processes (a notebook and a
  `!python`) working on one folder.
- Names from outside: `safe_component` reduces them to one safe path part.
- Errors: `os_error_advice` maps an errno to its cause and fix, in one place;
  the table names no module, a caller adds its own way to need less room.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterator

from . import _runtime
from .errors import BusyError, CheckpointWriteError, ConfigError, UnsafeNameError

TEMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
STALE_AFTER = 600.0  # seconds a dead writer's temp must sit idle before anyone deletes it
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


def new_hash(algorithm: str) -> Any:
    """A hashlib-style object: any hashlib name, or "xxh3_128" (checkpoints' fast integrity hash)."""
    if algorithm == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    return hashlib.new(algorithm)


class MultiHasher:
    """Feeds the same bytes to several hashlib objects and counts them."""

    def __init__(self, algorithms: tuple[str, ...] | list[str] = ("sha256",)) -> None:
        self._hashes = {name: new_hash(name) for name in dict.fromkeys(algorithms)}
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
    """Whether `name` may be one of colabkit's temp names (hidden, `.tmp`): never a checkpoint or a download.

    Broad on purpose (names from outside that look like a temp are refused);
    only `temp_owner_pid`'s exact shape is ever deleted as stale.
    """
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def is_stale_temp(path: Path, idle: float = STALE_AFTER, now: float | None = None) -> bool:
    """Whether `path` is a temp that no live writer can still be filling.

    The one rule for every cleanup: a name of `temp_path`'s shape whose owner
    process is gone and that nobody touched for `idle` seconds. A temp of a live
    process is never stale, however old; a hidden `.notes.tmp` of the user's
    (no owner pid) is never colabkit's to delete.
    """
    pid = temp_owner_pid(path.name)
    if pid is None or pid == os.getpid() or process_alive(pid):
        return False
    try:
        mtime = path.lstat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - mtime >= idle


def may_resume(name: str) -> bool:
    """Whether the temp `name` may be taken over to resume it: this process's, or a dead process's.

    Never a live writer's; unlike `is_stale_temp`, no idle time is needed (the
    caller holds the lock under which such temps are made). Only names of
    `temp_path`'s shape qualify.
    """
    pid = temp_owner_pid(name)
    return pid is not None and (pid == os.getpid() or not process_alive(pid))


def remove_stale_temps(folder: Path, idle: float = STALE_AFTER) -> list[Path]:
    """Retire every stale temp directly inside `folder`; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if is_stale_temp(path, idle):
            if entry.is_dir(follow_symlinks=False):
                retire_tree(path)
            else:
                retire(path)
            removed.append(path)
    return removed


_TEMP_NAME_RE = re.compile(r"\..+\.(?:[A-Za-z0-9_]+-)?([0-9]+)-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX), re.DOTALL)


def temp_owner_pid(name: str) -> int | None:
    """The pid in a name of `temp_path`'s shape (`.NAME.[tag-]<pid>-<8 hex>.tmp`); None for any other name."""
    match = _TEMP_NAME_RE.fullmatch(name)
    return int(match.group(1)) if match else None


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
        replace(tmp, final)
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


def on_drive_mount(path: str | os.PathLike) -> bool:
    """Whether `path` lies on Colab's Drive mount, where deleted files go to Drive's trash."""
    if not _runtime.in_colab():
        return False
    return _runtime.is_within(Path(os.path.abspath(path)), _runtime.mountpoint())


def _truncate_regular(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)
    except OSError:
        pass
    finally:
        os.close(fd)


def retire(path: str | os.PathLike) -> None:
    """Delete a file colabkit wrote; on the Drive mount truncate it first.

    Drive keeps deleted files in its trash for 30 days, counting against the
    15 GB quota: a truncated file costs nothing there. Missing files are fine.
    """
    _retire_file(Path(path), on_drive_mount(path))


def _retire_file(path: Path, drive: bool) -> None:
    if drive:
        _truncate_regular(path)
    remove_quietly(path)


def retire_tree(folder: str | os.PathLike) -> None:
    """Delete a folder colabkit made (extraction, staging), file by file through `retire`.

    Never follows a symlink: a link inside is removed, not its target. Whether
    the tree lies on the Drive mount is decided once, at its root (a tree
    walked without following links cannot leave it).
    """
    root = Path(folder)
    if root.is_symlink() or not root.is_dir():
        retire(root)
        return
    drive = on_drive_mount(root)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            _retire_file(Path(dirpath, name), drive)
        for name in dirnames:
            sub = Path(dirpath, name)
            if sub.is_symlink():
                remove_quietly(sub)
            else:
                with contextlib.suppress(OSError):
                    os.rmdir(sub)
    with contextlib.suppress(OSError):
        os.rmdir(root)


def replace(source: str | os.PathLike, final: str | os.PathLike) -> None:
    """os.replace(source, final); on the Drive mount the superseded file is truncated first.

    Off the mount this is exactly os.replace. On it, the old file is moved to a
    temp name, the new one takes its place, and the old one is retired, so the
    trash never holds a full-size copy. A crash in between leaves the old file
    under a temp name (cleaned as stale later), never a half-written final.
    """
    final_path = Path(final)
    if not on_drive_mount(final_path) or not final_path.is_file():
        os.replace(source, final_path)
        return
    _swap_in(source, final_path, retire)


def replace_tree(new: str | os.PathLike, final: str | os.PathLike) -> None:
    """Publish the complete folder `new` as `final`, replacing the folder there, if any.

    os.replace cannot rename onto a non-empty folder, so the old one is renamed
    to a temp name, the new one takes its place (the old one is put back if
    that fails), and only then is the old one retired (`retire_tree`: truncated
    file by file on the Drive mount). Callers decide first that `final` is
    theirs to replace.
    """
    final_path = Path(final)
    if not final_path.is_dir() or final_path.is_symlink():
        os.replace(new, final_path)
        return
    _swap_in(new, final_path, retire_tree)


def _swap_in(new: str | os.PathLike, final: Path, retire_old: Callable[[Path], None]) -> None:
    """Move `final` aside, rename `new` onto it (putting the old one back on failure), retire the old."""
    aside = temp_path(final, "old")
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise
    retire_old(aside)


@contextlib.contextmanager
def locked(target: str | os.PathLike, what: str, timeout: float = 600.0, *, beside: bool = True,
           ) -> Iterator[Path]:
    """Hold an inter-process lock on `target` (a file or folder) while the block runs.

    The lock is a filelock on the hidden file `.NAME.lock` beside `target`; it
    holds the owner's pid so that a waiter can be told who it waits for.

    Args:
        target: what is being changed.
        what: how a message names it ("The staged folder").
        timeout: seconds to wait for another holder.
        beside: False keeps the lock file out of the user's folders: in this
            machine's temp folder, named after `target`'s real path (processes
            of one machine, a notebook and a `!python`, all find it).

    Yields:
        The lock file's path.

    Raises:
        BusyError: still held by another process after `timeout` seconds; its
            `holder` is that process's pid when known.
    """
    import filelock

    final = Path(target)
    lock_path = final.with_name(f".{final.name}{LOCK_SUFFIX}") if beside else _machine_lock_path(final)
    lock = filelock.FileLock(str(lock_path), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = lock_holder(lock_path)
        who = f"process {holder}" if holder else "another process"
        error = BusyError(
            f"{what} {final} is in use by {who} (waited {timeout:g} s for it). "
            f"Wait for that process to finish (or stop it), then run this again."
        )
        error.holder = holder
        raise error from None
    except NotImplementedError:  # a filesystem without flock: the soft lock still orders writers
        lock = filelock.SoftFileLock(str(lock_path), timeout=timeout)
        lock.acquire()
    try:
        _record_holder(lock_path)
        yield lock_path
    finally:
        lock.release()


def _machine_lock_path(target: Path) -> Path:
    """`$TMPDIR/colabkit-locks-<uid>/<key>.lock`, the key from `target`'s real path."""
    key = hashlib.sha1(os.fsencode(os.path.realpath(target))).hexdigest()[:20]
    folder = Path(tempfile.gettempdir()) / f"colabkit-locks-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{key}{LOCK_SUFFIX}"


def _record_holder(lock_path: Path) -> None:
    # overwritten in place, never truncated: on ext4 truncating a non-empty file and writing it
    # again flushes it on close (auto_da_alloc), ~4 ms that every locked save() paid
    with contextlib.suppress(OSError):
        # no-follow: a link planted under that name must not make us write through it
        fd = os.open(lock_path.with_name(lock_path.name + ".pid"),
                     os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            os.pwrite(fd, str(os.getpid()).ljust(20).encode(), 0)
        finally:
            os.close(fd)


def lock_holder(lock_path: Path) -> int | None:
    """The pid last recorded as holding `lock_path`, when it is still alive."""
    try:
        pid = int(lock_path.with_name(lock_path.name + ".pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) else None


_BIDI_AND_ZERO_WIDTH = {
    "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
    "\u2066", "\u2067", "\u2068", "\u2069",
}
MAX_NAME_BYTES = 255


def unsafe_name_reason(name: object) -> str | None:
    """Why `name` cannot be used as one path component, or None when it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not text"
    if name in ("", ".", ".."):
        return "it names a relative folder ('.' or '..')" if name else "it is empty"
    if "/" in name or "\\" in name:
        return "it contains a path separator ('/' or '\\')"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "it contains a control character (NUL, newline, tab, ...)"
    if any(ch in _BIDI_AND_ZERO_WIDTH for ch in name):
        return "it contains an invisible zero-width or text-direction character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def safe_component(name: object, what: str, fix: str) -> str:
    """`name` itself when it is one safe path component; else UnsafeNameError ending in `fix`.

    For every name that comes from outside (a URL's last part, a Drive title,
    a manifest value): never '.', '..', empty, a separator, NUL or another
    control character, an invisible character, or too long for a filesystem.
    """
    reason = unsafe_name_reason(name)
    if reason:
        raise UnsafeNameError(f"The {what} {name!r} cannot be used as a file name: {reason}. {fix}")
    return name  # type: ignore[return-value]


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


_ADVICE: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk (or Google Drive) is full",
                   "free space (delete files you no longer need, empty Drive's trash), or choose another "
                   "folder"),
    errno.EDQUOT: ("the storage quota is exhausted (Google Drive's 15 GB free tier counts everything)",
                   "free space on Drive or empty its trash, or choose a local folder (e.g. under /content, "
                   "copied to Drive at the end)"),
    errno.EFBIG: ("the file is larger than this system allows",
                  "choose a folder on another filesystem, or raise the file-size limit (ulimit -f)"),
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
    errno.ENAMETOOLONG: ("a file or folder name is too long for this filesystem",
                         "choose a shorter name (at most 255 bytes per name)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder",
                    "choose a path whose parents are folders, or move that file away"),
    errno.EISDIR: ("the path is a folder where a file was expected",
                   "choose a file name, or move that folder away"),
    errno.EEXIST: ("something already exists at that path",
                   "choose another name, or move the existing file away"),
    errno.ENOENT: ("a folder on the path does not exist (or vanished, e.g. Drive was unmounted)",
                   "check the path (and that Drive is mounted), then try again"),
    errno.ELOOP: ("the path goes through a symbolic link loop or a link where none is allowed",
                  "choose a path without symbolic links"),
}


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the write did not fit: writing less helps


def os_error_advice(exc: OSError, less: str = "") -> tuple[str, str]:
    """(cause, fix) for an OSError, from its errno: the one table every module uses.

    The table speaks of no module in particular; a caller that can write less
    says how in `less`.

    Args:
        exc: the failure.
        less: how the caller's own operation could need less room (e.g. "lower
            keep_last"); offered first when the errno says the write did not fit
            (disk full, quota, file-size limit), ignored otherwise.

    Returns:
        (cause, fix): two phrases without a final full stop, for a sentence of the caller's.
    """
    cause, fix = _ADVICE.get(exc.errno or -1, (exc.strerror or str(exc), "check the path and try again"))
    if less and exc.errno in _NO_ROOM:
        fix = f"{less}, or {fix}"
    return cause, fix


def os_error_message(exc: OSError, action: str, target: str | os.PathLike) -> str:
    """One line for a user: what failed, why (from the errno) and how to fix it."""
    cause, fix = os_error_advice(exc)
    return f"Could not {action} {target}: {cause} ({exc.strerror or exc}). To fix: {fix}."


CHECKPOINT_LESS = "save less state (e.g. no optimizer), lower keep_last"


def write_error(exc: OSError, what: str, target: Path, less: str = CHECKPOINT_LESS) -> CheckpointWriteError:
    """A CheckpointWriteError naming the cause of `exc` and the fix.

    Args:
        exc: the failed write.
        what: what was being written ("checkpoint", "the model").
        target: the file or folder it was written to.
        less: how to need less room (see `os_error_advice`); by default a checkpoint's ways.

    Returns:
        The error to raise; its `errno` is that of `exc`.
    """
    cause, fix = os_error_advice(exc, less)
    error = CheckpointWriteError(
        f"Could not write {what} {target}: {cause} ({exc.strerror or exc}). "
        f"Nothing was lost: earlier files are intact and no partial file was left. "
        f"To fix: {fix}."
    )
    error.errno = exc.errno or errno.EIO  # message stays the str(); errno for programs
    return error
