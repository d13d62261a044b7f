"""Safe, restartable extraction of zip, tar (gz, bz2, xz) and single-file .gz archives.

    folder = colabkit.extract("data/food-11.zip")      # -> data/food-11/ (or data/food-11/food-11/)

Safe on every Python colabkit supports, with or without tarfile's `data`
filter (which this module does not use): every member name is checked
lexically (no absolute paths, drive letters, '..', NUL or control
characters), and every file and folder is created relative to a directory
descriptor with no-follow semantics (`os.open(dir_fd=..., O_NOFOLLOW |
O_EXCL)`), so nothing can be written through a link. Symbolic links are
created last, after each one's target was resolved against the archive's own
member table (never `os.path.realpath` on the tree the archive built, which
CVE-2025-4517 fooled); a link that resolves outside the target is refused.
Sizes (a link counted at the size of what it points to), member counts and the
compression ratio are capped against bombs.

Restartable and kind to the user's files: members go into a hidden work folder
(`_fsio.temp_path`) beside the target, renamed into place with a completion
marker that records the archive's content hash and every path colabkit wrote.
An unchanged archive (same size and mtime, or, when only the mtime moved, the
same xxh3-128 hash) is reused; a changed one replaces only the recorded files,
leaving what the user added. One `_fsio.locked()` lock per target orders two
processes extracting into one folder.
"""

from __future__ import annotations

import collections
import errno
import gzip
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ._fsio import (
    atomic_destination,
    hash_file,
    locked,
    os_error_advice,
    read_json,
    remove_stale_temps,
    retire,
    retire_tree,
    temp_path,
    unsafe_name_reason,
    write_json_atomic,
)
from ._progress import progress, say
from ._validate import check_count, check_size
from .errors import ArchiveError, ArchiveTooLargeError, ConfigError, UnsafeArchiveError

DEFAULT_MAX_SIZE = 50 * 2**30  # bytes, uncompressed, all members together
DEFAULT_MAX_MEMBERS = 2_000_000
DEFAULT_MAX_RATIO = 10_000  # uncompressed / archive bytes; deflate never passes ~1032:1, bzip2 and xz of zeros do
RATIO_FLOOR = 256 * 2**20  # the ratio cap applies only past this many uncompressed bytes
LOCK_TIMEOUT = 3600.0  # seconds a second extraction into one folder waits for the first
MARKER_NAME = ".colabkit-extracted.json"
MARKER_FORMAT = 2
_WORK_TAG = "extract"
_MAX_PATH_BYTES = 4000  # a member path (and a link text) stays below PATH_MAX, so cleanup can reach it
_MAX_LINK_HOPS = 40  # what Linux allows in one path resolution (MAXSYMLINKS)
_IGNORED_TOP = frozenset({"__MACOSX"})  # macOS Finder's resource forks beside the one real folder
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}
_COPY_BLOCK = 1 << 20

# longest first, so ".tar.gz" wins over ".gz"
_SUFFIXES = (
    (".tar.gz", "tar"), (".tar.bz2", "tar"), (".tar.xz", "tar"), (".tgz", "tar"), (".tbz2", "tar"),
    (".tbz", "tar"), (".txz", "tar"), (".tar", "tar"), (".zip", "zip"), (".gz", "gz"),
)
SUPPORTED = "zip, tar, tar.gz/tgz, tar.bz2, tar.xz, or a single-file .gz"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def archive_kind(path: Path) -> tuple[str, str] | None:
    """("zip" | "tar" | "gz", name without the archive suffix), or None when it is not an archive."""
    lowered = path.name.lower()
    for suffix, kind in _SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return kind, path.name[: -len(suffix)]
    if path.is_file():
        if zipfile.is_zipfile(path):
            return "zip", f"{path.name}-extracted"
        try:
            if tarfile.is_tarfile(path):
                return "tar", f"{path.name}-extracted"
        except (OSError, tarfile.TarError):
            pass
    return None


def extract(
    path: str | os.PathLike,
    to: str | os.PathLike | None = None,
    *,
    quiet: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: int | float = DEFAULT_MAX_RATIO,
    unwrap: bool = True,
) -> Path:
    """Extract an archive once, safely, and return the folder holding its files.

    An archive whose members all sit in one top-level folder (``food11.zip``
    holding ``food11/training/...``) is extracted as ``unzip`` would lay it out
    (``data/food11/food11/training/...``) and that inner folder is returned, so
    ``extract(...) / "training"`` works; ``unwrap=False`` returns the outer
    target instead. A complete earlier extraction of the same archive is
    reused (checked by size and mtime, then by content hash, so copying or
    downloading the same archive again re-extracts nothing). When the archive
    really changed, only the files colabkit extracted before are replaced;
    files you added to the folder stay. An interrupted extraction is redone.

    Args:
        path: The archive: zip, tar, tar.gz/tgz, tar.bz2, tar.xz, or a
            single-file ``.gz`` (decompressed next to itself, or into ``to``).
        to: The target folder. Default: a folder next to the archive named
            after it (``food-11.zip`` -> ``food-11/``).
        quiet: No notes and no progress bar.
        max_size: Cap on the uncompressed bytes of all members together (a
            link counts at the size of what it points to), against bombs.
        max_members: Cap on the number of members.
        max_ratio: Cap on uncompressed bytes per archive byte, enforced once
            more than 256 MiB have been unpacked.
        unwrap: Return the single top-level folder when there is one.

    Returns:
        The folder with the archive's files (see ``unwrap``); for a single-file
        ``.gz``, the folder the decompressed file was written to.

    Raises:
        ArchiveError: Not an archive, damaged, the target is taken by files
            colabkit did not write, or the disk refused a write (the message
            says why from the errno, and what to do).
        UnsafeArchiveError: A member would escape the target (absolute path,
            '..', a link resolving outside, a path through a link), is a
            device or fifo, is duplicated, or is a hard link to no earlier
            member. Nothing is written outside the target.
        ArchiveTooLargeError: Past ``max_size``, ``max_members`` or
            ``max_ratio``.
        BusyError: Another process held the target's lock for an hour.
        ConfigError: A cap that is not a positive number.
    """
    archive = Path(path).expanduser().absolute()
    if not archive.is_file():
        raise ArchiveError(f"There is no archive at {archive}. Check the path (fetch or stage it first).")
    found = archive_kind(archive)
    if found is None:
        raise ArchiveError(
            f"{archive.name} is not an archive colabkit can extract ({SUPPORTED}). "
            "Check the file (a failed download is often an HTML page), or extract it by hand."
        )
    kind, stem = found
    limits = _Limits(archive, max_size=max_size, max_members=max_members, max_ratio=max_ratio)
    if kind == "gz":
        folder = Path(to).expanduser().absolute() if to is not None else archive.parent
        _mkdirs(folder, archive)
        with locked(folder / stem, "The file", LOCK_TIMEOUT):
            _extract_single_gz(archive, folder, stem, limits, quiet=quiet)
        return folder
    target = Path(to).expanduser().absolute() if to is not None else archive.parent / stem
    _mkdirs(target.parent, archive)
    with locked(target, "The extraction folder", LOCK_TIMEOUT):
        return _extract_locked(archive, kind, target, limits, quiet=quiet, unwrap=unwrap)


def _extract_locked(archive: Path, kind: str, target: Path, limits: _Limits, *, quiet: bool,
                    unwrap: bool) -> Path:
    remove_stale_temps(target.parent)  # the one rule: a dead writer's work folder, idle long enough
    identity = _Identity(archive)
    marker = _read_marker(target)
    if marker is not None and target.is_dir() and not target.is_symlink() \
            and marker.get("state", "complete") == "complete" and identity.matches(marker):
        if (marker.get("size"), marker.get("mtime_ns")) != (identity.size, identity.mtime_ns):
            write_json_atomic(target / MARKER_NAME, {**marker, **identity.stamp()})  # same bytes, new mtime
        say(quiet, f"Using {target} (already extracted from {archive.name})")
        return _result(target, marker.get("top"), unwrap)
    _check_target(target, owned=marker is not None, archive=archive)
    work = temp_path(target, _WORK_TAG)
    try:
        os.mkdir(work, 0o755)
        table = _Table()
        if kind == "zip":
            _extract_zip(archive, work, table, limits, quiet=quiet)
        else:
            _extract_tar(archive, work, table, limits, quiet=quiet)
        record = {**identity.stamp(), "format": MARKER_FORMAT, "state": "complete",
                  "files": table.files_list(), "dirs": table.dirs_list(), "top": table.top()}
        if _is_empty_dir(target) or not (target.exists() or target.is_symlink()):
            write_json_atomic(work / MARKER_NAME, record)
            os.replace(work, target)  # onto nothing or an empty folder: one atomic rename
        else:
            _update_in_place(archive, work, target, marker or {}, table, record)
    except OSError as exc:
        cause, fix = os_error_advice(exc)
        raise ArchiveError(
            f"Extracting {archive.name} into {target} failed: {cause} ({exc.strerror or exc}); "
            f"nothing partial was kept. To fix: {fix} (or pass to= a folder on another disk)."
        ) from exc
    finally:
        if work.exists() or work.is_symlink():
            retire_tree(work)
    say(quiet, f"Extracted {archive.name} into {target}")
    return _result(target, record["top"], unwrap)


def _result(target: Path, top: Any, unwrap: bool) -> Path:
    if unwrap and isinstance(top, str) and not unsafe_name_reason(top):
        inner = target / top
        if inner.is_dir() and not inner.is_symlink():
            return inner
    return target


def _mkdirs(folder: Path, archive: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        cause, fix = os_error_advice(exc)
        raise ArchiveError(f"Cannot extract {archive.name} into {folder}: {cause} "
                           f"({exc.strerror or exc}). To fix: {fix}.") from exc


# --------------------------------------------------------------------------- identity and markers


class _Identity:
    """The archive's size and mtime (the fast check) and, only when needed, its content hash."""

    def __init__(self, archive: Path) -> None:
        info = archive.stat()
        self.archive, self.size, self.mtime_ns = archive, info.st_size, info.st_mtime_ns
        self._hash: str | None = None

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = content_hash(self.archive)
        return self._hash

    def matches(self, marker: dict[str, Any]) -> bool:
        if marker.get("size") != self.size:
            return False
        if marker.get("mtime_ns") == self.mtime_ns:
            return True
        return isinstance(marker.get("hash"), str) and marker["hash"] == self.hash

    def stamp(self) -> dict[str, Any]:
        return {"archive": self.archive.name, "size": self.size, "mtime_ns": self.mtime_ns, "hash": self.hash}


def content_hash(path: Path) -> str:
    """"xxh3_128:<hex>" of a file: names an archive by its bytes (damage, not attackers, is the concern)."""
    return "xxh3_128:" + hash_file(path, "xxh3_128")["xxh3_128"]


def _read_marker(target: Path) -> dict[str, Any] | None:
    marker = read_json(target / MARKER_NAME) if not target.is_symlink() else None
    return marker if isinstance(marker, dict) else None


def _is_empty_dir(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return folder.is_dir() and not folder.is_symlink() and next(entries, None) is None
    except OSError:
        return False


def _check_target(target: Path, *, owned: bool, archive: Path) -> None:
    """Refuse a target that is a file or link, or a non-empty folder an earlier extract did not make."""
    if not (target.exists() or target.is_symlink()):
        return
    if not target.is_dir() or target.is_symlink():
        raise ArchiveError(
            f"Cannot extract {archive.name} to {target}: a file or link with that name exists. "
            "Pass to= another folder, or move that file away."
        )
    if not owned and not _is_empty_dir(target):
        raise ArchiveError(
            f"Cannot extract {archive.name} to {target}: that folder already holds files that "
            "colabkit.extract did not put there, and they are left untouched. Pass to= a new or "
            "empty folder, or move the folder away and extract again."
        )


class _Limits:
    """The caps against bombs: total size (links at their target's size), member count, ratio."""

    def __init__(self, archive: Path, *, max_size: int, max_members: int, max_ratio: int | float) -> None:
        check_size(max_size, "max_size")
        check_count(max_members, "max_members", minimum=1)
        if type(max_ratio) not in (int, float) or not max_ratio > 0 or max_ratio != max_ratio:
            raise ConfigError(f"max_ratio={max_ratio!r}: give a number > 0 (e.g. 1000).")
        self.archive = archive
        self.max_size, self.max_members, self.max_ratio = max_size, max_members, max_ratio
        self.size = self.members = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ArchiveTooLargeError(
                f"{self.archive.name} has more than {self.max_members:,} members (a possible archive bomb); "
                "extraction stopped and nothing was kept. If you trust the archive, raise the cap: "
                "colabkit.extract(..., max_members=...)."
            )

    def add(self, size: int) -> None:
        self.size += max(size, 0)
        if self.size > self.max_size:
            raise ArchiveTooLargeError(
                f"{self.archive.name} unpacks to more than {_human(self.max_size)} (a possible archive bomb); "
                "extraction stopped and nothing was kept. If you trust the archive and have the disk "
                "space, raise the cap: colabkit.extract(..., max_size=<bytes>)."
            )

    def ratio(self, compressed: int) -> None:
        if self.size > RATIO_FLOOR and self.size > self.max_ratio * max(compressed, 1):
            raise ArchiveTooLargeError(
                f"{self.archive.name} unpacks to more than {self.max_ratio:g} times its compressed size "
                f"({_human(self.size)} from {_human(compressed)}; a possible archive bomb); extraction "
                "stopped and nothing was kept. If you trust the archive, raise the cap: "
                "colabkit.extract(..., max_ratio=...)."
            )


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # pragma: no cover


# --------------------------------------------------------------------------- the member table


def _refuse(archive: Path, member: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"Refusing to extract {archive.name}: member {member!r} {reason}. Nothing was written "
        "outside the target, and the partial extraction was removed. The archive is malformed or "
        "hostile; get it from a source you trust, or extract only the members you trust by hand."
    )


def _split(text: str) -> list[str]:
    return text.replace("\\", "/").split("/")


def member_parts(archive: Path, name: str) -> tuple[str, ...]:
    """A member's path as checked components (empty for the root), or UnsafeArchiveError."""
    # fast path for the common printable-ASCII name; the full checks below decide everything else
    if name.isascii() and name.isprintable() and "\\" not in name and len(name) <= _MAX_PATH_BYTES \
            and name[:1] != "/" and name[1:2] != ":":
        parts = name.split("/")
        if "" not in parts and "." not in parts and ".." not in parts and max(map(len, parts)) <= 255:
            return tuple(parts)
    if "\x00" in name:
        raise _refuse(archive, name, "contains a NUL character")
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_PATH_BYTES:
        raise _refuse(archive, name, f"has a path longer than {_MAX_PATH_BYTES} bytes")
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
        raise _refuse(archive, name, "has an absolute path")
    parts = tuple(part for part in text.split("/") if part not in ("", "."))
    for part in parts:
        if part == "..":
            raise _refuse(archive, name, "contains '..' and would land outside the target")
        if not (part.isascii() and part.isprintable()):  # fast path: printable ASCII is always safe
            reason = unsafe_name_reason(part)
            if reason:
                raise _refuse(archive, name, f"has an unsafe name part ({reason})")
    return parts


class _Table:
    """What the archive put where: the namespace links are judged in (never the disk's realpath)."""

    def __init__(self) -> None:
        self.kinds: dict[tuple[str, ...], str] = {}  # parts -> "file" | "dir" | "link"
        self.sizes: dict[tuple[str, ...], int] = {}
        self.links: dict[tuple[str, ...], str] = {}  # parts -> link text ('/'-separated, relative)
        self.pending: list[tuple[str, tuple[str, ...], str]] = []  # (member name, parts, link text)

    def claim(self, archive: Path, name: str, parts: tuple[str, ...], kind: str) -> None:
        if self.links:  # a member under a link would be written through it (CVE-2025-4517's shape)
            for end in range(1, len(parts)):
                if parts[:end] in self.links:
                    raise _refuse(archive, name, f"lies under the symbolic link {'/'.join(parts[:end])!r}")
        previous = self.kinds.get(parts)
        if previous is not None and not (previous == kind == "dir"):
            raise _refuse(archive, name, "appears twice in the archive")
        self.kinds[parts] = kind

    def add_link(self, archive: Path, name: str, parts: tuple[str, ...], text: str) -> None:
        if not text or "\x00" in text or len(text.encode("utf-8", "surrogateescape")) > _MAX_PATH_BYTES:
            raise _refuse(archive, name, "is a symbolic link with an empty, NUL-holding or overlong target")
        normalized = text.replace("\\", "/")
        if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"
                                          and normalized[0].isalpha()):
            raise _refuse(archive, name, f"is a symbolic link to the absolute path {text!r}")
        self.claim(archive, name, parts, "link")
        self.links[parts] = normalized
        self.pending.append((name, parts, normalized))

    def resolve(self, archive: Path, name: str, parts: tuple[str, ...]) -> tuple[str, ...]:
        """Where link `parts` leads, following the archive's links lexically; refused if outside."""
        position = list(parts[:-1])
        todo = list(reversed(_split(self.links[parts])))
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not position:
                    raise _refuse(archive, name, f"is a symbolic link to {self.links[parts]!r}, "
                                                 "which resolves outside the target")
                position.pop()
                continue
            position.append(part)
            text = self.links.get(tuple(position))
            if text is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise _refuse(archive, name, "is a symbolic link in a loop or a chain too deep to follow")
                position.pop()  # a link's text is read from the folder holding it
                todo.extend(reversed(_split(text)))
        return tuple(position)

    def files_list(self) -> list[str]:
        return ["/".join(p) for p, kind in self.kinds.items() if kind != "dir"]

    def dirs_list(self) -> list[str]:
        dirs = {p[:end] for p in self.kinds for end in range(1, len(p))}
        dirs.update(p for p, kind in self.kinds.items() if kind == "dir")
        return sorted("/".join(p) for p in dirs)

    def top(self) -> str | None:
        """The one top-level folder holding everything (ignoring __MACOSX), or None."""
        tops = {p[0] for p in self.kinds} - _IGNORED_TOP
        if len(tops) != 1:
            return None
        (name,) = tops
        return name if self.kinds.get((name,), "dir") == "dir" else None


# --------------------------------------------------------------------------- writing without following links


class _WriteFailed(Exception):
    """An OSError from writing (not from reading the archive), carried to extract's handler."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _Dirs:
    """Directory descriptors under one root, every component opened with O_NOFOLLOW.

    A component that is a symbolic link fails with ELOOP instead of being
    followed, so no write can leave the root whatever an earlier member made.
    A few recently used descriptors are kept open (archives list a folder's
    files together), bounded so that deep or wide archives cannot exhaust fds.
    """

    def __init__(self, root: Path, archive: Path, *, create: bool = True) -> None:
        self.archive, self.create = archive, create
        self.root = os.open(root, _DIR_FLAGS)
        self.cache: collections.OrderedDict[tuple[str, ...], int] = collections.OrderedDict()

    def get(self, parts: tuple[str, ...], member: str) -> int:
        if not parts:
            return self.root
        fd = self.cache.get(parts)
        if fd is not None:
            self.cache.move_to_end(parts)
            return fd
        parent = self.get(parts[:-1], member)
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not self.create:
                raise
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile; the open below still refuses a link
            except OSError as exc:
                raise _WriteFailed(exc) from exc
            fd = self._open_existing(name, parent, member)
        except OSError as exc:
            raise self._conflict(exc, member) from exc
        self.cache[parts] = fd
        if len(self.cache) > 64:
            os.close(self.cache.popitem(last=False)[1])
        return fd

    def _open_existing(self, name: str, parent: int, member: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise self._conflict(exc, member) from exc

    def _conflict(self, exc: OSError, member: str) -> Exception:
        if exc.errno == errno.ELOOP:
            return _refuse(self.archive, member, "would be written through a symbolic link")
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return _refuse(self.archive, member, "lies under a path that another member made a file")
        return _WriteFailed(exc)

    def new_file(self, parts: tuple[str, ...], member: str, mode: int) -> int:
        parent = self.get(parts[:-1], member)
        try:
            return os.open(parts[-1], _NEW_FILE_FLAGS, mode, dir_fd=parent)
        except FileExistsError as exc:
            raise _refuse(self.archive, member, "appears twice in the archive (or clashes with a folder)") from exc
        except OSError as exc:
            raise (_refuse(self.archive, member, "would be written through a symbolic link")
                   if exc.errno == errno.ELOOP else _WriteFailed(exc)) from exc

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
        raise _WriteFailed(exc) from exc


def _copy_stream(source: Any, fd: int, size: int) -> int:
    """Copy an archive member's stream into `fd`; returns the bytes written (never more than `size`)."""
    if size <= _COPY_BLOCK:  # one read and one write: most dataset members are small files
        data = source.read(size)
        _write_all(fd, data)
        return len(data)
    written = 0
    while written < size:
        block = source.read(min(_COPY_BLOCK, size - written))
        if not block:
            break
        _write_all(fd, block)
        written += len(block)
    return written


def _file_mode(mode: int) -> int:
    """Owner may read and write; executable bits kept; no setuid/sticky, no group/other write."""
    return (mode & 0o755) | 0o600 if mode else 0o644


def _link_or_copy(dirs: _Dirs, source: tuple[str, ...], parts: tuple[str, ...], member: str,
                  size: int, *, hard: bool, text: str = "", copyable: bool = True) -> None:
    """A hard link to `source`, or a symbolic link with `text`; a copy where the filesystem refuses links."""
    parent = dirs.get(parts[:-1], member)
    try:
        if hard:
            os.link(source[-1], parts[-1], src_dir_fd=dirs.get(source[:-1], member), dst_dir_fd=parent,
                    follow_symlinks=False)
        else:
            os.symlink(text, parts[-1], dir_fd=parent)
        return
    except FileExistsError as exc:
        raise _refuse(dirs.archive, member, "appears twice in the archive (or clashes with a folder)") from exc
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise _WriteFailed(exc) from exc
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
                _copy_stream(stream, out, size)
        finally:
            os.close(out)
    finally:
        os.close(src)


def _finish_links(archive: Path, dirs: _Dirs, table: _Table, limits: _Limits) -> None:
    """Judge every symbolic link against the complete table, count it, then create them all."""
    targets = []
    for name, parts, _ in table.pending:
        lands = table.resolve(archive, name, parts)
        if table.kinds.get(lands) == "file":
            limits.add(table.sizes[lands])  # on a filesystem without links it becomes a copy this big
        targets.append(lands)
    for (name, parts, text), lands in zip(table.pending, targets):
        is_file = table.kinds.get(lands) == "file"
        _link_or_copy(dirs, lands, parts, name, table.sizes[lands] if is_file else 0, hard=False, text=text,
                      copyable=is_file)


# --------------------------------------------------------------------------- formats


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, OSError)


def _damaged(archive: Path, exc: BaseException, where: str = "") -> ArchiveError:
    at = f" at {where!r}" if where else ""
    return ArchiveError(f"{archive.name} is damaged{at} ({exc}); nothing was kept. "
                        "Fetch it again (it may be truncated).")


def _extract_tar(archive: Path, work: Path, table: _Table, limits: _Limits, *, quiet: bool) -> None:
    raw = open(archive, "rb")
    try:
        try:
            tar = tarfile.open(fileobj=raw, mode="r:*")
        except _READ_ERRORS as exc:
            raise ArchiveError(f"{archive.name} cannot be read as a tar archive ({exc}). "
                               "Fetch it again (it may be truncated), or check its format.") from exc
        dirs = _Dirs(work, archive)
        try:
            with tar, progress(f"extract {archive.name}", quiet=quiet) as bar:
                _tar_members(archive, tar, raw, dirs, table, limits, bar)
                _finish_links(archive, dirs, table, limits)
        finally:
            dirs.close()
    except _WriteFailed as failure:
        raise failure.error from None
    finally:
        raw.close()


def _tar_members(archive: Path, tar: tarfile.TarFile, raw: Any, dirs: _Dirs, table: _Table,
                 limits: _Limits, bar: Any) -> None:
    members = iter(tar)
    while True:
        try:
            member = next(members)
        except StopIteration:
            return
        except _READ_ERRORS as exc:
            raise _damaged(archive, exc) from exc
        name = member.name
        parts = member_parts(archive, name)
        limits.member()
        if not parts or parts == (MARKER_NAME,):
            if member.isdir():
                continue  # "." or "./": the target itself
            raise _refuse(archive, name, "names the target folder itself or colabkit's marker")
        if member.isreg():
            table.claim(archive, name, parts, "file")
            limits.add(member.size)
            table.sizes[parts] = member.size
            fd = dirs.new_file(parts, name, _file_mode(member.mode))
            try:
                try:
                    _copy_stream(_member_data(tar, member), fd, member.size)
                except _READ_ERRORS as exc:
                    raise _damaged(archive, exc, name) from exc
                try:
                    os.utime(fd, ns=(member.mtime * 10**9,) * 2)  # tar and tarfile keep mtimes too
                except (OverflowError, ValueError, OSError):
                    pass
            finally:
                os.close(fd)
        elif member.isdir():
            table.claim(archive, name, parts, "dir")
            dirs.get(parts, name)
        elif member.issym():
            table.add_link(archive, name, parts, member.linkname)
        elif member.islnk():
            _tar_hard_link(archive, member, parts, dirs, table, limits)
        elif member.ischr() or member.isblk():
            raise _refuse(archive, name, "is a device file")
        elif member.isfifo():
            raise _refuse(archive, name, "is a fifo (named pipe)")
        else:
            raise _refuse(archive, name, "is not a regular file, folder or link")
        if limits.size > RATIO_FLOOR:  # tell() is not free; the ratio cap starts at the floor anyway
            limits.ratio(raw.tell())
        bar.update(1)


def _member_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    """A regular member's bytes as a stream: tarfile's own stream (sparse members are expanded there)."""
    if member.issparse():
        return tar.extractfile(member)
    # what tarfile's makefile does itself; extractfile's wrappers cost 18% of the user CPU on
    # bench_extract's tar.gz of small files, which misses its target without this
    tar.fileobj.seek(member.offset_data)
    return _Exact(tar.fileobj, member.size)


class _Exact:
    """Reads exactly `size` bytes from an archive stream, or EOFError (a truncated archive)."""

    def __init__(self, stream: Any, size: int) -> None:
        self.stream, self.left = stream, size

    def read(self, size: int) -> bytes:
        data = self.stream.read(min(size, self.left))
        if len(data) < min(size, self.left):
            raise EOFError("unexpected end of data")
        self.left -= len(data)
        return data


def _tar_hard_link(archive: Path, member: tarfile.TarInfo, parts: tuple[str, ...], dirs: _Dirs,
                   table: _Table, limits: _Limits) -> None:
    """A hard link names an earlier member; a link to an earlier symlink becomes that symlink, judged here."""
    name, linkname = member.name, member.linkname
    if "\x00" in linkname or linkname.replace("\\", "/").startswith("/") or re.match(r"^[A-Za-z]:", linkname):
        raise _refuse(archive, name, f"is a hard link to the absolute path {linkname!r}")
    try:
        source = member_parts(archive, linkname)
    except UnsafeArchiveError as exc:
        raise _refuse(archive, name, f"is a hard link to {linkname!r}, outside the target") from exc
    kind = table.kinds.get(source)
    if kind == "link":
        table.add_link(archive, name, parts, table.links[source])
        return
    if kind != "file":
        what = "a folder" if kind == "dir" else "no earlier member of the archive"
        raise _refuse(archive, name, f"is a hard link to {linkname!r}, which is {what}")
    table.claim(archive, name, parts, "file")
    limits.add(table.sizes[source])  # where links are refused, this is a full copy
    table.sizes[parts] = table.sizes[source]
    _link_or_copy(dirs, source, parts, name, table.sizes[source], hard=True)


def _zip_overlaps(members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo | None:
    """A member whose data runs into the next one's header (the overlapping-entries bomb)."""
    ordered = sorted(members, key=lambda info: info.header_offset)
    for info, following in zip(ordered, ordered[1:]):
        if info.header_offset + 30 + info.compress_size > following.header_offset:  # 30: fixed header
            return info
    return None


def _extract_zip(archive: Path, work: Path, table: _Table, limits: _Limits, *, quiet: bool) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"{archive.name} cannot be read as a zip archive ({exc}). "
                           "Fetch it again (it may be truncated), or check its format.") from exc
    with zf:
        members = zf.infolist()
        plan = []
        for info in members:  # the central directory first: refuse before writing anything
            parts = member_parts(archive, info.filename)
            limits.member()
            mode = info.external_attr >> 16
            if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)
                         or stat.S_ISSOCK(mode)):
                raise _refuse(archive, info.filename, "is a device file or fifo")
            if not parts or parts == (MARKER_NAME,):
                if info.is_dir():
                    continue
                raise _refuse(archive, info.filename, "names the target folder itself or colabkit's marker")
            limits.add(info.file_size)
            plan.append((info, parts, mode))
        overlapping = _zip_overlaps(members)
        if overlapping is not None:
            raise _refuse(archive, overlapping.filename,
                          "overlaps the next member's data (a zip bomb trick)")
        limits.ratio(archive.stat().st_size)  # zipfile never reads past a declared size, so this is exact
        dirs = _Dirs(work, archive)
        try:
            with progress(f"extract {archive.name}", total=len(plan), quiet=quiet) as bar:
                for info, parts, mode in plan:
                    _zip_member(archive, zf, info, parts, mode, dirs, table)
                    bar.update(1)
                _finish_links(archive, dirs, table, limits)
        except _WriteFailed as failure:
            raise failure.error from None
        finally:
            dirs.close()


def _zip_member(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, parts: tuple[str, ...],
                mode: int, dirs: _Dirs, table: _Table) -> None:
    name = info.filename
    if info.is_dir():
        table.claim(archive, name, parts, "dir")
        dirs.get(parts, name)
        return
    try:
        if stat.S_ISLNK(mode):  # what unzip makes a link; judged like a tar symlink
            if info.file_size > _MAX_PATH_BYTES:
                raise _refuse(archive, name, "is a symbolic link with an overlong target")
            table.add_link(archive, name, parts, zf.read(info).decode("utf-8", "surrogateescape"))
            return
        table.claim(archive, name, parts, "file")
        table.sizes[parts] = info.file_size
        fd = dirs.new_file(parts, name, _file_mode(mode & 0o7777))
        try:
            with zf.open(info) as source:  # the CRC is checked when the member is read to its end
                _copy_stream(source, fd, info.file_size)
        finally:
            os.close(fd)
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, or a compression zipfile lacks
        raise ArchiveError(f"{archive.name} member {name!r} cannot be read ({exc}). Extract it by hand "
                           "(e.g. `!unzip` with its password), then use the folder.") from exc
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError) as exc:  # writes raise _WriteFailed
        raise _damaged(archive, exc, name) from exc


# --------------------------------------------------------------------------- replacing a changed extraction


def _update_in_place(archive: Path, work: Path, target: Path, old: dict[str, Any], table: _Table,
                     record: dict[str, Any]) -> None:
    """Swap the files colabkit extracted earlier for the new ones; files the user added stay.

    The marker first lists old and new files together (state "updating"), so a
    run killed half-way knows on its next call which files are colabkit's.
    """
    new_files = record["files"]
    new_dirs = record["dirs"]
    if isinstance(old.get("files"), list):
        old_files = {f for f in old["files"] if isinstance(f, str)}
    else:  # a marker from colabkit 0.1 listed nothing: replace only what the new archive writes
        old_files = {f for f in new_files if os.path.lexists(target / f)}
    old_dirs = {d for d in old.get("dirs", []) if isinstance(d, str)}
    clashes = [f for f in new_files if f not in old_files and os.path.lexists(target / f)]
    clashes += [d for d in new_dirs if (target / d).is_symlink()
                or ((target / d).exists() and not (target / d).is_dir())]
    if clashes:
        raise ArchiveError(
            f"{archive.name} changed, and its new version holds {len(clashes)} path(s) where you have your own "
            f"files in {target} (e.g. {clashes[0]!r}). Nothing was changed. Move those files away (or pass "
            "to= a new folder), then extract again."
        )
    write_json_atomic(target / MARKER_NAME, {**record, "state": "updating",
                                             "files": sorted(old_files | set(new_files)),
                                             "dirs": sorted(old_dirs | set(new_dirs))})
    _retire_listed(archive, target, old_files)
    for name in sorted(old_dirs - set(new_dirs), key=lambda d: -d.count("/")):
        try:
            os.rmdir(target / name)  # only when empty: a folder holding your files stays
        except OSError:
            pass
    here = _Dirs(target, archive)
    there = _Dirs(work, archive, create=False)
    try:
        for name in new_files:
            parts = tuple(name.split("/"))
            os.replace(parts[-1], parts[-1], src_dir_fd=there.get(parts[:-1], name),
                       dst_dir_fd=here.get(parts[:-1], name))
    except _WriteFailed as failure:
        raise failure.error from None
    finally:
        here.close()
        there.close()
    write_json_atomic(target / MARKER_NAME, record)


def _retire_listed(archive: Path, target: Path, names: set[str]) -> None:
    """Retire the files a marker lists, skipping any reached through a link (never delete outside)."""
    walker = _Dirs(target, archive, create=False)
    try:
        for name in names:
            try:
                parts = member_parts(archive, name)
                if parts and parts != (MARKER_NAME,):
                    walker.get(parts[:-1], name)  # O_NOFOLLOW all the way: no link on the path
                else:
                    continue
            except (OSError, ArchiveError, _WriteFailed):
                continue
            retire(target.joinpath(*parts))
    finally:
        walker.close()


# --------------------------------------------------------------------------- single-file .gz


def _extract_single_gz(archive: Path, folder: Path, name: str, limits: _Limits, *, quiet: bool) -> None:
    reason = unsafe_name_reason(name)
    if reason:
        raise ArchiveError(f"{archive.name} would decompress to the unusable name {name!r} ({reason}). "
                           "Rename the archive, then extract again.")
    out = folder / name
    marker = folder / f".{name}{MARKER_NAME}"
    identity = _Identity(archive)
    recorded = read_json(marker)
    recorded = recorded if isinstance(recorded, dict) else {}
    if recorded.get("format") != MARKER_FORMAT and isinstance(recorded.get("archive_stamp"), dict):
        legacy = recorded["archive_stamp"]  # colabkit 0.1's marker
        recorded = {"size": legacy.get("size"), "mtime_ns": legacy.get("mtime_ns"), "out_size": recorded.get("size")}
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise ArchiveError(f"Cannot decompress {archive.name} to {out}: a folder or link with that name "
                           "exists. Pass to= another folder, or move it away.")
    if out.exists():
        info = out.stat()
        ours = recorded.get("out_size") == info.st_size and recorded.get("out_mtime_ns", info.st_mtime_ns) \
            == info.st_mtime_ns
        if not ours:
            raise ArchiveError(
                f"Cannot decompress {archive.name} to {out}: that file exists and colabkit did not write it "
                "(or it was changed since), so it is left untouched. Move or rename it, or pass to= another "
                "folder, then extract again."
            )
        if identity.matches(recorded):
            if (recorded.get("mtime_ns"), recorded.get("format")) != (identity.mtime_ns, MARKER_FORMAT):
                write_json_atomic(marker, {**recorded, **identity.stamp(), "format": MARKER_FORMAT,
                                           "out_mtime_ns": info.st_mtime_ns})
            say(quiet, f"Using {out} (already decompressed from {archive.name})")
            return
    written = 0
    compressed = identity.size
    try:
        with progress(f"decompress {archive.name}", quiet=quiet, unit="B", unit_scale=True) as bar, \
                atomic_destination(out, tag=_WORK_TAG) as temporary, gzip.open(archive, "rb") as source, \
                open(temporary, "wb") as sink:
            while True:
                block = source.read(_COPY_BLOCK)
                if not block:
                    break
                written += len(block)
                limits.add(len(block))
                limits.ratio(compressed)
                sink.write(block)
                bar.update(len(block))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{archive.name} cannot be decompressed ({exc}); nothing was kept. "
                           "Fetch it again (it may be truncated).") from exc
    except OSError as exc:
        cause, fix = os_error_advice(exc)
        raise ArchiveError(f"Decompressing {archive.name} to {out} failed: {cause} ({exc.strerror or exc}); "
                           f"nothing partial was kept. To fix: {fix}.") from exc
    info = out.stat()
    write_json_atomic(marker, {**identity.stamp(), "format": MARKER_FORMAT, "out_size": written,
                               "out_mtime_ns": info.st_mtime_ns})
    say(quiet, f"Decompressed {archive.name} to {out}")

