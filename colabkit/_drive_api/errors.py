"""Drive's failures as colabkit errors: HTTP statuses and reasons, refused tokens, lost connections.

`translate(exc, what, account=..., retries=...)` says whether a failure is
worth retrying and which DriveAPIError (subclass) to raise; every message names
what was being done and ends with the fix. The 403 reasons come from Drive's
"Resolve errors" guide.
"""

from __future__ import annotations

import json

from ..errors import (
    ColabkitError,
    DriveAPIAuthError,
    DriveAPIError,
    DriveAPINotFoundError,
    DriveAPIPermissionError,
    DriveAPIQuotaError,
)
from .config import ENV_ROOT

RETRYABLE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}
QUOTA_REASONS = RETRYABLE_REASONS - {"backendError", "internalError"} | {
    "downloadQuotaExceeded", "quotaExceeded", "dailyLimitExceeded", "sharingRateLimitExceeded",
    "storageQuotaExceeded", "teamDriveFileLimitExceeded", "numChildrenInNonRootLimitExceeded",
}
AUTH_REASONS = {"accessNotConfigured", "authError", "invalidCredentials", "usageLimits"}


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


def translate(exc: BaseException, what: str, *, account: str, retries: int
              ) -> tuple[bool, ColabkitError | None]:
    """(retry?, the colabkit error) for an exception raised while doing `what`."""
    import socket
    import ssl

    import httplib2

    if isinstance(exc, ColabkitError):
        return False, exc
    details = _http_details(exc)
    if details is not None:
        return _translate_http(*details, what=what, account=account, retries=retries)
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


def _translate_http(status: int | None, reason: str, message: str, *, what: str, account: str,
                    retries: int) -> tuple[bool, ColabkitError]:
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
            hint = (f"Drive kept limiting the rate after {retries} retries; wait a few "
                    "minutes and run this again, with fewer transfers at once.")
        else:
            hint = "Wait until the quota resets (usually within 24 hours) and run this again."
        return retry, DriveAPIQuotaError(f"Drive's quota stopped {what} ({said}). {hint}")
    if status == 404:
        return False, DriveAPINotFoundError(
            f"Drive has nothing at that id or path while {what} ({said}). Check the id (the part "
            "after /d/ in a share link); if the file was shared with you, make sure it was "
            f"shared with the account in use ({account})."
        )
    if status == 403:
        return False, DriveAPIPermissionError(
            f"The account {account} may not do this while {what} ({said}). Ask the owner "
            "to share the file or folder with that account (Share → add its email), then run "
            "this again."
        )
    if status is not None and status >= 500:
        return True, DriveAPIError(
            f"Google Drive failed on its side while {what} ({said}), also after "
            f"{retries} retries. Try again in a few minutes."
        )
    return False, DriveAPIError(
        f"Drive answered with an error while {what} ({said}). Its message says what it refused "
        "(often a malformed id or folder path): correct that and run this again."
    )
