"""Datasets by Drive id, Drive link or http(s) URL, downloaded once into a verified cache.

    path = colabkit.fetch("1sUrlx-GhJ_80vIGzVGEgFUSDYfwV50YW", "pikachu.png")

Downloads go through gdown (>= 6.5), which owns Drive's confirmation pages,
resume and retries; colabkit adds what a notebook needs around it:

* the destination: a bare name lands in the active project's data/ folder
  (after `colabkit.setup`), else in the working directory;
* publication only when complete and verified: bytes go to a hidden staging
  folder next to the destination, are hashed while they arrive, checked
  against `hash=` and only then `os.replace`d into place;
* a stamp per file (source, size, mtime, sha256) in `.colabkit-fetch.json`
  in the destination folder, so a later session reuses the file without a
  request and without re-hashing it;
* one error hierarchy (`colabkit.errors.DownloadError`) whose messages end with
  what to do, instead of gdown's and requests' raw exceptions.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ._fsio import MultiHasher, hash_file, parse_hash, read_json, write_json_atomic
from ._progress import say
from ._archive import extract as extract_archive
from ._archive import replace_folder
from .errors import (
    ConfigError,
    DownloadError,
    HashMismatchError,
    HTTPStatusError,
    InvalidSourceError,
    NetworkError,
    NotPublicError,
    QuotaExceededError,
)

MANIFEST_NAME = ".colabkit-fetch.json"
PARTIAL_DIR_NAME = ".colabkit-partial"
MANIFEST_VERSION = 1

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

    def default_name(self) -> str | None:
        """The file name a plain URL implies; None for Drive (Drive names the file)."""
        if self.kind != "url":
            return None
        name = urllib.parse.unquote(Path(urllib.parse.urlsplit(self.url).path).name)
        name = name.replace("\x00", "").replace("\\", "_").strip()
        return None if name in ("", ".", "..") else name

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


# --------------------------------------------------------------------------- destination


def default_folder() -> Path:
    """Where a bare file name lands: the active project's data/ folder, else the cwd."""
    from ._project import active_project

    project = active_project()
    return project.data if project is not None else Path.cwd()


def resolve_output(output: str | os.PathLike | None, source: Source) -> tuple[Path, str | None]:
    """(folder, name) for `output`: a bare name goes in default_folder(); a path is a path.

    A trailing '/' (or an existing folder given as a path) means "into this
    folder"; name None means "the name Drive gives the file".
    """
    if output is None:
        return default_folder(), source.default_name()
    text = os.fspath(output)
    if not text.strip():
        raise ConfigError("output is empty. Give a file name like 'train.csv', a path, or leave it out.")
    path = Path(text).expanduser()
    bare = os.sep not in text and (os.altsep is None or os.altsep not in text) and not text.startswith("~")
    if bare:
        path = default_folder() / text
    if text.endswith(("/", os.sep)):
        return path, source.default_name()
    if path.is_dir():
        kind = "folder" if source.kind == "drive_folder" else "file"
        raise ConfigError(
            f"output {text!r} is an existing directory ({path.absolute()}). Give a {kind} name inside "
            f"it (e.g. {os.path.join(text, 'data.bin')!r}) or end it with '/' to keep the remote name."
        )
    return path.parent, path.name


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
        raise DownloadError(
            f"Cannot create the destination folder {folder}: {exc.strerror or exc}. "
            "Pick a folder you can write to (e.g. your project's data/ folder)."
        ) from None
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
            if isinstance(entry, dict) and entry.get("source") == source.key:
                return entry_name, entry
        return None

    def record(self, name: str, entry: dict[str, Any]) -> None:
        # Re-read first so that a fetch into the same folder from another process is kept.
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
    verify: bool = False,
    private: bool = False,
) -> Path:
    """Download `source` once, verified, and return its local path.

    source: a Drive file id, a Drive share link, a Drive folder link, or an
    http(s) URL. output: a file name (placed in the project's data/ folder, or
    the working directory before setup) or a path. hash: "sha256:…", "sha1:…"
    or "md5:…", checked before the file is published. A repeat call finds the
    stamped file and returns at once (no request, no hashing); verify=True
    re-hashes it. extract=True extracts an archive next to it and returns the
    extracted folder instead (see colabkit.extract). private=True reads a Drive
    file or folder through the Drive API (the `drive-api` extra) with your
    credentials, for files not shared as "Anyone with the link".
    """
    parsed = parse_source(source)
    pinned = parse_hash(hash) if hash is not None else None
    if type(retries) is not int or retries < 0:
        raise ConfigError(f"retries={retries!r}: give a whole number >= 0.")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ConfigError(f"timeout={timeout!r}: give a number of seconds > 0.")
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
    folder, name = resolve_output(output, parsed)
    folder = _prepare_folder(folder)
    options = _Options(quiet=quiet, retries=retries, timeout=timeout, private=private)
    if parsed.kind == "drive_folder":
        path = _fetch_folder(parsed, folder, name, verify=verify, options=options)
    else:
        path = _fetch_file(parsed, folder, name, pinned, verify=verify, options=options)
    if extract:
        return extract_archive(path, quiet=quiet)
    return path


@dataclass(frozen=True)
class _Options:
    quiet: bool
    retries: int
    timeout: float
    private: bool = False


def _fetch_file(
    source: Source, folder: Path, name: str | None, pinned: tuple[str, str] | None,
    *, verify: bool, options: _Options,
) -> Path:
    """Reuse the stamped file, or download into the staging folder, check the pin, publish and stamp."""
    manifest = Manifest(folder)
    cached = _reuse_cached_file(source, manifest, name, pinned, verify=verify, options=options)
    if cached is not None:
        return cached
    algorithms = ("sha256",) if pinned is None or pinned[0] == "sha256" else ("sha256", pinned[0])
    staging = _staging_dir(folder, source)
    keep_partial = False
    try:
        try:
            staged, digests = _download(source, staging, name, algorithms=algorithms, options=options)
        except (NetworkError, KeyboardInterrupt):
            keep_partial = True  # the next fetch resumes from gdown's .part file
            raise
        if pinned is not None and digests[pinned[0]] != pinned[1]:
            raise HashMismatchError(
                f"The data from {source} does not match the pinned hash: expected "
                f"{pinned[0]}:{pinned[1]}, got {pinned[0]}:{digests[pinned[0]]}. Nothing was saved. "
                "Either the file at the source changed (check with its owner, then update hash=) "
                "or the hash is wrong."
            )
        final = folder / (name or staged.name)
        if final.is_dir():
            raise DownloadError(
                f"Downloaded {staged.name!r}, but {final} is a directory, so it cannot be saved there. "
                "Pass output= with another file name."
            )
        os.replace(staged, final)
    except OSError as exc:
        raise _write_error(exc, folder) from None
    finally:
        if not keep_partial:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_if_empty(staging.parent)
    manifest.record(final.name, _file_entry(source, _stamp(final), digests))
    say(options.quiet, f"Saved {final}\n  sha256:{digests['sha256']}"
                  + ("" if pinned else f"\n  pin it next time: hash='sha256:{digests['sha256']}'"))
    return final


def _reuse_cached_file(
    source: Source, manifest: Manifest, name: str | None, pinned: tuple[str, str] | None,
    *, verify: bool, options: _Options,
) -> Path | None:
    """The stamped file when it is still what was fetched (and what `pinned` asks for), else None."""
    found = manifest.find(source, name)
    if found is None:
        return _adopt_unstamped(source, manifest, name, pinned, options)
    entry_name, entry = found
    path = manifest.folder / entry_name
    if entry.get("kind", "file") != "file" or not path.is_file():
        return None
    digests: dict[str, str] = dict(entry.get("digests") or {"sha256": entry.get("sha256", "")})
    stamp = _stamp(path)
    if stamp["size"] != entry.get("size"):
        return None
    wanted = pinned[0] if pinned else None
    if verify or stamp["mtime_ns"] != entry.get("mtime_ns") or (wanted and wanted not in digests):
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
    if not path.is_file():
        return None
    stamp = _stamp(path)
    digests = hash_file(path, tuple(dict.fromkeys(["sha256", pinned[0]])))
    if digests[pinned[0]] != pinned[1]:
        return None
    manifest.record(name, _file_entry(source, stamp, digests))
    say(options.quiet, f"Using {path} (already present and matching {pinned[0]}:{pinned[1][:16]}…)")
    return path


def _staging_dir(folder: Path, source: Source) -> Path:
    """A per-source hidden folder next to the destination; gdown resumes a .part left in it."""
    import hashlib

    token = hashlib.sha1(source.key.encode()).hexdigest()[:16]
    return folder / PARTIAL_DIR_NAME / token


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


# --------------------------------------------------------------------------- download backends


def _download(
    source: Source, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: _Options,
) -> tuple[Path, dict[str, str]]:
    """Download one file into `staging`; return (its path there, its digests).

    Chooses the backend, as _download_folder does for folders: gdown for
    public sources, the Drive API (drive_api) with private=True.
    """
    if options.private:
        return _download_with_drive_api(source, staging, name, algorithms=algorithms, options=options)
    return _download_with_gdown(source, staging, name, algorithms=algorithms, options=options)


def _download_with_drive_api(
    source: Source, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: _Options,
) -> tuple[Path, dict[str, str]]:
    """A Drive file through the API (private=True): atomic and md5-checked by drive_api."""
    from ._drive_api.client import default_client

    client = default_client()
    staging.mkdir(parents=True, exist_ok=True)
    for leftover in staging.iterdir():
        _remove(leftover)
    path = client.download(source.drive_id, staging / name if name else staging, progress=not options.quiet)
    return path, hash_file(path, algorithms)


def _download_with_gdown(
    source: Source, staging: Path, name: str | None, *, algorithms: tuple[str, ...], options: _Options,
) -> tuple[Path, dict[str, str]]:
    """A public file through gdown, hashed while it arrives (gdown feeds `hasher` each block)."""
    import gdown

    staging.mkdir(parents=True, exist_ok=True)
    for leftover in staging.iterdir():
        # A complete file from an interrupted publish is re-downloaded rather than trusted;
        # gdown's own .part files stay, so the transfer resumes where it stopped.
        if not leftover.name.endswith(".part"):
            _remove(leftover)
    hasher = MultiHasher(algorithms)
    target = str(staging / name) if name else str(staging) + os.sep
    with translate_errors(source):
        written = gdown.download(
            url=source.url,
            output=target,
            quiet=options.quiet,
            resume=True,
            retries=options.retries,
            timeout=options.timeout,
            hasher=hasher,
        )
    path = Path(written)
    if hasher.count != path.stat().st_size:
        # gdown skipped the transfer (the file was already complete): hash what is on disk.
        return path, hash_file(path, algorithms)
    return path, hasher.hexdigests()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------- Drive folders


def _fetch_folder(source: Source, folder: Path, name: str | None, *, verify: bool, options: _Options) -> Path:
    """A Drive folder: reuse an intact earlier fetch, else download it whole and publish it in one rename."""
    manifest = Manifest(folder)
    found = manifest.find(source, name)
    if found is not None and _folder_intact(folder / found[0], found[1], verify=verify):
        say(options.quiet, f"Using {folder / found[0]} (already fetched from {source})")
        return folder / found[0]
    staging = _staging_dir(folder, source)
    try:
        downloaded = _download_folder(source, staging, options=options)
        final = folder / (name or downloaded.name)
        _publish_folder(downloaded, final, owned=found is not None or manifest.entries.get(final.name) is not None)
    except OSError as exc:
        raise _write_error(exc, folder) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(staging.parent)
    files = {}
    for path in sorted(p for p in final.rglob("*") if p.is_file()):
        files[path.relative_to(final).as_posix()] = {**_stamp(path), "sha256": hash_file(path)["sha256"]}
    manifest.record(final.name, {"source": source.key, "url": source.given, "kind": "folder",
                                 "files": files, "fetched": _now()})
    say(options.quiet, f"Saved {final} ({len(files)} files)")
    return final


def _folder_intact(root: Path, entry: dict[str, Any], *, verify: bool) -> bool:
    """True when every file the entry stamped is still there with its size, and its sha256 where the mtime moved."""
    files = entry.get("files")
    if entry.get("kind") != "folder" or not isinstance(files, dict) or not root.is_dir():
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
    folder, the Drive API (drive_api) with private=True.
    """
    staging.mkdir(parents=True, exist_ok=True)
    if options.private:
        from ._drive_api.client import default_client

        return default_client().download_folder(source.drive_id, staging, progress=not options.quiet)
    return _download_folder_with_gdown(source, staging, options=options)


def _download_folder_with_gdown(source: Source, staging: Path, *, options: _Options) -> Path:
    import gdown

    with translate_errors(source):
        gdown.download_folder(
            id=source.drive_id,
            output=str(staging) + os.sep,
            quiet=options.quiet,
            resume=True,
            retries=options.retries,
            timeout=options.timeout,
        )
    roots = [p for p in staging.iterdir() if p.is_dir()]
    if len(roots) != 1:
        raise DownloadError(
            f"gdown finished the Drive folder {source} but left {len(roots)} folders in {staging}. "
            "Fetch it again; if this repeats, report it with the link."
        )
    return roots[0]


def _publish_folder(downloaded: Path, final: Path, *, owned: bool) -> None:
    """Move the complete download into place; an older fetched copy is replaced, anything else kept."""
    if final.exists() or final.is_symlink():
        if not final.is_dir() or (not owned and any(final.iterdir())):
            raise DownloadError(
                f"{final} already exists and was not fetched by colabkit, so it is left untouched. "
                "Pass output= with another folder name, or move it away and fetch again."
            )
    replace_folder(downloaded, final)


# --------------------------------------------------------------------------- errors


def not_public_message(source: Source | str) -> str:
    text = (
        f"Google Drive did not give a download link for {source}: the file is not shared as "
        "'Anyone with the link' (or it was deleted). To continue: if it is yours, open it in Drive, "
        "Share -> General access -> 'Anyone with the link', then fetch again; otherwise ask its owner "
        "to do so, or download it through the Drive API with an account that can read it"
    )
    from ._drive_api.client import is_signed_in

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
def translate_errors(source: Source) -> Iterator[None]:
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
    except gdown.exceptions.DownloadError as exc:
        text = str(exc)
        cause = exc.__cause__
        if isinstance(cause, requests.RequestException) or "incomplete" in text.lower():
            raise _network_error(source, cause or exc) from exc
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


def _status_error(source: Source, status: int | None, exc: BaseException) -> HTTPStatusError:
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


def _network_error(source: Source, exc: BaseException) -> NetworkError:
    return NetworkError(
        f"The connection failed while downloading {source}: {exc}. "
        "Check the runtime's internet connection and fetch again: the partial download is kept "
        "and resumes (raise retries= or timeout= for a flaky connection)."
    )


def _write_error(exc: OSError, folder: Path) -> DownloadError:
    free = shutil.disk_usage(folder).free if folder.exists() else None
    space = f" ({free / 2**30:.1f} GiB free there)" if free is not None else ""
    return DownloadError(
        f"Could not write the download into {folder}{space}: {exc.strerror or exc}. "
        "Free some space (or Drive storage), or pick another output folder, then fetch again."
    )

