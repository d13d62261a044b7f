"""DriveClient: files and folders on Google Drive through its API (pydrive2), by id or by path.

gdown only reaches files shared as "Anyone with the link", and mounting Drive
only works in a Colab notebook cell. With the `drive-api` extra
(`pip install "colabkit-ml[drive-api]"`) the client talks to Drive's API:

    client = colabkit.connect_drive()              # Colab: your account
    client = colabkit.connect_drive("key.json")    # elsewhere: a service account
    client.download("1AbC...", "data/train.zip")   # atomic, md5-verified
    client.sync_up("checkpoints", "ML2022/ckpt")   # only changed files travel

Folder paths such as "a/b" are relative to My Drive, or to the folder whose id
COLABKIT_DRIVE_ROOT (or `root=`) names. Every title that comes from Drive is
judged by `_fsio.safe_component` before it names a local file: a folder holding
an item titled '..', 'a/b', '/etc/x' or with control characters is refused as a
whole, before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import _fsio
from ..errors import (
    ConfigError,
    DriveAPIError,
    DriveAPINotFoundError,
    HashMismatchError,
    UnsafeNameError,
)
from .config import ENV_ROOT, FOLDER_MIME, require_pydrive2
from .errors import translate

if TYPE_CHECKING:  # pragma: no cover
    from pydrive2.auth import GoogleAuth
    from pydrive2.drive import GoogleDrive

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_SIZE = 16 * 1024 * 1024  # bytes per download request
_TITLE_FIX = ("Rename it on Drive (or ask the folder's owner to), then run this again; nothing "
              "was downloaded.")


@dataclass(frozen=True)
class DriveFile:
    """One file or folder on Drive, as the API describes it.

    Returned by `DriveClient.list`, `children`, `find`, `metadata` and the
    uploads; pass it back to `DriveClient.download` to skip one request.

    Attributes:
        id: Drive's id of the item (the part after /d/ in a share link).
        name: its title on Drive (outside input: never trusted as a path).
        mime_type: Drive's MIME type; folders are application/vnd.google-apps.folder.
        size: size in bytes; None for folders and Google Docs files.
        md5: Drive's md5Checksum; None for folders and Google Docs files.
    """

    id: str
    name: str
    mime_type: str = ""
    size: int | None = None
    md5: str | None = None

    @property
    def is_folder(self) -> bool:
        """Whether this is a folder."""
        return self.mime_type == FOLDER_MIME

    @classmethod
    def from_metadata(cls, meta: Any) -> DriveFile:
        """A DriveFile from a Drive v2 file resource (a dict or a pydrive2 file)."""
        size = meta.get("fileSize")
        return cls(id=str(meta["id"]), name=str(meta.get("title", "")),
                   mime_type=str(meta.get("mimeType", "")),
                   size=int(size) if size is not None else None, md5=meta.get("md5Checksum"))


@dataclass
class SyncResult:
    """What a sync moved, as paths relative to the synced folder.

    Attributes:
        transferred: files uploaded or downloaded.
        unchanged: files already the same on both sides (size and md5).
        skipped: Google Docs files, which have no content to download.
    """

    transferred: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def merge(self, other: SyncResult, prefix: str) -> None:
        """Add `other`'s paths, each under `prefix/`."""
        for mine, theirs in ((self.transferred, other.transferred),
                             (self.unchanged, other.unchanged), (self.skipped, other.skipped)):
            mine.extend(f"{prefix}/{name}" for name in theirs)

    def __str__(self) -> str:
        text = f"{len(self.transferred)} transferred, {len(self.unchanged)} unchanged"
        return text + (f", {len(self.skipped)} skipped" if self.skipped else "")


def file_md5(path: str | os.PathLike) -> str:
    """The md5 hex digest of a local file (what Drive reports as md5Checksum)."""
    return _fsio.hash_file(path, "md5")["md5"]


def _quote(text: str) -> str:
    """A string literal for a Drive query."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def path_parts(path: str | os.PathLike) -> list[str]:
    """The folder names of a Drive path ("a/b/" -> ["a", "b"]).

    Raises:
        ConfigError: the path contains '..'.
    """
    parts = [p for p in PurePosixPath(str(path).replace("\\", "/")).parts if p not in ("/", "", ".")]
    if ".." in parts:
        raise ConfigError(f"Drive path {str(path)!r} contains '..'; give a path below the root folder.")
    return parts


def local_name(item: DriveFile) -> str:
    """The title of a Drive item as one safe local path component.

    Raises:
        UnsafeNameError: the title is '.', '..', empty, holds '/', '\\', NUL or
            another control character, an invisible character, or is too long.
    """
    kind = "Drive folder title" if item.is_folder else "Drive file title"
    return _fsio.safe_component(item.name, f"{kind} (id {item.id})", _TITLE_FIX)


class DriveClient:
    """A small Drive client over pydrive2: download, upload, folders by path, sync.

    Build one with `colabkit.connect_drive()`. Transient failures (rate
    limits, 5xx, dropped connections) are retried `retries` times with
    exponential backoff starting at `backoff` seconds; everything else becomes
    a DriveAPIError subclass that says what to do. Downloads are published
    atomically through colabkit's one publish layer and checked against Drive's
    md5; titles from Drive never name a path outside the destination.

    Args:
        auth: an authorized pydrive2 GoogleAuth (see `connect_drive`).
        account: a printable name of the account, used in messages.
        root: the id of the folder that paths start from (default: My Drive,
            or COLABKIT_DRIVE_ROOT).
        retries: how many times a transient failure is retried.
        backoff: the first wait between retries, in seconds (doubling, at most 32).

    Raises:
        MissingDependencyError: pydrive2 is not installed.
    """

    def __init__(self, auth: GoogleAuth, *, account: str = "this account", root: str | None = None,
                 retries: int = 5, backoff: float = 1.0) -> None:
        require_pydrive2()
        from pydrive2.drive import GoogleDrive

        self.drive: GoogleDrive = GoogleDrive(auth)
        self.account = account
        self.root = root or os.environ.get(ENV_ROOT) or "root"
        self.retries = retries
        self.backoff = backoff
        self._folders: dict[tuple[str, ...], str] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"DriveClient(account={self.account!r}, root={self.root!r})"

    # -- plumbing

    def _call(self, action: Callable[[], T], what: str) -> T:
        """Run `action`, retrying transient failures, translating the rest."""
        for attempt in range(self.retries + 1):
            try:
                return action()
            except Exception as exc:
                retry, error = translate(exc, what, account=self.account, retries=self.retries)
                if error is None or error is exc:  # not Drive's, or already ours
                    raise
                if not retry or attempt == self.retries:
                    raise error from None
                delay = min(self.backoff * 2 ** attempt, 32.0)
                log.info("Drive: retrying %s in %.1f s (%s, attempt %d of %d)",
                         what, delay, type(error).__name__, attempt + 1, self.retries)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _query(self, query: str, what: str) -> list[DriveFile]:
        def run() -> list[DriveFile]:
            listing = self.drive.ListFile({"q": query})
            return [DriveFile.from_metadata(item) for item in listing.GetList()]

        return self._call(run, what)

    def _children(self, folder_id: str, *, name: str | None = None, folders_only: bool = False
                  ) -> list[DriveFile]:
        query = f"{_quote(folder_id)} in parents and trashed = false"
        if name is not None:
            query += f" and title = {_quote(name)}"
        if folders_only:
            query += f" and mimeType = {_quote(FOLDER_MIME)}"
        return self._query(query, f"listing folder {folder_id}")

    def _folder_id(self, path: str | os.PathLike, *, create: bool) -> str | None:
        parts = tuple(path_parts(path))
        with self._lock:
            parent = self.root
            for depth in range(1, len(parts) + 1):
                key = parts[:depth]
                cached = self._folders.get(key)
                if cached is not None:
                    parent = cached
                    continue
                found = self._children(parent, name=key[-1], folders_only=True)
                if found:
                    parent = found[0].id
                elif not create:
                    return None
                else:
                    parent = self._create_folder(key[-1], parent)
                self._folders[key] = parent
            return parent

    def _create_folder(self, name: str, parent: str) -> str:
        def run() -> str:
            folder = self.drive.CreateFile(
                {"title": name, "mimeType": FOLDER_MIME, "parents": [{"id": parent}]})
            folder.Upload()
            return str(folder["id"])

        folder_id = self._call(run, f"creating folder {name!r}")
        log.info("Drive: created folder %r (%s)", name, folder_id)
        return folder_id

    def _require_folder(self, folder: str | os.PathLike) -> str:
        folder_id = self._folder_id(folder, create=False)
        if folder_id is None:
            raise DriveAPINotFoundError(
                f"There is no folder {str(folder)!r} on Drive (below {self._root_name()}) for "
                f"{self.account}. Check the path, or create it with ensure_folder()."
            )
        return folder_id

    def _root_name(self) -> str:
        return "My Drive" if self.root == "root" else f"the folder {self.root}"

    # -- folders and listings

    def ensure_folder(self, path: str | os.PathLike) -> str:
        """The id of the folder at `path`, creating missing folders on the way.

        Args:
            path: a folder path such as "ML2022/ckpt", below the root folder.

        Returns:
            The folder's id (remembered: a second call sends no request).

        Raises:
            ConfigError: the path contains '..'.
            DriveAPIError: Drive refused (see its subclasses).
        """
        folder_id = self._folder_id(path, create=True)
        assert folder_id is not None
        return folder_id

    def folder_id(self, path: str | os.PathLike) -> str | None:
        """The id of the folder at `path`, or None when there is none (nothing is created).

        Args:
            path: a folder path such as "ML2022/ckpt", below the root folder.

        Returns:
            The folder's id, or None.

        Raises:
            ConfigError: the path contains '..'.
            DriveAPIError: Drive refused (see its subclasses).
        """
        return self._folder_id(path, create=False)

    def find(self, path: str | os.PathLike) -> DriveFile | None:
        """The file or folder at a Drive path, or None.

        Args:
            path: a path such as "ML2022/ckpt/model.pt", below the root folder.

        Returns:
            The item (the first one, if Drive holds several of that title), or None.

        Raises:
            ConfigError: the path contains '..'.
            DriveAPIError: Drive refused (see its subclasses).
        """
        parts = path_parts(path)
        if not parts:
            return None
        parent = self._folder_id("/".join(parts[:-1]), create=False)
        if parent is None:
            return None
        found = self._children(parent, name=parts[-1])
        return found[0] if found else None

    def list(self, folder: str | os.PathLike = "") -> list[DriveFile]:
        """The files and folders directly inside a Drive folder, by name.

        Args:
            folder: the folder path ("" is the root folder).

        Returns:
            Its items, sorted by title.

        Raises:
            DriveAPINotFoundError: there is no such folder.
            DriveAPIError: Drive refused (see its subclasses).
        """
        folder_id = self._require_folder(folder)
        return sorted(self._children(folder_id), key=lambda f: f.name)

    def children(self, folder_id: str) -> list[DriveFile]:
        """The files and folders directly inside the folder with this id (not in the trash).

        Args:
            folder_id: the folder's id (from `ensure_folder`, `folder_id` or a share link).

        Returns:
            Its items, in Drive's order.

        Raises:
            DriveAPIError: Drive refused (see its subclasses).
        """
        return self._children(folder_id)

    def metadata(self, file_id: str) -> DriveFile:
        """What Drive knows about the file or folder with this id.

        Args:
            file_id: the id (the part after /d/ or /folders/ in a share link).

        Returns:
            Its title, MIME type, size and md5.

        Raises:
            DriveAPINotFoundError: nothing has that id (for this account).
            DriveAPIError: Drive refused (see its subclasses).
        """
        def run() -> DriveFile:
            item = self.drive.CreateFile({"id": file_id})
            item.FetchMetadata(fields="id,title,mimeType,fileSize,md5Checksum")
            return DriveFile.from_metadata(item)

        return self._call(run, f"reading the metadata of {file_id}")

    # -- downloads

    def download(self, file: str | DriveFile, dest: str | os.PathLike, *, progress: bool = True) -> Path:
        """Download one file to `dest`, verified and atomic.

        The data goes to a temporary file next to `dest`, is checked against
        Drive's md5Checksum, and only then replaces `dest` (through colabkit's
        publish layer, which on the Drive mount keeps the superseded copy out
        of Drive's trash); on any failure nothing is left behind and an
        existing `dest` is untouched.

        Args:
            file: the file's id, or a DriveFile from `list`/`children` (saves a request).
            dest: the file to write, or an existing folder to keep Drive's title
                (which must then be one safe file name).
            progress: show a progress bar.

        Returns:
            The path written.

        Raises:
            ConfigError: the id is a folder (use `download_folder` or `sync_down`).
            UnsafeNameError: `dest` is a folder and Drive's title is not a safe file name.
            HashMismatchError: the data arrived corrupted (after no retry).
            DriveAPIError: a Google Docs file (no content), or Drive refused.
        """
        meta = file if isinstance(file, DriveFile) else self.metadata(file)
        if meta.is_folder:
            raise ConfigError(f"{meta.id} is a folder ({meta.name!r}); use sync_down(folder, local_dir) "
                              "or download_folder(folder_id, dest).")
        if meta.md5 is None:
            raise DriveAPIError(
                f"{meta.name!r} ({meta.id}) is a Google Docs/Sheets/Slides file ({meta.mime_type}) "
                "with no file content to download. In Drive use File → Download to pick a "
                "format, upload that file, and download its id."
            )
        target = Path(dest)
        if target.is_dir():
            target = target / local_name(meta)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._call(lambda: self._download_once(meta, target, progress), f"downloading {meta.name!r}")
        log.info("Drive: downloaded %r (%s) to %s", meta.name, meta.id, target)
        return target

    def _download_once(self, meta: DriveFile, target: Path, progress: bool) -> None:
        """One attempt: stream into a temp file next to `target`, check Drive's md5, publish.

        _fsio.atomic_destination publishes it (fsync, _fsio.replace, fsync of
        the folder) and removes the temp file on any failure; its temp names are
        the ones a CheckpointManager recognizes as a dead writer's leftovers.
        """
        from tqdm.auto import tqdm

        with _fsio.atomic_destination(target) as temp:
            digest = hashlib.md5()
            with open(temp, "wb") as out, tqdm(
                total=meta.size, unit="B", unit_scale=True, desc=meta.name,
                disable=not progress or not meta.size, leave=False,
            ) as bar:
                item = self.drive.CreateFile({"id": meta.id})
                for chunk in item.GetContentIOBuffer(chunksize=CHUNK_SIZE):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != meta.md5:
                raise HashMismatchError(
                    f"The data downloaded for {meta.name!r} ({meta.id}) has md5 {digest.hexdigest()}, "
                    f"but Drive says {meta.md5}: the transfer was corrupted. Nothing was saved; "
                    "run the download again."
                )

    # -- uploads and removal

    def upload(self, path: str | os.PathLike, folder: str | os.PathLike = "", *,
               name: str | None = None) -> DriveFile:
        """Upload a local file into the folder at path `folder` (created if needed).

        A file of the same name there is replaced in place: it keeps its id
        and Drive stores a new revision. The md5 Drive reports afterwards is
        checked against the local file.

        Args:
            path: the local file.
            folder: the Drive folder path ("" is the root folder).
            name: the title on Drive (default: the local file's name).

        Returns:
            The stored file.

        Raises:
            ConfigError: `path` is not a file.
            DriveAPIError: Drive refused, or stored other bytes than were sent.
        """
        source = Path(path)
        if not source.is_file():
            raise ConfigError(f"{source} is not a file; give the path of a local file to upload.")
        folder_id = self.ensure_folder(folder)
        title = name or source.name
        existing = [f for f in self._children(folder_id, name=title) if not f.is_folder]
        return self.upload_to(source, folder_id, name=title, replace=existing[0] if existing else None)

    def upload_to(self, path: str | os.PathLike, folder_id: str, *, name: str | None = None,
                  replace: DriveFile | None = None, md5: str | None = None) -> DriveFile:
        """Upload a local file into the folder with this id, as a new file or over `replace`.

        For callers that already listed the folder (`children`): no look-up
        is sent.

        Args:
            path: the local file.
            folder_id: the id of the Drive folder.
            name: the title of a new file (default: the local file's name).
            replace: the Drive file to store a new revision of, keeping its id.
            md5: the local file's md5, when already known.

        Returns:
            The stored file.

        Raises:
            DriveAPIError: Drive refused, or stored other bytes than were sent.
        """
        source = Path(path)
        title = name or source.name
        local_md5 = md5 or file_md5(source)

        def run() -> DriveFile:
            if replace is not None:
                item = self.drive.CreateFile({"id": replace.id})
            else:
                item = self.drive.CreateFile({"title": title, "parents": [{"id": folder_id}],
                                              "mimeType": "application/octet-stream"})
            with open(source, "rb") as content:
                item.content = content
                item.Upload()
            uploaded = DriveFile.from_metadata(item)
            if uploaded.md5 is not None and uploaded.md5 != local_md5:
                raise DriveAPIError(
                    f"Drive stored {title!r} with md5 {uploaded.md5}, but the local file has "
                    f"{local_md5}: the upload was corrupted (the local file is untouched). "
                    "Run the upload again."
                )
            return uploaded

        done = self._call(run, f"uploading {title!r}")
        log.info("Drive: uploaded %s as %r (%s)", source, title, done.id)
        return done

    def trash(self, file_id: str) -> None:
        """Move a file to Drive's trash (recoverable there for 30 days, still using quota).

        Args:
            file_id: the file's id.

        Raises:
            DriveAPIError: Drive refused (see its subclasses).
        """
        def run() -> None:
            self.drive.CreateFile({"id": file_id}).Trash()

        self._call(run, f"moving {file_id} to the trash")

    def delete(self, file_id: str) -> None:
        """Delete a file for good (files.delete): it skips the trash and frees its quota at once.

        Args:
            file_id: the file's id.

        Raises:
            DriveAPINotFoundError: nothing has that id (already deleted?).
            DriveAPIError: Drive refused (see its subclasses).
        """
        def run() -> None:
            self.drive.CreateFile({"id": file_id}).Delete()

        self._call(run, f"deleting {file_id}")

    # -- syncing folders

    def sync_up(self, local_dir: str | os.PathLike, folder: str | os.PathLike) -> SyncResult:
        """Upload the files below `local_dir` whose size or md5 differ on Drive.

        Nothing on Drive is deleted; sub-folders are created as needed.

        Args:
            local_dir: the local folder.
            folder: the Drive folder path it is copied to (created if needed).

        Returns:
            What moved.

        Raises:
            ConfigError: `local_dir` is not a folder.
            DriveAPIError: Drive refused (see its subclasses).
        """
        source = Path(local_dir)
        if not source.is_dir():
            raise ConfigError(f"{source} is not a folder; give the local folder to upload.")
        folder_id = self.ensure_folder(folder)
        remote = {f.name: f for f in self._children(folder_id)}
        result = SyncResult()
        for entry in sorted(source.iterdir()):
            if entry.is_dir():
                result.merge(self.sync_up(entry, f"{folder}/{entry.name}".lstrip("/")), entry.name)
                continue
            if not entry.is_file():
                continue
            there = remote.get(entry.name)
            there = None if there is not None and there.is_folder else there
            local_md5 = None
            if there is not None and there.size == entry.stat().st_size:
                local_md5 = file_md5(entry)
                if local_md5 == there.md5:
                    result.unchanged.append(entry.name)
                    continue
            self.upload_to(entry, folder_id, name=entry.name, replace=there, md5=local_md5)
            result.transferred.append(entry.name)
        return result

    def sync_down(self, folder: str | os.PathLike, local_dir: str | os.PathLike, *,
                  progress: bool = False) -> SyncResult:
        """Download the files in the Drive folder at path `folder` whose size or md5 differ locally.

        The whole remote tree is listed and every title checked first: if one
        is not a safe file name (or two items share a name) nothing is
        written. Local files that are not on Drive are kept; each download is
        atomic.

        Args:
            folder: the Drive folder path.
            local_dir: the local folder (created if needed).
            progress: show a progress bar per file.

        Returns:
            What moved.

        Raises:
            DriveAPINotFoundError: there is no such folder on Drive.
            UnsafeNameError: a title in the tree is not one safe file name, or
                two items in one folder have the same title.
            DriveAPIError: Drive refused (see its subclasses).
        """
        folder_id = self._require_folder(folder)
        plan = self._plan(folder_id)
        return self._sync_down(plan, Path(local_dir), progress)

    def download_folder(self, folder_id: str, dest: str | os.PathLike, *, progress: bool = False) -> Path:
        """Download the Drive folder with this id into `dest/<its title>`.

        As `sync_down`: the tree is listed and every title checked before
        anything is written.

        Args:
            folder_id: the folder's id (the part after /folders/ in a share link).
            dest: the local folder that receives it.
            progress: show a progress bar per file.

        Returns:
            The local copy of the folder.

        Raises:
            ConfigError: the id is a file (use `download`).
            UnsafeNameError: a title in the tree (or the folder's own) is not one
                safe file name, or two items in one folder have the same title.
            DriveAPIError: Drive refused (see its subclasses).
        """
        meta = self.metadata(folder_id)
        if not meta.is_folder:
            raise ConfigError(f"{folder_id} is a file ({meta.name!r}), not a folder; use download().")
        target = Path(dest) / local_name(meta)
        plan = self._plan(folder_id)
        self._sync_down(plan, target, progress)
        return target

    def _plan(self, folder_id: str, seen: frozenset[str] = frozenset()) -> list[tuple[str, DriveFile, Any]]:
        """The remote tree as [(safe local name, item, sub-plan or None)], every title checked."""
        seen = seen | {folder_id}
        plan: list[tuple[str, DriveFile, Any]] = []
        names: dict[str, DriveFile] = {}
        for item in sorted(self._children(folder_id), key=lambda f: (f.name, f.id)):
            name = local_name(item)
            if name in names:
                raise UnsafeNameError(
                    f"The Drive folder {folder_id} holds two items titled {name!r} (ids "
                    f"{names[name].id} and {item.id}); one local file cannot hold both. {_TITLE_FIX}"
                )
            names[name] = item
            if item.is_folder and item.id in seen:  # a folder inside itself: Drive allows odd shapes
                continue
            plan.append((name, item, self._plan(item.id, seen) if item.is_folder else None))
        return plan

    def _sync_down(self, plan: list[tuple[str, DriveFile, Any]], target: Path, progress: bool) -> SyncResult:
        target.mkdir(parents=True, exist_ok=True)
        result = SyncResult()
        for name, item, sub in plan:
            local = target / name
            if sub is not None:
                result.merge(self._sync_down(sub, local, progress), name)
            elif item.md5 is None:  # a Google Docs file: no content to copy
                result.skipped.append(name)
            elif local.is_file() and local.stat().st_size == item.size and file_md5(local) == item.md5:
                result.unchanged.append(name)
            else:
                self._call(lambda item=item, local=local: self._download_once(item, local, progress),
                           f"downloading {item.name!r}")
                result.transferred.append(name)
        return result


# Names that lived here before the split, for callers not yet moved (imported lazily: no circle).
_MOVED = {
    "connect_drive": "session", "default_client": "session", "set_default_client": "session",
    "is_signed_in": "session", "CheckpointMirror": "mirror", "parse_remote": "mirror",
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{home}"), name)
