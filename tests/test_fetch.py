"""colabkit.fetch against a real HTTP server on 127.0.0.1 (plain URLs and a Drive stand-in)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest

import colabkit
from colabkit import errors
from colabkit._fetch.cache import MANIFEST_NAME
from colabkit._fetch.sources import parse_source

from tests._data_helpers import DriveFile, LocalServer, route_google_to

FILE_ID = "1sUrlx-GhJ_80vIGzVGEgFUSDYfwV50YW"
OTHER_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
FOLDER_ID = "1FoLdErIdAbCdEfGhIjKlMnOpQrStUv"
PAYLOAD = os.urandom(300_000)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    srv = LocalServer()
    srv.state.files["/data/train.csv"] = PAYLOAD
    yield srv
    srv.close()


@pytest.fixture
def drive(server, monkeypatch, tmp_path):
    """The server also answers for drive.google.com and drive.usercontent.google.com."""
    import sys

    import gdown  # noqa: F401 - loads gdown.download (its name is shadowed by the function)

    route_google_to(monkeypatch, server)
    # gdown keeps Drive cookies in ~/.cache/gdown; keep this test's out of the real home
    monkeypatch.setattr(sys.modules["gdown.download"], "DEFAULT_COOKIES_FILE", str(tmp_path / "gdown-cookies.txt"))
    return server


def leftovers(folder: Path) -> list[str]:
    """Anything in `folder` besides published files and the manifest."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != MANIFEST_NAME)


# --------------------------------------------------------------------------- plain URLs and the cache


def test_url_download_is_stamped_and_a_repeat_makes_no_request(server, capsys):
    url = server.url("/data/train.csv")
    path = colabkit.fetch(url, quiet=False)
    assert path == Path.cwd() / "train.csv"
    assert path.read_bytes() == PAYLOAD
    out = capsys.readouterr().out
    assert f"sha256:{sha256(PAYLOAD)}" in out  # printed so the user can pin it
    manifest = json.loads((Path.cwd() / MANIFEST_NAME).read_text())
    stamp = manifest["entries"]["train.csv"]
    assert stamp["sha256"] == sha256(PAYLOAD) and stamp["size"] == len(PAYLOAD) and stamp["source"] == url
    assert server.state.count() == 1

    again = colabkit.fetch(url, quiet=True)
    assert again == path
    assert server.state.count() == 1  # the fast path touched no network
    assert leftovers(Path.cwd()) == []


def test_cache_hit_does_not_rehash(server, monkeypatch):
    url = server.url("/data/train.csv")
    colabkit.fetch(url, quiet=True)
    import colabkit._fetch.cache as fetch_module

    def no_hashing(*args, **kwargs):
        raise AssertionError("the fast path must not hash the file")

    monkeypatch.setattr(fetch_module, "hash_file", no_hashing)
    assert colabkit.fetch(url, quiet=True).read_bytes() == PAYLOAD


def test_default_folder_is_the_project_data_folder(server):
    project = colabkit.setup("ML2022", quiet=True)
    path = colabkit.fetch(server.url("/data/train.csv"), "covid.train.csv", quiet=True)
    assert path == project.data / "covid.train.csv"
    assert path.read_bytes() == PAYLOAD


def test_output_path_creates_missing_parents(server, tmp_path):
    target = tmp_path / "deep" / "er" / "file.bin"
    path = colabkit.fetch(server.url("/data/train.csv"), target, quiet=True)
    assert path == target and target.read_bytes() == PAYLOAD


def test_changed_or_missing_file_is_fetched_again(server):
    url = server.url("/data/train.csv")
    path = colabkit.fetch(url, quiet=True)
    corrupted = bytearray(PAYLOAD)
    corrupted[1000] ^= 0xFF
    path.write_bytes(bytes(corrupted))  # same size, new content, new mtime
    assert colabkit.fetch(url, quiet=True).read_bytes() == PAYLOAD
    assert server.state.count() == 2
    path.unlink()
    assert colabkit.fetch(url, quiet=True).read_bytes() == PAYLOAD
    assert server.state.count() == 3
    path.write_bytes(b"short")  # a different size is a change without hashing
    assert colabkit.fetch(url, quiet=True).read_bytes() == PAYLOAD
    assert server.state.count() == 4


def test_touched_but_identical_file_is_reused_after_a_hash(server):
    url = server.url("/data/train.csv")
    path = colabkit.fetch(url, quiet=True)
    os.utime(path, (1_000_000, 1_000_000))  # e.g. a copy that lost its mtime
    assert colabkit.fetch(url, quiet=True) == path
    assert server.state.count() == 1


def test_verify_true_rehashes_and_catches_silent_corruption(server):
    url = server.url("/data/train.csv")
    path = colabkit.fetch(url, quiet=True)
    info = path.stat()
    corrupted = bytearray(PAYLOAD)
    corrupted[5] ^= 0x01
    path.write_bytes(bytes(corrupted))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # size and mtime as stamped
    assert colabkit.fetch(url, quiet=True).read_bytes() == bytes(corrupted)  # fast path trusts the stamp
    assert server.state.count() == 1
    assert colabkit.fetch(url, quiet=True, verify=True).read_bytes() == PAYLOAD
    assert server.state.count() == 2


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5"])
def test_pinned_hash_is_checked(server, algorithm):
    digest = hashlib.new(algorithm, PAYLOAD).hexdigest()
    path = colabkit.fetch(server.url("/data/train.csv"), hash=f"{algorithm}:{digest}", quiet=True)
    assert path.read_bytes() == PAYLOAD
    # the pin is satisfied from the stamp on the next call
    colabkit.fetch(server.url("/data/train.csv"), hash=f"{algorithm}:{digest.upper()}", quiet=True)
    assert server.state.count() == 1


def test_hash_mismatch_publishes_nothing(server):
    wrong = "0" * 64
    with pytest.raises(errors.HashMismatchError) as info:
        colabkit.fetch(server.url("/data/train.csv"), hash=f"sha256:{wrong}", quiet=True)
    message = str(info.value)
    assert f"sha256:{wrong}" in message and f"sha256:{sha256(PAYLOAD)}" in message
    assert "Nothing was saved" in message
    assert sorted(p.name for p in Path.cwd().iterdir()) == []  # no file, no temp, no manifest


def test_hash_mismatch_keeps_an_existing_good_file(server):
    url = server.url("/data/train.csv")
    path = colabkit.fetch(url, quiet=True)
    with pytest.raises(errors.HashMismatchError):
        colabkit.fetch(url, hash="md5:" + "1" * 32, quiet=True)
    assert path.read_bytes() == PAYLOAD
    assert leftovers(Path.cwd()) == []


def test_existing_matching_file_is_adopted_without_download(server):
    (Path.cwd() / "train.csv").write_bytes(PAYLOAD)
    colabkit.fetch(server.url("/data/train.csv"), "train.csv", hash=f"sha256:{sha256(PAYLOAD)}", quiet=True)
    assert server.state.count() == 0


@pytest.mark.parametrize("bad", ["md5:abc", "sha512:" + "0" * 128, "sha256:" + "z" * 64, ""])
def test_bad_hash_spec_is_rejected_before_any_request(server, bad):
    with pytest.raises(errors.ConfigError, match="sha256:<64 hex digits>"):
        colabkit.fetch(server.url("/data/train.csv"), hash=bad, quiet=True)
    assert server.state.count() == 0


# --------------------------------------------------------------------------- failures in transit


def test_connection_dropped_mid_body_publishes_nothing_and_resumes(server):
    big = os.urandom(3 * 2**20)  # several of gdown's 512 KiB chunks arrive before the drop
    server.state.files["/data/big.bin"] = big
    url = server.url("/data/big.bin")
    server.state.drops["/data/big.bin"] = 1
    with pytest.raises(errors.NetworkError) as info:
        colabkit.fetch(url, retries=0, quiet=True)
    assert "fetch again" in str(info.value)
    assert not (Path.cwd() / "big.bin").exists()
    assert not (Path.cwd() / MANIFEST_NAME).exists()

    path = colabkit.fetch(url, retries=0, quiet=True, hash=f"sha256:{sha256(big)}")
    assert path.read_bytes() == big
    last = server.state.requests[-1].headers.get("Range", "")
    assert last.startswith("bytes=") and int(last[6:-1]) >= 2**20  # resumed, not refetched
    assert leftovers(Path.cwd()) == []


def test_retries_complete_a_dropped_transfer_in_one_call(server):
    server.state.drops["/data/train.csv"] = 1
    path = colabkit.fetch(server.url("/data/train.csv"), retries=2, quiet=True,
                          hash=f"sha256:{sha256(PAYLOAD)}")
    assert path.read_bytes() == PAYLOAD
    assert server.state.count() == 2


@pytest.mark.parametrize("status", [404, 500])
def test_http_status_errors(server, status):
    server.state.statuses["/data/broken.bin"] = status
    with pytest.raises(errors.HTTPStatusError, match=f"HTTP {status}") as info:
        colabkit.fetch(server.url("/data/broken.bin"), quiet=True)
    assert str(info.value).rstrip().endswith(".")
    assert "fetch again" in str(info.value).lower()
    assert list(Path.cwd().iterdir()) == []


def test_network_failure_is_a_network_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(errors.NetworkError, match="internet connection"):
        colabkit.fetch(f"http://127.0.0.1:{port}/x.bin", retries=0, quiet=True)
    assert not (Path.cwd() / "x.bin").exists()


def test_output_that_is_a_directory_is_refused(server):
    (Path.cwd() / "train.csv").mkdir()
    with pytest.raises(errors.ConfigError, match="existing directory"):
        colabkit.fetch(server.url("/data/train.csv"), "train.csv", quiet=True)
    assert server.state.count() == 0


def test_output_folder_that_cannot_be_created_is_refused(server, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(errors.DownloadError, match="Cannot use .* as the destination folder"):
        colabkit.fetch(server.url("/data/train.csv"), tmp_path / "afile" / "x.bin", quiet=True)
    assert server.state.count() == 0


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize("link", [
    FILE_ID,
    f"https://drive.google.com/file/d/{FILE_ID}/view?usp=sharing",
    f"https://drive.google.com/file/d/{FILE_ID}/view",
    f"https://drive.google.com/open?id={FILE_ID}",
    f"https://drive.google.com/uc?id={FILE_ID}&export=download",
    f"https://drive.usercontent.google.com/download?id={FILE_ID}&export=download&confirm=t",
])
def test_every_drive_file_form_has_the_same_cache_key(link):
    parsed = parse_source(link)
    assert parsed.kind == "drive_file" and parsed.key == f"gdrive:{FILE_ID}"
    assert parsed.url == f"https://drive.google.com/uc?id={FILE_ID}"


def test_drive_folder_link_is_a_folder():
    parsed = parse_source(f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=sharing")
    assert parsed.kind == "drive_folder" and parsed.drive_id == FOLDER_ID


@pytest.mark.parametrize("bad", [
    "pikachu.png", "1sUrl", "ftp://example.com/x.zip", "www.example.com/data.zip",
    "https://drive.google.com/drive/my-drive", "https://drive.google.com/file/d/short/view", "",
])
def test_invalid_sources_are_rejected_before_any_request(server, bad):
    with pytest.raises(errors.InvalidSourceError) as info:
        colabkit.fetch(bad, quiet=True)
    assert "Drive file id" in str(info.value) and "http(s)://" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert server.state.count() == 0


# --------------------------------------------------------------------------- Drive, through gdown's own code


def test_drive_id_download_takes_drives_file_name_and_any_link_hits_the_cache(drive):
    drive.state.drive[FILE_ID] = DriveFile("pikachu.png", PAYLOAD)
    path = colabkit.fetch(FILE_ID, quiet=True)
    assert path == Path.cwd() / "pikachu.png" and path.read_bytes() == PAYLOAD
    requests_made = drive.state.count()
    assert colabkit.fetch(f"https://drive.google.com/file/d/{FILE_ID}/view", quiet=True) == path
    assert drive.state.count() == requests_made


def test_drive_virus_scan_page_is_confirmed_by_gdown(drive):
    big = os.urandom(200_000)
    drive.state.drive[FILE_ID] = DriveFile("weights.bin", big, mode="virus_scan")
    path = colabkit.fetch(f"https://drive.google.com/file/d/{FILE_ID}/view", "w.bin",
                          hash=f"sha256:{sha256(big)}", quiet=True)
    assert path.read_bytes() == big
    confirmed = [r for r in drive.state.requests if r.host == "drive.usercontent.google.com"]
    assert confirmed and confirmed[-1].query.get("confirm") == ["t"]


def test_drive_quota_page_is_a_quota_error(drive):
    drive.state.drive[FILE_ID] = DriveFile("popular.zip", PAYLOAD, mode="quota")
    with pytest.raises(errors.QuotaExceededError) as info:
        colabkit.fetch(FILE_ID, "popular.zip", quiet=True)
    message = str(info.value)
    assert "24 hours" in message and "your own Drive" in message and "Drive API" in message
    assert not isinstance(info.value, errors.NotPublicError)
    assert list(Path.cwd().iterdir()) == []


def test_drive_permission_page_is_a_not_public_error(drive):
    drive.state.drive[FILE_ID] = DriveFile("secret.csv", PAYLOAD, mode="private")
    with pytest.raises(errors.NotPublicError) as info:
        colabkit.fetch(FILE_ID, quiet=True)
    assert "Anyone with the link" in str(info.value)
    assert not isinstance(info.value, errors.QuotaExceededError)
    assert [r.host for r in drive.state.requests] == ["drive.google.com", "accounts.google.com"]
    assert list(Path.cwd().iterdir()) == []


def test_drive_folder_link_downloads_the_folder_once(drive):
    drive.state.drive[FILE_ID] = DriveFile("a.csv", b"a,b\n1,2\n")
    drive.state.drive[OTHER_ID] = DriveFile("b.txt", b"hello")
    sub_id = "1SuBfOlDeRiDaBcDeFgHiJkLmNoPq"
    drive.state.folders[FOLDER_ID] = ("hw1-data", [FILE_ID, sub_id])
    drive.state.folders[sub_id] = ("nested", [OTHER_ID])
    link = f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=sharing"
    path = colabkit.fetch(link, quiet=True)
    assert path == Path.cwd() / "hw1-data"
    assert (path / "a.csv").read_bytes() == b"a,b\n1,2\n"
    assert (path / "nested" / "b.txt").read_bytes() == b"hello"
    made = drive.state.count()
    assert colabkit.fetch(link, quiet=True) == path
    assert drive.state.count() == made
    assert leftovers(Path.cwd()) == []
    (path / "nested" / "b.txt").unlink()  # a missing member means fetching the folder again
    colabkit.fetch(link, quiet=True)
    assert (path / "nested" / "b.txt").read_bytes() == b"hello"


def test_hash_with_a_folder_is_refused(drive):
    with pytest.raises(errors.ConfigError, match="single file"):
        colabkit.fetch(f"https://drive.google.com/drive/folders/{FOLDER_ID}", hash="md5:" + "0" * 32)
    assert drive.state.count() == 0


def test_extract_true_returns_the_extracted_folder_and_reuses_it(server):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("food-11/training/0_1.jpg", b"jpeg bytes")
    server.state.files["/food-11.zip"] = buffer.getvalue()
    project = colabkit.setup("ML2022", quiet=True)
    folder = colabkit.fetch(server.url("/food-11.zip"), extract=True, quiet=True)
    assert folder == project.data / "food-11" / "food-11"  # the archive's one top-level folder (issue 13 item 8)
    assert (folder / "training" / "0_1.jpg").read_bytes() == b"jpeg bytes"
    assert colabkit.fetch(server.url("/food-11.zip"), extract=True, quiet=True) == folder
    assert server.state.count() == 1


def test_extract_with_a_folder_is_refused(drive):
    with pytest.raises(errors.ConfigError, match="archive file"):
        colabkit.fetch(f"https://drive.google.com/drive/folders/{FOLDER_ID}", extract=True)
    assert drive.state.count() == 0


WRITE_LIMIT = r"""
import resource, signal, sys
import colabkit
from colabkit.errors import DownloadError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)    # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    colabkit.fetch(sys.argv[1], quiet=True, retries=0)
except DownloadError as exc:
    print(type(exc).__name__, exc)
"""


def test_a_failed_write_raises_a_download_error_and_publishes_nothing(server, tmp_path):
    from tests.conftest import run_python

    folder = tmp_path / "limited"
    folder.mkdir()
    result = run_python(WRITE_LIMIT, server.url("/data/train.csv"), cwd=folder)
    assert result.stdout.startswith("DownloadError Could not write the download"), result.stdout + result.stderr
    # the advice comes from the errno (EFBIG here), not "free some space" for every failure
    assert "larger than this system allows" in result.stdout and "file-size limit" in result.stdout
    assert "free some space" not in result.stdout.lower()
    assert sorted(p.name for p in folder.iterdir()) == []  # no file, no partial folder, no manifest
