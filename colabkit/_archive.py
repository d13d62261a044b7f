"""Safe, restartable extraction of zip, tar (gz, bz2, xz) and single-file .gz archives.

    folder = colabkit.extract("data/food-11.zip")      # -> data/food-11/

Restartable: members go into a hidden folder next to the target, a completion
marker is written into it, and only then is it renamed into place. A killed
extraction leaves no half-filled target; the next call clears the leftover and
starts again, while a complete one (marker matching the archive) is skipped.

Safe: every member is checked before it is written. Absolute names, '..',
links that point outside the target, device files and fifos are refused, and
the declared total size and member count are capped against archive bombs.
tarfile's own "data" filter runs as a second line where Python has it.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import os
import re
import secrets
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ._fsio import atomic_destination, process_alive, read_json, write_json_atomic
from ._progress import progress, say
from .errors import ArchiveError, ArchiveTooLargeError, ConfigError, UnsafeArchiveError

DEFAULT_MAX_SIZE = 50 * 2**30  # bytes, uncompressed, all members together
DEFAULT_MAX_MEMBERS = 2_000_000
MARKER_NAME = ".colabkit-extracted.json"
_WORK_TAG = "colabkit-extracting"

# longest first, so ".tar.gz" wins over ".gz"
_SUFFIXES = (
    (".tar.gz", "tar"), (".tar.bz2", "tar"), (".tar.xz", "tar"), (".tgz", "tar"), (".tbz2", "tar"),
    (".tbz", "tar"), (".txz", "tar"), (".tar", "tar"), (".zip", "zip"), (".gz", "gz"),
)
SUPPORTED = "zip, tar, tar.gz/tgz, tar.bz2, tar.xz, or a single-file .gz"


def archive_kind(path: Path) -> tuple[str, str] | None:
    """("zip" | "tar" | "gz", name without the archive suffix), or None when it is not an archive."""
    lowered = path.name.lower()
    for suffix, kind in _SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return kind, path.name[: -len(suffix)]
    if path.is_file():
        if zipfile.is_zipfile(path):
            return "zip", f"{path.name}-extracted"
        with contextlib.suppress(OSError, tarfile.TarError):
            if tarfile.is_tarfile(path):
                return "tar", f"{path.name}-extracted"
    return None


def extract(
    path: str | os.PathLike,
    to: str | os.PathLike | None = None,
    *,
    quiet: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Path:
    """Extract an archive once and return the folder holding its files.

    to: the target folder; by default a folder next to the archive named after
    it ("food-11.zip" -> "food-11/"); a single-file .gz is decompressed next to
    the archive. A complete earlier extraction of the same archive is reused;
    an interrupted one is redone. max_size (bytes, uncompressed) and
    max_members cap what an archive may unpack to.
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
    limits = _Limits(max_size=max_size, max_members=max_members)
    if kind == "gz":
        folder = Path(to).expanduser().absolute() if to is not None else archive.parent
        _extract_single_gz(archive, folder, stem, limits, quiet=quiet)
        return folder
    target = Path(to).expanduser().absolute() if to is not None else archive.parent / stem
    stamp = _archive_stamp(archive)
    marker = read_json(target / MARKER_NAME)
    if target.is_dir() and marker == stamp:
        say(quiet, f"Using {target} (already extracted from {archive.name})")
        return target
    _check_target(target, owned=isinstance(marker, dict), archive=archive)
    _clear_leftovers(target)
    work = target.parent / f".{target.name}.{_WORK_TAG}-{os.getpid()}-{secrets.token_hex(3)}"
    work.mkdir(parents=True)
    try:
        if kind == "zip":
            _extract_zip(archive, work, target, limits, quiet=quiet)
        else:
            _extract_tar(archive, work, target, limits, quiet=quiet)
        write_json_atomic(work / MARKER_NAME, stamp)
        replace_folder(work, target)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        free = shutil.disk_usage(target.parent).free
        raise ArchiveError(
            f"Extracting {archive.name} into {target} failed: {exc.strerror or exc} "
            f"({_human(free)} free there); nothing was kept. Free some space or pass to= a folder "
            "on a disk with room (e.g. colabkit.stage the archive to local disk first)."
        ) from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    say(quiet, f"Extracted {archive.name} into {target}")
    return target


# --------------------------------------------------------------------------- bookkeeping


class _Limits:
    def __init__(self, *, max_size: int, max_members: int) -> None:
        for name, value in (("max_size", max_size), ("max_members", max_members)):
            if type(value) is not int or value <= 0:
                raise ConfigError(f"{name}={value!r}: give a whole number > 0.")
        self.max_size, self.max_members = max_size, max_members
        self.size = self.members = 0

    def add(self, archive: Path, size: int, target: Path) -> None:
        self.members += 1
        self.size += max(size, 0)
        if self.members > self.max_members:
            raise ArchiveTooLargeError(
                f"{archive.name} has more than {self.max_members:,} members (a possible archive bomb); "
                f"extraction stopped and nothing was kept in {target}. If you trust the archive, "
                f"raise the cap: colabkit.extract(..., max_members=...)."
            )
        if self.size > self.max_size:
            raise ArchiveTooLargeError(
                f"{archive.name} unpacks to more than {_human(self.max_size)} (a possible archive bomb); "
                f"extraction stopped and nothing was kept in {target}. If you trust the archive and have "
                f"the disk space, raise the cap: colabkit.extract(..., max_size=<bytes>)."
            )


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # pragma: no cover


def _archive_stamp(archive: Path) -> dict[str, Any]:
    info = archive.stat()
    return {"archive": archive.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _check_target(target: Path, *, owned: bool, archive: Path) -> None:
    """Refuse a target that is a file, or a non-empty folder an earlier extract did not make (owned)."""
    if not (target.exists() or target.is_symlink()):
        return
    if not target.is_dir() or target.is_symlink():
        raise ArchiveError(
            f"Cannot extract {archive.name} to {target}: a file with that name exists. "
            "Pass to= another folder, or move that file away."
        )
    if not owned and any(target.iterdir()):
        raise ArchiveError(
            f"Cannot extract {archive.name} to {target}: that folder already holds files that "
            "colabkit.extract did not put there, and they are left untouched. Pass to= a new or "
            "empty folder, or move the folder away and extract again."
        )


def _clear_leftovers(target: Path) -> None:
    """Remove work folders of killed extractions into `target` (not those of live processes)."""
    if not target.parent.is_dir():
        return
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{_WORK_TAG}-(\d+)-[0-9a-f]+$")
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
    shutil.rmtree(_retired(target), ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether the process that owns a work folder may still be writing to it."""
    if pid == os.getpid():
        return False  # an earlier, interrupted call in this very process
    return process_alive(pid)


def _retired(target: Path) -> Path:
    """Where replace_folder parks the old copy of `target` until the new one is in place."""
    return target.with_name(f".{target.name}.colabkit-old")


def replace_folder(new: Path, target: Path) -> None:
    """Publish the complete folder `new` as `target`, replacing an existing `target` folder.

    os.replace cannot rename onto a non-empty folder, so the old copy is renamed
    aside first and removed only once the new one is in place (fetch uses this too).
    """
    if target.is_dir():
        retired = _retired(target)
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(new, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(new, target)


# --------------------------------------------------------------------------- member checks


def _refuse(archive: Path, member: str, reason: str, target: Path) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"Refusing to extract {archive.name}: member {member!r} {reason}. Nothing was written "
        f"outside {target}, and the partial extraction was removed. The archive is malformed or "
        "hostile; get it from a source you trust, or extract only the members you trust by hand."
    )


def _check_name(archive: Path, name: str, target: Path) -> PurePosixPath:
    """The member's relative path, or UnsafeArchiveError for absolute names and '..'."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        raise _refuse(archive, name, "has an absolute path", target)
    parts = PurePosixPath(normalized).parts
    if ".." in parts:
        raise _refuse(archive, name, "contains '..' and would land outside the target", target)
    return PurePosixPath(*[p for p in parts if p not in ("", ".")]) if parts else PurePosixPath()


def _escapes(relative_link: str, base: PurePosixPath) -> bool:
    """True when `relative_link`, resolved from folder `base` inside the target, leaves it."""
    depth = len(base.parts)
    for part in PurePosixPath(relative_link.replace("\\", "/")).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _check_tar_member(archive: Path, member: tarfile.TarInfo, target: Path) -> None:
    relative = _check_name(archive, member.name, target)
    if member.ischr() or member.isblk():
        raise _refuse(archive, member.name, "is a device file", target)
    if member.isfifo():
        raise _refuse(archive, member.name, "is a fifo (named pipe)", target)
    if member.issym() or member.islnk():
        kind = "symbolic link" if member.issym() else "hard link"
        link = member.linkname.replace("\\", "/")
        if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
            raise _refuse(archive, member.name, f"is a {kind} to the absolute path {member.linkname!r}", target)
        # a symlink resolves from its own folder; a hard link names another member from the root
        base = relative.parent if member.issym() else PurePosixPath()
        if _escapes(link, base):
            raise _refuse(archive, member.name, f"is a {kind} to {member.linkname!r}, outside the target", target)
    elif not (member.isfile() or member.isdir()):
        raise _refuse(archive, member.name, "is not a regular file, folder or link", target)


# --------------------------------------------------------------------------- formats


def _extract_tar(archive: Path, work: Path, target: Path, limits: _Limits, *, quiet: bool) -> None:
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"{archive.name} cannot be read as a tar archive ({exc}). "
                           "Fetch it again (it may be truncated), or check its format.") from exc
    with tar, progress(f"extract {archive.name}", quiet=quiet) as bar:

        def checked() -> Iterator[tarfile.TarInfo]:
            for member in tar:
                _check_tar_member(archive, member, target)
                limits.add(archive, member.size if member.isfile() else 0, target)
                bar.update(1)
                yield member

        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(work, members=checked(), filter="data")
            else:  # Python without PEP 706: the checks above are the whole defence
                tar.extractall(work, members=checked())
        except tarfile.FilterError as exc:  # the data filter caught something the checks did not
            raise _refuse(archive, getattr(getattr(exc, "tarinfo", None), "name", "?"),
                          f"was refused by tarfile's data filter ({exc})", target) from exc
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"{archive.name} is damaged ({exc}); nothing was kept. "
                               "Fetch it again (it may be truncated).") from exc


def _extract_zip(archive: Path, work: Path, target: Path, limits: _Limits, *, quiet: bool) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{archive.name} cannot be read as a zip archive ({exc}). "
                           "Fetch it again (it may be truncated), or check its format.") from exc
    with zf:
        members = zf.infolist()
        for info in members:  # the central directory first: refuse before writing anything
            _check_name(archive, info.filename, target)
            mode = info.external_attr >> 16
            if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
                raise _refuse(archive, info.filename, "is a device file or fifo", target)
            limits.add(archive, info.file_size, target)
        with progress(f"extract {archive.name}", total=len(members), quiet=quiet) as bar:
            for info in members:
                try:
                    # zipfile never writes past a member's declared size, so the cap above holds
                    zf.extract(info, work)
                except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                    raise ArchiveError(f"{archive.name} is damaged at {info.filename!r} ({exc}); nothing "
                                       "was kept. Fetch it again (it may be truncated).") from exc
                bar.update(1)


def _extract_single_gz(archive: Path, folder: Path, name: str, limits: _Limits, *, quiet: bool) -> None:
    out = folder / name
    marker = folder / f".{name}{MARKER_NAME}"
    stamp = _archive_stamp(archive)
    recorded = read_json(marker)
    if out.is_file() and isinstance(recorded, dict) and recorded.get("archive_stamp") == stamp \
            and recorded.get("size") == out.stat().st_size:
        say(quiet, f"Using {out} (already decompressed from {archive.name})")
        return
    if out.is_dir():
        raise ArchiveError(f"Cannot decompress {archive.name} to {out}: a folder with that name exists. "
                           "Pass to= another folder, or move it away.")
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(f".{glob.escape(name)}.{_WORK_TAG}-*"):
        leftover.unlink(missing_ok=True)
    written = 0
    try:
        with progress(f"decompress {archive.name}", quiet=quiet, unit="B", unit_scale=True) as bar, \
                atomic_destination(out, tag=_WORK_TAG) as temporary, gzip.open(archive, "rb") as source, \
                open(temporary, "wb") as sink:
            while True:
                block = source.read(1 << 20)
                if not block:
                    break
                written += len(block)
                if written > limits.max_size:
                    limits.add(archive, written, folder)  # raises ArchiveTooLargeError
                sink.write(block)
                bar.update(len(block))
    except (OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{archive.name} cannot be decompressed ({exc}); nothing was kept. "
                           "Fetch it again (it may be truncated).") from exc
    write_json_atomic(marker, {"archive_stamp": stamp, "size": written})
    say(quiet, f"Decompressed {archive.name} to {out}")
