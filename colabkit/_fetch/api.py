"""fetch(): the arguments checked before any request, then the stamped file reused or downloaded and published.

The orchestration of the other modules: parse the source, resolve and prepare
the destination, take the fast path (a stamp, no lock), else take the folder's
lock, look again, download into a temp folder, verify and publish, stamp.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .._archive.api import extract as extract_archive
from .._fsio import parse_hash, replace, retire_tree
from .._progress import progress, say
from .._validate import check_count, check_duration, check_size
from ..errors import ConfigError, DownloadError, HashMismatchError, NetworkError
from .cache import (
    Manifest,
    Target,
    file_entry,
    file_stamp,
    folder_lock,
    prepare_folder,
    resolve_output,
    reuse_cached_file,
)
from .errors import download_write_error
from .folders import fetch_folder
from .options import DEFAULT_DEADLINE, DEFAULT_MAX_SIZE, Options
from .sources import Source, parse_source, remote_name
from .transfer import HTML_SUFFIXES, claim_staging, download_file, refuse_html_page, staging_token


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
    target = Target(prepare_folder(target.folder), target.name, target.remote)
    options = Options(quiet=quiet, retries=retries, timeout=timeout, max_size=max_size, private=private,
                       ends=None if deadline is None else time.monotonic() + deadline, deadline=deadline)
    if parsed.kind == "drive_folder":
        path = fetch_folder(parsed, target, verify=verify, options=options)
    else:
        path = _fetch_file(parsed, target, pinned, verify=verify, options=options)
    if extract:
        return extract_archive(path, quiet=quiet)
    return path


def _fetch_file(source: Source, target: Target, pinned: tuple[str, str] | None, *, verify: bool,
                options: Options) -> Path:
    """Reuse the stamped file, or download into a temp folder, check it, publish and stamp it.

    The stamp check runs first without the lock (a cache hit costs a stat);
    everything that writes runs under the folder's lock, after checking again
    whether another process fetched the file meanwhile.
    """
    cached = reuse_cached_file(source, Manifest(target.folder), target.name, pinned, verify=verify,
                                options=options, fast_only=True)
    if cached is not None:
        return cached
    with folder_lock(target.folder, options):
        manifest = Manifest(target.folder)
        cached = reuse_cached_file(source, manifest, target.name, pinned, verify=verify, options=options)
        if cached is not None:
            return cached
        return _download_and_publish(source, target, manifest, pinned, options)


def _download_and_publish(source: Source, target: Target, manifest: Manifest,
                          pinned: tuple[str, str] | None, options: Options) -> Path:
    folder = target.folder
    algorithms = ("sha256",) if pinned is None or pinned[0] == "sha256" else ("sha256", pinned[0])
    staging = claim_staging(folder, staging_token(source, target.name))
    keep_partial = False
    try:
        # the Drive API client draws its own bar (private=True)
        with progress(target.name or str(source), quiet=options.quiet or options.private, unit="B") as bar:
            try:
                staged, digests = download_file(source, staging, target.name, algorithms=algorithms,
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
            refuse_html_page(staged, source, name)
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
        manifest.record(final.name, file_entry(source, file_stamp(final), digests))
    except OSError as exc:
        raise download_write_error(exc, folder) from None
    finally:
        if not keep_partial:
            retire_tree(staging)
    say(options.quiet, f"Saved {final}\n  sha256:{digests['sha256']}"
                       + ("" if pinned else f"\n  pin it next time: hash='sha256:{digests['sha256']}'"))
    return final
