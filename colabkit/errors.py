"""Every error colabkit raises, under one root.

    ColabkitError
    ├── ConfigError (ValueError)          bad argument or configuration
    │   ├── ProjectNameError              a project name Drive or the OS rejects
    │   ├── RunConfigError                a run's changed configuration cannot resume its checkpoint
    │   └── UnsafeNameError               a name from outside that is not one safe path part
    ├── BusyError                         another process holds the lock on that file or folder
    ├── RuntimeEnvironmentError           the runtime cannot do what was asked
    │   ├── DeviceError                   asked for a GPU that is not there
    │   ├── NotInNotebookError            mounting from a `!python` subprocess
    │   ├── MissingDependencyError        an optional extra is not installed
    │   └── OutOfMemoryBackoffError       out of memory even at one row per forward pass
    ├── DriveError                        the Drive mount
    │   ├── MountError                    drive.mount failed
    │   │   ├── MountTimeoutError         the initial read of the root folder timed out
    │   │   └── MountpointNotEmptyError   files already sit where Drive goes
    │   └── DriveNotMountedError          a subprocess found no mount to use
    ├── DownloadError                     fetching a dataset
    │   ├── InvalidSourceError (ValueError)  not an id, share link or URL
    │   ├── QuotaExceededError            "Too many users have viewed or downloaded…"
    │   ├── NotPublicError                "Cannot retrieve the public link…"
    │   ├── HTTPStatusError               any other HTTP status
    │   ├── NetworkError                  connection failures after the retries
    │   │   └── DownloadTimeoutError      past fetch's total deadline
    │   ├── HashMismatchError             the data is not what the hash pins
    │   ├── DownloadTooLargeError         larger than fetch's max_size
    │   └── UnexpectedPageError           an HTML page where a data file was expected
    ├── ArchiveError                      extracting an archive
    │   ├── UnsafeArchiveError            a member would escape the target
    │   └── ArchiveTooLargeError          past the size / member caps (bombs)
    ├── StageError                        copying Drive files to the local disk
    ├── CheckpointError                   saving and loading training state
    │   ├── CheckpointWriteError          disk full, quota, permission, too large
    │   ├── UnsafeCheckpointError         a pickle that would run code
    │   ├── NoUsableCheckpointError       none of the checkpoints can be loaded
    │   └── ModelMismatchError            saved weights do not fit the model
    └── DriveAPIError                     the Drive API (pydrive2)
        ├── DriveAPIAuthError             missing, bad or expired credentials
        ├── DriveAPIQuotaError            403 quota / rate limits after retries
        ├── DriveAPINotFoundError         no such file or folder
        └── DriveAPIPermissionError       the account may not read / write it

Every message says what happened and what to do next.
"""

from __future__ import annotations


class ColabkitError(Exception):
    """Root of every error colabkit raises."""


class ConfigError(ColabkitError, ValueError):
    """A bad argument or configuration value."""


class ProjectNameError(ConfigError):
    """A project name that Drive or the operating system rejects."""


class RunConfigError(ConfigError):
    """A run's configuration (or model) changed so that its checkpoint cannot be resumed."""


class UnsafeNameError(ConfigError):
    """A name from outside (URL, Drive title, archive, manifest) that is not one safe path part."""


class BusyError(ColabkitError):
    """Another process holds the lock on a file or folder colabkit wants to change.

    Attributes:
        holder: the pid of the process holding it, when known (else None).
    """

    holder: int | None = None


class RuntimeEnvironmentError(ColabkitError):
    """The runtime cannot do what was asked (no GPU, no notebook, no extra)."""


EnvironmentProblem = RuntimeEnvironmentError  # the 0.1 name; kept for one release


class DeviceError(RuntimeEnvironmentError):
    """A device was asked for that this runtime does not have."""


class NotInNotebookError(RuntimeEnvironmentError):
    """Mounting Drive needs the notebook kernel; a subprocess cannot do it."""


class MissingDependencyError(RuntimeEnvironmentError, ImportError):
    """An optional extra is not installed."""


class OutOfMemoryBackoffError(RuntimeEnvironmentError):
    """Out of memory even with one row per forward pass: the micro-batch cannot shrink further."""


class DriveError(ColabkitError):
    """The Google Drive mount."""


class MountError(DriveError):
    """google.colab's drive.mount failed."""


class MountTimeoutError(MountError):
    """Drive's initial read of the root folder timed out."""


class MountpointNotEmptyError(MountError):
    """Files already sit at the mountpoint."""


class DriveNotMountedError(DriveError):
    """A process that cannot mount found no existing mount."""


class DownloadError(ColabkitError):
    """Fetching a dataset failed."""


class InvalidSourceError(DownloadError, ValueError):
    """The source is not a Drive id, a Drive link or an http(s) URL."""


class QuotaExceededError(DownloadError):
    """Drive's download quota for the file is exhausted (about 24 hours)."""


class NotPublicError(DownloadError):
    """The file is not shared as 'Anyone with the link'."""


class HTTPStatusError(DownloadError):
    """The server answered with an error status."""


class NetworkError(DownloadError):
    """The connection failed, also after the retries."""


class DownloadTimeoutError(NetworkError):
    """The download ran past fetch's total deadline (e.g. a server that trickles bytes)."""


class HashMismatchError(DownloadError):
    """The downloaded data does not match the pinned hash."""


class DownloadTooLargeError(DownloadError):
    """The download is (or announces itself as) larger than fetch's max_size."""


class UnexpectedPageError(DownloadError):
    """The server answered an HTML page where a data file was expected (no hash pinned)."""


class ArchiveError(ColabkitError):
    """Extracting an archive failed."""


class UnsafeArchiveError(ArchiveError):
    """A member would land outside the target, or is a device, fifo or link out."""


class ArchiveTooLargeError(ArchiveError):
    """The archive exceeds the size or member-count caps."""


class StageError(ColabkitError):
    """Copying files from Drive to the local disk failed (missing source, disk full, mount lost)."""


class CheckpointError(ColabkitError):
    """Saving or loading training state failed."""


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written (disk full, quota, permission, size)."""


class UnsafeCheckpointError(CheckpointError):
    """The file carries pickled objects that would run code when loaded."""


class NoUsableCheckpointError(CheckpointError):
    """Checkpoints exist but none of them can be loaded."""


class ModelMismatchError(CheckpointError):
    """Saved weights do not fit the model (missing, unexpected or reshaped keys)."""


class DriveAPIError(ColabkitError):
    """The Google Drive API (through pydrive2)."""


class DriveAPIAuthError(DriveAPIError):
    """Credentials are missing, malformed or expired."""


class DriveAPIQuotaError(DriveAPIError):
    """Drive's quota or rate limit was hit, also after retries."""


class DriveAPINotFoundError(DriveAPIError):
    """No file or folder with that id or path."""


class DriveAPIPermissionError(DriveAPIError):
    """The account may not read or write that file."""
