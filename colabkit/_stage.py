"""Copy a file or folder from Drive to the local fast disk before training reads it.

    train_dir = colabkit.stage("/content/drive/MyDrive/ML2022/data/food-11")

Each file read through the Drive mount pays a network round trip, so a
DataLoader walking thousands of small files from Drive crawls. Staging copies
them once to the VM's disk (COLABKIT_CACHE_DIR; /content/colabkit-cache in
Colab), with a pool of threads when the source is on the mount, since the
mount is latency-bound rather than bandwidth-bound (on a local disk threads
only contend). Files already staged with the same size and mtime are skipped,
so a second call in the same session costs a directory walk.

A copy cut short never looks complete: a new folder is copied into a hidden
sibling that is renamed into place once (a run that is killed leaves it hidden
and the next run resumes it); a file added to an existing copy is written to a
temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

from . import _runtime
from ._fsio import read_json, write_json_atomic
from ._progress import progress, say
from .errors import ConfigError, StageError

STAGED_DIR_NAME = "staged"
SOURCE_MARKER = ".colabkit-staged.json"  # in a staged folder: which source it copies
DRIVE_WORKERS = 8  # copying threads for a source on the Drive mount: each file costs a round trip
_TMP_MARK = ".colabkit-tmp-"
_PARTIAL_MARK = ".colabkit-partial"  # a new folder's hidden sibling, renamed into place when complete
_BATCH = 32  # files per task: enough to amortise the pool's overhead, small enough to balance


class _File(NamedTuple):
    source: str
    target: str
    size: int
    mtime_ns: int
    mode: int


def _temporary_for(target: str) -> str:
    # unique per process; within a run each target is copied by one thread only
    folder, name = os.path.split(target)
    return os.path.join(folder, f".{name}{_TMP_MARK}{os.getpid()}")


def default_workers(source: Path) -> int:
    """Copying threads that suit where `source` lies: DRIVE_WORKERS on the Drive mount, else 1.

    Threads overlap the mount's network round trips; on a local disk they only
    contend for the same disk and the GIL, and copy slower than one thread.
    """
    return DRIVE_WORKERS if _runtime.is_within(source, _runtime.mountpoint()) else 1


def default_destination(src: Path) -> Path:
    """COLABKIT_CACHE_DIR/staged/<name of src>, or <name>-<hash> when another folder of that name is there.

    Two source folders both called "data" must not be merged into one staged copy.
    """
    plain = _runtime.cache_dir() / STAGED_DIR_NAME / src.name
    if not src.is_dir() or not plain.is_dir():
        return plain
    recorded = read_json(plain / SOURCE_MARKER)
    if (isinstance(recorded, dict) and recorded.get("source") == str(src)) or not any(plain.iterdir()):
        return plain
    return plain.with_name(f"{src.name}-{hashlib.sha1(str(src).encode()).hexdigest()[:8]}")


def stage(
    src: str | os.PathLike,
    dest: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    extract: bool = False,
    quiet: bool = False,
) -> Path:
    """Copy `src` (a file or folder, typically on Drive) to local disk; return the local path.

    dest: where the copy goes (default COLABKIT_CACHE_DIR/staged/<name>); a file
    given an existing folder as dest is copied into it. Files already there with
    the same size and mtime are skipped. workers: copying threads (default: 8 for a
    source on the Drive mount, 1 on a local disk, see default_workers). extract=True
    extracts an archive after copying it and returns the extracted folder.
    """
    source = Path(src).expanduser().absolute()
    if workers is not None and (type(workers) is not int or workers < 1):
        raise ConfigError(f"workers={workers!r}: give a whole number >= 1 (8 suits the Drive mount), "
                          "or leave it out to let colabkit choose.")
    if not source.exists():
        hint = ""
        if _runtime.is_within(source, _runtime.mountpoint()) and not _runtime.is_drive_mounted():
            hint = " Drive is not mounted: run colabkit.mount_drive() (or %colab_setup) first."
        raise StageError(f"Cannot stage {source}: it does not exist.{hint} Check the path and try again.")
    target = Path(dest).expanduser().absolute() if dest is not None else default_destination(source)
    if source.is_dir():
        if extract:
            raise ConfigError(
                f"extract=True extracts an archive file, and {source} is a folder. Stage the archive "
                "itself (e.g. stage('.../data.zip', extract=True)), or stage the folder without extract."
            )
        if _runtime.is_within(target, source) or _runtime.is_within(source, target):
            raise StageError(f"Cannot stage {source} into {target}: one lies inside the other. "
                             "Pass a dest outside the source folder.")
        _stage_folder(source, target, workers=workers or default_workers(source), quiet=quiet)
        return target
    if target.is_dir():
        target = target / source.name
    copied = _stage_files([_describe(source, target)], target.parent, _copy_replacing, workers=1, quiet=True)
    say(quiet, f"Staged {source.name} to {target}" if copied else f"Using {target} (already staged)")
    if extract:
        from ._archive import extract as extract_archive

        return extract_archive(target, quiet=quiet)
    return target


def _describe(source: Path, target: Path) -> _File:
    info = source.stat()
    return _File(str(source), str(target), info.st_size, info.st_mtime_ns, info.st_mode)


def _stage_folder(source: Path, target: Path, *, workers: int, quiet: bool) -> None:
    if target.exists():
        copied, files = _update_folder(source, target, workers=workers, quiet=quiet)
    else:
        copied, files = _copy_new_folder(source, target, workers=workers, quiet=quiet)
    if not quiet:
        if files is None:  # cp copied it all without a listing: walk the (local) source to count
            files, _ = _walk(source, target)
            copied = len(files)
        total = sum(f.size for f in files)
        print(f"Staged {source} to {target}: {copied} copied, {len(files) - copied} already there "
              f"({len(files)} files, {total / 2**20:.1f} MiB)")


def _update_folder(source: Path, target: Path, *, workers: int, quiet: bool) -> tuple[int, list[_File]]:
    """Bring an existing copy up to date; each file is renamed into place, since `target` is visible.

    Returns how many files were copied and the source's files (for the summary, without a second walk).
    """
    files, folders = _walk(source, target)
    _make_folders(folders, source, target)
    copied = _stage_files(files, target, _copy_replacing, workers=workers, quiet=quiet)
    if read_json(target / SOURCE_MARKER) != {"source": str(source)}:
        write_json_atomic(target / SOURCE_MARKER, {"source": str(source)})
    return copied, files


def _copy_new_folder(
    source: Path, target: Path, *, workers: int, quiet: bool
) -> tuple[int, list[_File] | None]:
    """Copy into a hidden sibling, then rename it to `target`: no per-file rename is needed.

    Returns how many files were copied and the source's files, or (0, None) when
    cp copied them all without listing them. With one worker
    (a local source) and room to spare, GNU cp does the copy: its C loop is
    faster than Python's. A run that is killed leaves the sibling hidden and the
    next run resumes it file by file (a file whose copy was cut short lacks the
    source's mtime, stamped last). A run that fails with an error removes its
    unfinished files and publishes the finished ones, so the next run copies
    only the rest.
    """
    partial = target.with_name(f".{target.name}{_PARTIAL_MARK}")
    if not partial.exists() and workers == 1 and _fits_for_sure(source, partial.parent) \
            and _copy_with_cp(source, partial):
        copied, files = 0, None
    else:
        resuming = partial.exists()  # left by a run cut short, or by cp failing just now
        files, folders = _walk(source, partial)
        try:
            _make_folders(folders, source, target)
            copy = _copy_replacing if resuming else _copy_in_place  # a leftover may be a link: never write through it
            copied = _stage_files(files, partial, copy, workers=workers, quiet=quiet, fresh=not resuming)
        except BaseException:
            _remove_unfinished(files)
            with contextlib.suppress(OSError):
                os.rename(partial, target)
            raise
    try:
        (partial / SOURCE_MARKER).write_text(json.dumps({"source": str(source)}) + "\n", encoding="utf-8")
        os.rename(partial, target)
    except OSError as exc:
        raise _stage_error(exc, source, target) from None
    return copied, files


def _fits_for_sure(source: Path, folder: Path) -> bool:
    """True when `folder` has more free space than all the space in use on `source`'s filesystem.

    No tree under `source` can need more (hard-linked files aside), so the exact
    check, a walk that stats every file, is not needed before copying.
    """
    try:
        usage = os.statvfs(source)
        folder.mkdir(parents=True, exist_ok=True)
        return (usage.f_blocks - usage.f_bfree) * usage.f_frsize < shutil.disk_usage(folder).free
    except OSError:
        return False


def _copy_with_cp(source: Path, partial: Path) -> bool:
    """Copy `source` to the new folder `partial` with GNU cp (links followed, mtimes kept); False if it fails.

    Its error is not reported here: the caller then copies file by file into
    what cp left, which skips cp's finished files and reports a failure with
    its precise cause.
    """
    command = shutil.which("cp")
    if command is None:
        return False
    process = subprocess.Popen(
        [command, "-rLT", "--preserve=timestamps", "--", str(source), str(partial)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        return process.wait() == 0
    except BaseException:  # interrupted: stop cp too; the hidden folder is resumed next time
        process.kill()
        process.wait()
        raise


def _make_folders(folders: list[str], source: Path, target: Path) -> None:
    try:
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise _stage_error(exc, source, target) from None


def _walk(source: Path, target: Path) -> tuple[list[_File], list[str]]:
    """Every file under `source` with its target path, and the target folders to create."""
    files: list[_File] = []
    folders = [str(target)]
    stack = [(str(source), str(target))]
    try:
        while stack:
            src_dir, dst_dir = stack.pop()
            with os.scandir(src_dir) as entries:
                for entry in entries:
                    dst = f"{dst_dir}/{entry.name}"  # an f-string: os.path.join costs more per file
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(dst)
                        stack.append((entry.path, dst))
                    elif entry.is_file():
                        info = entry.stat()
                        files.append(_File(entry.path, dst, info.st_size, info.st_mtime_ns, info.st_mode))
    except OSError as exc:
        raise _stage_error(exc, source, target) from None
    return files, folders


def _already_there(files: list[_File]) -> set[str]:
    """Targets that exist with the source's size and mtime; stale temporaries are removed."""
    present: set[str] = set()
    wanted: dict[str, dict[str, _File]] = {}
    for item in files:
        folder, name = os.path.split(item.target)
        wanted.setdefault(folder, {})[name] = item
    for folder, by_name in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if _TMP_MARK in entry.name and entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)  # left by a copy that was cut short
                continue
            item = by_name.get(entry.name)
            if item is None or not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            if info.st_size == item.size and info.st_mtime_ns == item.mtime_ns:
                present.add(item.target)
    return present


def _remove_unfinished(files: list[_File]) -> None:
    """Remove the targets that do not (yet) match their source's size and mtime."""
    finished = _already_there(files)
    for item in files:
        if item.target not in finished:
            with contextlib.suppress(OSError):
                os.unlink(item.target)


def _stage_files(files: list[_File], root: Path, copy: Callable[[_File], None], *, workers: int,
                 quiet: bool, fresh: bool = False) -> int:
    """Copy (with `copy`) the files that are not already there; return how many were copied.

    fresh: `root` was just created, so no file can be there yet (no need to look).
    """
    present = set() if fresh else _already_there(files)
    todo = [f for f in files if f.target not in present]
    if not todo:
        return 0
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _stage_error(exc, Path(todo[0].source), root) from None
    _check_free_space(sum(f.size for f in todo), root, Path(todo[0].source))
    batches = [todo[i:i + _BATCH] for i in range(0, len(todo), _BATCH)]
    stop = threading.Event()
    with progress("stage", total=len(todo), quiet=quiet or len(todo) < 2) as bar:
        if workers == 1 or len(batches) == 1:
            for batch in batches:
                _copy_batch(batch, copy, stop)
                bar.update(len(batch))
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="colabkit-stage") as pool:
                futures = [pool.submit(_copy_batch, batch, copy, stop) for batch in batches]
                try:
                    for future, batch in zip(futures, batches):
                        future.result()
                        bar.update(len(batch))
                except BaseException:
                    stop.set()
                    for future in futures:
                        future.cancel()
                    raise
    return len(todo)


def _check_free_space(needed: int, folder: Path, source: Path) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise _stage_error(exc, source, folder) from None
    if needed > free:
        raise StageError(
            f"Staging needs {needed / 2**30:.2f} GiB but {folder} has {free / 2**30:.2f} GiB free; "
            "nothing was copied. Free local disk space (delete old staged data under "
            f"{_runtime.cache_dir()}), or stage a smaller part of the data."
        )


def _copy_batch(batch: list[_File], copy: Callable[[_File], None], stop: threading.Event) -> None:
    for item in batch:
        if stop.is_set():
            return
        try:
            copy(item)
        except OSError as exc:
            stop.set()
            raise _stage_error(exc, Path(item.source), Path(item.target)) from None


def _copy_replacing(item: _File) -> None:
    """Copy one file to a temporary sibling, then rename it into place (for a visible folder)."""
    temporary = _temporary_for(item.target)
    _copy_to(item, temporary)
    try:
        os.replace(temporary, item.target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _copy_in_place(item: _File) -> None:
    """Copy one file straight to its target (inside a hidden folder that is published whole)."""
    _copy_to(item, item.target)


def _copy_to(item: _File, path: str) -> None:
    """Write the source's bytes and mode to `path`, then stamp its mtime; remove `path` on failure."""
    source_fd = os.open(item.source, os.O_RDONLY)
    try:
        target_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, (item.mode & 0o777) | 0o600)
        try:
            _copy_bytes(source_fd, target_fd, item.size)
            os.utime(target_fd, ns=(item.mtime_ns, item.mtime_ns))
        finally:
            os.close(target_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    finally:
        os.close(source_fd)


def _copy_bytes(source_fd: int, target_fd: int, size: int) -> None:
    """Copy `size` bytes in the kernel (sendfile), or by reads and writes where a filesystem refuses it."""
    offset = 0
    if hasattr(os, "sendfile"):
        try:
            while offset < size:  # the size from the walk: one call for a small file
                sent = os.sendfile(target_fd, source_fd, offset, size - offset)
                if sent == 0:
                    return  # the file shrank meanwhile
                offset += sent
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) or offset:
                raise
    os.lseek(source_fd, offset, os.SEEK_SET)
    while True:
        block = os.read(source_fd, 1 << 20)
        if not block:
            return
        view = memoryview(block)
        while view:
            view = view[os.write(target_fd, view):]


def _stage_error(exc: OSError, source: Path, target: Path) -> StageError:
    """A StageError naming where the copy failed, why, and the fix for that errno."""
    if exc.errno == errno.ENOSPC:
        advice = (f"The local disk is full. Free space (old staged data lives under {_runtime.cache_dir()}) "
                  "or stage a smaller part of the data.")
    elif exc.errno in (errno.ENOTCONN, errno.EIO, errno.ESTALE) or (
            _runtime.is_within(source, _runtime.mountpoint()) and exc.errno == errno.ENOENT):
        advice = ("The Drive mount stopped answering. Remount it (colabkit.mount_drive(force_remount=True)) "
                  "and stage again; files already copied are skipped.")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "Permission denied. Pass a dest you can write to, and check the source is readable."
    else:
        advice = "Stage again (files already copied are skipped); if it repeats, check the path."
    where = exc.filename or source
    return StageError(f"Staging {source} to {target} failed at {where}: {exc.strerror or exc}. {advice}")
