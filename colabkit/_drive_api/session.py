"""Signing in: `connect_drive()` for the user, and one shared client per process.

fetch(private=True) and CheckpointManager(remote="drive:…") use the default
client, which signs in on first use from the environment (or Colab) unless
`set_default_client` gave it one.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..errors import MissingDependencyError
from .auth import authenticate
from .client import DriveClient
from .config import ENV_SERVICE_ACCOUNT, ENV_SETTINGS, require_pydrive2

_default: DriveClient | None = None
_default_lock = threading.Lock()


def connect_drive(
    service_account: str | os.PathLike | None = None,
    *,
    settings_file: str | os.PathLike | None = None,
    credentials: Any = None,
    secret: str | None = None,
    root: str | None = None,
    retries: int = 5,
) -> DriveClient:
    """Sign in to the Drive API and return a DriveClient (needs the `drive-api` extra).

    With no arguments it uses, in order: the key file named by
    COLABKIT_DRIVE_SERVICE_ACCOUNT, the settings file named by
    COLABKIT_DRIVE_SETTINGS, and in Colab a service-account key stored in the
    Secrets panel as COLABKIT_DRIVE_SERVICE_ACCOUNT (when this notebook may read
    it), else your own Google account (Colab asks you to allow access once).
    Keys and tokens never appear in a repr, a log line or an error message.

    Args:
        service_account: path of a service-account JSON key file.
        settings_file: path of a pydrive2 settings.yaml (an OAuth client, or a
            service account configured there).
        credentials: ready google-auth credentials.
        secret: name of the Colab secret holding a service-account key's JSON
            text; asked for explicitly, a missing or unshared secret is an error.
        root: the id of the folder that paths start from (default: My Drive,
            or COLABKIT_DRIVE_ROOT); for a service account, a folder shared with it.
        retries: how many times transient failures (rate limits, 5xx, dropped
            connections) are retried.

    Returns:
        A signed-in DriveClient.

    Raises:
        MissingDependencyError: the drive-api extra is not installed.
        DriveAPIAuthError: no credentials were found, or Google refused them;
            the message says how to get or fix them.
    """
    gauth, account = authenticate(service_account, settings_file=settings_file, credentials=credentials,
                                  secret=secret)
    return DriveClient(gauth, account=account, root=root, retries=retries)


def default_client() -> DriveClient:
    """One shared client for this process, signed in on first use from the environment (or Colab).

    Returns:
        The client that fetch(private=True) and checkpoint remotes use.

    Raises:
        MissingDependencyError: the drive-api extra is not installed.
        DriveAPIAuthError: no credentials were found, or Google refused them.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = connect_drive()
        return _default


def set_default_client(client: DriveClient | None) -> None:
    """Use `client` for fetch(private=True) and checkpoint remotes.

    Args:
        client: the client to share, or None to sign in again on the next use.
    """
    global _default
    with _default_lock:
        _default = client


def is_signed_in() -> bool:
    """Whether Drive API credentials are in use or configured (and pydrive2 is installed).

    Returns:
        True when a default client exists, or a key or settings file is named
        in the environment; nothing is signed in to find out.
    """
    if _default is not None:
        return True
    if not (os.environ.get(ENV_SERVICE_ACCOUNT) or os.environ.get(ENV_SETTINGS)):
        return False
    try:
        require_pydrive2()
    except MissingDependencyError:
        return False
    return True
