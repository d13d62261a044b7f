"""A single-file .gz: decompressed next to itself, with its own marker.

The output is published atomically (`_fsio.atomic_destination`); a marker
beside it (`.NAME` + `MARKER_NAME`) records the archive's identity and the
output's size and mtime, so an unchanged archive is reused and a file the user
wrote (or changed) under that name is never overwritten.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from .._fsio import atomic_destination, os_error_advice, read_json, unsafe_name_reason, write_json_atomic
from .._progress import progress, say
from ..errors import ArchiveError
from .checks import Limits
from .marker import MARKER_FORMAT, MARKER_NAME, WORK_TAG, Identity
from .writer import COPY_BLOCK


def extract_single_gz(archive: Path, folder: Path, name: str, limits: Limits, *, quiet: bool) -> None:
    """Decompress `archive` to `folder/name`, or reuse an unchanged earlier result; never overwrite user files."""
    reason = unsafe_name_reason(name)
    if reason:
        raise ArchiveError(f"{archive.name} would decompress to the unusable name {name!r} ({reason}). "
                           "Rename the archive, then extract again.")
    out = folder / name
    marker = folder / f".{name}{MARKER_NAME}"
    identity = Identity(archive)
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
                atomic_destination(out, tag=WORK_TAG) as temporary, gzip.open(archive, "rb") as source, \
                open(temporary, "wb") as sink:
            while True:
                block = source.read(COPY_BLOCK)
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
