"""Credentials for the Drive API: signing in from Colab, a service-account key, a pydrive2 settings file.

Looked for in this order: `credentials=` (ready google-auth credentials),
`service_account=` (a JSON key file), `settings_file=` (a pydrive2
settings.yaml), `secret=` (the name of a Colab secret holding a key's JSON),
then the environment variables COLABKIT_DRIVE_SERVICE_ACCOUNT and
COLABKIT_DRIVE_SETTINGS, then, in Colab, the secret
COLABKIT_DRIVE_SERVICE_ACCOUNT in the Secrets panel (when the notebook may
read it), then Colab's own sign-in (google.colab.auth and the default
credentials).

Secrets never reach a log line, a repr or an error message; a token file
written through a settings file is kept at mode 0600.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _colab, _runtime
from ..errors import DriveAPIAuthError
from .config import ENV_SERVICE_ACCOUNT, ENV_SETTINGS, SCOPES, SECRET_SERVICE_ACCOUNT, require_pydrive2

if TYPE_CHECKING:  # pragma: no cover
    from pydrive2.auth import GoogleAuth

log = logging.getLogger(__name__)

_KEY_STEPS = ("Google Cloud console → IAM & Admin → Service accounts → your account → Keys → "
              "Add key → JSON")
_SECRET_STEPS = (f"In Colab open the key icon (Secrets) in the left bar → Add new secret → name "
                 f"{SECRET_SERVICE_ACCOUNT}, value: the whole text of the JSON key → switch on "
                 "'Notebook access' → run colabkit.connect_drive() again")


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
    secret: str | None = None,
) -> tuple[GoogleAuth, str]:
    """Sign in to the Drive API with the first credentials found (see the module docstring).

    Args:
        service_account: path of a service-account JSON key file.
        settings_file: path of a pydrive2 settings.yaml.
        credentials: ready google-auth credentials.
        secret: name of a Colab secret holding a service-account key's JSON text.

    Returns:
        An authorized pydrive2 GoogleAuth and a printable name of the account
        (never a secret).

    Raises:
        MissingDependencyError: pydrive2 is not installed.
        DriveAPIAuthError: no credentials were found, or they were refused.
    """
    require_pydrive2()
    if credentials is not None:
        return _from_google_auth(credentials, "the given credentials")
    if service_account:
        return _from_service_account(Path(service_account))
    if settings_file:
        return _from_settings_file(Path(settings_file))
    if secret:
        return _from_colab_secret(secret, asked=True)
    if os.environ.get(ENV_SERVICE_ACCOUNT):
        return _from_service_account(Path(os.environ[ENV_SERVICE_ACCOUNT]), ENV_SERVICE_ACCOUNT)
    if os.environ.get(ENV_SETTINGS):
        return _from_settings_file(Path(os.environ[ENV_SETTINGS]), ENV_SETTINGS)
    if _runtime.in_colab():
        found = _from_colab_secret(SECRET_SERVICE_ACCOUNT, asked=False)
        return found if found is not None else _from_colab()
    raise DriveAPIAuthError(
        "No credentials for the Drive API. In Colab, run this from a notebook cell and "
        "sign in when asked (or store a service-account key in the Secrets panel as "
        f"{SECRET_SERVICE_ACCOUNT}). Elsewhere, create a service-account JSON key (README, "
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


def _from_colab_secret(name: str, *, asked: bool) -> tuple[GoogleAuth, str] | None:
    """A service-account key kept in Colab's Secrets panel under `name`.

    Not found (or not readable by this notebook): None when the default name
    was only tried, DriveAPIAuthError with the steps when `name` was asked for.
    """
    value, problem = _colab.secret(name)
    if value is None:
        why = {
            _colab.SECRET_MISSING: f"there is no secret named {name!r} in Colab's Secrets panel (or it is empty)",
            _colab.SECRET_NO_ACCESS: f"this notebook has no access to the secret {name!r}",
            _colab.SECRET_TIMEOUT: f"Colab did not answer when asked for the secret {name!r}",
        }.get(problem, "Colab's Secrets panel (google.colab.userdata) is not available here")
        if not asked:
            log.info("Drive API: no service-account key from Colab secrets (%s); signing in as you.", why)
            return None
        raise DriveAPIAuthError(f"The Drive API key could not be read: {why}. {_SECRET_STEPS}.")
    try:
        info = json.loads(value)
    except ValueError:
        info = None
    origin = f"The Colab secret {name!r}"
    _check_key(info, origin, fix=f"Paste the whole text of the JSON key as the secret's value ({_SECRET_STEPS})")
    return _service_auth({"client_json_dict": info}, info, origin)


def _check_key(info: Any, origin: str, fix: str) -> None:
    """Refuse anything but a service-account key, without showing what it holds."""
    if not isinstance(info, dict) or info.get("type") != "service_account" or not info.get("client_email"):
        kind = info.get("type") if isinstance(info, dict) else None
        raise DriveAPIAuthError(
            f"{origin} is not a service-account key (its type is {kind!r}). {fix}; for an "
            "OAuth client or a user token, use a pydrive2 settings file instead."
        )


def _service_auth(service_config: dict, info: dict, origin: str) -> tuple[GoogleAuth, str]:
    _keep_grants_out_of_logs()
    gauth = _new_auth({
        "client_config_backend": "service",
        "service_config": service_config,
        "oauth_scope": SCOPES,
        "save_credentials": False,
    })
    try:
        gauth.ServiceAuth()
    except Exception as exc:  # a malformed private key, a wrong field...
        raise DriveAPIAuthError(
            f"{origin} could not be loaded as a service-account key ({type(exc).__name__}). "
            "Create a new JSON key for the service account and use it."
        ) from None
    # the credentials object now holds the key; no settings dict keeps a second copy
    for config in (gauth.client_config, gauth.settings.get("service_config") or {}):
        config.pop("client_json_dict", None)
    return gauth, str(info["client_email"])


class _DropSignedGrants(logging.Filter):
    """oauth2client logs each signed JWT grant at DEBUG; it is a credential for an hour."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _keep_grants_out_of_logs() -> None:
    logger = logging.getLogger("oauth2client.crypt")
    if not any(isinstance(f, _DropSignedGrants) for f in logger.filters):
        logger.addFilter(_DropSignedGrants())


def _from_service_account(path: Path, env_var: str | None = None) -> tuple[GoogleAuth, str]:
    origin = f" (from {env_var})" if env_var else ""
    path = path.expanduser()
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DriveAPIAuthError(
            f"The service-account key {path}{origin} does not exist. Check the path, or "
            f"download a JSON key: {_KEY_STEPS}."
        ) from None
    except (OSError, ValueError):
        raise DriveAPIAuthError(
            f"{path}{origin} is not a readable JSON key file. Download the service account's "
            "key again as JSON (Keys → Add key → JSON) and point to that file."
        ) from None
    _check_key(info, f"{path}{origin}",
               fix="Use the JSON key of a service account (IAM & Admin → Service accounts → Keys → Add key → JSON)")
    return _service_auth({"client_json_file_path": str(path)}, info, f"The service-account key {path}{origin}")


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
            "https://docs.iterative.ai/PyDrive2/oauth/ for its keys, correct it and run this again."
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
