"""What the Drive API part is configured by: the extra, its scopes, the environment and secret names.

Kept apart so that auth, error translation, the client and the mirror share
one spelling of each name without importing one another.
"""

from __future__ import annotations

from ..errors import MissingDependencyError

INSTALL_HINT = 'pip install "colabkit-ml[drive-api]"'
SCOPES = ["https://www.googleapis.com/auth/drive"]

ENV_SERVICE_ACCOUNT = "COLABKIT_DRIVE_SERVICE_ACCOUNT"  # a path to a service-account JSON key
ENV_SETTINGS = "COLABKIT_DRIVE_SETTINGS"                # a path to a pydrive2 settings.yaml
ENV_ROOT = "COLABKIT_DRIVE_ROOT"                        # the id of the folder paths start from
SECRET_SERVICE_ACCOUNT = "COLABKIT_DRIVE_SERVICE_ACCOUNT"  # Colab Secrets: the key's JSON text

FOLDER_MIME = "application/vnd.google-apps.folder"


def require_pydrive2() -> None:
    """Import pydrive2, or say how to install the extra.

    Raises:
        MissingDependencyError: pydrive2 is not installed.
    """
    try:
        import pydrive2.auth  # noqa: F401
        import pydrive2.drive  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"The Drive API needs pydrive2, which is not installed ({exc}). "
            f'Install the extra with `{INSTALL_HINT}` (in Colab: `!{INSTALL_HINT}`), '
            "then run this again."
        ) from None
