"""Canned Drive API replies for a real pydrive2 client over googleapiclient's HttpMockSequence.

Only the HTTP transport is replaced (httplib2.Http returns the canned sequence);
pydrive2, googleapiclient, oauth2client and google-auth all run for real.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qs, urlparse

import pytest
from googleapiclient.http import HttpMockSequence

FAKE_TOKEN = "ya29.FAKE-ACCESS-TOKEN-never-log-me"
FOLDER = "application/vnd.google-apps.folder"


class CannedDrive(HttpMockSequence):
    """HttpMockSequence that also keeps each uploaded body as bytes (streams close after upload)."""

    def request(self, uri, method="GET", body=None, headers=None, redirections=1, connection_type=None):
        if hasattr(body, "read"):
            body = body.read()
        if self._iterable and callable(self._iterable[0][1]):  # a reply computed from the request
            status, make = self._iterable[0]
            self._iterable[0] = (status, make(body))
        return super().request(uri, method, body, headers, redirections, connection_type)

    def add(self, *replies) -> None:
        for reply in replies:
            if isinstance(reply, list):
                self._iterable.extend(reply)
            else:
                self._iterable.append(reply)

    @property
    def left(self) -> int:
        return len(self._iterable)

    def requests(self, method: str | None = None, contains: str = "") -> list[tuple]:
        return [r for r in self.request_sequence
                if (method is None or r[1] == method) and contains in r[0]]

    def uploaded(self) -> list[bytes]:
        """The file contents sent to upload session URLs, in order."""
        return [r[2] if isinstance(r[2], bytes) else (r[2] or "").encode()
                for r in self.request_sequence if r[1] == "PUT" and "upload-session" in r[0]]

    def queries(self) -> list[str]:
        return [parse_qs(urlparse(r[0]).query).get("q", [""])[0] for r in self.request_sequence
                if r[1] == "GET" and urlparse(r[0]).path.endswith("/drive/v2/files")]


def meta(file_id: str, title: str, content: bytes | None = None, *, parent: str = "root",
         mime: str = "application/octet-stream") -> dict:
    """A Drive v2 file resource; content gives its fileSize and md5Checksum."""
    item = {"id": file_id, "title": title, "mimeType": mime, "parents": [{"id": parent}]}
    if content is not None:
        item.update(fileSize=str(len(content)), md5Checksum=hashlib.md5(content).hexdigest())
    return item


def folder(file_id: str, title: str, parent: str = "root") -> dict:
    return meta(file_id, title, parent=parent, mime=FOLDER)


def ok(body) -> tuple:
    return {"status": "200"}, json.dumps(body)


def listing(*items: dict) -> tuple:
    return ok({"kind": "drive#fileList", "items": list(items)})


def media(content: bytes) -> tuple:
    size = len(content)
    return {"status": "200", "content-range": f"bytes 0-{size - 1}/{size}"}, content


def upload(item: dict) -> list[tuple]:
    """The two replies of a resumable upload: the session, then the stored file."""
    return [({"status": "200", "location": f"https://www.googleapis.com/upload-session/{item['id']}"}, ""),
            ok(item)]


def stored(file_id: str, title: str, parent: str = "root") -> list[tuple]:
    """A resumable upload whose stored file has the size and md5 of whatever was sent."""
    session = ({"status": "200", "location": f"https://www.googleapis.com/upload-session/{file_id}"}, "")
    return [session, ({"status": "200"}, lambda body: json.dumps(meta(file_id, title, body, parent=parent)))]


def error(status: int, reason: str = "", message: str = "") -> tuple:
    payload = {"error": {"code": status, "message": message or reason,
                         "errors": [{"domain": "global", "reason": reason, "message": message or reason}]}}
    return {"status": str(status)}, json.dumps(payload)


@pytest.fixture
def canned(monkeypatch):
    """The Drive transport: every httplib2.Http() is this one CannedDrive; add replies to it."""
    import httplib2

    transport = CannedDrive([])

    def new_http(*args, **kwargs):
        # a new object per Http(), like httplib2 (oauth2client wraps each one in place),
        # all sharing one queue of replies and one log of requests
        view = CannedDrive(transport._iterable)
        view.request_sequence = transport.request_sequence
        return view

    monkeypatch.setattr(httplib2, "Http", new_http)
    return transport


@pytest.fixture
def client(canned):
    """A real DriveClient on static fake credentials, no backoff between retries."""
    from google.oauth2.credentials import Credentials

    from colabkit._drive_api.session import connect_drive

    drive = connect_drive(credentials=Credentials(token=FAKE_TOKEN), retries=2)
    drive.backoff = 0.0
    return drive


@pytest.fixture(scope="module")
def service_key(tmp_path_factory):
    """A service-account JSON key with a freshly generated private key (no real account)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path_factory.mktemp("sa") / "key.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "demo", "private_key_id": "kid123",
        "private_key": pem, "client_email": "trainer@demo.iam.gserviceaccount.com",
        "client_id": "1234", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path, pem


def package_imports(package: str) -> dict[str, list[tuple[str, list[str]]]]:
    """For each module of a colabkit subpackage: the (absolute module, names) it imports, lazily or not."""
    import ast
    import importlib
    from pathlib import Path

    folder = Path(importlib.import_module(package).__file__).parent
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted(folder.glob("*.py")):
        module = f"{package}.{path.stem}" if path.stem != "__init__" else package
        entries = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                names = [alias.name for alias in node.names]
                if node.level and not node.module:  # from . import a, b: each is a module
                    entries += [(f"{target}.{name}", []) for name in names]
                else:
                    entries.append((target, names))
            elif isinstance(node, ast.Import):
                entries += [(alias.name, []) for alias in node.names]
        found[module] = entries
    return found


def assert_layered(package: str) -> None:
    """No module of `package` imports an underscored name of another, and its imports form no circle."""
    imports = package_imports(package)
    for module, entries in imports.items():
        for target, names in entries:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not (target.startswith("colabkit") and private), f"{module} imports {private} from {target}"
    graph = {m: {t for t, _ in entries if t in imports and t != m} for m, entries in imports.items()}

    def visit(module: str, path: tuple[str, ...]) -> None:
        for nxt in graph[module]:
            assert nxt not in path, f"import circle: {' -> '.join(path + (nxt,))}"
            visit(nxt, path + (nxt,))

    for module in graph:
        visit(module, (module,))
