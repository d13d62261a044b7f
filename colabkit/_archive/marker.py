"""The completion marker: restartable extraction that is kind to the user's files.

Members go into a hidden work folder (`_fsio.temp_path` with `WORK_TAG`)
beside the target, renamed into place with a completion marker
(`MARKER_NAME`) that records the archive's content hash and every path
colabkit wrote. An unchanged archive (same size and mtime, or, when only the
mtime moved, the same xxh3-128 hash: `Identity`) is reused; a changed one
replaces only the recorded files, leaving what the user added
(`update_in_place`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._fsio import hash_file, read_json, retire, write_json_atomic
from ..errors import ArchiveError
from .checks import Table, member_parts
from .writer import Dirs, WriteFailed

MARKER_NAME = ".colabkit-extracted.json"
MARKER_FORMAT = 2
WORK_TAG = "extract"


class Identity:
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


def read_marker(target: Path) -> dict[str, Any] | None:
    """The target's completion marker, or None (none, unreadable, or the target is a link)."""
    marker = read_json(target / MARKER_NAME) if not target.is_symlink() else None
    return marker if isinstance(marker, dict) else None


def is_empty_dir(folder: Path) -> bool:
    """True for a real (not linked) folder with nothing in it."""
    try:
        with os.scandir(folder) as entries:
            return folder.is_dir() and not folder.is_symlink() and next(entries, None) is None
    except OSError:
        return False


def check_target(target: Path, *, owned: bool, archive: Path) -> None:
    """Refuse a target that is a file or link, or a non-empty folder an earlier extract did not make."""
    if not (target.exists() or target.is_symlink()):
        return
    if not target.is_dir() or target.is_symlink():
        raise ArchiveError(
            f"Cannot extract {archive.name} to {target}: a file or link with that name exists. "
            "Pass to= another folder, or move that file away."
        )
    if not owned and not is_empty_dir(target):
        raise ArchiveError(
            f"Cannot extract {archive.name} to {target}: that folder already holds files that "
            "colabkit.extract did not put there, and they are left untouched. Pass to= a new or "
            "empty folder, or move the folder away and extract again."
        )


def update_in_place(archive: Path, work: Path, target: Path, old: dict[str, Any], table: Table,
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
    here = Dirs(target, archive)
    there = Dirs(work, archive, create=False)
    try:
        for name in new_files:
            parts = tuple(name.split("/"))
            os.replace(parts[-1], parts[-1], src_dir_fd=there.get(parts[:-1], name),
                       dst_dir_fd=here.get(parts[:-1], name))
    except WriteFailed as failure:
        raise failure.error from None
    finally:
        here.close()
        there.close()
    write_json_atomic(target / MARKER_NAME, record)


def _retire_listed(archive: Path, target: Path, names: set[str]) -> None:
    """Retire the files a marker lists, skipping any reached through a link (never delete outside)."""
    walker = Dirs(target, archive, create=False)
    try:
        for name in names:
            try:
                parts = member_parts(archive, name)
                if parts and parts != (MARKER_NAME,):
                    walker.get(parts[:-1], name)  # O_NOFOLLOW all the way: no link on the path
                else:
                    continue
            except (OSError, ArchiveError, WriteFailed):
                continue
            retire(target.joinpath(*parts))
    finally:
        walker.close()
