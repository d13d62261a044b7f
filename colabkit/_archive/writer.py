"""Writing members without following links, relative to directory descriptors.

Every file and folder is created relative to a directory descriptor with
no-follow semantics (`os.open(dir_fd=..., O_NOFOLLOW | O_EXCL)`), so nothing
can be written through a link, whatever an earlier member made. Symbolic links
are created last (`finish_links`), after each one's target was resolved
against the member table; where the filesystem refuses links (the Drive
mount, FAT) a link to a file becomes a copy of it.
"""

from __future__ import annotations

import collections
import errno
import os
from pathlib import Path
from typing import Any

from ..errors import ArchiveError
from .checks import Limits, Table, refuse

_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}
COPY_BLOCK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class WriteFailed(Exception):
    """An OSError from writing (not from reading the archive), carried to extract's handler."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class Dirs:
    """Directory descriptors under one root, every component opened with O_NOFOLLOW.

    A component that is a symbolic link fails with ELOOP instead of being
    followed, so no write can leave the root whatever an earlier member made.
    A few recently used descriptors are kept open (archives list a folder's
    files together), bounded so that deep or wide archives cannot exhaust fds.
    """

    def __init__(self, root: Path | int, archive: Path, *, create: bool = True) -> None:
        """`root` is a folder, or a descriptor of one that this object then owns (a helper process's)."""
        self.archive, self.create = archive, create
        self.root = root if isinstance(root, int) else os.open(root, _DIR_FLAGS)
        self.cache: collections.OrderedDict[tuple[str, ...], int] = collections.OrderedDict()

    def get(self, parts: tuple[str, ...], member: str) -> int:
        if not parts:
            return self.root
        fd = self.cache.get(parts)
        if fd is not None:
            self.cache.move_to_end(parts)
            return fd
        have = len(parts) - 1  # the deepest folder above that is open already (a loop: paths go 2,000 deep)
        while have and parts[:have] not in self.cache:
            have -= 1
        fd = self.cache[parts[:have]] if have else self.root
        for end in range(have + 1, len(parts) + 1):
            fd = self._open_child(fd, parts[end - 1], member)
            self.cache[parts[:end]] = fd
            if len(self.cache) > 64:  # the oldest: never the one just opened
                os.close(self.cache.popitem(last=False)[1])
        return fd

    def _open_child(self, parent: int, name: str, member: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not self.create:
                raise
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile; the open below still refuses a link
            except OSError as exc:
                raise WriteFailed(exc) from exc
            return self._open_existing(name, parent, member)
        except OSError as exc:
            raise self._conflict(exc, member) from exc

    def _open_existing(self, name: str, parent: int, member: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise self._conflict(exc, member) from exc

    def _conflict(self, exc: OSError, member: str) -> Exception:
        if exc.errno == errno.ELOOP:
            return refuse(self.archive, member, "would be written through a symbolic link")
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return refuse(self.archive, member, "lies under a path that another member made a file")
        return WriteFailed(exc)

    def new_file(self, parts: tuple[str, ...], member: str, mode: int) -> int:
        parent = self.get(parts[:-1], member)
        try:
            return os.open(parts[-1], _NEW_FILE_FLAGS, mode, dir_fd=parent)
        except FileExistsError as exc:
            raise refuse(self.archive, member, "appears twice in the archive (or clashes with a folder)") from exc
        except OSError as exc:
            raise (refuse(self.archive, member, "would be written through a symbolic link")
                   if exc.errno == errno.ELOOP else WriteFailed(exc)) from exc

    def close(self) -> None:
        for fd in self.cache.values():
            os.close(fd)
        self.cache.clear()
        os.close(self.root)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise WriteFailed(exc) from exc


def copy_stream(source: Any, fd: int, size: int) -> int:
    """Copy an archive member's stream into `fd`; returns the bytes written (never more than `size`)."""
    if size <= COPY_BLOCK:  # one read and one write: most dataset members are small files
        data = source.read(size)
        _write_all(fd, data)
        return len(data)
    written = 0
    while written < size:
        block = source.read(min(COPY_BLOCK, size - written))
        if not block:
            break
        _write_all(fd, block)
        written += len(block)
    return written


def file_mode(mode: int) -> int:
    """Owner may read and write; executable bits kept; no setuid/sticky, no group/other write."""
    return (mode & 0o755) | 0o600 if mode else 0o644


def link_or_copy(dirs: Dirs, source: tuple[str, ...], parts: tuple[str, ...], member: str,
                  size: int, *, hard: bool, text: str = "", copyable: bool = True) -> None:
    """A hard link to `source`, or a symbolic link with `text`; a copy where the filesystem refuses links."""
    try:
        if hard:
            source_dir = os.dup(dirs.get(source[:-1], member))  # a copy: the next get may evict and close it
            try:
                os.link(source[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=dirs.get(parts[:-1], member),
                        follow_symlinks=False)
            finally:
                os.close(source_dir)
        else:
            os.symlink(text, parts[-1], dir_fd=dirs.get(parts[:-1], member))
        return
    except FileExistsError as exc:
        raise refuse(dirs.archive, member, "appears twice in the archive (or clashes with a folder)") from exc
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise WriteFailed(exc) from exc
    # the Drive mount and FAT refuse links: copy what it points to (already counted in the size cap)
    if not copyable:
        raise ArchiveError(
            f"This filesystem refuses links, and member {member!r} of {dirs.archive.name} is a link to "
            "a folder or to nothing, which cannot be copied instead. Extract to a local disk "
            "(colabkit.extract(..., to='/content/...')), or stage the archive there first."
        )
    src = os.open(source[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirs.get(source[:-1], member))
    try:
        out = dirs.new_file(parts, member, 0o644)
        try:
            with open(src, "rb", closefd=False) as stream:
                copy_stream(stream, out, size)
        finally:
            os.close(out)
    finally:
        os.close(src)


def finish_links(archive: Path, dirs: Dirs, table: Table, limits: Limits) -> None:
    """Judge every symbolic link against the complete table, count it, then create them all."""
    targets = []
    for name, parts, _ in table.pending:
        lands = table.resolve(archive, name, parts)
        if table.kinds.get(lands) == "file":
            limits.add(table.sizes[lands])  # on a filesystem without links it becomes a copy this big
        targets.append(lands)
    for (name, parts, text), lands in zip(table.pending, targets):
        is_file = table.kinds.get(lands) == "file"
        link_or_copy(dirs, lands, parts, name, table.sizes[lands] if is_file else 0, hard=False, text=text,
                      copyable=is_file)
