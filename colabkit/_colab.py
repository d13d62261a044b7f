"""The only module that imports google.colab.

Tests put a fake `google.colab` package on sys.path; everything else in
colabkit goes through these functions.
"""

from __future__ import annotations

from types import ModuleType

# why secret() found no value
SECRET_MISSING = "missing"        # no secret of that name in the Secrets panel
SECRET_NO_ACCESS = "no-access"    # it exists, but this notebook was not granted access
SECRET_TIMEOUT = "timeout"        # Colab's frontend did not answer
SECRET_UNAVAILABLE = "unavailable"  # no google.colab.userdata (not in Colab)


def drive() -> ModuleType:
    """google.colab.drive (ImportError outside Colab)."""
    from google.colab import drive as colab_drive

    return colab_drive


def auth() -> ModuleType:
    """google.colab.auth (ImportError outside Colab)."""
    from google.colab import auth as colab_auth

    return colab_auth


def in_ipython() -> bool:
    """True inside an IPython shell (a notebook cell), False in a `!python` child.

    drive.mount needs the notebook's shell; from a script it dies with
    "'NoneType' object has no attribute 'kernel'".
    """
    import sys

    if "IPython" not in sys.modules:  # never imported: no shell is running
        return False
    from IPython import get_ipython

    return get_ipython() is not None


def default_credentials(scopes: list[str]):
    """Colab's user credentials for Google APIs: sign in once, then the default credentials.

    authenticate_user() returns at once when this session is already signed in.
    """
    auth().authenticate_user()
    import google.auth

    credentials, _project = google.auth.default(scopes=scopes)
    return credentials


def secret(name: str) -> tuple[str | None, str | None]:
    """A secret from Colab's Secrets panel: (its value, None), or (None, why not).

    `why` is SECRET_MISSING, SECRET_NO_ACCESS, SECRET_TIMEOUT or
    SECRET_UNAVAILABLE. Colab's own exceptions are told apart by class name
    (NotebookAccessError, SecretNotFoundError, TimeoutException); their text,
    and the value, are never passed on, so callers cannot echo a secret.
    """
    try:
        from google.colab import userdata
    except ImportError:
        return None, SECRET_UNAVAILABLE
    try:
        value = userdata.get(name)
    except Exception as exc:  # noqa: BLE001 - Colab's classes, recognised by name
        kind = type(exc).__name__
        if kind == "NotebookAccessError":
            return None, SECRET_NO_ACCESS
        if kind == "TimeoutException":
            return None, SECRET_TIMEOUT
        return None, SECRET_MISSING if kind == "SecretNotFoundError" else SECRET_UNAVAILABLE
    if not isinstance(value, str) or not value.strip():
        return None, SECRET_MISSING
    return value, None
