"""Mount and flush Google Drive; on Kaggle /kaggle/working, locally a folder stands in."""

from __future__ import annotations

import os
from pathlib import Path

from . import _colab, _runtime
from ._fsio import os_error_advice
from .errors import (
    DriveError,
    DriveNotMountedError,
    MountError,
    MountpointNotEmptyError,
    MountTimeoutError,
    NotInNotebookError,
)

_NOT_IN_NOTEBOOK = (
    "Drive can only be mounted from a notebook cell, not from a `!python` script. "
    "Run `import colabkit; colabkit.mount_drive()` (or `%colab_setup PROJECT`) in a "
    "cell first; scripts started afterwards find and use that mount."
)


def mount_drive(force_remount: bool = False, timeout_ms: int = 120000, readonly: bool = False) -> Path:
    """Mount Google Drive (in Colab) and return the MyDrive folder.

    Idempotent: an existing mount is reused without a second prompt, so
    rerunning the cell is safe. On Kaggle there is no Drive: the folder Kaggle
    keeps when the notebook is saved (/kaggle/working) is returned. Elsewhere
    the local stand-in (COLABKIT_DRIVE_DIR, default ~/colabkit-drive) is
    created and returned, so the same notebook runs on a laptop.

    Args:
        force_remount: unmount and mount again (after "Transport endpoint is
            not connected"); the working directory is moved out of Drive first.
        timeout_ms: how long google.colab waits for the mount.
        readonly: mount Drive read-only.

    Returns:
        The MyDrive folder (or its stand-in).

    Raises:
        NotInNotebookError: called from a `!python` subprocess with no mount to reuse.
        MountError: Drive could not be mounted (timeout, files at the mountpoint, ...).
        DriveError: the local stand-in (COLABKIT_DRIVE_DIR) cannot be created.
    """
    host = _runtime.runtime()
    if host != "colab":
        return _ensure_folder(_runtime.drive_dir(), host)  # /kaggle/working, or the local stand-in

    mydrive = _runtime.colab_drive_dir()
    if mydrive.is_dir() and not force_remount:
        return mydrive
    if not _colab.in_ipython():
        if mydrive.is_dir():
            return mydrive
        raise NotInNotebookError(_NOT_IN_NOTEBOOK)
    if force_remount:
        _leave_drive()
    return _mount(timeout_ms=timeout_ms, force_remount=force_remount, readonly=readonly)


def _ensure_folder(folder: Path, host: str) -> Path:
    """Create the folder standing in for MyDrive, or say in one line why it cannot be."""
    what = ("the Kaggle working folder" if host == "kaggle"
            else "COLABKIT_DRIVE_DIR, the local folder standing in for Drive,")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        cause, fix = os_error_advice(exc)
        raise DriveError(
            f"Could not use {folder} as {what} because {cause} ({exc.strerror or exc}). "
            f"To fix: set COLABKIT_DRIVE_DIR to a folder you can write to, or {fix}."
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DriveError(
            f"{folder} ({what}) is not writable. To fix: set COLABKIT_DRIVE_DIR to a folder "
            "you can write to, or fix its permissions."
        )
    return folder


def _leave_drive() -> None:
    """Step out of the mount so a remount does not strand the shell.

    A working directory inside the old mount turns into "Transport endpoint is
    not connected" for every later command.
    """
    try:
        cwd = Path(os.getcwd())
    except OSError:  # the cwd is already a dead mount
        cwd = None
    if cwd is None or _runtime.is_within(cwd, _runtime.mountpoint()):
        os.chdir(_runtime.content_dir() if _runtime.content_dir().is_dir() else Path.home())


def _mount(*, timeout_ms: int, force_remount: bool, readonly: bool) -> Path:
    drive = _colab.drive()
    point = _runtime.mountpoint()
    try:
        drive.mount(str(point), force_remount=force_remount, timeout_ms=timeout_ms, readonly=readonly)
    except ValueError as exc:
        raise _translate_mount_error(exc, timeout_ms) from exc
    except AttributeError as exc:  # get_ipython() is None inside google.colab
        raise NotInNotebookError(_NOT_IN_NOTEBOOK) from exc
    mydrive = _runtime.colab_drive_dir()
    if not mydrive.is_dir():
        raise MountError(
            f"drive.mount returned but {mydrive} does not exist. "
            "Run colabkit.mount_drive(force_remount=True), or restart the runtime "
            "(Runtime → Restart session) and mount again."
        )
    return mydrive


def _translate_mount_error(exc: ValueError, timeout_ms: int) -> MountError:
    message = str(exc)
    if "timeout" in message.lower() or "timed out" in message.lower():
        return MountTimeoutError(
            f"Mounting Drive timed out ({message}). Try colabkit.mount_drive(timeout_ms="
            f"{timeout_ms * 2}); if it keeps timing out, move files out of the top level of "
            "My Drive into folders (a crowded Drive root slows the first read)."
        )
    if "already contain files" in message:
        return MountpointNotEmptyError(
            f"{_runtime.mountpoint()} already contains files, so Drive cannot be mounted "
            "over it (they were probably written before mounting). Move them elsewhere "
            "(e.g. `!mv /content/drive /content/drive_old`) and mount again."
        )
    return MountError(
        f"Mounting Drive failed: {message}. Run colabkit.mount_drive(force_remount=True); "
        "if that fails too, restart the runtime (Runtime → Restart session)."
    )


def require_drive() -> Path:
    """MyDrive for a process that cannot mount: the existing mount or a clear error.

    Returns:
        The MyDrive folder (on Kaggle /kaggle/working, locally the stand-in).

    Raises:
        DriveNotMountedError: in Colab, Drive is not mounted.
        DriveError: the local stand-in cannot be created.
    """
    if not _runtime.in_colab():
        return mount_drive()
    mydrive = _runtime.colab_drive_dir()
    if mydrive.is_dir():
        return mydrive
    raise DriveNotMountedError(
        f"Google Drive is not mounted at {_runtime.mountpoint()}. Mount it from a notebook "
        "cell first (`import colabkit; colabkit.mount_drive()`), then run this again."
    )


def flush_drive(timeout_ms: int = 24 * 60 * 60 * 1000) -> None:
    """Push pending writes to Drive and unmount it (Colab), so nothing is lost at the end.

    Drive syncs in the background: files written just before a runtime ends can
    be missing on Drive unless flushed. Run it as the last cell of a session;
    mount again with mount_drive() to keep working. On Kaggle and locally there
    is nothing to flush and it says so. It returns None, so a notebook cell
    shows only its message.

    Args:
        timeout_ms: how long to wait for the upload to finish.

    Raises:
        MountError: google.colab could not flush (files may be missing on Drive).
    """
    host = _runtime.runtime()
    if host != "colab":
        where = ("/kaggle/working is saved with the notebook (Save Version)" if host == "kaggle"
                 else f"{_runtime.local_drive_dir()} is a local folder standing in for Drive")
        print(f"Not in Colab: {where}; nothing to flush.")
        return None
    _leave_drive()
    try:
        _colab.drive().flush_and_unmount(timeout_ms=timeout_ms)
    except ValueError as exc:
        raise MountError(
            f"Flushing Drive failed ({exc}). Files written in the last minutes may be missing "
            "on Drive; keep the runtime alive a little longer and call colabkit.flush_drive() again."
        ) from exc
    return None
