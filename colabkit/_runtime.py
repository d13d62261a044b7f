"""Where am I: Colab or a local machine, and where its folders are.

Everything here reads the environment on each call (never cached), so a test or
a user can move the Colab VM, the Drive stand-in and the cache anywhere:

    COLABKIT_RUNTIME      "colab" or "local": overrides detection
    COLABKIT_CONTENT_DIR  the Colab VM root (default /content)
    COLABKIT_DRIVE_DIR    outside Colab: the folder that stands in for MyDrive
    COLABKIT_CACHE_DIR    local fast-disk cache for staging and downloads
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ConfigError

COLAB_HOSTNAME_FILE = Path("/var/colab/hostname")
DEFAULT_LOCAL_DRIVE = "~/colabkit-drive"


def in_colab() -> bool:
    """True inside a Colab runtime: its kernel, or a `!python` subprocess of it."""
    override = os.environ.get("COLABKIT_RUNTIME", "").strip().lower()
    if override:
        if override not in ("colab", "local"):
            raise ConfigError(
                f"COLABKIT_RUNTIME={override!r} is not understood; "
                "set it to 'colab' or 'local', or unset it to auto-detect."
            )
        return override == "colab"
    return (
        "google.colab" in sys.modules
        or bool(os.environ.get("COLAB_RELEASE_TAG"))
        or COLAB_HOSTNAME_FILE.exists()
    )


def colab_release() -> str | None:
    """Colab's release tag (COLAB_RELEASE_TAG), when the runtime sets one."""
    return os.environ.get("COLAB_RELEASE_TAG") or None


def content_dir() -> Path:
    """The Colab VM's root folder (/content unless COLABKIT_CONTENT_DIR says otherwise)."""
    return Path(os.environ.get("COLABKIT_CONTENT_DIR") or "/content").expanduser()


def mountpoint() -> Path:
    """Where google.colab mounts Drive: <content>/drive."""
    return content_dir() / "drive"


def colab_drive_dir() -> Path:
    """MyDrive inside the Colab mount: <content>/drive/MyDrive."""
    return mountpoint() / "MyDrive"


def local_drive_dir() -> Path:
    """Outside Colab, the folder that stands in for MyDrive."""
    return Path(os.environ.get("COLABKIT_DRIVE_DIR") or DEFAULT_LOCAL_DRIVE).expanduser().absolute()


def drive_dir() -> Path:
    """MyDrive for this runtime: the Colab mount, or the local stand-in."""
    return colab_drive_dir() if in_colab() else local_drive_dir()


def cache_dir() -> Path:
    """The fast local disk for staged copies and downloads.

    COLABKIT_CACHE_DIR wins; in Colab the VM's own disk (<content>/colabkit-cache,
    not on Drive); elsewhere $XDG_CACHE_HOME/colabkit or ~/.cache/colabkit.
    """
    configured = os.environ.get("COLABKIT_CACHE_DIR")
    if configured:
        return Path(configured).expanduser().absolute()
    if in_colab():
        return content_dir() / "colabkit-cache"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser().absolute() / "colabkit"


def is_drive_mounted() -> bool:
    """True when this runtime's Drive folder is usable right now."""
    return drive_dir().is_dir()


def is_within(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies below it (no filesystem access)."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents
