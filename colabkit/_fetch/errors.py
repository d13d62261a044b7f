"""gdown's and requests' failures translated into colabkit's DownloadError family.

One error hierarchy (`colabkit.errors.DownloadError`) whose messages end with
what to do, instead of gdown's and requests' raw exceptions: a file not shared
publicly, Drive's download quota, HTTP statuses, dropped connections, a size
over max_size and a destination that cannot be written.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from .._fsio import os_error_advice
from ..errors import (
    DownloadError,
    DownloadTooLargeError,
    HTTPStatusError,
    NetworkError,
    NotPublicError,
    QuotaExceededError,
)
from .sources import Source


def not_public_message(source: Source | str) -> str:
    """Why Drive gave no download link for `source`, and how to share it or read it with private=True."""
    text = (
        f"Google Drive did not give a download link for {source}: the file is not shared as "
        "'Anyone with the link' (or it was deleted). To continue: if it is yours, open it in Drive, "
        "Share -> General access -> 'Anyone with the link', then fetch again; otherwise ask its owner "
        "to do so, or download it through the Drive API with an account that can read it"
    )
    from .._drive_api.session import is_signed_in

    if is_signed_in():  # the Drive API is set up here: say exactly how
        given = getattr(source, "drive_id", None) or str(source)
        return text + f": colabkit.fetch({given!r}, private=True)."
    return text + ' (pip install "colabkit-ml[drive-api]", then fetch(..., private=True)).'


def quota_message(source: Source | str) -> str:
    """Drive's per-file download quota is spent for `source`: wait, or read a copy through the mount."""
    return (
        f"Google Drive refuses to serve {source} right now: too many users have viewed or downloaded "
        "this file recently (Drive's per-file download quota). To continue: wait (up to 24 hours) and "
        "fetch again; or open the link in a browser, add the file to your own Drive (Add shortcut / "
        "Make a copy) and read it through the mount, e.g. "
        "colabkit.stage('/content/drive/MyDrive/<file>'); or download it through the Drive API."
    )


@contextlib.contextmanager
def translate_errors(source: Source | str) -> Iterator[None]:
    """Turn gdown's and requests' exceptions into colabkit's DownloadError family."""
    import gdown.exceptions
    import requests

    try:
        yield
    except DownloadError:
        raise
    except gdown.exceptions.FileURLRetrievalError as exc:
        text = str(exc)
        if "too many users" in text.lower() or "quota" in text.lower():
            raise QuotaExceededError(quota_message(source)) from exc
        raise NotPublicError(not_public_message(source)) from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise _status_error(source, status, exc) from exc
    except requests.RequestException as exc:
        raise _network_error(source, exc) from exc
    except UnicodeDecodeError as exc:
        raise DownloadError(f"Downloading {source} failed: {exc}. Check the link, then fetch again.") from exc
    except gdown.exceptions.DownloadError as exc:
        text = str(exc)
        cause = exc.__cause__
        if "did not honor the requested byte range" in text:
            raise RangeIgnored(text) from exc
        if isinstance(cause, requests.RequestException) or "incomplete" in text.lower():
            raise _network_error(source, cause or exc, text if "incomplete" in text.lower() else "") from exc
        if "Failed to retrieve folder contents" in text:
            raise NotPublicError(not_public_message(source)) from exc
        raise DownloadError(
            f"Downloading {source} failed: {text.strip()} "
            "Fetch again (the transfer resumes); if it keeps failing, open the link in a browser to check it."
        ) from exc
    except OSError:
        raise  # disk and permission problems: the caller knows the destination
    except (AssertionError, KeyError, ValueError, TypeError, AttributeError) as exc:
        # gdown's page parsing met something it did not expect (a changed Drive page).
        raise DownloadError(
            f"Downloading {source} failed: Google Drive answered with a page gdown could not read "
            f"({type(exc).__name__}: {exc}). Open the link in a browser to check the file is still "
            "there and shared, update gdown (pip install -U gdown), then fetch again."
        ) from exc


def _status_error(source: Source | str, status: int | None, exc: BaseException) -> HTTPStatusError:
    if status == 404:
        advice = "Check the URL (or the Drive id) is complete and the file still exists, then fetch again."
    elif status in (401, 403):
        advice = ("The server refuses access: the file needs a login or a share setting "
                  "that allows it. Fix access, then fetch again.")
    elif status is not None and status >= 500:
        advice = "The server failed; this is usually temporary. Fetch again in a few minutes."
    else:
        advice = "Check the URL, then fetch again."
    error = HTTPStatusError(f"The server answered HTTP {status} for {source}. {advice}")
    error.status = status  # type: ignore[attr-defined]
    return error


def _network_error(source: Source | str, exc: BaseException, incomplete: str = "") -> NetworkError:
    import requests

    if incomplete:
        short = "the transfer stopped before the announced size"
        detail = incomplete.split(".\n")[0]  # gdown's next sentence names its temp file
    else:
        detail = str(exc)
        if isinstance(exc, requests.Timeout):
            short = "no answer within timeout"
        elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
            short = "the connection dropped mid-transfer"
        else:
            short = "the connection failed"
    error = NetworkError(
        f"The connection failed while downloading {source}: {detail}. "
        "Check the runtime's internet connection and fetch again: the partial download is kept "
        "and resumes (raise retries= or timeout= for a flaky connection)."
    )
    error.short = short  # type: ignore[attr-defined]  # the retry line's few words
    return error


class RangeIgnored(DownloadError):
    """Internal: the server answered a resume request with the whole file (or another range)."""


def too_large(what: Source | str, budget: int, seen: str) -> DownloadTooLargeError:
    """The error for a download over max_size (`seen`: what showed it, e.g. the announced size)."""
    return DownloadTooLargeError(
        f"Refusing to download {what}: {seen}, more than max_size={budget} bytes ({budget / 2**30:.3g} GiB). "
        "Nothing was saved. If you expect a file this large, pass a larger max_size= "
        "(e.g. max_size=100 * 2**30); otherwise check the link."
    )


def download_write_error(exc: OSError, folder: Path) -> DownloadError:
    """A disk or permission failure while writing into `folder`, with _fsio's errno advice for downloads."""
    cause, fix = os_error_advice(exc)
    return DownloadError(
        f"Could not write the download into {folder}: {cause} ({exc.strerror or exc}). "
        f"Nothing was published. To fix: {fix}, then fetch again."
    )
