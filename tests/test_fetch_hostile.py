"""fetch against hostile servers on 127.0.0.1: names that try to escape, bodies that never end or
trickle, HTML pages instead of data, lying Content-Length, and Drive titles that are not file names.

For every escape case the folder around the destination is compared byte for byte before and after.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import colabkit
from colabkit import errors
from colabkit._fetch.cache import MANIFEST_NAME
from colabkit._fetch.sources import parse_source

from tests._data_helpers import DriveFile, LocalServer, route_google_to

FILE_ID = "1sUrlx-GhJ_80vIGzVGEgFUSDYfwV50YW"
OTHER_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
FOLDER_ID = "1FoLdErIdAbCdEfGhIjKlMnOpQrStUv"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` with its type, bytes (files) or target (links), and mtime."""
    seen: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                seen[rel] = ("file", path.read_bytes(), info.st_mtime_ns)
            else:
                seen[rel] = ("dir",)
    return seen


@pytest.fixture
def server():
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture
def drive(server, monkeypatch, tmp_path_factory):
    import sys

    import gdown  # noqa: F401 - loads gdown.download (its name is shadowed by the function)

    route_google_to(monkeypatch, server)
    cookies = tmp_path_factory.mktemp("cookies") / "gdown-cookies.txt"  # outside the compared folders
    monkeypatch.setattr(sys.modules["gdown.download"], "DEFAULT_COOKIES_FILE", str(cookies))
    return server


@pytest.fixture
def project():
    project = colabkit.setup("ML2022", quiet=True)
    (project.root / "train.py").write_text("print('the project training script')\n")
    return project


# --------------------------------------------------------------------------- names from the URL


ESCAPES = [
    "/dl/..%2Ftrain.py",          # overwrote the project's train.py on main
    "/dl/..%2F..%2Ftrain.py",
    "/dl/{absolute}",             # an absolute path (made one on main)
    "/dl/..",
    "/dl/%2e%2e",
    "/dl/.",
    "/dl/",                        # no name at all
    "/dl/a%5C..%5Cb",              # backslashes
    "/dl/x%00.csv",                # NUL
    "/dl/x%0A.csv",                # newline
    "/dl/x%1B%5B2J.csv",           # an escape sequence
    "/dl/gpj.%E2%80%AEexe",        # right-to-left override
    "/dl/.colabkit-fetch.json",    # colabkit's manifest
    "/dl/.train.csv.1-abcd.tmp",   # one of colabkit's temp names
]


@pytest.mark.parametrize("path", ESCAPES)
def test_a_url_name_that_is_not_one_safe_component_is_refused_before_any_request(server, project, path, tmp_path):
    probe = tmp_path / "outside" / "escape-probe"
    probe.parent.mkdir()
    path = path.format(absolute=urllib.parse.quote(str(probe), safe=""))
    server.state.custom["*"] = lambda handler: handler._send_body(b"owned\n", "", {})
    before = snapshot(project.root)
    with pytest.raises(errors.UnsafeNameError) as info:
        colabkit.fetch(server.url(path), quiet=True)
    assert "output=" in str(info.value)
    assert isinstance(info.value, errors.ColabkitError)
    assert server.state.count() == 0
    assert snapshot(project.root) == before
    assert list(probe.parent.iterdir()) == []


def test_output_names_the_file_and_the_same_url_then_works(server, project):
    server.state.custom["*"] = lambda handler: handler._send_body(b"data\n", "", {})
    path = colabkit.fetch(server.url("/dl/..%2Ftrain.py"), "notes.txt", quiet=True)
    assert path == project.data / "notes.txt" and path.read_bytes() == b"data\n"
    assert (project.root / "train.py").read_text() == "print('the project training script')\n"


def test_a_remote_name_never_replaces_a_file_colabkit_did_not_fetch(server, project):
    server.state.files["/dl/notes.csv"] = b"from the server\n"
    (project.data / "notes.csv").write_text("my own notes\n")
    before = snapshot(project.root)
    with pytest.raises(errors.DownloadError, match="was not fetched by colabkit"):
        colabkit.fetch(server.url("/dl/notes.csv"), quiet=True)
    assert snapshot(project.root) == before
    # naming it explicitly is the user's choice
    assert colabkit.fetch(server.url("/dl/notes.csv"), "notes.csv", quiet=True).read_bytes() == b"from the server\n"


@given(st.text(max_size=40))
@settings(max_examples=400, deadline=None)
def test_property_any_url_tail_lands_inside_the_folder_or_is_refused(tail):
    from colabkit._fetch.cache import Target, resolve_output

    base = Path("/srv/data")
    for url in (f"http://127.0.0.1:1/dl/{tail}", f"http://127.0.0.1:1/dl/{urllib.parse.quote(tail, safe='')}"):
        try:
            source = parse_source(url)
            target = resolve_output(base.as_posix() + "/", source)
        except (errors.UnsafeNameError, errors.InvalidSourceError):
            continue
        assert isinstance(target, Target) and target.folder == base
        name = target.name
        assert name and name == Path(name).name and name not in (".", "..")
        assert os.path.normpath(base / name).startswith(str(base) + os.sep)
        assert all(ch.isprintable() or ch == " " for ch in name) or _only_format_chars(name)


def _only_format_chars(name: str) -> bool:
    # printable-ness aside (e.g. a combining mark), no control character may pass
    import unicodedata

    return not any(unicodedata.category(ch) == "Cc" for ch in name)


@given(st.text(max_size=40))
@settings(max_examples=400, deadline=None)
def test_property_any_remote_name_is_one_component_or_a_clean_error(name):
    from colabkit._fetch.sources import remote_name

    try:
        checked = remote_name(name, "file name Drive gives")
    except errors.UnsafeNameError as exc:
        assert "output=" in str(exc)
        return
    folder = Path("/srv/data")
    assert checked == name and Path(checked).name == checked
    assert os.path.normpath(folder / checked).startswith(str(folder) + os.sep)
    assert not checked.startswith(".colabkit-") and "\x00" not in checked


@given(st.lists(st.sampled_from(list("./\\%2Fea0\x00\n ") + ["%2F", "%2e", "%5C", "..", "%00", "%0A"]),
                max_size=8).map("".join))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_end_to_end_against_the_server(server, tmp_path, tail):
    """Real fetches: whatever the URL's tail, the file lands in the folder or nothing is written."""
    server.state.custom["*"] = lambda handler: handler._send_body(b"payload", "", {})
    around = tmp_path / "around"
    folder = around / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (around / "train.py").write_text("victim")
    before = snapshot(around)
    try:
        path = colabkit.fetch(server.url("/dl/" + tail), str(folder) + "/", quiet=True, retries=0)
    except (errors.UnsafeNameError, errors.InvalidSourceError, errors.HTTPStatusError):
        assert snapshot(around) == before
        return
    assert path.parent == folder and path.read_bytes() == b"payload"
    after = snapshot(around)
    assert set(after) - set(before) <= {f"data/{path.name}", f"data/{MANIFEST_NAME}"}
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that was there changed
    for entry in list(folder.iterdir()):
        entry.unlink()


# --------------------------------------------------------------------------- names from Drive


@pytest.mark.parametrize("title", ["bad\x1bname.csv", "tab\tname.csv", "del\x7f.csv", ".colabkit-fetch.json"])
def test_a_drive_file_name_that_is_not_safe_is_refused(drive, title):
    drive.state.drive[FILE_ID] = DriveFile(title, b"content")
    around = Path.cwd().parent
    before = snapshot(around)
    with pytest.raises(errors.UnsafeNameError, match="output="):
        colabkit.fetch(FILE_ID, quiet=True)
    assert snapshot(around) == before
    # with output= the same file is fetched under the given name
    assert colabkit.fetch(FILE_ID, "safe.csv", quiet=True).read_bytes() == b"content"


def test_a_drive_file_titled_with_slashes_stays_in_the_folder(drive):
    drive.state.drive[FILE_ID] = DriveFile("../../evil.sh", b"echo owned")
    around = Path.cwd().parent
    before = snapshot(around)
    path = colabkit.fetch(FILE_ID, quiet=True)
    assert path.parent == Path.cwd()
    assert {k: v for k, v in snapshot(around).items() if not k.startswith("work/")} == \
        {k: v for k, v in before.items() if not k.startswith("work/")}


def _folder(drive, names: list[str]) -> str:
    ids = []
    for index, name in enumerate(names):
        file_id = f"1Member{index:02d}AbCdEfGhIjKlMnOpQrSt"
        drive.state.drive[file_id] = DriveFile(name, f"member {index}".encode())
        ids.append(file_id)
    drive.state.folders[FOLDER_ID] = ("hw1", ids)
    return f"https://drive.google.com/drive/folders/{FOLDER_ID}"


@pytest.mark.parametrize("names", [["ok.csv", "bad\x1bname.csv"], ["a.csv", "a.csv"], ["ok.csv", ".colabkit-fetch.json"]],
                         ids=["control-character", "duplicate", "reserved"])
def test_a_drive_folder_with_an_unsafe_member_publishes_nothing(drive, names):
    link = _folder(drive, names)
    around = Path.cwd().parent
    before = snapshot(around)
    with pytest.raises(errors.UnsafeNameError):
        colabkit.fetch(link, quiet=True)
    assert snapshot(around) == before
    media = [r for r in drive.state.requests if r.path in ("/uc", "/download")]
    assert media == []  # refused from the listing, before any file was downloaded


def test_a_drive_folder_member_titled_dotdot_stays_inside(drive):
    link = _folder(drive, ["..", "ok.csv"])
    around = Path.cwd().parent
    before = snapshot(around)
    path = colabkit.fetch(link, quiet=True)
    assert path == Path.cwd() / "hw1"
    assert sorted(p.name for p in path.iterdir()) == ["_", "ok.csv"]  # gdown's sanitizer renames '..'
    assert {k: v for k, v in snapshot(around).items() if not k.startswith("work/")} == \
        {k: v for k, v in before.items() if not k.startswith("work/")}


# --------------------------------------------------------------------------- bounded bodies


def _endless(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()
    block = b"\0" * 65536
    while not handler.state.stop.is_set():
        handler.wfile.write(block)


def test_an_endless_body_stops_at_max_size_and_publishes_nothing(server):
    server.state.custom["/endless.bin"] = _endless
    start = time.monotonic()
    with pytest.raises(errors.DownloadTooLargeError, match="max_size") as info:
        colabkit.fetch(server.url("/endless.bin"), max_size=2 * 2**20, quiet=True)
    assert time.monotonic() - start < 10
    assert "Nothing was saved" in str(info.value)
    assert list(Path.cwd().iterdir()) == []


def test_a_content_length_over_max_size_is_refused_up_front(server):
    sent = []

    def huge(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * 2**30))
        handler.end_headers()
        for _ in range(4096):  # at most 256 MiB, if nobody stops reading
            if handler.state.stop.is_set():
                break
            handler.wfile.write(b"\0" * 65536)
            sent.append(65536)

    server.state.custom["/huge.bin"] = huge
    with pytest.raises(errors.DownloadTooLargeError, match=str(10 * 2**30)):
        colabkit.fetch(server.url("/huge.bin"), max_size=2**30, quiet=True)
    assert list(Path.cwd().iterdir()) == []
    assert sum(sent) < 64 * 2**20  # the client hung up long before 10 GiB (or even 1 GiB)


def test_a_trickling_server_is_stopped_by_the_deadline(server):
    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000000")
        handler.end_headers()
        while not handler.state.stop.wait(0.5):  # a byte every half second: never a read timeout
            handler.wfile.write(b"x")
            handler.wfile.flush()

    server.state.custom["/slow.bin"] = trickle
    start = time.monotonic()
    with pytest.raises(errors.DownloadTimeoutError, match="deadline=2") as info:
        colabkit.fetch(server.url("/slow.bin"), timeout=3, deadline=2, retries=3, quiet=True)
    elapsed = time.monotonic() - start
    assert 1.5 < elapsed < 6
    assert isinstance(info.value, errors.NetworkError)
    assert not (Path.cwd() / "slow.bin").exists() and not (Path.cwd() / MANIFEST_NAME).exists()
    assert all(p.name.startswith(".colabkit-") for p in Path.cwd().iterdir())  # only the resumable partial


def test_deadline_and_max_size_are_validated(server):
    server.state.files["/a.bin"] = b"a"
    for bad in ({"deadline": 0}, {"deadline": float("nan")}, {"max_size": 0}, {"max_size": 3.0},
                {"max_size": True}, {"retries": -1}, {"retries": 1.0}, {"timeout": float("inf")}):
        with pytest.raises(errors.ConfigError, match=next(iter(bad))):
            colabkit.fetch(server.url("/a.bin"), quiet=True, **bad)
    assert server.state.count() == 0
    assert colabkit.fetch(server.url("/a.bin"), deadline=None, quiet=True).read_bytes() == b"a"


# --------------------------------------------------------------------------- HTML instead of data

LOGIN_PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in &ndash; Example Cloud</title></head>
<body><form action="/login"><input name="user"></form></body></html>
"""


def _page(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html; charset=utf-8")
    handler.send_header("Content-Length", str(len(LOGIN_PAGE)))
    handler.end_headers()
    handler.wfile.write(LOGIN_PAGE)


def test_an_html_page_instead_of_a_csv_is_refused_with_its_title(server):
    server.state.custom["/share/train.csv"] = _page
    with pytest.raises(errors.UnexpectedPageError) as info:
        colabkit.fetch(server.url("/share/train.csv"), quiet=True)
    message = str(info.value)
    assert "Sign in \u2013 Example Cloud" in message and "train.csv" in message
    assert isinstance(info.value, errors.DownloadError)
    assert list(Path.cwd().iterdir()) == []


def test_an_html_page_is_kept_when_asked_for_as_html_or_pinned(server):
    server.state.custom["/share/train.csv"] = _page
    assert colabkit.fetch(server.url("/share/train.csv"), "page.html", quiet=True).read_bytes() == LOGIN_PAGE
    digest = hashlib.sha256(LOGIN_PAGE).hexdigest()
    path = colabkit.fetch(server.url("/share/train.csv"), "pinned.csv", hash=f"sha256:{digest}", quiet=True)
    assert path.read_bytes() == LOGIN_PAGE
    with pytest.raises(errors.HashMismatchError):  # a pin that the page does not match says so
        colabkit.fetch(server.url("/share/train.csv"), "other.csv", hash="sha256:" + "0" * 64, quiet=True)


def test_data_that_merely_contains_html_is_not_a_page(server):
    body = b"id,text\n1,<html> in a cell\n"
    server.state.files["/t.csv"] = body
    assert colabkit.fetch(server.url("/t.csv"), quiet=True).read_bytes() == body


# --------------------------------------------------------------------------- Content-Length lies


def test_fewer_bytes_than_content_length_is_a_clean_network_error(server):
    def short(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "5000")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(b"y" * 1000)
        handler.close_connection = True

    server.state.custom["/short.bin"] = short
    with pytest.raises(errors.NetworkError, match="fetch again") as info:
        colabkit.fetch(server.url("/short.bin"), retries=1, quiet=True)
    assert ".part" not in str(info.value) and ".tmp" not in str(info.value)  # no temp path in the message
    assert not (Path.cwd() / "short.bin").exists() and not (Path.cwd() / MANIFEST_NAME).exists()


def test_more_bytes_than_content_length_publish_only_the_announced_bytes(server):
    def long(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(b"a" * 1000 + b"SURPLUS" * 1000)
        handler.close_connection = True

    server.state.custom["/long.bin"] = long
    path = colabkit.fetch(server.url("/long.bin"), quiet=True)
    assert path.read_bytes() == b"a" * 1000  # HTTP framing: the surplus is not part of the response


def test_a_server_that_ignores_range_is_restarted_not_spliced(server):
    body = os.urandom(3 * 2**20)
    calls = []

    def flaky(handler):
        calls.append(handler.headers.get("Range"))
        handler.send_response(200)  # never 206: Range is ignored
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if len(calls) == 1:
            handler.wfile.write(body[: len(body) // 2])
            handler.close_connection = True
            import socket

            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.wfile.write(body)

    server.state.custom["/flaky.bin"] = flaky
    path = colabkit.fetch(server.url("/flaky.bin"), retries=3, quiet=True)
    assert path.read_bytes() == body
    ranged = [i for i, header in enumerate(calls) if header]
    assert ranged and calls[-1] is None and ranged[0] < len(calls) - 1  # resume tried, refused, restarted
