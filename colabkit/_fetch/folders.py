"""Drive folders: listed and checked before any byte is written, downloaded whole, published in one rename.

Every name in the folder is one safe component, the folder's files share one
max_size budget and one deadline, and a folder colabkit did not fetch is never
replaced. The manifest entry of a folder stamps each of its files, so an
intact earlier fetch is reused without a request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._fsio import hash_file, replace_tree, retire_tree
from .._progress import progress, say
from ..errors import DownloadError, NetworkError, UnsafeNameError
from .cache import Manifest, Target, file_stamp, folder_lock, utc_now
from .errors import download_write_error, too_large, translate_errors
from .options import Options
from .sources import Source, remote_name
from .transfer import claim_staging, download_with_gdown, staging_token


def fetch_folder(source: Source, target: Target, *, verify: bool, options: Options) -> Path:
    """A Drive folder: reuse an intact earlier fetch, else download it whole and publish it in one rename."""
    folder = target.folder
    found = Manifest(folder).find(source, target.name)
    if found is not None and _folder_intact(folder / found[0], found[1], verify=verify):
        say(options.quiet, f"Using {folder / found[0]} (already fetched from {source})")
        return folder / found[0]
    with folder_lock(folder, options):
        manifest = Manifest(folder)
        found = manifest.find(source, target.name)
        if found is not None and _folder_intact(folder / found[0], found[1], verify=verify):
            say(options.quiet, f"Using {folder / found[0]} (already fetched from {source})")
            return folder / found[0]
        staging = claim_staging(folder, staging_token(source, target.name))
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
                files[path.relative_to(final).as_posix()] = {**file_stamp(path), "sha256": hash_file(path)["sha256"]}
            manifest.record(final.name, {"source": source.key, "url": source.given, "kind": "folder",
                                         "files": files, "fetched": utc_now()})
        except OSError as exc:
            raise download_write_error(exc, folder) from None
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
            now = file_stamp(path)
        except OSError:
            return False
        if now["size"] != stamp.get("size"):
            return False
        if verify or now["mtime_ns"] != stamp.get("mtime_ns"):
            if hash_file(path)["sha256"] != stamp.get("sha256"):
                return False
    return True


def _download_folder(source: Source, staging: Path, *, options: Options) -> Path:
    """Download a Drive folder into `staging`; return the folder it made there.

    Chooses the backend, as download_file does for files: gdown for a public
    folder, the Drive API (drive_api) with private=True. Every name in the
    result is one safe component, checked before anything is published.
    """
    if options.private:
        from .._drive_api.session import default_client

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
        raise too_large(str(source), budget, f"its files hold {total} bytes")


def _download_folder_with_gdown(source: Source, staging: Path, *, options: Options) -> Path:
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
            path, _ = download_with_gdown(f"https://drive.google.com/uc?id={file_id}", f"{source} ({relative})",
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
