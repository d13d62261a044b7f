"""The Drive API inside fetch(private=True) and CheckpointManager(remote="drive:…").

A real pydrive2 client over canned HTTP replies (HttpMockSequence); real torch
on CPU and real checkpoint files. Drive's copy is whatever the mirror sent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import pytest
import torch

import colabkit
from colabkit._drive_api import config
from colabkit._drive_api import session as drive_api
from colabkit._checkpoint.manager import CheckpointManager, CheckpointWarning
from colabkit.errors import ConfigError, NotPublicError
from colabkit._state import training_state
from tests._drive_api_helpers import (  # noqa: F401 - fixtures
    FAKE_TOKEN,
    CannedDrive,
    canned,
    client,
    error,
    folder,
    listing,
    media,
    meta,
    ok,
    stored,
)

pytestmark = pytest.mark.timeout(120)

FILE_ID = "1PrivateFileIdAbcdefghijklmnopq"


@pytest.fixture
def signed_in(client):
    drive_api.set_default_client(client)
    yield client
    drive_api.set_default_client(None)


# --------------------------------------------------------------------------- fetch


def test_fetch_private_goes_through_the_api(signed_in, canned, tmp_path):
    data = b"id,label\n1,cat\n"
    canned.add(ok(meta(FILE_ID, "train.csv", data)), media(data))
    path = colabkit.fetch(FILE_ID, str(tmp_path / "data" / "train.csv"), private=True, quiet=True,
                          hash="sha256:" + hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data
    assert canned.left == 0 and "alt=media" in canned.request_sequence[1][0]
    # the second call is served from fetch's verified cache: no request at all
    assert colabkit.fetch(FILE_ID, str(tmp_path / "data" / "train.csv"), private=True, quiet=True) == path
    assert len(canned.request_sequence) == 2


def test_fetch_magic_and_cli_take_private(signed_in, canned, ipython_shell, tmp_path, capsys):
    from colabkit import cli
    from colabkit.magics import ColabkitMagics

    ipython_shell.register_magics(ColabkitMagics)
    canned.add(ok(meta(FILE_ID, "a.bin", b"aaa")), media(b"aaa"))
    path = ipython_shell.run_line_magic("fetch", f"{FILE_ID} -o {tmp_path / 'm' / 'a.bin'} --private -q")
    assert path.read_bytes() == b"aaa"
    canned.add(ok(meta(FILE_ID, "b.bin", b"bbb")), media(b"bbb"))
    assert cli.main(["fetch", FILE_ID, "-o", str(tmp_path / "c" / "b.bin"), "--private", "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c" / "b.bin")
    assert canned.left == 0


def test_fetch_private_folder(signed_in, canned, tmp_path):
    folder_id = "1PrivateFolderIdAbcdefghijklmno"
    canned.add(ok(folder(folder_id, "food-11")),
               listing(meta("A", "a.jpg", b"aaaa", parent=folder_id), folder("S", "sub", folder_id)),
               listing(meta("B", "b.jpg", b"bb", parent="S")),  # the whole tree is listed first
               media(b"aaaa"), media(b"bb"))
    path = colabkit.fetch(f"https://drive.google.com/drive/folders/{folder_id}", str(tmp_path / "data") + "/",
                          private=True, quiet=True)
    assert path == tmp_path / "data" / "food-11"
    assert (path / "a.jpg").read_bytes() == b"aaaa" and (path / "sub" / "b.jpg").read_bytes() == b"bb"
    assert canned.left == 0
    assert not (tmp_path / "data" / ".colabkit-partial").exists()


def test_fetch_private_refuses_plain_urls(signed_in):
    with pytest.raises(ConfigError, match="plain URL"):
        colabkit.fetch("https://example.org/x.zip", private=True)


def test_not_public_message_points_to_private_when_signed_in(monkeypatch, tmp_path):
    from colabkit._fetch.errors import not_public_message
    from colabkit._fetch.sources import parse_source

    source = parse_source(FILE_ID)
    monkeypatch.delenv(config.ENV_SERVICE_ACCOUNT, raising=False)
    monkeypatch.delenv(config.ENV_SETTINGS, raising=False)
    assert "private=True" in not_public_message(source) and "drive-api" in not_public_message(source)
    monkeypatch.setenv(config.ENV_SERVICE_ACCOUNT, str(tmp_path / "key.json"))
    assert f"colabkit.fetch('{FILE_ID}', private=True)" in not_public_message(source)
    assert issubclass(NotPublicError, colabkit.errors.DownloadError)


# --------------------------------------------------------------------------- checkpoints


def _state(model, optimizer, epoch):
    return training_state(model, optimizer, epoch=epoch)


def _bytes(body) -> bytes:
    return body if isinstance(body, bytes) else str(body).encode()


def _uploads_since(canned: CannedDrive, start: int) -> list[tuple[str, bytes]]:
    """(upload-session id, bytes) of the uploads after request number `start`."""
    return [(r[0].rsplit("/", 1)[1], r[2]) for r in canned.request_sequence[start:]
            if r[1] == "PUT" and "upload-session" in r[0]]


def test_checkpoints_reach_drive_and_a_wiped_runtime_resumes_from_there(signed_in, canned, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    local = tmp_path / "ckpt"
    manager = CheckpointManager(local, keep_last=2, remote="drive:runs/exp1")
    assert "drive:runs/exp1" in repr(manager) and FAKE_TOKEN not in repr(manager)

    # save 1: the folders are created, then the checkpoint, then the manifest
    canned.add(listing(), ok(folder("RUNS", "runs")), listing(), ok(folder("EXP", "exp1", "RUNS")),
               listing(), stored("C1", "ckpt-000001-epoch0001.pt", "EXP"), stored("M", "manifest.json", "EXP"))
    manager.save(_state(model, optimizer, 1), epoch=1, metric=0.9)
    manager.wait()
    assert canned.left == 0
    (c1, ckpt1), (_, manifest1) = _uploads_since(canned, 0)
    assert ckpt1 == (local / "ckpt-000001-epoch0001.pt").read_bytes()
    assert json.loads(manifest1)["checkpoints"][0]["file"] == "ckpt-000001-epoch0001.pt"

    # save 2: only the new checkpoint travels; the manifest is replaced in place
    with torch.no_grad():
        model.weight.add_(1.0)
    sent = len(canned.request_sequence)
    canned.add(listing(meta("C1", "ckpt-000001-epoch0001.pt", ckpt1, parent="EXP"),
                       meta("M", "manifest.json", manifest1, parent="EXP")),
               stored("C2", "ckpt-000002-epoch0002.pt", "EXP"), stored("M", "manifest.json", "EXP"))
    manager.save(_state(model, optimizer, 2), epoch=2, metric=0.5)
    manager.wait()
    (_, ckpt2), (m, manifest2) = _uploads_since(canned, sent)
    assert m == "M" and canned.requests("PUT", "/upload/drive/v2/files/M")  # an update, same id

    # save 3 (keep_last=2): checkpoint 1 is retired locally, then deleted on Drive for good (not trashed)
    with torch.no_grad():
        model.weight.add_(1.0)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    sent = len(canned.request_sequence)
    canned.add(listing(meta("C1", "ckpt-000001-epoch0001.pt", ckpt1, parent="EXP"),
                       meta("C2", "ckpt-000002-epoch0002.pt", ckpt2, parent="EXP"),
                       meta("M", "manifest.json", manifest2, parent="EXP")),
               stored("C3", "ckpt-000003-epoch0003.pt", "EXP"), stored("M", "manifest.json", "EXP"),
               ({"status": "204"}, ""))
    manager.save(_state(model, optimizer, 3), epoch=3, metric=0.7)
    manager.close()
    assert canned.left == 0
    (_, ckpt3), (_, manifest3) = _uploads_since(canned, sent)
    last = canned.request_sequence[-1]
    assert last[1] == "DELETE" and last[0].split("?")[0].endswith("/files/C1")  # files.delete
    assert not canned.requests(contains="/trash") and not [r for r in canned.request_sequence[sent:]
                                                            if r[2] and b"trashed" in _bytes(r[2])]
    assert [c["file"] for c in json.loads(manifest3)["checkpoints"]] == [
        "ckpt-000002-epoch0002.pt", "ckpt-000003-epoch0003.pt"]

    # a new runtime: the local folder is gone, a fresh client signs in
    shutil.rmtree(local)
    from google.oauth2.credentials import Credentials

    fresh = drive_api.connect_drive(credentials=Credentials(token=FAKE_TOKEN), retries=1)
    fresh.backoff = 0.0
    drive_api.set_default_client(fresh)
    sent = len(canned.request_sequence)
    canned.add(listing(folder("RUNS", "runs")), listing(folder("EXP", "exp1", "RUNS")),
               listing(meta("C2", "ckpt-000002-epoch0002.pt", ckpt2, parent="EXP"),
                       meta("C3", "ckpt-000003-epoch0003.pt", ckpt3, parent="EXP"),
                       meta("M", "manifest.json", manifest3, parent="EXP")),
               media(manifest3), media(ckpt3), media(ckpt2))  # the newest, then the best (0.5)
    torch.manual_seed(1)
    model2 = torch.nn.Linear(4, 2)
    optimizer2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    resumed = CheckpointManager(local, keep_last=2, remote="drive:runs/exp1")
    info = resumed.resume(model2, optimizer2)
    assert canned.left == 0
    assert info is not None and info.epoch == 3 and info.path.name == "ckpt-000003-epoch0003.pt"
    for key, value in expected.items():
        assert torch.equal(model2.state_dict()[key], value), key
    assert sorted(p.name for p in local.iterdir()) == ["ckpt-000002-epoch0002.pt", "ckpt-000003-epoch0003.pt"]
    assert (local / "ckpt-000003-epoch0003.pt").read_bytes() == ckpt3
    assert len(canned.requests("GET", "alt=media")) == 3 and len(canned.request_sequence) - sent == 6


def test_a_corrupted_drive_copy_is_skipped_for_an_older_one(signed_in, canned, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    source = tmp_path / "source"
    manager = CheckpointManager(source, keep_last=2, monitor=None)  # no remote: build a folder
    manager.save(model.state_dict(), epoch=1)
    manager.save({k: v + 1 for k, v in model.state_dict().items()}, epoch=2)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    manifest = files["manifest.json"]
    c1, c2 = "ckpt-000001-epoch0001.pt", "ckpt-000002-epoch0002.pt"
    tampered = bytearray(files[c2])
    tampered[-10] ^= 0xFF
    # Drive's md5 matches the tampered bytes; only the manifest's sha256 can tell
    canned.add(listing(folder("EXP", "exp")),
               listing(meta("A", c1, files[c1], parent="EXP"), meta("B", c2, bytes(tampered), parent="EXP"),
                       meta("M", "manifest.json", manifest, parent="EXP")),
               media(manifest), media(bytes(tampered)), media(files[c1]))
    local = tmp_path / "local"
    restored = CheckpointManager(local, keep_last=2, monitor=None, remote="drive:exp")
    state = restored.load()
    assert canned.left == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # epoch 1's
    assert sorted(p.name for p in local.iterdir()) == [c1]


def test_a_failed_upload_keeps_the_checkpoint_and_is_retried_on_the_next_save(signed_in, canned, tmp_path):
    model = torch.nn.Linear(2, 2)
    local = tmp_path / "ckpt"
    manager = CheckpointManager(local, remote="drive:runs")
    failure = [error(503, "backendError", "Backend Error")] * (signed_in.retries + 1)
    canned.add(listing(folder("R", "runs")), listing(), *failure)
    manager.save(model.state_dict(), epoch=1)
    with pytest.warns(CheckpointWarning, match="saved locally but not yet on Drive.*next save"):
        manager.wait()
    assert canned.left == 0
    assert (local / "ckpt-000001-epoch0001.pt").is_file() and manager.load() is not None

    canned.add(listing(), stored("C1", "ckpt-000001-epoch0001.pt", "R"), stored("C2", "ckpt-000002-epoch0002.pt", "R"),
               stored("M", "manifest.json", "R"))
    manager.save(model.state_dict(), epoch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        manager.close()
    names = [r[0].rsplit("/", 1)[1] for r in canned.request_sequence if "upload-session" in r[0]]
    assert names == ["C1", "C2", "M"]  # the missed checkpoint went up with the new one


def test_remote_spec_and_missing_extra_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="drive:<folder>"):
        CheckpointManager(tmp_path, remote="gs://bucket")
    from tests.conftest import run_python

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'pydrive2': raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import colabkit\n"
        "from colabkit.errors import MissingDependencyError\n"
        "for call in (lambda: colabkit.CheckpointManager('ck', remote='drive:x'),\n"
        "             lambda: colabkit.fetch('1PrivateFileIdAbcdefghijklmnopq', private=True, quiet=True)):\n"
        "    try:\n"
        "        call()\n"
        "    except MissingDependencyError as exc:\n"
        "        print(exc)\n"
    )
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all('pip install "colabkit-ml[drive-api]"' in line for line in lines)
