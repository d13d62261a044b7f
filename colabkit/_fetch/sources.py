"""What can be fetched, recognised without touching the network, and the names that come from outside.

A source is a Drive file id, a Drive share link (every form Drive's Share
dialog and its download host produce), a Drive folder link or a plain http(s)
URL; its `key` is the cache identity, the same for an id and every link to it.

A name chosen by the server (URL, Content-Disposition, Drive title) must be one
safe path component (_fsio.safe_component), decoded before it is judged, and
never one of colabkit's own bookkeeping names.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

from .._fsio import is_temp_name, safe_component
from ..errors import InvalidSourceError, UnsafeNameError

RESERVED_PREFIX = ".colabkit-"  # the manifest, the lock and the temp folders: never a server's name
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
_ID = r"[A-Za-z0-9_-]{25,}"
_FOLDER_PATH = re.compile(rf"^/drive/(?:u/\d+/|mobile/)?folders/({_ID})/?$")
ACCEPTED_FORMS = (
    "a Drive file id (e.g. 1sUrlx-GhJ_80vIGzVGEgFUSDYfwV50YW), "
    "a Drive share link (https://drive.google.com/file/d/<id>/view, .../open?id=<id>, "
    ".../uc?id=<id>, https://drive.usercontent.google.com/download?id=<id>), "
    "a Drive folder link (https://drive.google.com/drive/folders/<id>), "
    "or a plain http(s):// URL"
)


@dataclass(frozen=True)
class Source:
    """A parsed download source.

    kind: "drive_file", "drive_folder" or "url"; key: the cache identity, the
    same for an id and every link to it; url: what the downloader is given.
    """

    kind: str
    key: str
    url: str
    drive_id: str | None = None
    given: str = ""

    @property
    def is_drive(self) -> bool:
        return self.kind in ("drive_file", "drive_folder")

    def __str__(self) -> str:
        return self.given or self.url


def parse_source(source: str) -> Source:
    """Recognise `source` without touching the network, or raise InvalidSourceError."""
    if isinstance(source, os.PathLike) or not isinstance(source, str):
        raise InvalidSourceError(
            f"The source {source!r} is not a string. Pass {ACCEPTED_FORMS}."
        )
    text = source.strip()
    if re.fullmatch(_ID, text):
        return Source("drive_file", f"gdrive:{text}", f"https://drive.google.com/uc?id={text}", text, text)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        hint = ""
        if re.fullmatch(r"[A-Za-z0-9_-]+", text):
            hint = f" It looks like a Drive id but has {len(text)} characters; Drive ids have 25 or more."
        raise InvalidSourceError(
            f"Cannot fetch {source!r}: it is neither a Drive id nor a link.{hint} Pass {ACCEPTED_FORMS}."
        )
    if parts.hostname.lower() in DRIVE_HOSTS:
        return _parse_drive_link(text, parts)
    url = urllib.parse.urldefrag(text).url
    return Source("url", url, url, None, text)


def _parse_drive_link(text: str, parts: urllib.parse.SplitResult) -> Source:
    import gdown.parse_url

    folder = _FOLDER_PATH.match(parts.path)
    if folder:
        folder_id = folder.group(1)
        return Source(
            "drive_folder", f"gdrive-folder:{folder_id}",
            f"https://drive.google.com/drive/folders/{folder_id}", folder_id, text,
        )
    host = parts.hostname.lower()
    if host == "drive.usercontent.google.com":
        # gdown does not know this host; the id in its query is the same file id.
        ids = urllib.parse.parse_qs(parts.query).get("id", [])
        file_id = ids[0] if len(ids) == 1 else None
        url = f"https://drive.google.com/uc?id={file_id}"
    else:
        file_id, _ = gdown.parse_url.parse_url(text)
        # Google Docs, Sheets and Slides links keep their own URL: gdown exports them.
        url = text if host == "docs.google.com" else f"https://drive.google.com/uc?id={file_id}"
    if not file_id or not re.fullmatch(_ID, file_id):
        raise InvalidSourceError(
            f"Cannot find a Drive file or folder id in {text!r}. "
            f"Copy the link from Drive's Share dialog, or pass {ACCEPTED_FORMS}."
        )
    return Source("drive_file", f"gdrive:{file_id}", url, file_id, text)


def remote_name(name: object, what: str) -> str:
    """`name` (chosen by the server, a URL or Drive) when it is one safe file name here; else UnsafeNameError.

    The one rule of _fsio.safe_component (no '.', '..', empty, separators,
    NUL, control or invisible characters), plus colabkit's own bookkeeping
    names: a server must not be able to name its file `.colabkit-fetch.json`
    (the manifest), a lock, or one of colabkit's temp names.
    """
    fix = ("Pass output= with the file name you want (e.g. output='train.csv'); "
           "the name stays inside the destination folder then.")
    text = safe_component(name, what, fix)
    if text.startswith(RESERVED_PREFIX) or is_temp_name(text):
        raise UnsafeNameError(
            f"The {what} {text!r} cannot be used as a file name: colabkit keeps its own "
            f"bookkeeping under such names. {fix}"
        )
    return text


def url_file_name(url: str) -> str:
    """The file name a plain URL implies: its last path segment, percent-decoded, then checked.

    Decoding comes first, so '..%2Ftrain.py' is seen as '../train.py' (two
    components, refused) rather than as the harmless-looking '..%2Ftrain.py'.
    """
    path = urllib.parse.urlsplit(url).path
    last = path.rsplit("/", 1)[-1]
    try:
        decoded = urllib.parse.unquote(last, errors="strict")
    except UnicodeDecodeError:
        raise UnsafeNameError(
            f"The file name in the URL {last!r} is not valid UTF-8 once decoded, so it cannot be used as "
            "a file name. Pass output= with the file name you want (e.g. output='train.csv')."
        ) from None
    return remote_name(decoded, "file name in the URL")
