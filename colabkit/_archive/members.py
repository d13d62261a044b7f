"""Reading zip and tar (gz, bz2, xz) archives member by member into the table and the writer.

`archive_kind` tells the format from the name (or the bytes). Each member is
checked (`checks.member_parts`, `Table.claim`, `Limits`) before anything of it
is written; a zip's central directory is judged whole before the first write.
Read errors become "damaged" `ArchiveError`s; device files and fifos are
refused.
"""

from __future__ import annotations

import bz2
import contextlib
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

from .._progress import progress
from ..errors import ArchiveError, ArchiveTooLargeError, UnsafeArchiveError
from .checks import MAX_PATH_BYTES, Limits, Table, damaged, member_parts, refuse
from .marker import MARKER_NAME
from .tarstream import Forward
from .writer import COPY_BLOCK, Dirs, WriteFailed, copy_stream, file_mode, finish_links, link_or_copy
from .zipwrite import write_zip_files, zip_errors

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
        if _is_tar(path):
            return "tar", f"{path.name}-extracted"
    return None


def _is_tar(path: Path) -> bool:
    """Whether tarfile can open it, told through `Forward` (tarfile.is_tarfile reads headers uncapped)."""
    try:
        with open(path, "rb") as raw, contextlib.ExitStack() as opened:
            _open_tar(path, raw, opened)[0].close()
    except ArchiveTooLargeError:
        return True  # a tar, and a hostile one: extract says so
    except (*_READ_ERRORS, ValueError):
        return False
    return True


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, OSError)


def extract_tar(archive: Path, work: Path, table: Table, limits: Limits, *, quiet: bool) -> None:
    """Write a tar archive's members into `work`, each judged first; links last."""
    with open(archive, "rb") as raw, contextlib.ExitStack() as opened:
        try:
            tar, reader = _open_tar(archive, raw, opened)
        except (tarfile.TarError, ValueError) as exc:  # ValueError: tarfile's parse of a malformed pax map
            raise ArchiveError(f"{archive.name} cannot be read as a tar archive ({exc}). "
                               "Fetch it again (it may be truncated), or check its format.") from exc
        except _READ_ERRORS as exc:  # the decompressor's own: the first block is corrupt or cut short
            raise damaged(archive, exc) from exc
        dirs = Dirs(work, archive)
        try:
            with tar, progress(f"extract {archive.name}", quiet=quiet) as bar:
                _tar_members(archive, tar, reader, dirs, table, limits, bar)
                if reader.stream is not raw:
                    _read_to_the_end(archive, reader.stream)
                finish_links(archive, dirs, table, limits)
        except WriteFailed as failure:
            raise failure.error from None
        finally:
            dirs.close()


def _open_tar(archive: Path, raw: Any, opened: contextlib.ExitStack) -> tuple[tarfile.TarFile, Forward]:
    """tarfile (seekable mode) over a `Forward` reader, through the decompressor the magic bytes name.

    gzip, bzip2 and xz are told by their magic; anything else is a plain tar, or else a legacy
    lzma-alone one (.tar.lzma, which has no magic). Every path goes through `Forward`, whose
    header cap tarfile's own decompressors would not have.
    """
    head = raw.read(10)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b\x08"):
        stream: Any = gzip.GzipFile(fileobj=raw, mode="rb")
    elif re.match(rb"BZh[1-9]", head) and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):  # a block, or an empty stream
        stream = bz2.BZ2File(raw)
    elif head.startswith(b"\xfd7zXZ\x00"):
        stream = lzma.LZMAFile(raw)
    else:
        try:
            reader = Forward(raw, raw, archive)
            return tarfile.open(fileobj=reader, mode="r:"), reader
        except tarfile.ReadError as not_plain:
            raw.seek(0)
            alone = opened.enter_context(lzma.LZMAFile(raw, format=lzma.FORMAT_ALONE))
            reader = Forward(alone, raw, archive)
            try:
                return tarfile.open(fileobj=reader, mode="r:"), reader
            except (lzma.LZMAError, EOFError, tarfile.ReadError):
                raise not_plain from None  # neither: tarfile's own reason for the plain reading
    reader = Forward(opened.enter_context(stream), raw, archive)
    return tarfile.open(fileobj=reader, mode="r:"), reader


_TRAILER_MAX = 16 << 20  # bytes read past the tar's end marker; records pad it by 10 KiB, rarely 1 MiB


def _read_to_the_end(archive: Path, stream: Any) -> None:
    """Read past the tar's end marker to the compressed stream's end, where its check sum is verified.

    tarfile stops at the end marker, so a flipped byte in a member's data went unnoticed. Bytes
    after a complete gzip stream are ignored, as bz2 and lzma (and tar, with a warning) do. Past
    `_TRAILER_MAX` the rest is left unread: a bomb hidden after the end marker is never unpacked.
    """
    left = _TRAILER_MAX
    try:
        while left > 0:
            block = stream.read(min(COPY_BLOCK, left))
            if not block:
                return
            left -= len(block)
    except gzip.BadGzipFile as exc:
        if not str(exc).startswith("Not a gzipped file"):  # raised only once the stream before was verified
            raise damaged(archive, exc) from exc
    except _READ_ERRORS as exc:
        raise damaged(archive, exc) from exc


_GLOBAL_KEYS, _GLOBAL_BYTES = 1000, 1 << 20  # git archive writes one key; tarfile keeps them all


def _tar_members(archive: Path, tar: tarfile.TarFile, reader: Forward, dirs: Dirs, table: Table,
                 limits: Limits, bar: Any) -> None:
    while True:
        reader.expect_header()
        try:
            member = tar.next()
        except (*_READ_ERRORS, ValueError) as exc:  # ValueError: tarfile's parse of a malformed pax map
            raise damaged(archive, exc) from exc
        extended = reader.got_member() > 2 * tarfile.BLOCKSIZE  # more than padding and one header
        if member is None:
            return
        tar.members.clear()  # the table keeps what is needed; 2,000,000 TarInfos took GBs
        if extended and tar.pax_headers and (  # a global header may have come: they add up in tarfile
                len(tar.pax_headers) > _GLOBAL_KEYS
                or sum(len(k) + len(v) for k, v in tar.pax_headers.items()) > _GLOBAL_BYTES):
            raise ArchiveTooLargeError(
                f"{archive.name} has global pax headers of more than {_GLOBAL_KEYS:,} entries or "
                f"{_GLOBAL_BYTES >> 20} MiB (a possible archive bomb); extraction stopped and nothing was "
                "kept. The archive is malformed or hostile; get it from a source you trust."
            )
        name = member.name
        parts = member_parts(archive, name)
        limits.member()
        if not parts or parts == (MARKER_NAME,):
            if member.isdir():
                continue  # "." or "./": the target itself
            raise refuse(archive, name, "names the target folder itself or colabkit's marker")
        if member.isreg():
            table.claim(archive, name, parts, "file")
            limits.add(member.size)
            table.sizes[parts] = member.size
            fd = dirs.new_file(parts, name, file_mode(member.mode))
            try:
                try:
                    copy_stream(_member_data(tar, member), fd, member.size)
                except _READ_ERRORS as exc:
                    raise damaged(archive, exc, name) from exc
                try:  # tar and tarfile keep mtimes too; a pax mtime is a float
                    os.utime(fd, ns=(int(member.mtime * 10**9),) * 2)
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
            raise refuse(archive, name, "is a device file")
        elif member.isfifo():
            raise refuse(archive, name, "is a fifo (named pipe)")
        else:
            raise refuse(archive, name, "is not a regular file, folder or link")
        limits.ratio(reader.compressed)
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


def _tar_hard_link(archive: Path, member: tarfile.TarInfo, parts: tuple[str, ...], dirs: Dirs,
                   table: Table, limits: Limits) -> None:
    """A hard link names an earlier member; a link to an earlier symlink becomes that symlink, judged here."""
    name, linkname = member.name, member.linkname
    if "\x00" in linkname or linkname.replace("\\", "/").startswith("/") or re.match(r"^[A-Za-z]:", linkname):
        raise refuse(archive, name, f"is a hard link to the absolute path {linkname!r}")
    try:
        source = member_parts(archive, linkname)
    except UnsafeArchiveError as exc:
        raise refuse(archive, name, f"is a hard link to {linkname!r}, outside the target") from exc
    kind = table.kinds.get(source)
    if kind == "link":
        table.add_link(archive, name, parts, table.links[source])
        return
    if kind != "file":
        what = "a folder" if kind == "dir" else "no earlier member of the archive"
        raise refuse(archive, name, f"is a hard link to {linkname!r}, which is {what}")
    table.claim(archive, name, parts, "file")
    limits.add(table.sizes[source])  # where links are refused, this is a full copy
    table.sizes[parts] = table.sizes[source]
    link_or_copy(dirs, source, parts, name, table.sizes[source], hard=True)


def _zip_overlaps(members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo | None:
    """A member whose data runs into the next one's header (the overlapping-entries bomb)."""
    ordered = sorted(members, key=lambda info: info.header_offset)
    for info, following in zip(ordered, ordered[1:]):
        if info.header_offset + 30 + info.compress_size > following.header_offset:  # 30: fixed header
            return info
    return None


def extract_zip(archive: Path, work: Path, table: Table, limits: Limits, *, quiet: bool) -> None:
    """Write a zip archive's members into `work`, after judging the whole central directory."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"{archive.name} cannot be read as a zip archive ({exc}). "
                           "Fetch it again (it may be truncated), or check its format.") from exc
    with zf:
        members = zf.infolist()
        plan = []
        for index, info in enumerate(members):  # the central directory first: refuse before writing anything
            parts = member_parts(archive, info.filename)
            limits.member()
            mode = info.external_attr >> 16
            if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)
                         or stat.S_ISSOCK(mode)):
                raise refuse(archive, info.filename, "is a device file or fifo")
            if not parts or parts == (MARKER_NAME,):
                if info.is_dir():
                    continue
                raise refuse(archive, info.filename, "names the target folder itself or colabkit's marker")
            limits.add(info.file_size)
            plan.append((index, info, parts, mode))
        overlapping = _zip_overlaps(members)
        if overlapping is not None:
            raise refuse(archive, overlapping.filename,
                          "overlaps the next member's data (a zip bomb trick)")
        limits.ratio(archive.stat().st_size)  # zipfile never reads past a declared size, so this is exact
        dirs = Dirs(work, archive)
        try:
            with progress(f"extract {archive.name}", total=len(plan), quiet=quiet) as bar:
                files = _zip_layout(archive, zf, plan, dirs, table, bar)
                write_zip_files(archive, zf, files, dirs, bar)
                finish_links(archive, dirs, table, limits)
        except WriteFailed as failure:
            raise failure.error from None
        finally:
            dirs.close()


def _zip_layout(archive: Path, zf: zipfile.ZipFile, plan: list[tuple[int, zipfile.ZipInfo, tuple[str, ...], int]],
                dirs: Dirs, table: Table, bar: Any) -> list[tuple[int, tuple[str, ...], int]]:
    """Claim every member in order, make the folders, note the links; the regular files to write.

    All of it before the first file is written, so what is refused does not depend on which of the
    two writing processes (`zipwrite`) gets somewhere first.
    """
    files = []
    for index, info, parts, mode in plan:
        name = info.filename
        if info.is_dir():
            table.claim(archive, name, parts, "dir")
            dirs.get(parts, name)
        elif stat.S_ISLNK(mode):  # what unzip makes a link; judged like a tar symlink
            if info.file_size > MAX_PATH_BYTES:
                raise refuse(archive, name, "is a symbolic link with an overlong target")
            with zip_errors(archive, name):
                text = zf.read(info).decode("utf-8", "surrogateescape")
            table.add_link(archive, name, parts, text)
        else:
            table.claim(archive, name, parts, "file")
            table.sizes[parts] = info.file_size
            files.append((index, parts, mode))
            continue
        bar.update(1)
    return files
