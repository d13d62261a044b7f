"""Google Drive through its API (pydrive2): private files, and Drive without a mount.

gdown only reaches files shared as "Anyone with the link", and mounting Drive
only works in a Colab notebook cell. With the `drive-api` extra
(`pip install "colabkit-ml[drive-api]"`) this module talks to Drive's API:

    client = colabkit.connect_drive()              # Colab: your account
    client = colabkit.connect_drive("key.json")    # elsewhere: a service account
    client.download("1AbC...", "data/train.zip")   # atomic, md5-verified
    client.sync_up("checkpoints", "ML2022/ckpt")   # only changed files travel

Credentials, in the order they are looked for: `credentials=` (ready google-auth
credentials), `service_account=` (a JSON key file), `settings_file=` (a pydrive2
settings.yaml), then the environment variables COLABKIT_DRIVE_SERVICE_ACCOUNT and
COLABKIT_DRIVE_SETTINGS, then, in Colab, google.colab.auth and the default
credentials. Folder paths such as "a/b" are relative to My Drive, or to the
folder whose id COLABKIT_DRIVE_ROOT (or `root=`) names.

Secrets never reach a log line, a repr, an error message or a checkpoint; a
token file written through a settings file is kept at mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import _fsio, _runtime
from ..errors import (
    ColabkitError,
    ConfigError,
    DriveAPIAuthError,
    DriveAPIError,
    DriveAPINotFoundError,
    DriveAPIPermissionError,
    DriveAPIQuotaError,
    HashMismatchError,
    MissingDependencyError,
)

if TYPE_CHECKING:  # pragma: no cover
    from pydrive2.auth import GoogleAuth
    from pydrive2.drive import GoogleDrive

log = logging.getLogger(__name__)
T = TypeVar("T")

INSTALL_HINT = 'pip install "colabkit-ml[drive-api]"'
SCOPES = ["https://www.googleapis.com/auth/drive"]
ENV_SERVICE_ACCOUNT = "COLABKIT_DRIVE_SERVICE_ACCOUNT"
ENV_SETTINGS = "COLABKIT_DRIVE_SETTINGS"
ENV_ROOT = "COLABKIT_DRIVE_ROOT"
FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
CHUNK_SIZE = 16 * 1024 * 1024  # bytes per download request

# 403 reasons, from Drive's "Resolve errors" guide
RETRYABLE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}
QUOTA_REASONS = RETRYABLE_REASONS - {"backendError", "internalError"} | {
    "downloadQuotaExceeded", "quotaExceeded", "dailyLimitExceeded", "sharingRateLimitExceeded",
    "storageQuotaExceeded", "teamDriveFileLimitExceeded", "numChildrenInNonRootLimitExceeded",
}
AUTH_REASONS = {"accessNotConfigured", "authError", "invalidCredentials", "usageLimits"}


def _require_pydrive2() -> None:
    """Import pydrive2 or say how to install the extra."""
    try:
        import pydrive2.auth  # noqa: F401
        import pydrive2.drive  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"The Drive API needs pydrive2, which is not installed ({exc}). "
            f'Install the extra with `{INSTALL_HINT}` (in Colab: `!{INSTALL_HINT}`), '
            "then run this again."
        ) from None


# --------------------------------------------------------------------------- auth


class _GoogleAuthCredentials:
    """google-auth credentials in the shape pydrive2 expects of oauth2client's.

    Colab's default credentials are google-auth objects; pydrive2 only calls
    `authorize(http)`, `access_token_expired` and `set_store`. The wrapped
    AuthorizedHttp adds the token and refreshes it when Drive answers 401.
    """

    access_token_expired = False  # AuthorizedHttp refreshes on demand
    invalid = False

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def authorize(self, http: Any) -> Any:
        import google_auth_httplib2

        return google_auth_httplib2.AuthorizedHttp(self._credentials, http=http)

    def set_store(self, store: Any) -> None:  # pydrive2 may call it; nothing to store
        pass

    def __repr__(self) -> str:
        return f"<{type(self._credentials).__name__} (google-auth)>"


def authenticate(
    service_account: str | os.PathLike | None = None,
    *,
    settings_file: str | os.PathLike | None = None,
    credentials: Any = None,
) -> tuple[GoogleAuth, str]:
    """An authorized pydrive2 GoogleAuth and a printable name of the account.

    See the module docstring for the order in which credentials are looked for.
    """
    _require_pydrive2()
    if credentials is not None:
        return _from_google_auth(credentials, "the given credentials")
    if service_account:
        return _from_service_account(Path(service_account))
    if settings_file:
        return _from_settings_file(Path(settings_file))
    if os.environ.get(ENV_SERVICE_ACCOUNT):
        return _from_service_account(Path(os.environ[ENV_SERVICE_ACCOUNT]), ENV_SERVICE_ACCOUNT)
    if os.environ.get(ENV_SETTINGS):
        return _from_settings_file(Path(os.environ[ENV_SETTINGS]), ENV_SETTINGS)
    if _runtime.in_colab():
        return _from_colab()
    raise DriveAPIAuthError(
        "No credentials for the Drive API. In Colab, run this from a notebook cell and "
        "sign in when asked. Elsewhere, create a service-account JSON key (README, "
        f"'Drive API') and pass service_account='key.json' or set {ENV_SERVICE_ACCOUNT}="
        f"/path/to/key.json; or pass settings_file= (or set {ENV_SETTINGS}) to a pydrive2 "
        "settings.yaml."
    )


def _new_auth(settings: dict) -> GoogleAuth:
    from pydrive2.auth import GoogleAuth

    return GoogleAuth(settings_file=None, settings=settings)


def _from_google_auth(credentials: Any, source: str) -> tuple[GoogleAuth, str]:
    # pydrive2's defaults; its OAuth-client flow is never started on this path
    gauth = _new_auth({"client_config_backend": "file", "client_config_file": "client_secrets.json",
                       "oauth_scope": SCOPES, "save_credentials": False})
    gauth.credentials = _GoogleAuthCredentials(credentials)
    gauth.auth_method = "service"  # never start pydrive2's browser flow
    gauth.Authorize()
    account = getattr(credentials, "service_account_email", None) or source
    return gauth, str(account)


def _from_colab() -> tuple[GoogleAuth, str]:
    from .. import _colab

    try:
        credentials = _colab.default_credentials(SCOPES)
    except ImportError as exc:
        raise DriveAPIAuthError(
            f"Colab's google.colab.auth is not available here ({exc}). Outside a Colab "
            f"notebook, use a service-account key: set {ENV_SERVICE_ACCOUNT}=/path/to/key.json."
        ) from None
    except Exception as exc:  # AuthorizationError, DefaultCredentialsError, ...
        raise DriveAPIAuthError(
            f"Signing in to Google from Colab failed ({type(exc).__name__}). Run the cell "
            "again and allow access to Google Drive in the pop-up; if it keeps failing, "
            "restart the session (Runtime → Restart session)."
        ) from None
    return _from_google_auth(credentials, "your Colab account")


class _DropSignedGrants(logging.Filter):
    """oauth2client logs each signed JWT grant at DEBUG; it is a credential for an hour."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _keep_grants_out_of_logs() -> None:
    logger = logging.getLogger("oauth2client.crypt")
    if not any(isinstance(f, _DropSignedGrants) for f in logger.filters):
        logger.addFilter(_DropSignedGrants())


def _from_service_account(path: Path, env_var: str | None = None) -> tuple[GoogleAuth, str]:
    _keep_grants_out_of_logs()
    origin = f" (from {env_var})" if env_var else ""
    path = path.expanduser()
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DriveAPIAuthError(
            f"The service-account key {path}{origin} does not exist. Check the path, or "
            "download a JSON key: Google Cloud console → IAM & Admin → Service accounts → "
            "your account → Keys → Add key → JSON."
        ) from None
    except (OSError, ValueError):
        raise DriveAPIAuthError(
            f"{path}{origin} is not a readable JSON key file. Download the service account's "
            "key again as JSON (Keys → Add key → JSON) and point to that file."
        ) from None
    if not isinstance(info, dict) or info.get("type") != "service_account" or not info.get("client_email"):
        kind = info.get("type") if isinstance(info, dict) else None
        raise DriveAPIAuthError(
            f"{path}{origin} is not a service-account key (its type is {kind!r}). Use the JSON "
            "key of a service account (IAM & Admin → Service accounts → Keys → Add key → JSON); "
            "for an OAuth client or a user token, use a pydrive2 settings file instead."
        )
    gauth = _new_auth({
        "client_config_backend": "service",
        "service_config": {"client_json_file_path": str(path)},
        "oauth_scope": SCOPES,
        "save_credentials": False,
    })
    try:
        gauth.ServiceAuth()
    except Exception as exc:  # a malformed private key, a wrong field...
        raise DriveAPIAuthError(
            f"The service-account key {path}{origin} could not be loaded "
            f"({type(exc).__name__}). Create a new JSON key for the service account and use it."
        ) from None
    return gauth, str(info["client_email"])


def _from_settings_file(path: Path, env_var: str | None = None) -> tuple[GoogleAuth, str]:
    from pydrive2.settings import InvalidConfigError, LoadSettingsFile, SettingsError

    origin = f" (from {env_var})" if env_var else ""
    path = path.expanduser()
    if not path.is_file():
        raise DriveAPIAuthError(
            f"The pydrive2 settings file {path}{origin} does not exist. Check the path, or use "
            f"a service-account key instead ({ENV_SERVICE_ACCOUNT}=/path/to/key.json)."
        )
    try:
        settings = LoadSettingsFile(str(path))
        token_file = _secure_token_file(settings)
        _keep_grants_out_of_logs()
        gauth = _new_auth(settings)
        if settings.get("client_config_backend") == "service":
            gauth.ServiceAuth()
        else:  # an OAuth client: reuses the saved token, else asks in the browser once
            gauth.LocalWebserverAuth()
    except (SettingsError, InvalidConfigError) as exc:
        raise DriveAPIAuthError(
            f"The pydrive2 settings file {path}{origin} is not valid ({exc}). See "
            "https://docs.iterative.ai/PyDrive2/oauth/ for its keys."
        ) from None
    except Exception as exc:
        raise DriveAPIAuthError(
            f"Authenticating with the settings in {path}{origin} failed ({type(exc).__name__}). "
            "Delete the saved token file (save_credentials_file) and sign in again, or use a "
            "service-account key."
        ) from None
    if token_file is not None and token_file.exists():
        token_file.chmod(0o600)
    return gauth, f"the account in {path.name}"


def _secure_token_file(settings: dict) -> Path | None:
    """The token file a settings file saves credentials to, made private (0600)."""
    if not settings.get("save_credentials") or settings.get("save_credentials_backend") != "file":
        return None
    name = settings.get("save_credentials_file")
    if not name:
        return None
    token = Path(name).expanduser()
    token.parent.mkdir(parents=True, exist_ok=True)
    if token.exists():
        token.chmod(0o600)
    else:
        token.touch(mode=0o600)
    return token


# --------------------------------------------------------------------------- errors


def _http_details(exc: BaseException) -> tuple[int | None, str, str] | None:
    """(status, reason, Google's message) of an HTTP error from pydrive2/googleapiclient."""
    from googleapiclient.errors import HttpError
    from pydrive2.files import ApiRequestError

    if isinstance(exc, ApiRequestError):
        error = exc.error or {}
        http_error = exc.args[0] if exc.args and isinstance(exc.args[0], HttpError) else None
        status = error.get("code") or (http_error.resp.status if http_error is not None else None)
        return status, exc.GetField("reason"), str(error.get("message", ""))
    if isinstance(exc, ValueError) and isinstance(exc.__context__, HttpError):
        exc = exc.__context__  # pydrive2 could not parse a non-JSON error body
    if isinstance(exc, HttpError):
        try:
            payload = json.loads(exc.content.decode("utf-8")).get("error", {})
            reason = (payload.get("errors") or [{}])[0].get("reason", "")
            message = payload.get("message", "")
        except (ValueError, AttributeError, UnicodeDecodeError):
            reason, message = "", ""
        return exc.resp.status, reason, str(message)
    return None


def _is_auth_failure(exc: BaseException) -> bool:
    """A refused or failed token refresh, from oauth2client, google-auth or pydrive2."""
    from oauth2client.client import AccessTokenRefreshError
    from pydrive2.auth import AuthError

    names = {cls.__module__.split(".")[0] for cls in type(exc).__mro__}
    return (isinstance(exc, (AccessTokenRefreshError, AuthError))
            or ("google" in names and "RefreshError" in type(exc).__name__))


def _translate(exc: BaseException, what: str, client: DriveClient) -> tuple[bool, ColabkitError | None]:
    """(retry?, the colabkit error) for an exception raised while doing `what`."""
    import socket
    import ssl

    import httplib2

    if isinstance(exc, ColabkitError):
        return False, exc
    details = _http_details(exc)
    if details is not None:
        return _translate_http(*details, what=what, client=client)
    if _is_auth_failure(exc):
        return False, DriveAPIAuthError(
            f"Drive refused the credentials while {what} ({type(exc).__name__}): they are "
            "invalid, revoked or expired. In Colab, run the cell again to sign in again; with a "
            "service account, create a new JSON key; with a settings file, delete its saved "
            "token file and sign in again."
        )
    if isinstance(exc, (httplib2.HttpLib2Error, ConnectionError, TimeoutError, socket.gaierror, ssl.SSLError)):
        return True, DriveAPIError(
            f"The connection to Google Drive failed while {what} ({type(exc).__name__}: {exc}). "
            "Check the internet connection and run this again."
        )
    return False, None


def _translate_http(status: int | None, reason: str, message: str, *, what: str,
                    client: DriveClient) -> tuple[bool, ColabkitError]:
    said = f"HTTP {status}" + (f" {reason}" if reason else "") + (f": {message}" if message else "")
    if status == 401 or reason in AUTH_REASONS:
        hint = ("Enable the Google Drive API for the key's project (console.cloud.google.com → "
                "APIs & Services → Library → Google Drive API)." if reason == "accessNotConfigured"
                else "In Colab, run the cell again to sign in again; with a service account, "
                "create a new JSON key.")
        return False, DriveAPIAuthError(f"Drive rejected the credentials while {what} ({said}). {hint}")
    if status == 429 or reason in QUOTA_REASONS:
        retry = status == 429 or reason in RETRYABLE_REASONS
        if reason == "downloadQuotaExceeded":
            hint = ("Its quota resets within about 24 hours. Meanwhile open it in Drive, use "
                    "File → Make a copy, and fetch the copy's id instead.")
        elif reason == "storageQuotaExceeded":
            hint = ("Free space in that Drive (empty the trash). A service account has no storage "
                    f"of its own: upload into a shared drive folder (set {ENV_ROOT} to its id).")
        elif retry:
            hint = (f"Drive kept limiting the rate after {client.retries} retries; wait a few "
                    "minutes and run this again, with fewer transfers at once.")
        else:
            hint = "Wait until the quota resets (usually within 24 hours) and run this again."
        return retry, DriveAPIQuotaError(f"Drive's quota stopped {what} ({said}). {hint}")
    if status == 404:
        return False, DriveAPINotFoundError(
            f"Drive has nothing at that id or path while {what} ({said}). Check the id (the part "
            "after /d/ in a share link); if the file was shared with you, make sure it was "
            f"shared with the account in use ({client.account})."
        )
    if status == 403:
        return False, DriveAPIPermissionError(
            f"The account {client.account} may not do this while {what} ({said}). Ask the owner "
            "to share the file or folder with that account (Share → add its email), then run "
            "this again."
        )
    if status is not None and status >= 500:
        return True, DriveAPIError(
            f"Google Drive failed on its side while {what} ({said}), also after "
            f"{client.retries} retries. Try again in a few minutes."
        )
    return False, DriveAPIError(
        f"Drive answered with an error while {what} ({said}). Its message says what it refused "
        "(often a malformed id or folder path): correct that and run this again."
    )


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class DriveFile:
    """One file or folder on Drive, as the API describes it."""

    id: str
    name: str
    mime_type: str = ""
    size: int | None = None
    md5: str | None = None

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME

    @classmethod
    def from_metadata(cls, meta: dict) -> DriveFile:
        size = meta.get("fileSize")
        return cls(id=str(meta["id"]), name=str(meta.get("title", "")),
                   mime_type=str(meta.get("mimeType", "")),
                   size=int(size) if size is not None else None, md5=meta.get("md5Checksum"))


@dataclass
class SyncResult:
    """What a sync moved: relative paths transferred, unchanged, or skipped (Google Docs)."""

    transferred: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def merge(self, other: SyncResult, prefix: str) -> None:
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


def _segments(path: str | os.PathLike) -> list[str]:
    parts = [p for p in PurePosixPath(str(path).replace("\\", "/")).parts if p not in ("/", "", ".")]
    if ".." in parts:
        raise ConfigError(f"Drive path {str(path)!r} contains '..'; give a path below the root folder.")
    return parts


class DriveClient:
    """A small Drive client over pydrive2: download, upload, folders by path, sync.

    Build one with `colabkit.connect_drive()`. Transient failures (rate limits,
    5xx, dropped connections) are retried `retries` times with exponential
    backoff starting at `backoff` seconds; everything else becomes a
    DriveAPIError subclass that says what to do.
    """

    def __init__(self, auth: GoogleAuth, *, account: str = "this account", root: str | None = None,
                 retries: int = 5, backoff: float = 1.0) -> None:
        _require_pydrive2()
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
                retry, error = _translate(exc, what, self)
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
        parts = tuple(_segments(path))
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

    # -- public API

    def ensure_folder(self, path: str | os.PathLike) -> str:
        """The id of the folder at `path` ("a/b"), creating missing folders on the way."""
        folder_id = self._folder_id(path, create=True)
        assert folder_id is not None
        return folder_id

    def find(self, path: str | os.PathLike) -> DriveFile | None:
        """The file or folder at `path` ("a/b/c.pt"), or None."""
        parts = _segments(path)
        if not parts:
            return None
        parent = self._folder_id("/".join(parts[:-1]), create=False)
        if parent is None:
            return None
        found = self._children(parent, name=parts[-1])
        return found[0] if found else None

    def list(self, folder: str | os.PathLike = "") -> list[DriveFile]:
        """The files and folders directly inside `folder`, by name."""
        folder_id = self._require_folder(folder)
        return sorted(self._children(folder_id), key=lambda f: f.name)

    def metadata(self, file_id: str) -> DriveFile:
        """What Drive knows about the file with this id (name, size, md5)."""
        def run() -> DriveFile:
            item = self.drive.CreateFile({"id": file_id})
            item.FetchMetadata(fields="id,title,mimeType,fileSize,md5Checksum")
            return DriveFile.from_metadata(item)

        return self._call(run, f"reading the metadata of {file_id}")

    def download(self, file_id: str, dest: str | os.PathLike, *, progress: bool = True) -> Path:
        """Download a file by id to `dest` (a path, or a folder to keep Drive's name).

        The data goes to a temporary file next to `dest`, is checked against
        Drive's md5Checksum, and only then replaces `dest`; on any failure
        nothing is left behind and an existing `dest` is untouched.
        """
        meta = self.metadata(file_id)
        if meta.is_folder:
            raise ConfigError(f"{file_id} is a folder ({meta.name!r}); use sync_down(folder, local_dir).")
        if meta.md5 is None:
            raise DriveAPIError(
                f"{meta.name!r} ({file_id}) is a Google Docs/Sheets/Slides file ({meta.mime_type}) "
                "with no file content to download. In Drive use File → Download to pick a "
                "format, upload that file, and download its id."
            )
        target = Path(dest)
        if target.is_dir():
            target = target / Path(meta.name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        self._call(lambda: self._download_once(meta, target, progress), f"downloading {meta.name!r}")
        log.info("Drive: downloaded %r (%s) to %s", meta.name, file_id, target)
        return target

    def _download_once(self, meta: DriveFile, target: Path, progress: bool) -> None:
        """One attempt: stream into a temp file next to `target`, check Drive's md5, publish.

        _fsio.atomic_destination publishes it (fsync, os.replace, fsync of the
        folder) and removes the temp file on any failure; its temp names are the
        ones a CheckpointManager recognizes as a dead writer's leftovers.
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

    def upload(self, path: str | os.PathLike, folder: str | os.PathLike = "", *,
               name: str | None = None) -> DriveFile:
        """Upload a local file into `folder` (created if needed); replaces a file of the same name.

        Replacing keeps the file's id (Drive stores a new revision). The md5 Drive
        reports afterwards is checked against the local file.
        """
        source = Path(path)
        if not source.is_file():
            raise ConfigError(f"{source} is not a file; give the path of a local file to upload.")
        folder_id = self.ensure_folder(folder)
        title = name or source.name
        existing = [f for f in self._children(folder_id, name=title) if not f.is_folder]
        return self._upload_to(source, folder_id, title, existing[0] if existing else None)

    def _upload_to(self, source: Path, folder_id: str, title: str, existing: DriveFile | None,
                   local_md5: str | None = None) -> DriveFile:
        local_md5 = local_md5 or file_md5(source)

        def run() -> DriveFile:
            if existing is not None:
                item = self.drive.CreateFile({"id": existing.id})
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
        """Move a file to Drive's trash (recoverable there for 30 days)."""
        def run() -> None:
            self.drive.CreateFile({"id": file_id}).Trash()

        self._call(run, f"moving {file_id} to the trash")

    def sync_up(self, local_dir: str | os.PathLike, folder: str | os.PathLike) -> SyncResult:
        """Upload the files below `local_dir` whose size or md5 differ on Drive.

        Nothing on Drive is deleted; sub-folders are created as needed.
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
            self._upload_to(entry, folder_id, entry.name, there, local_md5)
            result.transferred.append(entry.name)
        return result

    def sync_down(self, folder: str | os.PathLike, local_dir: str | os.PathLike, *,
                  progress: bool = False) -> SyncResult:
        """Download the files in Drive's `folder` whose size or md5 differ locally.

        Local files that are not on Drive are kept; each download is atomic.
        """
        folder_id = self._require_folder(folder)
        return self._sync_down(folder_id, Path(local_dir), progress)

    def download_folder(self, folder_id: str, dest: str | os.PathLike, *, progress: bool = False) -> Path:
        """Download the Drive folder with this id into dest/<its name>; returns that folder."""
        meta = self.metadata(folder_id)
        if not meta.is_folder:
            raise ConfigError(f"{folder_id} is a file ({meta.name!r}), not a folder; use download().")
        target = Path(dest) / Path(meta.name).name
        self._sync_down(folder_id, target, progress)
        return target

    def _sync_down(self, folder_id: str, target: Path, progress: bool) -> SyncResult:
        target.mkdir(parents=True, exist_ok=True)
        result = SyncResult()
        for item in sorted(self._children(folder_id), key=lambda f: f.name):
            local = target / Path(item.name).name
            if item.is_folder:
                result.merge(self._sync_down(item.id, local, progress), local.name)
                continue
            if item.md5 is None:  # a Google Docs file: no content to copy
                result.skipped.append(local.name)
                continue
            if local.is_file() and local.stat().st_size == item.size and file_md5(local) == item.md5:
                result.unchanged.append(local.name)
                continue
            self._call(lambda item=item, local=local: self._download_once(item, local, progress),
                       f"downloading {item.name!r}")
            result.transferred.append(local.name)
        return result


# --------------------------------------------------------------------------- entry points

_default: DriveClient | None = None
_default_lock = threading.Lock()


def connect_drive(
    service_account: str | os.PathLike | None = None,
    *,
    settings_file: str | os.PathLike | None = None,
    credentials: Any = None,
    root: str | None = None,
    retries: int = 5,
) -> DriveClient:
    """Sign in to the Drive API and return a DriveClient (needs the `drive-api` extra).

    In Colab, with no arguments, it signs in as you (google.colab.auth). Elsewhere
    pass a service-account JSON key (or set COLABKIT_DRIVE_SERVICE_ACCOUNT), or a
    pydrive2 settings file (or set COLABKIT_DRIVE_SETTINGS). `root` is the id of
    the folder that paths start from (default: My Drive, or COLABKIT_DRIVE_ROOT).
    """
    gauth, account = authenticate(service_account, settings_file=settings_file, credentials=credentials)
    return DriveClient(gauth, account=account, root=root, retries=retries)


def default_client() -> DriveClient:
    """One shared client for this process, configured from the environment (or Colab)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = connect_drive()
        return _default


def set_default_client(client: DriveClient | None) -> None:
    """Use `client` for fetch(private=True) and checkpoint remotes (None: sign in again when needed)."""
    global _default
    with _default_lock:
        _default = client


def is_signed_in() -> bool:
    """True when Drive API credentials are in use or configured (and pydrive2 is installed)."""
    if _default is not None:
        return True
    if not (os.environ.get(ENV_SERVICE_ACCOUNT) or os.environ.get(ENV_SETTINGS)):
        return False
    try:
        _require_pydrive2()
    except MissingDependencyError:
        return False
    return True


# --------------------------------------------------------------------------- checkpoint mirror

REMOTE_PREFIX = "drive:"


def parse_remote(remote: str) -> str:
    """The Drive folder path of a `remote="drive:<folder>"` setting."""
    folder = remote[len(REMOTE_PREFIX):].strip().strip("/") if isinstance(remote, str) else ""
    if not isinstance(remote, str) or not remote.startswith(REMOTE_PREFIX) or not folder:
        raise ConfigError(
            f"remote={remote!r} is not understood; give 'drive:<folder>', e.g. "
            "remote='drive:ML2022/checkpoints' (a folder path in My Drive, created if needed)."
        )
    _segments(folder)  # refuses '..'
    return folder


class CheckpointMirror:
    """Keeps a Drive folder a copy of a checkpoint folder, in a background thread.

    Each round uploads the files the local manifest lists (those not already on
    Drive with the same size and md5), then the manifest itself, then moves
    checkpoint files the manifest no longer lists to Drive's trash: Drive only
    ever lists complete files. A failed round is logged and kept in
    `last_error`; the next `schedule()` (the next save) tries again. Local files
    are only read, never changed.

    `describe(manifest_bytes)` returns ([(file, sha256 or None), ...] oldest
    first, the best file or None); `is_checkpoint(name)` says which remote files
    the mirror may retire.
    """

    def __init__(self, folder: str, directory: Path, *, manifest_name: str,
                 describe: Callable[[bytes], tuple[list[tuple[str, str | None]], str | None]],
                 is_checkpoint: Callable[[str], bool], client: DriveClient | None = None) -> None:
        _require_pydrive2()
        self.folder = folder
        self.directory = Path(directory)
        self.manifest_name = manifest_name
        self._describe = describe
        self._is_checkpoint = is_checkpoint
        # sign in now, in the caller's thread: Colab's sign-in cannot run in the background one
        self.client = client if client is not None else default_client()
        self._cond = threading.Condition()
        self._pending = False
        self._thread: threading.Thread | None = None
        self._sent: dict[str, tuple[int, int, str]] = {}  # file -> (size, mtime_ns, md5) on Drive
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"CheckpointMirror({REMOTE_PREFIX}{self.folder})"

    def schedule(self) -> None:
        """Ask for a mirror round soon; returns at once."""
        with self._cond:
            self._pending = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="colabkit-drive-mirror", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the pending rounds are done; the last round's error, or None."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and self._thread is None, timeout)
            return self.last_error

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                self._pending = False
            try:
                self.mirror_once()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - logged and retried on the next save
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Mirroring checkpoints to Drive (%s%s) failed; the local checkpoints are "
                            "safe and the next save tries again. %s", REMOTE_PREFIX, self.folder, self.last_error)

    def mirror_once(self) -> None:
        """One round, in the calling thread."""
        client = self.client
        for _ in range(5):  # a checkpoint retired while uploading: read the newer manifest
            try:
                data = (self.directory / self.manifest_name).read_bytes()
            except FileNotFoundError:
                return
            files, _best = self._describe(data)
            folder_id = client.ensure_folder(self.folder)
            remote = {f.name: f for f in client._children(folder_id) if not f.is_folder}
            try:
                for name, _sha256 in files:
                    self._put(client, self.directory / name, folder_id, remote.get(name))
            except FileNotFoundError:
                continue
            with tempfile.TemporaryDirectory(prefix="colabkit-mirror-") as scratch:
                copy = Path(scratch) / self.manifest_name
                copy.write_bytes(data)  # exactly the manifest whose files were just sent
                client._upload_to(copy, folder_id, self.manifest_name, remote.get(self.manifest_name))
            listed = {name for name, _ in files}
            for name, item in remote.items():
                if name not in listed and name != self.manifest_name and self._is_checkpoint(name):
                    client.trash(item.id)
            return

    def _put(self, client: DriveClient, path: Path, folder_id: str, there: DriveFile | None) -> None:
        st = path.stat()
        sent = self._sent.get(path.name)
        if there is not None and sent is not None and sent == (st.st_size, st.st_mtime_ns, there.md5):
            return
        md5 = file_md5(path)
        if there is None or there.size != st.st_size or there.md5 != md5:
            client._upload_to(path, folder_id, path.name, there, md5)
        self._sent[path.name] = (st.st_size, st.st_mtime_ns, md5)

    def restore(self, progress: bool = True) -> list[Path]:
        """Download the newest checkpoint that verifies (and the best one) into the empty folder.

        Each file is checked against Drive's md5 while it arrives and against the
        sha256 in Drive's copy of the manifest; a file that fails is removed and
        the next older one is tried. Returns the files written (none: nothing on Drive).
        """
        client = self.client
        folder_id = client._folder_id(self.folder, create=False)
        if folder_id is None:
            return []
        remote = {f.name: f for f in client._children(folder_id) if not f.is_folder}
        self.directory.mkdir(parents=True, exist_ok=True)
        files: list[tuple[str, str | None]] = []
        best = None
        if self.manifest_name in remote:
            with tempfile.TemporaryDirectory(prefix="colabkit-mirror-") as scratch:
                copy = Path(scratch) / self.manifest_name
                meta = remote[self.manifest_name]
                client._call(lambda: client._download_once(meta, copy, False), "reading the remote manifest")
                try:
                    files, best = self._describe(copy.read_bytes())
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("Drive's copy of %s is damaged (%s); using the files alone.", self.manifest_name, exc)
        if not files:
            files = [(name, None) for name in sorted(remote) if self._is_checkpoint(name)]
        restored: list[Path] = []
        newest_done = False
        for name, sha256 in reversed(files):
            if newest_done and name != best:
                continue
            path = self._fetch_verified(client, remote.get(name), sha256, progress)
            if path is not None:
                restored.append(path)
                newest_done = True
                if best is None or any(p.name == best for p in restored):
                    break
        if restored:
            log.info("Drive: restored %s from %s%s", [p.name for p in restored], REMOTE_PREFIX, self.folder)
        return restored

    def _fetch_verified(self, client: DriveClient, item: DriveFile | None, sha256: str | None,
                        progress: bool) -> Path | None:
        if item is None or item.md5 is None:
            return None
        target = self.directory / item.name
        client._call(lambda: client._download_once(item, target, progress), f"downloading {item.name!r}")
        if sha256 is not None:
            algorithm, _, digest = sha256.rpartition(":")  # "xxh3_128:<hex>", "sha256:<hex>" or bare sha256 hex
            algorithm = algorithm or "sha256"
            if _fsio.hash_file(target, algorithm)[algorithm] != digest:
                target.unlink()
                log.warning("Drive's copy of %s does not match the manifest's sha256; trying an older one.",
                            item.name)
                return None
        st = target.stat()
        self._sent[item.name] = (st.st_size, st.st_mtime_ns, item.md5)
        return target

