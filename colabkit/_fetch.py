"""Datasets by Drive id, Drive link or http(s) URL, downloaded once into a verified cache.

    path = colabkit.fetch("1sUrlx-GhJ_80vIGzVGEgFUSDYfwV50YW", "pikachu.png")

Downloads go through gdown (>= 6.5), which owns Drive's confirmation pages,
resume and retries; colabkit adds what a notebook needs around it:

* the destination: a bare name lands in the active project's data/ folder
  (after `colabkit.setup`), else in the working directory; a name chosen by
  the server (URL, Content-Disposition, Drive title) must be one safe path
  component (_fsio.safe_component), decoded before it is judged;
* publication only when complete and verified: bytes go to a hidden temp
  folder next to the destination (_fsio.temp_path's scheme), are hashed while
  they arrive, bounded by max_size and a total deadline, checked against
  `hash=` (or, unpinned, refused when they are an HTML page) and only then
  renamed into place through _fsio.replace;
* turns: processes fetching into one folder hold its file lock (_fsio.locked)
  while they download and publish; a cache hit needs no lock;
* a stamp per file (source, size, mtime, sha256) in `.colabkit-fetch.json`
  in the destination folder, so a later session reuses the file without a
  request and without re-hashing it;
* one error hierarchy (`colabkit.errors.DownloadError`) whose messages end with
  what to do, instead of gdown's and requests' raw exceptions.
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
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ._archive import extract as extract_archive
from ._fsio import (
    MultiHasher,
    hash_file,
    is_stale_temp,
    is_temp_name,
    locked,
    may_resume,
    os_error_advice,
    os_error_message,
    parse_hash,
    read_json,
    replace,
    replace_tree,
    retire,
    retire_tree,
    safe_component,
    temp_path,
    unsafe_name_reason,
    write_json_atomic,
)
from ._progress import progress, say
from ._validate import check_count, check_duration, check_size
from .errors import (
    BusyError,
    ConfigError,
    DownloadError,
    DownloadTimeoutError,
    DownloadTooLargeError,
    HashMismatchError,
    HTTPStatusError,
    InvalidSourceError,
    NetworkError,
    NotPublicError,
    QuotaExceededError,
    UnexpectedPageError,
    UnsafeNameError,
)

MANIFEST_NAME = ".colabkit-fetch.json"
MANIFEST_VERSION = 1
RESERVED_PREFIX = ".colabkit-"  # the manifest, the lock and the temp folders: never a server's name
DEFAULT_MAX_SIZE = 50 * 2**30  # 50 GiB: beyond any course dataset, well below a Colab VM's disk
DEFAULT_DEADLINE = 6 * 3600.0  # seconds; a Colab session lasts at most 12 hours
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
SNIFF_BYTES = 64 * 1024

DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
_ID = r"[A-Za-z0-9_-]{25,}"
_FOLDER_PATH = re.compile(rf"^/drive/(?:u/\d+/|mobile/)?folders/({_ID})/?$")
ACCEPTED_FORMS = (
    "a Drive file id (e.g. 1sUrlx-GhJ_80vIGzVGEgFUSDYfwV50YW), "
    "a Drive share link (https://drive.google.com/file/d/<id>/view, .../open?id=<id>, "
    ".../uc?id=<id>, https://drive.usercontent.google.com/download?id=<id>), "
    "a Drive folder link (https://drive.google.com/drive/folders/<id>), "
    "or a plain http(s):// URL"
)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """A parsed download source.

    kind: "drive_file", "drive_folder" or "url"; key: the cache identity, the
    same for an id and every link to it; url: what the downloader is given.
    """

    kind: str
    key: str
    url: str
    drive_id: str | None = None
    given: str = ""

    @property
    def is_drive(self) -> bool:
        return self.kind in ("drive_file", "drive_folder")

    def __str__(self) -> str:
        return self.given or self.url


def parse_source(source: str) -> Source:
    """Recognise `source` without touching the network, or raise InvalidSourceError."""
    if isinstance(source, os.PathLike) or not isinstance(source, str):
        raise InvalidSourceError(
            f"The source {source!r} is not a string. Pass {ACCEPTED_FORMS}."
        )
    text = source.strip()
    if re.fullmatch(_ID, text):
        return Source("drive_file", f"gdrive:{text}", f"https://drive.google.com/uc?id={text}", text, text)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        hint = ""
        if re.fullmatch(r"[A-Za-z0-9_-]+", text):
            hint = f" It looks like a Drive id but has {len(text)} characters; Drive ids have 25 or more."
        raise InvalidSourceError(
            f"Cannot fetch {source!r}: it is neither a Drive id nor a link.{hint} Pass {ACCEPTED_FORMS}."
        )
    if parts.hostname.lower() in DRIVE_HOSTS:
        return _parse_drive_link(text, parts)
    url = urllib.parse.urldefrag(text).url
    return Source("url", url, url, None, text)


def _parse_drive_link(text: str, parts: urllib.parse.SplitResult) -> Source:
    import gdown.parse_url

    folder = _FOLDER_PATH.match(parts.path)
    if folder:
        folder_id = folder.group(1)
        return Source(
            "drive_folder", f"gdrive-folder:{folder_id}",
            f"https://drive.google.com/drive/folders/{folder_id}", folder_id, text,
        )
    host = parts.hostname.lower()
    if host == "drive.usercontent.google.com":
        # gdown does not know this host; the id in its query is the same file id.
        ids = urllib.parse.parse_qs(parts.query).get("id", [])
        file_id = ids[0] if len(ids) == 1 else None
        url = f"https://drive.google.com/uc?id={file_id}"
    else:
        file_id, _ = gdown.parse_url.parse_url(text)
        # Google Docs, Sheets and Slides links keep their own URL: gdown exports them.
        url = text if host == "docs.google.com" else f"https://drive.google.com/uc?id={file_id}"
    if not file_id or not re.fullmatch(_ID, file_id):
        raise InvalidSourceError(
            f"Cannot find a Drive file or folder id in {text!r}. "
            f"Copy the link from Drive's Share dialog, or pass {ACCEPTED_FORMS}."
        )
    return Source("drive_file", f"gdrive:{file_id}", url, file_id, text)


# --------------------------------------------------------------------------- names from outside


def remote_name(name: object, what: str) -> str:
    """`name` (chosen by the server, a URL or Drive) when it is one safe file name here; else UnsafeNameError.

    The one rule of _fsio.safe_component (no '.', '..', empty, separators,
    NUL, control or invisible characters), plus colabkit's own bookkeeping
    names: a server must not be able to name its file `.colabkit-fetch.json`
    (the manifest), a lock, or one of colabkit's temp names.
    """
    fix = ("Pass output= with the file name you want (e.g. output='train.csv'); "
           "the name stays inside the destination folder then.")
    text = safe_component(name, what, fix)
    if text.startswith(RESERVED_PREFIX) or is_temp_name(text):
        raise UnsafeNameError(
            f"The {what} {text!r} cannot be used as a file name: colabkit keeps its own "
            f"bookkeeping under such names. {fix}"
        )
    return text


def url_file_name(url: str) -> str:
    """The file name a plain URL implies: its last path segment, percent-decoded, then checked.

    Decoding comes first, so '..%2Ftrain.py' is seen as '../train.py' (two
    components, refused) rather than as the harmless-looking '..%2Ftrain.py'.
    """
    path = urllib.parse.urlsplit(url).path
    last = path.rsplit("/", 1)[-1]
    try:
        decoded = urllib.parse.unquote(last, errors="strict")
    except UnicodeDecodeError:
        raise UnsafeNameError(
            f"The file name in the URL {last!r} is not valid UTF-8 once decoded, so it cannot be used as "
            "a file name. Pass output= with the file name you want (e.g. output='train.csv')."
        ) from None
    return remote_name(decoded, "file name in the URL")


# --------------------------------------------------------------------------- destination


def default_folder() -> Path:
    """Where a bare file name lands: the active project's data/ folder, else the cwd."""
    from ._project import active_project

    project = active_project()
    return project.data if project is not None else Path.cwd()


@dataclass(frozen=True)
class Target:
    """Where a fetch goes: the folder, the file name (None: Drive names it) and who chose the name."""

    folder: Path
    name: str | None
    remote: bool  # the name comes from the URL or Drive, not from the caller


def resolve_output(output: str | os.PathLike | None, source: Source) -> Target:
    """The Target for `output`: a bare name goes in default_folder(); a path is a path.

    A trailing '/' (or an existing folder given as a path) means "into this
    folder, under the remote name"; a remote name is checked before any request.
    """
    def remote_default() -> str | None:
        return url_file_name(source.url) if source.kind == "url" else None

    if output is None:
        return Target(default_folder(), remote_default(), True)
    text = os.fspath(output)
    if not text.strip():
        raise ConfigError("output is empty. Give a file name like 'train.csv', a path, or leave it out.")
    path = Path(text).expanduser()
    bare = os.sep not in text and (os.altsep is None or os.altsep not in text) and not text.startswith("~")
    if bare:
        path = default_folder() / text
    if text.endswith(("/", os.sep)):
        return Target(path, remote_default(), True)
    if path.is_dir():
        kind = "folder" if source.kind == "drive_folder" else "file"
        raise ConfigError(
            f"output {text!r} is an existing directory ({path.absolute()}). Give a {kind} name inside "
            f"it (e.g. {os.path.join(text, 'data.bin')!r}) or end it with '/' to keep the remote name."
        )
    return Target(path.parent, path.name, False)


def _prepare_folder(folder: Path) -> Path:
    """Create the destination folder and check it is writable, before any request is made."""
    folder = folder.absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DownloadError(
            f"Cannot use {folder} as the destination folder: a file with that name exists. "
            "Pick another output path, or rename that file."
        ) from None
    except OSError as exc:
        raise DownloadError(os_error_message(exc, "create the destination folder", folder)) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DownloadError(
            f"The destination folder {folder} is not writable. "
            "Pick a folder you can write to (e.g. your project's data/ folder), or fix its permissions."
        )
    return folder


# --------------------------------------------------------------------------- the manifest


class Manifest:
    """The stamps of what was fetched into one folder: `.colabkit-fetch.json` in it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST_NAME
        data = read_json(self.path)
        entries = data.get("entries") if isinstance(data, dict) else None
        self.entries: dict[str, dict[str, Any]] = entries if isinstance(entries, dict) else {}

    def find(self, source: Source, name: str | None) -> tuple[str, dict[str, Any]] | None:
        """The entry for `source` (under `name` when one is asked for)."""
        if name is not None:
            entry = self.entries.get(name)
            return (name, entry) if isinstance(entry, dict) and entry.get("source") == source.key else None
        for entry_name, entry in self.entries.items():
            # a manifest is a file on disk anyone can edit: its names obey the same rule as a server's
            if isinstance(entry, dict) and entry.get("source") == source.key and unsafe_name_reason(entry_name) is None:
                return entry_name, entry
        return None

    def owns(self, name: str) -> bool:
        """Whether colabkit fetched the file or folder called `name` here (so it may replace it)."""
        return isinstance(self.entries.get(name), dict)

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """Stamp `name`; callers hold the folder's lock, and the file is re-read so no entry is lost."""
        latest = Manifest(self.folder)
        latest.entries[name] = entry
        self.entries = latest.entries
        write_json_atomic(self.path, {"version": MANIFEST_VERSION, "entries": self.entries})


def _stamp(path: Path) -> dict[str, int]:
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _file_entry(source: Source, stamp: dict[str, int], digests: dict[str, str]) -> dict[str, Any]:
    """The manifest entry of one fetched file: where it came from, its stamp and its digests."""
    return {"source": source.key, "url": source.given, **stamp, "sha256": digests["sha256"],
            "digests": digests, "fetched": _now()}


# --------------------------------------------------------------------------- fetch


def fetch(
    source: str,
    output: str | os.PathLike | None = None,
    *,
    hash: str | None = None,  # noqa: A002 - the name users know from pooch and gdown
    extract: bool = False,
    quiet: bool = False,
    retries: int = 3,
    timeout: float = 60,
    deadline: float | None = DEFAULT_DEADLINE,
    max_size: int = DEFAULT_MAX_SIZE,
    verify: bool = False,
    private: bool = False,
) -> Path:
    """Download `source` once, verified, and return its local path.

    A repeat call finds the stamped file and returns at once (no request, no
    hashing). Bytes go to a hidden temp folder beside the destination and are
    published (renamed into place) only complete, within `max_size`, checked
    against `hash=` and, when no hash is pinned, not an HTML page. Processes
    fetching into one folder take turns (a file lock), so a notebook and a
    `!python` fetching the same file both get the one verified copy.

    Args:
        source: a Drive file id, a Drive share link, a Drive folder link, or an
            http(s) URL.
        output: a file name (placed in the project's data/ folder, or the working
            directory before `colabkit.setup`), a path, or a folder ending in '/'.
            Left out, the name comes from the URL or from Drive; such a name must be
            one plain file name (no '..', '/', control characters), else
            UnsafeNameError asks you to pass output=.
        hash: "sha256:…", "sha1:…" or "md5:…", checked before the file is published.
        extract: extract the archive next to it and return the extracted folder
            instead (see `colabkit.extract`).
        quiet: print nothing but errors (no progress bar, no notes).
        retries: how many times a dropped connection is retried (each resumes
            where the transfer stopped); one short line is printed per retry.
        timeout: seconds to wait for the server between two reads.
        deadline: seconds the whole download may take, retries included (default
            6 hours); a server that trickles bytes is stopped then. None: no limit.
        max_size: the most bytes accepted (default 50 GiB; a Drive folder counts
            all its files). A larger Content-Length is refused before the body
            arrives, a longer body as soon as it passes the limit.
        verify: re-hash an already fetched file instead of trusting its stamp.
        private: read a Drive file or folder through the Drive API (the
            `drive-api` extra) with your credentials, for files not shared as
            "Anyone with the link".

    Returns:
        The path of the fetched file or folder (or of the extracted folder).

    Raises:
        InvalidSourceError: `source` is not an id, a share link or a URL.
        UnsafeNameError: the remote name cannot be a file name here; pass output=.
        ConfigError: a bad argument (hash format, retries, timeout, max_size ...).
        HashMismatchError: the data is not what `hash` pins; nothing was saved.
        DownloadTooLargeError: larger than `max_size`; nothing was saved.
        UnexpectedPageError: an HTML page came where a data file was expected.
        DownloadTimeoutError: past `deadline`; the partial download resumes next time.
        NetworkError: the connection failed after the retries (resumes next time).
        QuotaExceededError, NotPublicError, HTTPStatusError: what Drive or the
            server answered, with what to do.
        BusyError: another process kept the destination folder locked past the deadline.
        DownloadError: anything else, e.g. the folder cannot be written.
    """
    parsed = parse_source(source)
    pinned = parse_hash(hash) if hash is not None else None
    retries = check_count(retries, "retries", 0)
    timeout = check_duration(timeout, "timeout")
    if deadline is not None:
        deadline = check_duration(deadline, "deadline")
    max_size = check_size(max_size, "max_size")
    if parsed.kind == "drive_folder" and pinned is not None:
        raise ConfigError(
            "hash= pins a single file, and this source is a Drive folder. "
            "Fetch the folder without hash=, or fetch its files one by one with their hashes."
        )
    if parsed.kind == "drive_folder" and extract:
        raise ConfigError(
            "extract=True extracts an archive file, and this source is a Drive folder. Fetch the "
            "folder without extract=, then colabkit.extract(...) the archives in it."
        )
    if private and not parsed.is_drive:
        raise ConfigError(
            f"private=True reads Drive files through the Drive API, and {source!r} is a plain URL. "
            "Drop private=True for URLs, or pass the Drive file's id or share link."
        )
    target = resolve_output(output, parsed)
    target = Target(_prepare_folder(target.folder), target.name, target.remote)
    options = _Options(quiet=quiet, retries=retries, timeout=timeout, max_size=max_size, private=private,
                       ends=None if deadline is None else time.monotonic() + deadline, deadline=deadline)
    if parsed.kind == "drive_folder":
        path = _fetch_folder(parsed, target, verify=verify, options=options)
    else:
        path = _fetch_file(parsed, target, pinned, verify=verify, options=options)
    if extract:
        return extract_archive(path, quiet=quiet)
    return path


@dataclass(frozen=True)
class _Options:
    quiet: bool
    retries: int
    timeout: float
    max_size: int
    private: bool = False
    ends: float | None = None  # time.monotonic() when the deadline passes
    deadline: float | None = None

    def left(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.ends is None else self.ends - time.monotonic()


@contextlib.contextmanager
def _folder_lock(folder: Path, options: _Options) -> Iterator[None]:
    """Take turns with other processes fetching into `folder` (waiting at most until the deadline).

    The lock file lives in the machine's temp folder (`locked(beside=False)`),
    not beside or in the folder: the data folder holds only what was fetched and
    the manifest, and nothing is added around it. (On the Drive mount, flock
    does not reach other machines anyway.)
    """
    left = options.left()
    wait = DEFAULT_DEADLINE if left is None else max(left, 0.01)
    try:
        with locked(folder, "The download folder", timeout=wait, beside=False):
            yield
    except BusyError as exc:
        holder = f"process {exc.holder}" if exc.holder else "another process"
        raise BusyError(
            f"The download folder {folder} is in use by {holder}: another fetch into it did not finish "
            f"within deadline={options.deadline:g} s. Wait for that process to finish (or stop it), then "
            "fetch again."
        ) from None


def _fetch_file(source: Source, target: Target, pinned: tuple[str, str] | None, *, verify: bool,
                options: _Options) -> Path:
    """Reuse the stamped file, or download into a temp folder, check it, publish and stamp it.

    The stamp check runs first without the lock (a cache hit costs a stat);
    everything that writes runs under the folder's lock, after checking again
    whether another process fetched the file meanwhile.
    """
    cached = _reuse_cached_file(source, Manifest(target.folder), target.name, pinned, verify=verify,
                                options=options, fast_only=True)
    if cached is not None:
        return cached
    with _folder_lock(target.folder, options):
        manifest = Manifest(target.folder)
        cached = _reuse_cached_file(source, manifest, target.name, pinned, verify=verify, options=options)
        if cached is not None:
            return cached
        return _download_and_publish(source, target, manifest, pinned, options)


def _download_and_publish(source: Source, target: Target, manifest: Manifest,
                          pinned: tuple[str, str] | None, options: _Options) -> Path:
    folder = target.folder
    algorithms = ("sha256",) if pinned is None or pinned[0] == "sha256" else ("sha256", pinned[0])
    staging = _claim_staging(folder, _token(source, target.name))
    keep_partial = False
    try:
        # the Drive API client draws its own bar (private=True)
        with progress(target.name or str(source), quiet=options.quiet or options.private, unit="B") as bar:
            try:
                staged, digests = _download(source, staging, target.name, algorithms=algorithms,
                                            options=options, budget=options.max_size, bar=bar)
            except (NetworkError, KeyboardInterrupt):
                keep_partial = True  # the next fetch resumes from gdown's .part file
                raise
        name = target.name or remote_name(staged.name, "file name Drive gives")
        final = folder / name
        if pinned is not None and digests[pinned[0]] != pinned[1]:
            raise HashMismatchError(
                f"The data from {source} does not match the pinned hash: expected "
                f"{pinned[0]}:{pinned[1]}, got {pinned[0]}:{digests[pinned[0]]}. Nothing was saved. "
                "Either the file at the source changed (check with its owner, then update hash=) "
                "or the hash is wrong."
            )
        if pinned is None and Path(name).suffix.lower() not in HTML_SUFFIXES:
            _refuse_html_page(staged, source, name)
        if final.is_dir() and not final.is_symlink():
            raise DownloadError(
                f"Downloaded {name!r}, but {final} is a directory, so it cannot be saved there. "
                "Pass output= with another file name."
            )
        if target.remote and (final.exists() or final.is_symlink()) and not manifest.owns(name):
            raise DownloadError(
                f"{final} already exists and was not fetched by colabkit, and the name {name!r} came "
                f"from {'the URL' if source.kind == 'url' else 'Drive'}, so it is left untouched. "
                f"Pass output= with the name you want (output={name!r} replaces it)."
            )
        if final.is_symlink():
            os.unlink(final)  # never write through a link planted at the destination
        replace(staged, final)  # on the Drive mount the superseded copy is truncated first
        manifest.record(final.name, _file_entry(source, _stamp(final), digests))
    except OSError as exc:
        raise _write_error(exc, folder) from None
    finally:
        if not keep_partial:
            retire_tree(staging)
    say(options.quiet, f"Saved {final}\n  sha256:{digests['sha256']}"
                       + ("" if pinned else f"\n  pin it next time: hash='sha256:{digests['sha256']}'"))
    return final


def _reuse_cached_file(
    source: Source, manifest: Manifest, name: str | None, pinned: tuple[str, str] | None,
    *, verify: bool, options: _Options, fast_only: bool = False,
) -> Path | None:
    """The stamped file when it is still what was fetched (and what `pinned` asks for), else None.

    fast_only: decide from the stamp alone and write nothing (the lock-free first look);
    whatever needs hashing or a manifest update is left to the locked second look.
    """
    found = manifest.find(source, name)
    if found is None:
        return None if fast_only else _adopt_unstamped(source, manifest, name, pinned, options)
    entry_name, entry = found
    path = manifest.folder / entry_name
    if entry.get("kind", "file") != "file" or path.is_symlink() or not path.is_file():
        return None
    digests: dict[str, str] = dict(entry.get("digests") or {"sha256": entry.get("sha256", "")})
    stamp = _stamp(path)
    if stamp["size"] != entry.get("size"):
        return None
    wanted = pinned[0] if pinned else None
    if verify or stamp["mtime_ns"] != entry.get("mtime_ns") or (wanted and wanted not in digests):
        if fast_only:
            return None
        # Same size but a new mtime (or a request to check): the bytes decide, not the clock.
        fresh = hash_file(path, tuple(dict.fromkeys(["sha256", *([wanted] if wanted else [])])))
        if fresh["sha256"] != entry.get("sha256"):
            return None
        digests.update(fresh)
        manifest.record(entry_name, {**entry, **stamp, "digests": digests})
    if pinned and digests[pinned[0]] != pinned[1]:
        return None  # fetch again; the download is then checked against the pin
    pin = "" if pinned else f"\n  sha256:{digests['sha256']}  (pin it: hash='sha256:…')"
    say(options.quiet, f"Using {path} (already fetched from {source}){pin}")
    return path


def _adopt_unstamped(
    source: Source, manifest: Manifest, name: str | None, pinned: tuple[str, str] | None, options: _Options,
) -> Path | None:
    """A file already at the destination that matches the pinned hash is stamped, not re-downloaded."""
    if pinned is None or name is None:
        return None
    path = manifest.folder / name
    if path.is_symlink() or not path.is_file():
        return None
    stamp = _stamp(path)
    digests = hash_file(path, tuple(dict.fromkeys(["sha256", pinned[0]])))
    if digests[pinned[0]] != pinned[1]:
        return None
    manifest.record(name, _file_entry(source, stamp, digests))
    say(options.quiet, f"Using {path} (already present and matching {pinned[0]}:{pinned[1][:16]}…)")
    return path


# --------------------------------------------------------------------------- temp folders


def _token(source: Source, name: str | None) -> str:
    """A short identity of (source, name): which earlier partial download this fetch may resume."""
    return hashlib.sha1(f"{source.key}\0{name or ''}".encode()).hexdigest()[:16]


def _claim_staging(folder: Path, token: str) -> Path:
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


# --------------------------------------------------------------------------- download backends


def _download(
    source: Source, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: _Options,
    budget: int, bar: Any,
) -> tuple[Path, dict[str, str]]:
    """Download one file into `staging`; return (its path there, its digests).

    Chooses the backend, as _download_folder does for folders: gdown for
    public sources, the Drive API (drive_api) with private=True.
    """
    if options.private:
        return _download_with_drive_api(source, staging, name, algorithms=algorithms, options=options,
                                        budget=budget)
    return _download_with_gdown(source.url, source, staging, name, algorithms=algorithms,
                                options=options, budget=budget, bar=bar)


def _download_with_drive_api(
    source: Source, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: _Options,
    budget: int,
) -> tuple[Path, dict[str, str]]:
    """A Drive file through the API (private=True): atomic and md5-checked by drive_api.

    The size bound is checked once the file is in the temp folder (drive_api
    streams it itself); the deadline does not apply to this backend.
    """
    from ._drive_api.session import default_client

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
        raise _too_large(str(source), budget, f"it has {size} bytes")
    return path, hash_file(path, algorithms)


class _Transfer:
    """gdown's progress callback for one file: the bar, max_size and the deadline.

    Raising from the callback aborts gdown's transfer (gdown documents it). The
    deadline also stops a read that is waiting for bytes: a timer sets gdown's
    cancel event, which interrupts the body read (a server sending one byte a
    second never completes a 512 KiB chunk, so no callback would come).
    """

    def __init__(self, what: Source | str, options: _Options, budget: int, bar: Any) -> None:
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
            raise _too_large(self.what, self.budget, f"the server announced {total} bytes")
        if done > self.budget:
            raise _too_large(self.what, self.budget, f"more than {self.budget} bytes arrived")
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


def _download_with_gdown(
    url: str, what: Source | str, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: _Options,
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
        except (NetworkError, _RangeIgnored) as exc:
            if transfer.expired:
                raise transfer.timeout_error() from None
            if isinstance(exc, _RangeIgnored):
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


class _RangeIgnored(DownloadError):
    """Internal: the server answered a resume request with the whole file (or another range)."""


def _too_large(what: Source | str, budget: int, seen: str) -> DownloadTooLargeError:
    return DownloadTooLargeError(
        f"Refusing to download {what}: {seen}, more than max_size={budget} bytes ({budget / 2**30:.3g} GiB). "
        "Nothing was saved. If you expect a file this large, pass a larger max_size= "
        "(e.g. max_size=100 * 2**30); otherwise check the link."
    )


_HTML_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|title)\b",
                         re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def _refuse_html_page(path: Path, source: Source, name: str) -> None:
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        retire_tree(path)
    else:
        retire(path)


# --------------------------------------------------------------------------- Drive folders


def _fetch_folder(source: Source, target: Target, *, verify: bool, options: _Options) -> Path:
    """A Drive folder: reuse an intact earlier fetch, else download it whole and publish it in one rename."""
    folder = target.folder
    found = Manifest(folder).find(source, target.name)
    if found is not None and _folder_intact(folder / found[0], found[1], verify=verify):
        say(options.quiet, f"Using {folder / found[0]} (already fetched from {source})")
        return folder / found[0]
    with _folder_lock(folder, options):
        manifest = Manifest(folder)
        found = manifest.find(source, target.name)
        if found is not None and _folder_intact(folder / found[0], found[1], verify=verify):
            say(options.quiet, f"Using {folder / found[0]} (already fetched from {source})")
            return folder / found[0]
        staging = _claim_staging(folder, _token(source, target.name))
        keep_partial = False
        try:
            try:
                downloaded = _download_folder(source, staging, options=options)
            except (NetworkError, KeyboardInterrupt):
                keep_partial = True
                raise
            name = target.name or remote_name(downloaded.name, "folder name Drive gives")
            final = folder / name
            owned = found is not None or manifest.owns(name)
            _publish_folder(downloaded, final, owned=owned)
            files = {}
            for path in sorted(p for p in final.rglob("*") if p.is_file()):
                files[path.relative_to(final).as_posix()] = {**_stamp(path), "sha256": hash_file(path)["sha256"]}
            manifest.record(final.name, {"source": source.key, "url": source.given, "kind": "folder",
                                         "files": files, "fetched": _now()})
        except OSError as exc:
            raise _write_error(exc, folder) from None
        finally:
            if not keep_partial:
                retire_tree(staging)
    say(options.quiet, f"Saved {final} ({len(files)} files)")
    return final


def _folder_intact(root: Path, entry: dict[str, Any], *, verify: bool) -> bool:
    """True when every file the entry stamped is still there with its size, and its sha256 where the mtime moved."""
    files = entry.get("files")
    if entry.get("kind") != "folder" or not isinstance(files, dict) or root.is_symlink() or not root.is_dir():
        return False
    for relative, stamp in files.items():
        path = root / relative
        try:
            now = _stamp(path)
        except OSError:
            return False
        if now["size"] != stamp.get("size"):
            return False
        if verify or now["mtime_ns"] != stamp.get("mtime_ns"):
            if hash_file(path)["sha256"] != stamp.get("sha256"):
                return False
    return True


def _download_folder(source: Source, staging: Path, *, options: _Options) -> Path:
    """Download a Drive folder into `staging`; return the folder it made there.

    Chooses the backend, as _download does for files: gdown for a public
    folder, the Drive API (drive_api) with private=True. Every name in the
    result is one safe component, checked before anything is published.
    """
    if options.private:
        from ._drive_api.session import default_client

        root = default_client().download_folder(source.drive_id, staging, progress=not options.quiet)
        _check_tree(root, staging, source, options.max_size)
        return root
    return _download_folder_with_gdown(source, staging, options=options)


def _check_tree(root: Path, staging: Path, source: Source, budget: int) -> None:
    """The Drive API's folder download stays inside `staging`, with safe names, within max_size."""
    if root.parent != staging or root.is_symlink():
        raise UnsafeNameError(
            f"The Drive folder {source} came back as {root}, outside colabkit's temp folder; nothing was "
            "published. Pass output= with the folder name you want."
        )
    total = 0
    for path in root.rglob("*"):
        remote_name(path.name, "name of a file in the Drive folder")
        if path.is_symlink():
            raise UnsafeNameError(f"The Drive folder {source} holds a link {path.name!r}; nothing was published.")
        if path.is_file():
            total += path.stat().st_size
    if total > budget:
        raise _too_large(str(source), budget, f"its files hold {total} bytes")


def _download_folder_with_gdown(source: Source, staging: Path, *, options: _Options) -> Path:
    """List the folder with gdown, check every name, then download each file with the single-file path.

    Listing first means a hostile title (control characters, a duplicate, one
    of colabkit's own names) is refused before any byte is written, and each
    file gets the same bounds, progress bar and resume as a single fetch.
    """
    import gdown

    with translate_errors(str(source)):
        listed = gdown.download_folder(id=source.drive_id, output=str(staging) + os.sep, quiet=True,
                                       skip_download=True, timeout=options.timeout)
    if not listed:
        raise DownloadError(
            f"The Drive folder {source} is empty (or gdown could not list it). Open the link in a "
            "browser to check it holds files and is shared as 'Anyone with the link'."
        )
    members: list[tuple[str, Path]] = []
    seen: set[str] = set()
    root_name = None
    for item in listed:
        relative = Path(item.local_path).relative_to(staging)
        parts = relative.parts
        for part in parts:
            remote_name(part, "name in the Drive folder")
        root_name = parts[0]
        key = relative.as_posix().casefold()
        if key in seen:
            raise UnsafeNameError(
                f"The Drive folder {source} holds two files named {relative.as_posix()!r} (Drive allows "
                "duplicate names, a folder on disk does not); nothing was published. Rename one in "
                "Drive, or fetch the files one by one with output=."
            )
        seen.add(key)
        members.append((item.id, relative))
    budget = options.max_size
    for file_id, relative in members:
        destination = staging / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        with progress(relative.as_posix(), quiet=options.quiet, unit="B") as bar:
            path, _ = _download_with_gdown(f"https://drive.google.com/uc?id={file_id}", f"{source} ({relative})",
                                           destination.parent, destination.name, algorithms=("sha256",),
                                           options=options, budget=budget, bar=bar)
        budget -= path.stat().st_size
    return staging / root_name


def _publish_folder(downloaded: Path, final: Path, *, owned: bool) -> None:
    """Move the complete download into place; an older fetched copy is retired, anything else kept."""
    if final.exists() or final.is_symlink():
        if final.is_symlink() or not final.is_dir() or (not owned and any(final.iterdir())):
            raise DownloadError(
                f"{final} already exists and was not fetched by colabkit, so it is left untouched. "
                "Pass output= with another folder name, or move it away and fetch again."
            )
    replace_tree(downloaded, final)  # on the Drive mount the old copy is truncated first: the trash stays small


# --------------------------------------------------------------------------- errors


def not_public_message(source: Source | str) -> str:
    text = (
        f"Google Drive did not give a download link for {source}: the file is not shared as "
        "'Anyone with the link' (or it was deleted). To continue: if it is yours, open it in Drive, "
        "Share -> General access -> 'Anyone with the link', then fetch again; otherwise ask its owner "
        "to do so, or download it through the Drive API with an account that can read it"
    )
    from ._drive_api.session import is_signed_in

    if is_signed_in():  # the Drive API is set up here: say exactly how
        given = getattr(source, "drive_id", None) or str(source)
        return text + f": colabkit.fetch({given!r}, private=True)."
    return text + ' (pip install "colabkit-ml[drive-api]", then fetch(..., private=True)).'


def quota_message(source: Source | str) -> str:
    return (
        f"Google Drive refuses to serve {source} right now: too many users have viewed or downloaded "
        "this file recently (Drive's per-file download quota). To continue: wait (up to 24 hours) and "
        "fetch again; or open the link in a browser, add the file to your own Drive (Add shortcut / "
        "Make a copy) and read it through the mount, e.g. "
        "colabkit.stage('/content/drive/MyDrive/<file>'); or download it through the Drive API."
    )


@contextlib.contextmanager
def translate_errors(source: Source | str) -> Iterator[None]:
    """Turn gdown's and requests' exceptions into colabkit's DownloadError family."""
    import gdown.exceptions
    import requests

    try:
        yield
    except DownloadError:
        raise
    except gdown.exceptions.FileURLRetrievalError as exc:
        text = str(exc)
        if "too many users" in text.lower() or "quota" in text.lower():
            raise QuotaExceededError(quota_message(source)) from exc
        raise NotPublicError(not_public_message(source)) from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise _status_error(source, status, exc) from exc
    except requests.RequestException as exc:
        raise _network_error(source, exc) from exc
    except UnicodeDecodeError as exc:
        raise DownloadError(f"Downloading {source} failed: {exc}. Check the link, then fetch again.") from exc
    except gdown.exceptions.DownloadError as exc:
        text = str(exc)
        cause = exc.__cause__
        if "did not honor the requested byte range" in text:
            raise _RangeIgnored(text) from exc
        if isinstance(cause, requests.RequestException) or "incomplete" in text.lower():
            raise _network_error(source, cause or exc, text if "incomplete" in text.lower() else "") from exc
        if "Failed to retrieve folder contents" in text:
            raise NotPublicError(not_public_message(source)) from exc
        raise DownloadError(
            f"Downloading {source} failed: {text.strip()} "
            "Fetch again (the transfer resumes); if it keeps failing, open the link in a browser to check it."
        ) from exc
    except OSError:
        raise  # disk and permission problems: the caller knows the destination
    except (AssertionError, KeyError, ValueError, TypeError, AttributeError) as exc:
        # gdown's page parsing met something it did not expect (a changed Drive page).
        raise DownloadError(
            f"Downloading {source} failed: Google Drive answered with a page gdown could not read "
            f"({type(exc).__name__}: {exc}). Open the link in a browser to check the file is still "
            "there and shared, update gdown (pip install -U gdown), then fetch again."
        ) from exc


def _status_error(source: Source | str, status: int | None, exc: BaseException) -> HTTPStatusError:
    if status == 404:
        advice = "Check the URL (or the Drive id) is complete and the file still exists, then fetch again."
    elif status in (401, 403):
        advice = ("The server refuses access: the file needs a login or a share setting "
                  "that allows it. Fix access, then fetch again.")
    elif status is not None and status >= 500:
        advice = "The server failed; this is usually temporary. Fetch again in a few minutes."
    else:
        advice = "Check the URL, then fetch again."
    error = HTTPStatusError(f"The server answered HTTP {status} for {source}. {advice}")
    error.status = status  # type: ignore[attr-defined]
    return error


def _network_error(source: Source | str, exc: BaseException, incomplete: str = "") -> NetworkError:
    import requests

    if incomplete:
        short = "the transfer stopped before the announced size"
        detail = incomplete.split(".\n")[0]  # gdown's next sentence names its temp file
    else:
        detail = str(exc)
        if isinstance(exc, requests.Timeout):
            short = "no answer within timeout"
        elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
            short = "the connection dropped mid-transfer"
        else:
            short = "the connection failed"
    error = NetworkError(
        f"The connection failed while downloading {source}: {detail}. "
        "Check the runtime's internet connection and fetch again: the partial download is kept "
        "and resumes (raise retries= or timeout= for a flaky connection)."
    )
    error.short = short  # type: ignore[attr-defined]  # the retry line's few words
    return error


def _write_error(exc: OSError, folder: Path) -> DownloadError:
    cause, fix = os_error_advice(exc)
    return DownloadError(
        f"Could not write the download into {folder}: {cause} ({exc.strerror or exc}). "
        f"Nothing was published. To fix: {fix}, then fetch again."
    )
