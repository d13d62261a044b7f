"""`extract()`: the orchestration of one extraction.

Checks the path and the caps, takes one `_fsio.locked()` lock per target (so
two processes extracting into one folder are ordered), reuses a complete
earlier extraction, or extracts into a work folder and renames it into place
(or updates the target in place), and turns disk errors into `ArchiveError`s
that say why and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._fsio import (
    locked,
    os_error_advice,
    remove_stale_temps,
    retire_tree,
    temp_path,
    unsafe_name_reason,
    write_json_atomic,
)
from .._progress import say
from ..errors import ArchiveError
from .checks import DEFAULT_MAX_MEMBERS, DEFAULT_MAX_RATIO, DEFAULT_MAX_SIZE, Limits, Table
from .gz import extract_single_gz
from .marker import (
    MARKER_FORMAT,
    MARKER_NAME,
    WORK_TAG,
    Identity,
    check_target,
    is_empty_dir,
    read_marker,
    update_in_place,
)
from .members import SUPPORTED, archive_kind, extract_tar, extract_zip

LOCK_TIMEOUT = 3600.0  # seconds a second extraction into one folder waits for the first


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
    limits = Limits(archive, max_size=max_size, max_members=max_members, max_ratio=max_ratio)
    if kind == "gz":
        folder = Path(to).expanduser().absolute() if to is not None else archive.parent
        _mkdirs(folder, archive)
        with locked(folder / stem, "The file", LOCK_TIMEOUT):
            extract_single_gz(archive, folder, stem, limits, quiet=quiet)
        return folder
    target = Path(to).expanduser().absolute() if to is not None else archive.parent / stem
    _mkdirs(target.parent, archive)
    with locked(target, "The extraction folder", LOCK_TIMEOUT):
        return _extract_locked(archive, kind, target, limits, quiet=quiet, unwrap=unwrap)


def _extract_locked(archive: Path, kind: str, target: Path, limits: Limits, *, quiet: bool,
                    unwrap: bool) -> Path:
    remove_stale_temps(target.parent)  # the one rule: a dead writer's work folder, idle long enough
    identity = Identity(archive)
    marker = read_marker(target)
    if marker is not None and target.is_dir() and not target.is_symlink() \
            and marker.get("state", "complete") == "complete" and identity.matches(marker):
        if (marker.get("size"), marker.get("mtime_ns")) != (identity.size, identity.mtime_ns):
            write_json_atomic(target / MARKER_NAME, {**marker, **identity.stamp()})  # same bytes, new mtime
        say(quiet, f"Using {target} (already extracted from {archive.name})")
        return _result(target, marker.get("top"), unwrap)
    check_target(target, owned=marker is not None, archive=archive)
    work = temp_path(target, WORK_TAG)
    try:
        os.mkdir(work, 0o755)
        table = Table()
        if kind == "zip":
            extract_zip(archive, work, table, limits, quiet=quiet)
        else:
            extract_tar(archive, work, table, limits, quiet=quiet)
        record = {**identity.stamp(), "format": MARKER_FORMAT, "state": "complete",
                  "files": table.files_list(), "dirs": table.dirs_list(), "top": table.top()}
        if is_empty_dir(target) or not (target.exists() or target.is_symlink()):
            write_json_atomic(work / MARKER_NAME, record)
            os.replace(work, target)  # onto nothing or an empty folder: one atomic rename
        else:
            update_in_place(archive, work, target, marker or {}, table, record)
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
