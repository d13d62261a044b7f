"""One file downloaded into a hidden temp folder beside its destination, bounded and hashed on the way.

Bytes go to a temp folder next to the destination (_fsio.temp_path's scheme;
an interrupted download's folder is claimed so gdown resumes its .part file),
are hashed while they arrive, bounded by max_size and a total deadline, and,
when no hash is pinned, refused when they are an HTML page. The caller checks
`hash=` and only then renames the file into place through _fsio.replace.

Public files go through gdown, quietly, with colabkit's progress bar and one
short line per retry; private=True reads them through the Drive API.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from .._fsio import (
    MultiHasher,
    hash_file,
    is_stale_temp,
    is_temp_name,
    may_resume,
    retire,
    retire_tree,
    temp_path,
)
from .._progress import say
from ..errors import DownloadError, DownloadTimeoutError, NetworkError, UnexpectedPageError, UnsafeNameError
from .errors import RangeIgnored, too_large, translate_errors
from .options import Options
from .sources import RESERVED_PREFIX, Source, remote_name

HTML_SUFFIXES = (".html", ".htm", ".xhtml")
SNIFF_BYTES = 64 * 1024


def staging_token(source: Source, name: str | None) -> str:
    """A short identity of (source, name): which earlier partial download this fetch may resume."""
    return hashlib.sha1(f"{source.key}\0{name or ''}".encode()).hexdigest()[:16]


def claim_staging(folder: Path, token: str) -> Path:
    """A fresh temp folder (the one temp scheme of _fsio) for this download, beside the destination.

    An earlier download of the same source whose writer is gone (or is this
    process, between two calls) is taken over by renaming, so gdown resumes
    its .part file; a live writer's folder is never touched. Callers hold the
    folder's lock.
    """
    stem = folder / f"{RESERVED_PREFIX[1:]}{token}"
    mine = temp_path(stem, "part")
    prefix = f".{stem.name}."
    earlier = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and is_temp_name(entry.name) and entry.is_dir(follow_symlinks=False):
                earlier.append(Path(entry.path))
    adopted = False
    for path in sorted(earlier, key=lambda p: p.lstat().st_mtime, reverse=True):
        if not may_resume(path.name):
            continue  # a live writer's (an older colabkit without the lock): never ours to touch
        if not adopted:
            os.rename(path, mine)
            adopted = True
        elif is_stale_temp(path):
            retire_tree(path)
    if not adopted:
        mine.mkdir()
    return mine


def download_file(
    source: Source, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: Options,
    budget: int, bar: Any,
) -> tuple[Path, dict[str, str]]:
    """Download one file into `staging`; return (its path there, its digests).

    Chooses the backend, as folders' _download_folder does for folders: gdown for
    public sources, the Drive API (drive_api) with private=True.
    """
    if options.private:
        return _download_with_drive_api(source, staging, name, algorithms=algorithms, options=options,
                                        budget=budget)
    return download_with_gdown(source.url, source, staging, name, algorithms=algorithms,
                                options=options, budget=budget, bar=bar)


def _download_with_drive_api(
    source: Source, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: Options,
    budget: int,
) -> tuple[Path, dict[str, str]]:
    """A Drive file through the API (private=True): atomic and md5-checked by drive_api.

    The size bound is checked once the file is in the temp folder (drive_api
    streams it itself); the deadline does not apply to this backend.
    """
    from .._drive_api.session import default_client

    client = default_client()
    for leftover in staging.iterdir():
        _remove(leftover)
    path = client.download(source.drive_id, staging / name if name else staging, progress=not options.quiet)
    if path.parent != staging:
        raise UnsafeNameError(
            f"The Drive file {source} came back as {path}, outside colabkit's temp folder; nothing was "
            "published. Pass output= with the file name you want."
        )
    remote_name(path.name, "file name Drive gives")
    size = path.stat().st_size
    if size > budget:
        raise too_large(str(source), budget, f"it has {size} bytes")
    return path, hash_file(path, algorithms)


class _Transfer:
    """gdown's progress callback for one file: the bar, max_size and the deadline.

    Raising from the callback aborts gdown's transfer (gdown documents it). The
    deadline also stops a read that is waiting for bytes: a timer sets gdown's
    cancel event, which interrupts the body read (a server sending one byte a
    second never completes a 512 KiB chunk, so no callback would come).
    """

    def __init__(self, what: Source | str, options: Options, budget: int, bar: Any) -> None:
        self.what = what
        self.options = options
        self.budget = budget
        self.bar = bar
        self.cancel = threading.Event()
        self.expired = False
        self.done = 0
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        if total is not None and total > self.budget:
            raise too_large(self.what, self.budget, f"the server announced {total} bytes")
        if done > self.budget:
            raise too_large(self.what, self.budget, f"more than {self.budget} bytes arrived")
        if self.bar.total != total and total is not None:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    @contextlib.contextmanager
    def watched(self) -> Iterator[threading.Event]:
        left = self.options.left()
        if left is None:
            yield self.cancel
            return
        if left <= 0:
            self._expire()
        timer = threading.Timer(max(left, 0), self._expire)
        timer.daemon = True
        timer.start()
        try:
            yield self.cancel
        finally:
            timer.cancel()

    def _expire(self) -> None:
        self.expired = True
        self.cancel.set()

    def timeout_error(self) -> DownloadTimeoutError:
        of = f" of {self.total}" if self.total is not None else ""
        return DownloadTimeoutError(
            f"Downloading {self.what} took longer than deadline={self.options.deadline:g} s "
            f"({self.done}{of} bytes had arrived): the server is too slow or stalls. The partial download "
            "is kept; fetch again to resume it, with a larger deadline= (or deadline=None) for a slow "
            "connection."
        )


def download_with_gdown(
    url: str, what: Source | str, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: Options,
    budget: int, bar: Any,
) -> tuple[Path, dict[str, str]]:
    """A public file through gdown, hashed while it arrives; retries resume gdown's .part file.

    gdown is called quietly, so its own bar and its notes (which name the
    temp path) never show; colabkit's bar and one short line per retry do.
    """
    import gdown
    import gdown.exceptions

    # A complete file from an interrupted publish is re-downloaded rather than trusted;
    # gdown's own .part files stay, so the transfer resumes where it stopped. (A folder's
    # members share one staging folder: only this member's file is in question then.)
    leftovers = [staging / name] if name else list(staging.iterdir())
    for leftover in leftovers:
        if (leftover.exists() or leftover.is_symlink()) and not leftover.name.endswith(".part"):
            _remove(leftover)
    output = str(staging / name) if name else str(staging) + os.sep
    attempt = 0
    while True:
        # sha256 in gdown's read loop: a hashing thread measured no faster here (bench_fetch, 2 busy cores)
        hasher = MultiHasher(algorithms)
        transfer = _Transfer(what, options, budget, bar)
        try:
            with translate_errors(what), transfer.watched() as cancel:
                try:
                    written = gdown.download(url=url, output=output, quiet=True, resume=True, retries=0,
                                             timeout=options.timeout, hasher=hasher, progress=transfer,
                                             cancel=cancel)
                except gdown.exceptions.DownloadCancelled:
                    raise transfer.timeout_error() from None
        except DownloadTimeoutError:
            raise
        except (NetworkError, RangeIgnored) as exc:
            if transfer.expired:
                raise transfer.timeout_error() from None
            if isinstance(exc, RangeIgnored):
                for part in staging.glob("*.part"):
                    retire(part)  # the server cannot resume: start over (counts as a retry)
                if attempt >= options.retries:
                    raise DownloadError(
                        f"Downloading {what} failed: the connection dropped and the server does not "
                        "support resuming. Fetch again (raise retries= for a flaky connection)."
                    ) from None
            elif attempt >= options.retries:
                raise
            attempt += 1
            delay = random.uniform(0.5, 1.0) * min(2 ** (attempt - 1), 30)
            left = options.left()
            if left is not None and left <= delay:
                raise transfer.timeout_error() from None
            say(options.quiet, f"{name or 'download'}: {_short_reason(exc)}; "
                               f"retry {attempt}/{options.retries} in {delay:.0f} s", bar=bar)
            time.sleep(delay)
            continue
        path = Path(written)
        if hasher.count != path.stat().st_size:
            # gdown skipped the transfer (the file was already complete): hash what is on disk.
            return path, hash_file(path, algorithms)
        return path, hasher.hexdigests()


def _short_reason(exc: BaseException) -> str:
    """A few words for a retry line (the full error is kept for the final message)."""
    text = str(getattr(exc, "short", "") or "")
    return text or "the connection failed"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        retire_tree(path)
    else:
        retire(path)


_HTML_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|title)\b",
                         re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def refuse_html_page(path: Path, source: Source, name: str) -> None:
    """UnexpectedPageError when the downloaded 'data file' is an HTML page (a login, an error, a viewer)."""
    with open(path, "rb") as stream:
        head = stream.read(SNIFF_BYTES)
    if not _HTML_START.match(head):
        return
    match = _TITLE.search(head)
    title = ""
    if match:
        text = html.unescape(match.group(1).decode("utf-8", "replace"))
        title = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:120]
    shown = f" titled {title!r}" if title else ""
    raise UnexpectedPageError(
        f"{source} answered with an HTML page{shown} instead of the data file {name!r}; nothing was "
        "saved. The link most likely points to a web page about the file (a viewer, a login or an "
        "error page): open it in a browser and copy the direct download link. If the page is what "
        "you want, save it under a .html name (output='page.html') or pin its hash=."
    )
