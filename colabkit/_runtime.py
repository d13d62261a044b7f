"""Where am I: Colab, a Kaggle kernel or a local machine, and where its folders are.

Everything here reads the environment on each call (never cached), so a test or
a user can move the Colab VM, the Kaggle layout, the Drive stand-in and the
cache anywhere:

    COLABKIT_RUNTIME      "colab", "kaggle" or "local": overrides detection
    COLABKIT_CONTENT_DIR  the Colab VM root (default /content)
    COLABKIT_KAGGLE_DIR   the Kaggle root (default /kaggle): <it>/working, <it>/input
    COLABKIT_DRIVE_DIR    locally: the folder that stands in for MyDrive
    COLABKIT_CACHE_DIR    local fast-disk cache for staging and downloads
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ConfigError

COLAB_HOSTNAME_FILE = Path("/var/colab/hostname")
DEFAULT_LOCAL_DRIVE = "~/colabkit-drive"
RUNTIMES = ("colab", "kaggle", "local")
HOST_NAMES = {"colab": "Google Colab", "kaggle": "Kaggle", "local": "local machine"}


def runtime() -> str:
    """Which host this process runs on: "colab", "kaggle" or "local".

    COLABKIT_RUNTIME overrides detection. Colab is recognised by `google.colab`
    in sys.modules, COLAB_RELEASE_TAG (inherited by `!python` subprocesses) or
    /var/colab/hostname; Kaggle by KAGGLE_KERNEL_RUN_TYPE or an existing
    <COLABKIT_KAGGLE_DIR or /kaggle>/working folder.

    Returns:
        One of RUNTIMES.

    Raises:
        ConfigError: COLABKIT_RUNTIME holds something else.
    """
    override = os.environ.get("COLABKIT_RUNTIME", "").strip().lower()
    if override:
        if override not in RUNTIMES:
            raise ConfigError(
                f"COLABKIT_RUNTIME={override!r} is not understood; "
                "set it to 'colab', 'kaggle' or 'local', or unset it to auto-detect."
            )
        return override
    if (
        "google.colab" in sys.modules
        or os.environ.get("COLAB_RELEASE_TAG")
        or COLAB_HOSTNAME_FILE.exists()
    ):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or kaggle_working_dir().is_dir():
        return "kaggle"
    return "local"


def in_colab() -> bool:
    """Whether this process runs in Google Colab.

    True in a Colab kernel and in a `!python` subprocess started from it, so a
    script knows it must use (never make) the notebook's Drive mount.

    Returns:
        True in Colab, False on Kaggle or a local machine.

    Raises:
        ConfigError: COLABKIT_RUNTIME is set to something other than
            'colab', 'kaggle' or 'local'.
    """
    return runtime() == "colab"


def in_kaggle() -> bool:
    """True inside a Kaggle kernel (or with COLABKIT_RUNTIME=kaggle)."""
    return runtime() == "kaggle"


def kaggle_dir() -> Path:
    """The Kaggle root (/kaggle unless COLABKIT_KAGGLE_DIR says otherwise)."""
    return Path(os.environ.get("COLABKIT_KAGGLE_DIR") or "/kaggle").expanduser().absolute()


def kaggle_working_dir() -> Path:
    """/kaggle/working: what Kaggle keeps (as the notebook's output) when it is saved."""
    return kaggle_dir() / "working"


def kaggle_input_dir() -> Path:
    """/kaggle/input: the read-only datasets attached to a Kaggle notebook."""
    return kaggle_dir() / "input"


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
    """Where projects live on this runtime: MyDrive in Colab, /kaggle/working on
    Kaggle, the local stand-in elsewhere."""
    host = runtime()
    if host == "colab":
        return colab_drive_dir()
    return kaggle_working_dir() if host == "kaggle" else local_drive_dir()


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
    """True when this runtime's Drive folder (or Kaggle's working folder) is usable right now."""
    return drive_dir().is_dir()


def is_within(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies below it (no filesystem access)."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents
