"""A zip's regular files written by this process and, for a big job, a helper process beside it.

zipfile holds the GIL for most of a small member (finding it, reading its
local header, setting up its decompressor), so a second thread is slower, not
faster; a second process, with its own ZipFile on the same archive, uses the
other core. Everything is judged before (`members._zip_layout` claims every
member, folders are made, links wait for `finish_links`), so the helper only
writes files whose names were checked, under the same descriptor-relative,
no-follow rules (`writer.Dirs`). The helper gets the archive and the work
folder as descriptors this process opened, so a path swapped meanwhile
cannot redirect it; an error it meets is raised here, as if met here. If it
cannot start or is killed midway, this process writes its part instead; if
this process dies, the helper stops too.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ArchiveError
from .checks import damaged
from .writer import Dirs, copy_stream, file_mode

# A helper pays only for a big job: its start (an interpreter, these imports and its own read
# of the central directory, ~0.25 s on 2 cores) against the estimated time of the files it takes
# over. bench_extract's zip of 20,000 small files misses its <= 1.15x unzip target without it.
_START_S = 0.25
_PER_FILE_S = 45e-6
_PER_BYTE_S = 1 / 1.2e9
_HELPER_MIN_S = 0.5

Share = list[tuple[int, tuple[str, ...], int]]  # (index in the infolist, checked parts, mode bits)


@contextlib.contextmanager
def zip_errors(archive: Path, name: str) -> Iterator[None]:
    """Reading member `name` fails as an ArchiveError that says why (writes raise WriteFailed)."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, or a compression zipfile lacks
        raise ArchiveError(f"{archive.name} member {name!r} cannot be read ({exc}). Extract it by hand "
                           "(e.g. `!unzip` with its password), then use the folder.") from exc
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError) as exc:
        raise damaged(archive, exc, name) from exc


def write_zip_file(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, parts: tuple[str, ...],
                   mode: int, dirs: Dirs) -> None:
    """Write one regular member, its CRC checked as it is read to its end."""
    fd = dirs.new_file(parts, info.filename, file_mode(mode & 0o7777))
    try:
        with zip_errors(archive, info.filename), zf.open(info) as source:
            copy_stream(source, fd, info.file_size)
    finally:
        os.close(fd)


def write_zip_files(archive: Path, zf: zipfile.ZipFile, files: Share, dirs: Dirs, bar: Any) -> None:
    """Write `files`; when they are many, a helper process writes the last part meanwhile.

    Whatever becomes of the helper short of an error it reports (it cannot start, it is killed
    midway), this process writes the helper's part itself, so the extraction still completes.
    """
    infos = zf.infolist()
    cut, helper = len(files), None
    costs = [_PER_FILE_S + infos[index].file_size * _PER_BYTE_S for index, _, _ in files]
    if len(files) > 1 and sum(costs) >= _HELPER_MIN_S and not getattr(sys, "frozen", False):
        half, done = (sum(costs) + _START_S) / 2, 0.0  # the helper starts later by _START_S
        for cut, cost in enumerate(costs):
            done += cost
            if done >= half:
                break
        cut = max(cut, 1)
        helper = _Helper.start(archive, zf, dirs, files[cut:])
        if helper is None:
            cut = len(files)
    try:
        for index, parts, mode in files[:cut]:
            write_zip_file(archive, zf, infos[index], parts, mode, dirs)
            bar.update(1)
        if helper is not None:
            outcome = helper.finish()
            if outcome == "died":  # files it left (some half written) are removed, then written here
                for _, parts, _ in files[cut:]:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(parts[-1], dir_fd=dirs.get(parts[:-1], "/".join(parts)))
            if outcome != "done":
                for index, parts, mode in files[cut:]:
                    write_zip_file(archive, zf, infos[index], parts, mode, dirs)
            bar.update(len(files) - cut)
    except BaseException:
        if helper is not None:
            helper.stop()
        raise


# sys.path.append: the package's folder (site-packages, or a checkout) must not shadow the stdlib
_BOOT = "import sys; sys.path.append(sys.argv[1]); from colabkit._archive.zipwrite import main; main()"
_READY = b"R"


class _Helper:
    """The second process: started on a share of the files, then waited for (or stopped)."""

    def __init__(self, archive: Path, process: subprocess.Popen) -> None:
        self.archive, self.process = archive, process

    @classmethod
    def start(cls, archive: Path, zf: zipfile.ZipFile, dirs: Dirs, share: Share) -> _Helper | None:
        """The running helper, or None where none can start (then this process writes everything)."""
        if not sys.executable or zf.fp is None:
            return None
        try:
            fd = os.open(archive, os.O_RDONLY | os.O_CLOEXEC)  # its own offset: a shared one would race
        except OSError:
            return None
        try:
            ours, theirs = os.fstat(zf.fp.fileno()), os.fstat(fd)
            if (ours.st_dev, ours.st_ino, ours.st_size, ours.st_mtime_ns) != \
                    (theirs.st_dev, theirs.st_ino, theirs.st_size, theirs.st_mtime_ns):
                return None  # replaced since it was opened: keep to the one that was judged
            with tempfile.TemporaryFile() as plan:
                pickle.dump(share, plan)
                plan.seek(0)
                process = subprocess.Popen(  # -I -S: no cwd, environment or site on its path (30 ms less)
                    [sys.executable, "-I", "-S", "-c", _BOOT, str(Path(__file__).resolve().parents[2]), str(fd),
                     str(dirs.root), str(archive), str(os.getpid())],
                    stdin=plan, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(fd, dirs.root),
                )
        except OSError:
            return None
        finally:
            os.close(fd)
        return cls(archive, process)

    def stop(self) -> None:
        self.process.kill()
        self.process.communicate()

    def finish(self) -> str:
        """Wait for the helper: "done", or "not started" / "died" (its part is then this process's).

        An error it met (a damaged member, a refused or failed write) is raised here, as if met here.
        """
        out, _ = self.process.communicate()
        if not out.startswith(_READY):
            return "not started"  # no interpreter, an import that failed: nothing was written
        try:
            error = pickle.loads(out[len(_READY):])
        except Exception:  # noqa: BLE001 -- killed midway (out of memory, a signal): no answer
            return "died"
        if error is not None:
            raise error
        return "done"


def main() -> None:
    """The helper's side: write the share named on stdin, answer with the error met (or None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops this process
    archive_fd, root_fd, archive, parent = int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
    share: Share = pickle.load(sys.stdin.buffer)
    error: BaseException | None = None
    try:
        with zipfile.ZipFile(os.fdopen(archive_fd, "rb")) as zf:
            infos = zf.infolist()
            sys.stdout.buffer.write(_READY)
            sys.stdout.buffer.flush()
            dirs = Dirs(root_fd, archive)
            try:
                for index, parts, mode in share:
                    if os.getppid() != parent:
                        os._exit(0)  # the parent is gone (a restarted runtime): nobody will use these files
                    write_zip_file(archive, zf, infos[index], parts, mode, dirs)
            finally:
                dirs.close()
    except BaseException as exc:  # noqa: BLE001 -- every error goes back to the parent
        error = exc
    try:
        answer = pickle.dumps(error)
    except Exception:  # noqa: BLE001 -- one that does not pickle still reaches the parent, as its message
        answer = pickle.dumps(ArchiveError(f"{archive.name}: {error}"))
    sys.stdout.buffer.write(answer)
