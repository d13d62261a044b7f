"""Test servers for colabkit.fetch: a real HTTP server on 127.0.0.1 that serves
plain files and stands in for Google Drive's download endpoints.

Drive itself cannot be reached, so only the network route is changed: requests'
transport adapter sends requests for drive.google.com / drive.usercontent.google.com
to this server (the original host travels in a header). Everything above the
socket — requests, and gdown's own confirmation-page handling — runs unchanged.
The Drive pages below are canned copies of the real ones' relevant markup.
"""

from __future__ import annotations

import html
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ORIGINAL_HOST = "X-Test-Original-Host"
GOOGLE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com", "accounts.google.com")

VIRUS_SCAN_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title><meta http-equiv="content-type" content="text/html; charset=utf-8"/><link href=/static/drive/css/download.css rel="stylesheet"></head><body><div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">{name}</a> ({size})</span> is too large for Google to scan for viruses. Would you still like to download this file?</p>
<form id="download-form" action="https://drive.usercontent.google.com/download" method="get"><input type="submit" id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/><input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form>
</div></div><div class="uc-footer"><hr class="uc-footer-divider"></div></body></html>
"""

QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title><meta http-equiv="content-type" content="text/html; charset=utf-8"/><link href=/static/drive/css/download.css rel="stylesheet"></head><body><div class="uc-main"><div id="uc-text">
<p class="uc-error-caption">Sorry, you can&#39;t view or download this file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try accessing the file again later. If the file you are trying to access is particularly large or is shared with many people, it may take up to 24 hours to be able to view or download the file. If you still can't access a file after 24 hours, contact your domain administrator.</p>
</div></div><div class="uc-footer"><hr class="uc-footer-divider"></div></body></html>
"""

# What an anonymous client gets for a file that is not shared publicly: Google's sign-in page.
PERMISSION_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Google Drive: Sign-in</title></head><body>
<div class="main"><h1>Sign in</h1><p>to continue to Google Drive</p>
<form method="post" action="https://accounts.google.com/v3/signin/identifier"><input type="email" name="identifier"><input type="hidden" name="continue" value="https://drive.google.com/uc?id={id}"></form>
</div></body></html>
"""

FOLDER_PAGE = """<!DOCTYPE html><html><head><title>{title}</title></head><body><div class="flip-entries">
{entries}
</div></body></html>
"""


@dataclass
class DriveFile:
    name: str
    data: bytes
    mode: str = "direct"  # direct | virus_scan | quota | private


@dataclass
class Recorded:
    host: str
    path: str
    query: dict
    headers: dict


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)  # plain URL path -> body
    drive: dict[str, DriveFile] = field(default_factory=dict)  # Drive id -> file
    folders: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # id -> (title, child ids)
    drops: dict[str, int] = field(default_factory=dict)  # path -> times left to drop mid-body
    statuses: dict[str, int] = field(default_factory=dict)  # path -> error status to answer
    # path (or "*": any path) -> handler(request_handler) writing its own response: hostile servers (endless, trickling,
    # lying about Content-Length); it runs in the server's thread and may block until `stop` is set
    custom: dict[str, Any] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urllib.parse.urlsplit(self.path)
        host = self.headers.get(ORIGINAL_HOST, "127.0.0.1")
        query = urllib.parse.parse_qs(parts.query)
        with self.state.lock:
            self.state.requests.append(Recorded(host, parts.path, query, dict(self.headers)))
        if host in GOOGLE_HOSTS:
            return self._drive(host, parts.path, query)
        custom = self.state.custom.get(parts.path) or self.state.custom.get("*")
        if custom is not None:
            try:
                custom(self)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
                self.close_connection = True
            return None
        status = self.state.statuses.get(parts.path)
        if status is not None:
            return self._send_page(status, f"<html><body>error {status}</body></html>")
        body = self.state.files.get(parts.path)
        if body is None:
            return self._send_page(404, "<html><body>Not Found</body></html>")
        self._send_body(body, parts.path, {"Content-Type": "application/octet-stream"})

    # -- Drive
    def _drive(self, host: str, path: str, query: dict) -> None:
        file_id = (query.get("id") or [""])[0]
        if host == "drive.google.com" and path == "/embeddedfolderview":
            return self._folder(file_id)
        if host == "accounts.google.com":
            continue_to = (query.get("continue") or [""])[0]
            return self._send_page(200, PERMISSION_PAGE.format(id=continue_to.rpartition("=")[2]))
        item = self.state.drive.get(file_id)
        if item is None:
            return self._send_page(404, "<html><body><p>Sorry, the file you have requested does not exist.</p></body></html>")
        if host == "drive.google.com" and path == "/uc":
            if item.mode == "quota":
                return self._send_page(200, QUOTA_PAGE)
            if item.mode == "private":  # Drive sends anonymous clients to the sign-in page
                target = "https://accounts.google.com/ServiceLogin?" + urllib.parse.urlencode(
                    {"service": "wise", "continue": f"https://drive.google.com/uc?id={file_id}"})
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if item.mode == "virus_scan":
                page = VIRUS_SCAN_PAGE.format(id=file_id, name=html.escape(item.name),
                                              size=f"{len(item.data) / 2**20:.0f}M", uuid="0f3c2a-test-uuid")
                return self._send_page(200, page)
            return self._send_drive_file(item, f"/uc?id={file_id}")
        if host == "drive.usercontent.google.com" and path == "/download":
            confirmed = query.get("confirm") == ["t"] and query.get("uuid") == ["0f3c2a-test-uuid"]
            if item.mode == "virus_scan" and not confirmed:
                return self._send_page(200, VIRUS_SCAN_PAGE.format(id=file_id, name=item.name, size="?",
                                                                   uuid="0f3c2a-test-uuid"))
            return self._send_drive_file(item, f"/download?id={file_id}")
        return self._send_page(404, "<html><body>Not Found</body></html>")

    def _folder(self, folder_id: str) -> None:
        if folder_id not in self.state.folders:
            return self._send_page(404, "<html><body>Not Found</body></html>")
        title, children = self.state.folders[folder_id]
        entries = []
        for child in children:
            if child in self.state.folders:
                href = f"https://drive.google.com/drive/folders/{child}"
                label = self.state.folders[child][0]
            else:
                href = f"https://drive.google.com/file/d/{child}/view?usp=drive_web"
                label = self.state.drive[child].name
            entries.append(f'<div class="flip-entry"><a href="{href}" target="_blank">'
                           f'<div class="flip-entry-title">{html.escape(label)}</div></a></div>')
        self._send_page(200, FOLDER_PAGE.format(title=html.escape(title), entries="\n".join(entries)))

    def _send_drive_file(self, item: DriveFile, key: str) -> None:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{item.name}"; filename*=UTF-8\'\'{urllib.parse.quote(item.name)}',
        }
        self._send_body(item.data, key, headers)

    # -- plumbing
    def _send_page(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_body(self, body: bytes, key: str, headers: dict) -> None:
        etag = f'"{len(body)}-{hash(body) & 0xFFFFFFFF:x}"'
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and self.headers.get("If-Range") in (None, etag):
            start, status = int(match.group(1)), 206
        chunk = body[start:]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        drop = False
        with self.state.lock:
            path = urllib.parse.urlsplit(self.path).path
            if self.state.drops.get(path, 0) > 0:
                self.state.drops[path] -= 1
                drop = True
        if drop:
            # half the body, then the connection goes away
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            import socket

            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(chunk)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # a client hanging up is what tests provoke


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 with its ServerState."""

    def __init__(self) -> None:
        self.state = ServerState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.state.stop.set()  # releases handlers that trickle or never end
        self.httpd.shutdown()
        self.httpd.server_close()


def route_google_to(monkeypatch, server: LocalServer) -> None:
    """Send requests for Google's Drive hosts to `server` instead of the internet.

    Patched at requests' transport adapter (the socket boundary): URL parsing,
    sessions, redirects, cookies and gdown's logic all run for real.
    """
    from requests.adapters import HTTPAdapter

    original_send = HTTPAdapter.send

    def send(self, request, *args, **kwargs):
        parts = urllib.parse.urlsplit(request.url)
        if parts.hostname in GOOGLE_HOSTS:
            request.headers[ORIGINAL_HOST] = parts.hostname
            request.url = urllib.parse.urlunsplit(("http", f"127.0.0.1:{server.port}", parts.path, parts.query, ""))
            kwargs["verify"] = False
        response = original_send(self, request, *args, **kwargs)
        if parts.hostname in GOOGLE_HOSTS:
            response.url = urllib.parse.urlunsplit(parts)
        return response

    monkeypatch.setattr(HTTPAdapter, "send", send)
