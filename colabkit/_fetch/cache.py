"""Where a fetch lands and how an earlier fetch is reused: the destination, the manifest, the folder's lock.

* the destination: a bare name lands in the active project's data/ folder
  (after `colabkit.setup`), else in the working directory;
* a stamp per file (source, size, mtime, sha256) in `.colabkit-fetch.json`
  in the destination folder, so a later session reuses the file without a
  request and without re-hashing it; a file already there that matches a
  pinned hash is adopted (stamped) instead of downloaded again;
* turns: processes fetching into one folder hold its file lock (_fsio.locked)
  while they download and publish; a cache hit needs no lock.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .._fsio import hash_file, locked, os_error_message, read_json, unsafe_name_reason, write_json_atomic
from .._progress import say
from ..errors import BusyError, ConfigError, DownloadError
from .options import DEFAULT_DEADLINE, Options
from .sources import Source, url_file_name

MANIFEST_NAME = ".colabkit-fetch.json"
MANIFEST_VERSION = 1


def default_folder() -> Path:
    """Where a bare file name lands: the active project's data/ folder, else the cwd."""
    from .._project import active_project

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


def prepare_folder(folder: Path) -> Path:
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


@contextlib.contextmanager
def folder_lock(folder: Path, options: Options) -> Iterator[None]:
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


def file_stamp(path: Path) -> dict[str, int]:
    """The size and mtime of `path`: what a cache hit compares, without hashing."""
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def utc_now() -> str:
    """The time of a fetch as the manifest records it (UTC, ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_entry(source: Source, stamp: dict[str, int], digests: dict[str, str]) -> dict[str, Any]:
    """The manifest entry of one fetched file: where it came from, its stamp and its digests."""
    return {"source": source.key, "url": source.given, **stamp, "sha256": digests["sha256"],
            "digests": digests, "fetched": utc_now()}


def reuse_cached_file(
    source: Source, manifest: Manifest, name: str | None, pinned: tuple[str, str] | None,
    *, verify: bool, options: Options, fast_only: bool = False,
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
    stamp = file_stamp(path)
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
    source: Source, manifest: Manifest, name: str | None, pinned: tuple[str, str] | None, options: Options,
) -> Path | None:
    """A file already at the destination that matches the pinned hash is stamped, not re-downloaded."""
    if pinned is None or name is None:
        return None
    path = manifest.folder / name
    if path.is_symlink() or not path.is_file():
        return None
    stamp = file_stamp(path)
    digests = hash_file(path, tuple(dict.fromkeys(["sha256", pinned[0]])))
    if digests[pinned[0]] != pinned[1]:
        return None
    manifest.record(name, file_entry(source, stamp, digests))
    say(options.quiet, f"Using {path} (already present and matching {pinned[0]}:{pinned[1][:16]}…)")
    return path
