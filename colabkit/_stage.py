"""Copy a file or folder from Drive to the local fast disk before training reads it.

    train_dir = colabkit.stage("/content/drive/MyDrive/ML2022/data/food-11")

Each file read through the Drive mount pays a network round trip, so a
DataLoader walking thousands of small files from Drive crawls. Staging copies
them once to the VM's disk (COLABKIT_CACHE_DIR; /content/colabkit-cache in
Colab), with a pool of threads when the source is on the mount, since the
mount is latency-bound rather than bandwidth-bound (on a local disk threads
only contend). Files already staged with the same size and mtime are skipped,
so a second call costs one walk of each side.

Staging keeps to its two folders:

- It only reads the source (a read-only tree such as Kaggle's /kaggle/input
  works; nothing is written beside it).
- What lies inside the destination is never followed: a symlink found there is
  replaced (a file) or removed (where the source has a folder), every file is
  created with O_EXCL | O_NOFOLLOW under a temp name of _fsio's one scheme and
  renamed into place, and folders are opened with O_NOFOLLOW.
- Inside the source, symlinks to folders are never followed (nor loops, nor
  links leading out of the source); a symlink to a regular file inside the
  source is copied as a regular file holding that file's bytes; other links
  and special files (fifos, sockets, devices) are skipped and counted. The cp
  fast path and the Python path apply this same rule (cp copies links as
  links into the hidden folder; they are then replaced by the rule).
- One stage at a time per destination (an inter-process lock beside it), and
  a new folder is copied into a hidden temp sibling that is renamed into place
  only when complete: a failed or killed copy is never published under the
  final name; the next run resumes the hidden one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from . import _runtime
from ._fsio import (
    is_stale_temp,
    is_temp_name,
    locked,
    may_resume,
    os_error_advice,
    read_json,
    remove_quietly,
    replace,
    retire,
    retire_tree,
    temp_path,
    write_json_atomic,
)
from ._progress import progress, say
from ._validate import check_count
from .errors import ConfigError, StageError

STAGED_DIR_NAME = "staged"
SOURCE_MARKER = ".colabkit-staged.json"  # in a staged folder: which source it copies
DRIVE_WORKERS = 8  # copying threads for a source on the Drive mount: each file costs a round trip
LOCK_TIMEOUT = 3600.0  # seconds a second stage into the same destination waits for the first
PARTIAL_TAG = "partial"  # a new folder's hidden temp sibling: .NAME.partial-<pid>-<rand>.tmp
_BATCH = 32  # files per task: enough to amortise the pool's overhead, small enough to balance
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OWNER_RWX = 0o700  # staged folders stay writable by you, so a later stage can update them
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class _File(NamedTuple):
    source: str
    target: str
    size: int
    mtime_ns: int
    mode: int  # permission bits, as cp -r keeps them (minus the umask)


@dataclass
class _Plan:
    """What one walk of both sides found: the files to copy, folders to make, and the totals."""

    todo: list[_File] = field(default_factory=list)
    folders: list[tuple[str, int]] = field(default_factory=list)  # (folder, mode) to create, parents first
    files: int = 0  # regular files in the source (links to files inside it included)
    size: int = 0
    skipped: list[str] = field(default_factory=list)  # links not followed, special files


def default_workers(source: Path) -> int:
    """Copying threads that suit where `source` lies: DRIVE_WORKERS on the Drive mount, else 1.

    Threads overlap the mount's network round trips; on a local disk they only
    contend for the same disk and the GIL, and copy slower than one thread.

    Args:
        source: the file or folder to be staged.

    Returns:
        The number of copying threads `stage` uses when `workers` is not given.
    """
    return DRIVE_WORKERS if _runtime.is_within(source, _runtime.mountpoint()) else 1


def default_destination(src: Path) -> Path:
    """COLABKIT_CACHE_DIR/staged/<name of src>, or <name>-<hash> when another folder of that name is there.

    Two source folders both called "data" must not be merged into one staged copy.

    Args:
        src: the absolute source path.

    Returns:
        Where `stage` copies `src` when no destination is given.
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
    """Copy `src` (a file or folder, typically on Drive) to the local disk and return the local path.

    Files already staged with the same size and mtime are skipped, so calling it
    again each session (or each run of a script) only copies what changed;
    local files that are not in the source are kept. The source is only read:
    a read-only tree (Kaggle's /kaggle/input/<dataset>) works. A new folder
    appears under its final name only once complete; a run cut short is
    resumed by the next call. Two processes staging into one destination take
    turns (the second waits, then finds the copy done).

    Symbolic links: a link inside the source to a regular file inside the
    source is copied as a regular file; links to folders, links leading out of
    the source, broken links, loops and special files are skipped (the summary
    counts them). A symlink found inside the destination is never written
    through: it is replaced. Modification times are kept (the skip rule compares
    them); file permissions are the source's minus your umask, as `cp -r` gives
    them; folders are always writable by you, so a later stage can update them.

    Args:
        src: the file or folder to copy, e.g. "/content/drive/MyDrive/ML2022/data/food-11".
            A link given here is followed (you named it).
        dest: where the copy goes; default COLABKIT_CACHE_DIR/staged/<name>
            (or <name>-<hash> when another source of that name is staged there).
            A file given an existing folder as `dest` is copied into it.
        workers: copying threads, a whole number >= 1; default 8 for a source
            on the Drive mount (latency-bound), 1 on a local disk (where a new
            folder is copied by GNU cp).
        extract: `src` is an archive: extract it after copying (colabkit.extract)
            and return what extraction returns.
        quiet: print nothing but errors.

    Returns:
        The local copy (or, with extract=True, the extracted folder).

    Raises:
        ConfigError: `workers` is not a whole number >= 1, or extract=True for a folder.
        StageError: the source does not exist, one of `src` and `dest` lies
            inside the other (judged by real path), the destination is a file
            where a folder is needed, the disk is full, or another OSError
            (the message names the cause and the fix).
        BusyError: another process kept the destination locked for LOCK_TIMEOUT seconds.
    """
    if workers is not None:
        check_count(workers, "workers", 1, "8 suits the Drive mount; or leave it out to let colabkit choose")
    source = Path(src).expanduser().absolute()
    if not source.exists():
        hint = ""
        if _runtime.is_within(source, _runtime.mountpoint()) and not _runtime.is_drive_mounted():
            hint = " Drive is not mounted: run colabkit.mount_drive() (or %colab_setup) first."
        raise StageError(f"Cannot stage {source}: it does not exist.{hint} Check the path and try again.")
    target = Path(dest).expanduser().absolute() if dest is not None else default_destination(source)
    if source.is_dir() and extract:
        raise ConfigError(
            f"extract=True extracts an archive file, and {source} is a folder. Stage the archive "
            "itself (e.g. stage('.../data.zip', extract=True)), or stage the folder without extract."
        )
    try:
        if source.is_dir():
            _stage_folder(source, target, workers=workers or default_workers(source), quiet=quiet)
            return target
        target = _stage_file(source, target, quiet=quiet)
    except OSError as exc:
        raise _stage_error(exc, source, target) from None
    if extract:
        from ._archive.api import extract as extract_archive

        return extract_archive(target, quiet=quiet)
    return target


def _inside(path: str, root: str) -> bool:
    """Whether real path `path` is `root` or lies under it (both already resolved)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _refuse_overlap(source: Path, target: Path, real_source: str, real_target: str) -> None:
    # by real path: an alias through a symlink (dest=link/copy, link -> src) once made cp recurse into src
    if _inside(real_target, real_source) or _inside(real_source, real_target):
        raise StageError(f"Cannot stage {source} into {target}: one lies inside the other "
                         f"({real_source} and {real_target}, following links). "
                         "Pass a dest outside the source folder.")


def _stage_file(source: Path, target: Path, *, quiet: bool) -> Path:
    if target.is_dir():
        target = target / source.name
    real_source = os.path.realpath(source)
    real_target = os.path.realpath(target.parent) + "/" + target.name  # the name itself is never followed
    if real_source == os.path.realpath(target):
        raise StageError(f"Cannot stage {source} onto itself ({target} is the same file). "
                         "Pass a dest elsewhere, or use the file where it is.")
    os.makedirs(os.path.dirname(real_target), exist_ok=True)
    with locked(real_target, "The staged file", timeout=LOCK_TIMEOUT):
        info = os.stat(real_source)
        try:
            mine = os.lstat(real_target)
            there = stat.S_ISREG(mine.st_mode) and (mine.st_size, mine.st_mtime_ns) == (info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            there = False
        if not there:
            _copy_replacing(_File(real_source, real_target, info.st_size, info.st_mtime_ns, info.st_mode))
    say(quiet, f"Using {target} (already staged)" if there else f"Staged {source.name} to {target}")
    return target


def _stage_folder(source: Path, target: Path, *, workers: int, quiet: bool) -> None:
    real_source = os.path.realpath(source, strict=True)
    real_target = os.path.realpath(target)  # a link the user named as dest is followed; nothing inside it
    _refuse_overlap(source, target, real_source, real_target)
    if os.path.lexists(real_target) and not os.path.isdir(real_target):
        raise NotADirectoryError(errno.ENOTDIR, "the destination is a file, not a folder", str(target))
    os.makedirs(os.path.dirname(real_target), exist_ok=True)
    with locked(real_target, "The staged folder", timeout=LOCK_TIMEOUT):
        if os.path.isdir(real_target):
            plan = _plan(real_source, real_target, real_source, target_there=True)
            _make_folders(plan.folders)
            copied = _stage_files(plan.todo, real_target, _copy_replacing, workers=workers, quiet=quiet)
            if read_json(Path(real_target, SOURCE_MARKER)) != {"source": str(source)}:
                write_json_atomic(Path(real_target, SOURCE_MARKER), {"source": str(source)})
        else:
            plan, copied = _copy_new_folder(source, real_source, real_target, workers=workers, quiet=quiet)
    if not quiet:
        skipped = (f"; skipped {len(plan.skipped)} symbolic link(s) or special file(s), e.g. {plan.skipped[0]}"
                   if plan.skipped else "")
        print(f"Staged {source} to {target}: {copied} copied, {plan.files - copied} already there "
              f"({plan.files} files, {plan.size / 2**20:.1f} MiB){skipped}")


def _copy_new_folder(source: Path, real_source: str, target: str, *, workers: int,
                     quiet: bool) -> tuple[_Plan, int]:
    """Copy into a hidden temp sibling, then rename it to `target`: nothing half-done is ever visible.

    A sibling left by a run that died (or failed earlier in this process) is
    resumed file by file: a file cut short lacks the source's mtime (stamped
    last). With one worker (a local source) and room to spare, GNU cp copies a
    fresh folder: its C loop is faster than Python's (bench_stage: the Python
    path 1.17x cp -r, this path 0.80x, 3,000 files, loaded machine). On any
    failure the sibling stays hidden.
    Returns the plan (for the summary) and how many files were copied.
    """
    partial = _resumable_partial(target)
    resuming = partial is not None
    if partial is None:
        partial = str(temp_path(Path(target), PARTIAL_TAG))
        os.mkdir(partial)
        if workers == 1 and _fits_for_sure(real_source, partial) and _copy_with_cp(real_source, partial):
            plan = _after_cp(real_source, partial, count_sizes=not quiet)
            _publish(source, partial, target)
            return plan, plan.files
        with os.scandir(partial) as left:
            resuming = any(left)  # cp failed part-way: go on from what it left
    plan = _plan(real_source, partial, real_source, target_there=resuming)
    _make_folders(plan.folders)
    copy = _copy_replacing if resuming else _copy_in_place
    copied = _stage_files(plan.todo, Path(partial), copy, workers=workers, quiet=quiet)
    _publish(source, partial, target)
    return plan, copied


def _publish(source: Path, partial: str, target: str) -> None:
    # plain write, no fsync: the folder is still private, and an unreadable marker is only rewritten
    fd = os.open(f"{partial}/{SOURCE_MARKER}", _NEW_FILE_FLAGS & ~os.O_EXCL | os.O_TRUNC, 0o644)
    try:
        os.write(fd, (json.dumps({"source": str(source)}) + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    os.rename(partial, target)


def _resumable_partial(target: str) -> str | None:
    """A hidden sibling of `target` left by a dead run (or an earlier call of this process), to resume.

    Called under the destination's lock, so no live stage can be filling one;
    a sibling whose owner is still alive is left alone all the same (never
    delete a live writer's work), and stale extra ones are retired.
    """
    folder, name = os.path.split(target)
    prefix = f".{name}.{PARTIAL_TAG}-"
    found: str | None = None
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix) and is_temp_name(e.name)]
    except FileNotFoundError:
        return None
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or not may_resume(entry.name):
            continue  # a link with our name is not followed; a live owner's folder is not touched
        if found is None:
            found = entry.path
        elif is_stale_temp(Path(entry.path)):
            retire_tree(entry.path)
    return found


def _fits_for_sure(source: str, folder: str) -> bool:
    """True when `folder` has more free space than all the space in use on `source`'s filesystem.

    No tree under `source` can need more (hard-linked files aside), so the exact
    check, a walk that stats every file, is not needed before copying.
    """
    try:
        usage = os.statvfs(source)
        return (usage.f_blocks - usage.f_bfree) * usage.f_frsize < shutil.disk_usage(folder).free
    except OSError:
        return False


def _copy_with_cp(source: str, partial: str) -> bool:
    """Copy the tree `source` into the empty folder `partial` with GNU cp; False if cp fails.

    -P: links are copied as links (never followed; _after_cp applies the link
    rule to them). Modes as cp -r gives them (the Python path does the same);
    mtimes kept (the skip rule compares them). Not --no-preserve=mode: its
    extra fsetxattr per file costs the first-copy benchmark ~1 %. Its
    error is not reported here: the caller then copies file by file into what
    cp left, which skips cp's finished files and reports a failure with its
    precise cause.
    """
    command = shutil.which("cp")
    if command is None:
        return False
    process = subprocess.Popen(
        [command, "-rPT", "--preserve=timestamps", "--", source, partial],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        return process.wait() == 0
    except BaseException:  # interrupted: stop cp too; the hidden folder is resumed next time
        process.kill()
        process.wait()
        raise


def _after_cp(real_source: str, partial: str, *, count_sizes: bool) -> _Plan:
    """Apply the link rule to what cp copied, and count it: one walk of the (hidden, fresh) copy.

    cp -P copied links and special files as they are; each one is removed and,
    when it is a link to a regular file inside the source, replaced by a copy
    of that file, exactly as the Python path does.
    """
    plan = _Plan()
    odd: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(f"{partial}{rel}") as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(f"{rel}/{entry.name}")
                    mode = entry.stat(follow_symlinks=False).st_mode
                    if mode & _OWNER_RWX != _OWNER_RWX:  # cp kept a read-only source's folder mode
                        os.chmod(entry.path, (mode & 0o777) | _OWNER_RWX)
                elif entry.is_file(follow_symlinks=False):
                    plan.files += 1
                    if count_sizes:
                        plan.size += entry.stat(follow_symlinks=False).st_size
                else:
                    odd.append(f"{rel}/{entry.name}")
    for rel in odd:
        os.unlink(f"{partial}{rel}")
        linked = _linked_file(f"{real_source}{rel}", real_source)
        if linked is None:
            plan.skipped.append(f"{real_source}{rel}")
            continue
        real, info = linked
        _copy_in_place(_File(real, f"{partial}{rel}", info.st_size, info.st_mtime_ns, info.st_mode))
        plan.files += 1
        plan.size += info.st_size
    return plan


def _linked_file(path: str, real_root: str) -> tuple[str, os.stat_result] | None:
    """(real path, stat) of the regular file that the link `path` leads to, if it lies inside `real_root`.

    None for links to folders, out of the source, broken links and loops
    (realpath in strict mode raises for those, and for a path past PATH_MAX,
    instead of returning a half-resolved path).
    """
    try:
        real = os.path.realpath(path, strict=True)
        info = os.stat(real, follow_symlinks=False)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode) or not _inside(real, real_root):
        return None
    return real, info


def _plan(source: str, target: str, real_root: str, *, target_there: bool) -> _Plan:
    """One walk of the source and (where it exists) the destination, comparing size and mtime.

    Each side is listed once per folder with os.scandir on a descriptor opened
    with O_NOFOLLOW, and each file is stat'ed once per side relative to that
    descriptor: the no-change re-run misses `rsync -a` without this (a walk by
    path, then a second listing of the destination, cost 1.4x rsync).
    A symlink in the destination where the source has a folder is removed (never
    followed); stale temps of dead runs are retired.
    """
    plan = _Plan()
    todo, skipped = plan.todo, plan.skipped
    files = size = 0  # locals, not plan's attributes, in the per-file loop
    stack = [(source, target, target_there)]
    while stack:
        src_dir, dst_dir, dst_there = stack.pop()
        dst_fd = os.open(dst_dir, _DIR_FLAGS) if dst_there else None
        try:
            present = {e.name: e for e in os.scandir(dst_fd)} if dst_fd is not None else {}
            src_fd = os.open(src_dir, _DIR_FLAGS)
            try:
                with os.scandir(src_fd) as entries:
                    for entry in entries:
                        name = entry.name
                        old = present.pop(name, None)
                        if entry.is_file(follow_symlinks=False):
                            info = entry.stat(follow_symlinks=False)
                            src = None
                        elif entry.is_dir(follow_symlinks=False):
                            dst = f"{dst_dir}/{name}"  # f-strings: os.path.join costs more per entry
                            there = _folder_there(old, dst)
                            if not there:
                                plan.folders.append((dst, entry.stat(follow_symlinks=False).st_mode))
                            stack.append((f"{src_dir}/{name}", dst, there))
                            continue
                        else:
                            linked = _linked_file(f"{src_dir}/{name}", real_root) if entry.is_symlink() else None
                            if linked is None:
                                skipped.append(f"{src_dir}/{name}")
                                continue
                            src, info = linked
                        files += 1
                        size += info.st_size
                        if old is not None and old.is_file(follow_symlinks=False):
                            mine = old.stat(follow_symlinks=False)
                            if mine.st_size == info.st_size and mine.st_mtime_ns == info.st_mtime_ns:
                                continue
                        todo.append(_File(src or f"{src_dir}/{name}", f"{dst_dir}/{name}",
                                          info.st_size, info.st_mtime_ns, info.st_mode))
            finally:
                os.close(src_fd)
        finally:
            if dst_fd is not None:
                os.close(dst_fd)
        for name, entry in present.items():  # not in the source: the user's own, or a leftover of ours
            if is_temp_name(name) and is_stale_temp(Path(dst_dir, name)):
                (retire_tree if entry.is_dir(follow_symlinks=False) else retire)(f"{dst_dir}/{name}")
    plan.files, plan.size = files, size
    return plan


def _folder_there(old: os.DirEntry | None, dst: str) -> bool:
    """Whether the destination already has a real folder `dst` (a link there is removed, not followed)."""
    if old is None:
        return False
    if old.is_dir(follow_symlinks=False):
        return True
    if old.is_symlink():
        retire(dst)  # removes the link itself; whatever it points to is untouched
        return False
    raise NotADirectoryError(errno.ENOTDIR, "a file stands where the source has a folder", dst)


def _make_folders(folders: list[tuple[str, int]]) -> None:
    for folder, mode in folders:
        os.mkdir(folder, (mode & 0o777) | _OWNER_RWX)  # never follows a link: a planted one fails (EEXIST)


def _stage_files(todo: list[_File], root: Path, copy: Callable[[_File], None], *, workers: int,
                 quiet: bool) -> int:
    """Copy (with `copy`) every file in `todo`; return how many were copied."""
    if not todo:
        return 0
    _check_free_space(sum(f.size for f in todo), root)
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


def _check_free_space(needed: int, folder: Path) -> None:
    free = shutil.disk_usage(folder).free
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
            stop.set()  # the other threads finish the file in hand, then stop
            raise _stage_error(exc, Path(item.source), Path(item.target)) from None
        except BaseException:
            stop.set()
            raise


def _copy_replacing(item: _File) -> None:
    """Copy one file to a temp sibling, then rename it into place (replacing a link, never following it)."""
    temporary = str(temp_path(Path(item.target)))
    _copy_to(item, temporary)
    try:
        replace(temporary, item.target)  # the superseded file is retired by the Drive trash rule
    except BaseException:
        remove_quietly(Path(temporary))
        raise


def _copy_in_place(item: _File) -> None:
    """Copy one file straight to its new name (inside a hidden folder that is published whole)."""
    _copy_to(item, item.target)


def _copy_to(item: _File, path: str) -> None:
    """Write the source's bytes to the new file `path`, then stamp its mtime; remove `path` on failure."""
    source_fd = os.open(item.source, _READ_FLAGS)
    try:
        target_fd = os.open(path, _NEW_FILE_FLAGS, item.mode & 0o777)
        try:
            _copy_bytes(source_fd, target_fd, item.size)
            os.utime(target_fd, ns=(item.mtime_ns, item.mtime_ns))
        except BaseException:
            os.close(target_fd)
            remove_quietly(Path(path))
            raise
        os.close(target_fd)
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
    """A StageError naming where the copy failed, the cause from the errno, and the fix."""
    less = f"stage a smaller part of the data (or delete old staged data under {_runtime.cache_dir()})"
    cause, fix = os_error_advice(exc, less)
    where = f" at {exc.filename}" if exc.filename and str(exc.filename) not in (str(source), str(target)) else ""
    return StageError(f"Staging {source} to {target} failed{where}: {cause} ({exc.strerror or exc}). "
                      f"To fix: {fix}; then stage again (files already copied are skipped).")
