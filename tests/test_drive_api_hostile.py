"""Hostile Drive titles and the mirror's deletions, through a real pydrive2 client over HttpMockSequence.

Titles on Drive are outside input: a folder shared with you can hold items
titled '..', 'a/b' or '/etc/x'. Each escape case checks that the folder around
the target is byte-identical afterwards and that no content was downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colabkit._drive_api import session
from colabkit._drive_api.client import DriveFile, local_name
from colabkit.errors import UnsafeNameError
from tests._drive_api_helpers import (  # noqa: F401 - fixtures
    FAKE_TOKEN,
    canned,
    client,
    folder,
    listing,
    media,
    meta,
    ok,
    stored,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:sign\\(\\) is deprecated:DeprecationWarning"),
]

HOSTILE = ["..", ".", "", "a/b", "/etc/x", "..\\evil", "../../outside", "x\x00y", "new\nline", "tab\tname",
           "\u202etxt.exe", "zero\u200bwidth", "x" * 300]


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path below `root`, with the bytes of files (and the targets of links)."""
    seen: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                seen[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                seen[key] = "dir"
            else:
                seen[key] = path.read_bytes()
    return seen


@pytest.fixture
def around(tmp_path):
    """A folder with the user's files, and inside it the (existing) destination."""
    root = tmp_path / "around"
    (root / "dest" / "mine").mkdir(parents=True)
    (root / "keep.txt").write_text("the user's own file")
    (root / "train.py").write_text("print('train')\n")
    (root / "dest" / "mine" / "notes.md").write_text("mine")
    return root


def _no_content_fetched(canned) -> bool:
    return not canned.requests("GET", "alt=media")


@pytest.mark.parametrize("title", HOSTILE)
def test_download_folder_refuses_a_hostile_subfolder_title_before_writing(client, canned, around, title):
    before = snapshot(around.parent)
    canned.add(ok(folder("ROOT", "shared")),
               listing(meta("A", "fine.bin", b"fine", parent="ROOT"), folder("EVIL", title, "ROOT")),
               listing(meta("V", "victim.txt", b"overwritten!", parent="EVIL")))
    with pytest.raises(UnsafeNameError, match="Rename it on Drive") as info:
        client.download_folder("ROOT", around / "dest", progress=False)
    assert "EVIL" in str(info.value)
    assert snapshot(around.parent) == before
    assert _no_content_fetched(canned)


@pytest.mark.parametrize("title", HOSTILE)
def test_sync_down_refuses_a_hostile_file_title_before_writing(client, canned, around, title):
    before = snapshot(around.parent)
    canned.add(listing(folder("R", "runs")),
               listing(meta("A", "fine.bin", b"fine", parent="R"), folder("S", "sub", "R")),
               listing(meta("EVIL", title, b"overwritten!", parent="S")))
    with pytest.raises(UnsafeNameError, match="nothing was downloaded"):
        client.sync_down("runs", around / "dest")
    assert snapshot(around.parent) == before
    assert _no_content_fetched(canned)


@pytest.mark.parametrize("title", ["..", ".", "a/b", "/etc/x", "x\x00y"])
def test_download_folder_refuses_a_hostile_title_of_the_folder_itself(client, canned, around, title):
    before = snapshot(around.parent)
    canned.add(ok(folder("ROOT", title)))
    with pytest.raises(UnsafeNameError):
        client.download_folder("ROOT", around / "dest", progress=False)
    assert snapshot(around.parent) == before
    assert canned.left == 0  # refused before listing anything


@pytest.mark.parametrize("title", ["..", "/etc/x", "a/b", "x\x00y"])
def test_download_into_a_folder_refuses_a_hostile_file_title(client, canned, around, title):
    before = snapshot(around.parent)
    canned.add(ok(meta("F", title, b"overwritten!")))
    with pytest.raises(UnsafeNameError):
        client.download("F", around / "dest", progress=False)
    assert snapshot(around.parent) == before
    assert _no_content_fetched(canned)


def test_download_to_an_explicit_path_ignores_the_title(client, canned, around):
    canned.add(ok(meta("F", "../../etc/passwd", b"data")), media(b"data"))
    assert client.download("F", around / "dest" / "data.bin", progress=False).read_bytes() == b"data"


def test_two_items_with_one_title_are_refused(client, canned, around):
    before = snapshot(around.parent)
    canned.add(listing(folder("R", "runs")),
               listing(meta("A", "labels.csv", b"one", parent="R"), meta("B", "labels.csv", b"two", parent="R")))
    with pytest.raises(UnsafeNameError, match="two items titled 'labels.csv'"):
        client.sync_down("runs", around / "dest")
    assert snapshot(around.parent) == before


def test_safe_unusual_titles_still_download(client, canned, around):
    canned.add(ok(folder("ROOT", "données 2024")),
               listing(meta("A", "é ü.csv", b"a", parent="ROOT"), folder("S", ".hidden dir", "ROOT")),
               listing(meta("B", "x..y", b"b", parent="S")),
               media(b"b"), media(b"a"))  # in name order: ".hidden dir" sorts first
    path = client.download_folder("ROOT", around / "dest", progress=False)
    assert path == around / "dest" / "données 2024"
    assert (path / "é ü.csv").read_bytes() == b"a" and (path / ".hidden dir" / "x..y").read_bytes() == b"b"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_title_names_a_child_of_the_folder_or_is_refused(title):
    folder_path = Path("/srv/dest")
    try:
        name = local_name(DriveFile(id="X", name=title))
    except UnsafeNameError:
        return
    target = folder_path / name
    assert target.parent == folder_path and os.path.normpath(target) == str(target)
    assert name not in ("", ".", "..") and "/" not in name and "\x00" not in name


# --------------------------------------------------------------------------- downloads publish through _fsio


def test_a_download_over_a_file_on_the_drive_mount_leaves_nothing_in_the_trash(fake_colab, client, canned):
    data_dir = fake_colab.mydrive / "data"
    data_dir.mkdir(parents=True)
    old = data_dir / "train.zip"
    old.write_bytes(b"old copy " * 1000)
    trash = fake_colab.content / "trash-view"
    os.link(old, trash)  # what Drive's trash would keep of the superseded file
    canned.add(ok(meta("F", "train.zip", b"new")), media(b"new"))
    client.download("F", old, progress=False)
    assert old.read_bytes() == b"new"
    assert trash.stat().st_size == 0  # truncated before it was unlinked
    assert sorted(p.name for p in data_dir.iterdir()) == ["train.zip"]


# --------------------------------------------------------------------------- the mirror deletes only its own, for good


@pytest.fixture
def signed_in(client):
    session.set_default_client(client)
    yield client
    session.set_default_client(None)


def test_the_mirror_deletes_retired_checkpoints_for_good_and_never_the_users_files(signed_in, canned, tmp_path):
    import torch

    from colabkit import CheckpointManager

    model = torch.nn.Linear(2, 1)
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=1, monitor=None, remote="drive:exp")
    users = [meta("U1", "notes.txt", b"my notes", parent="EXP"),
             meta("U2", "my-best-model.pt", b"weights", parent="EXP"),
             meta("U3", "ckpt-000001.pt.bak", b"a backup", parent="EXP"),
             meta("U4", "ckpt-000008-epoch0008.pt", parent="EXP", mime="application/vnd.google-apps.document"),
             folder("U5", "ckpt-000009-epoch0009.pt", "EXP")]
    retired = meta("OLD", "ckpt-000007-epoch0007.pt", b"an older run's checkpoint", parent="EXP")
    canned.add(listing(folder("EXP", "exp")), listing(*users, retired),
               stored("C1", "ckpt-000001-epoch0001.pt", "EXP"), stored("M", "manifest.json", "EXP"),
               ({"status": "204"}, ""))
    manager.save(model.state_dict(), epoch=1)
    manager.close()
    assert canned.left == 0
    deletes = canned.requests("DELETE")
    assert [r[0].split("?")[0].rsplit("/", 1)[1] for r in deletes] == ["OLD"]  # files.delete: no trash
    assert not canned.requests(contains="/trash")  # the files.trash endpoint
    assert all(b"trashed" not in (r[2] if isinstance(r[2], bytes) else str(r[2] or "").encode())
               for r in canned.request_sequence)
    for user in users:  # no request names a user's file (listings name only the folder)
        assert not [r for r in canned.request_sequence if f"/files/{user['id']}" in r[0]]
