"""colabkit.extract over time: content identity, the user's own files, one top-level folder, locks, Drive's trash."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

import colabkit
from colabkit import errors
from colabkit._archive.marker import MARKER_NAME
from colabkit._fsio import STALE_AFTER, temp_path

LOCK_FILE = re.compile(r"^\.[^/]+\.lock(\.pid)?$")


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not LOCK_FILE.match(p.name))


V1 = {"train/a.csv": b"x,y\n1,2\n", "train/old.csv": b"gone in v2\n", "README.txt": b"v1\n"}
V2 = {"train/a.csv": b"x,y\n5,6\n", "train/new.csv": b"new in v2\n", "README.txt": b"v2\n"}


@pytest.fixture
def box(tmp_path):
    folder = tmp_path / "box"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- identity by content


def test_touching_or_recopying_the_archive_re_extracts_nothing(box):
    archive = make_zip(box / "d.zip", V1)
    folder = colabkit.extract(archive, quiet=True)
    (folder / "my_labels_cleaned.csv").write_text("mine\n")
    before = {p: p.stat().st_ino for p in folder.rglob("*")}
    later = time.time() + 100
    os.utime(archive, (later, later))  # downloaded or copied again: same bytes, new mtime
    assert colabkit.extract(archive, quiet=True) == folder
    shutil.copy(archive, box / "copy.zip")
    os.replace(box / "copy.zip", archive)
    assert colabkit.extract(archive, quiet=True) == folder
    assert {p: p.stat().st_ino for p in folder.rglob("*") if p.name != MARKER_NAME} == \
        {p: i for p, i in before.items() if p.name != MARKER_NAME}
    marker = json.loads((folder / MARKER_NAME).read_text())
    assert marker["hash"].startswith("xxh3_128:") and marker["mtime_ns"] == archive.stat().st_mtime_ns


def test_changed_archive_replaces_only_what_colabkit_extracted(box):
    archive = make_zip(box / "d.zip", V1)
    folder = colabkit.extract(archive, quiet=True)
    (folder / "my_labels_cleaned.csv").write_text("mine\n")
    (folder / "train" / "notes.txt").write_text("my notes\n")
    (folder / "mine").mkdir()
    (folder / "mine" / "model.pt").write_bytes(b"weights")
    make_zip(archive, V2)
    assert colabkit.extract(archive, quiet=True) == folder
    for name, data in V2.items():
        assert (folder / name).read_bytes() == data
    assert not (folder / "train" / "old.csv").exists()  # dropped from the archive: retired
    assert (folder / "my_labels_cleaned.csv").read_text() == "mine\n"
    assert (folder / "train" / "notes.txt").read_text() == "my notes\n"
    assert (folder / "mine" / "model.pt").read_bytes() == b"weights"
    marker = json.loads((folder / MARKER_NAME).read_text())
    assert sorted(marker["files"]) == sorted(V2) and marker["state"] == "complete"
    assert names(box) == ["d", "d.zip"]  # no work folder left


def test_new_archive_member_where_the_user_has_a_file_changes_nothing(box):
    archive = make_zip(box / "d.zip", V1)
    folder = colabkit.extract(archive, quiet=True)
    (folder / "train" / "new.csv").write_text("the user's own\n")
    make_zip(archive, V2)
    with pytest.raises(errors.ArchiveError, match="your own files.*new.csv.*Move those files away"):
        colabkit.extract(archive, quiet=True)
    assert (folder / "train" / "new.csv").read_text() == "the user's own\n"
    for name, data in V1.items():
        assert (folder / name).read_bytes() == data


def test_update_killed_half_way_is_finished_by_the_next_call(box, monkeypatch):
    archive = make_zip(box / "d.zip", V1)
    folder = colabkit.extract(archive, quiet=True)
    (folder / "mine.txt").write_text("mine\n")
    make_zip(archive, V2)
    real_replace, calls = os.replace, []

    def dies_on_second_file(src, dst, **kwargs):
        calls.append(src)
        if kwargs.get("src_dir_fd") is not None and len(calls) == 2:
            raise KeyboardInterrupt  # the cell was stopped mid-way
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        colabkit.extract(archive, quiet=True)
    assert json.loads((folder / MARKER_NAME).read_text())["state"] == "updating"
    monkeypatch.setattr(os, "replace", real_replace)
    assert colabkit.extract(archive, quiet=True) == folder
    for name, data in V2.items():
        assert (folder / name).read_bytes() == data
    assert (folder / "mine.txt").read_text() == "mine\n" and not (folder / "train" / "old.csv").exists()


def test_marker_of_colabkit_0_1_still_counts_as_ours(box):
    archive = make_zip(box / "d.zip", V1)
    folder = colabkit.extract(archive, quiet=True)
    info = archive.stat()
    (folder / MARKER_NAME).write_text(json.dumps({"archive": "d.zip", "size": info.st_size,
                                                  "mtime_ns": info.st_mtime_ns}))
    (folder / "mine.txt").write_text("mine\n")
    assert colabkit.extract(archive, quiet=True) == folder  # same stamp: reused
    make_zip(archive, V2)
    colabkit.extract(archive, quiet=True)
    assert (folder / "README.txt").read_bytes() == b"v2\n" and (folder / "mine.txt").exists()


# --------------------------------------------------------------------------- single-file .gz


def test_gz_never_overwrites_a_file_colabkit_did_not_write(box):
    archive = box / "covid.train.csv.gz"
    archive.write_bytes(gzip.compress(b"id,x\n1,2\n"))
    (box / "covid.train.csv").write_text("my own edited copy\n")
    with pytest.raises(errors.ArchiveError, match="colabkit did not write it.*Move or rename it"):
        colabkit.extract(archive, quiet=True)
    assert (box / "covid.train.csv").read_text() == "my own edited copy\n"


def test_gz_rewrites_its_own_output_only_when_the_archive_changed(box):
    archive = box / "covid.train.csv.gz"
    archive.write_bytes(gzip.compress(b"id,x\n1,2\n"))
    out = box / "covid.train.csv"
    colabkit.extract(archive, quiet=True)
    inode = out.stat().st_ino
    later = time.time() + 50
    os.utime(archive, (later, later))
    colabkit.extract(archive, quiet=True)
    assert out.stat().st_ino == inode  # same bytes: nothing rewritten
    archive.write_bytes(gzip.compress(b"id,x\n3,4\n"))
    colabkit.extract(archive, quiet=True)
    assert out.read_bytes() == b"id,x\n3,4\n"
    out.write_text("edited by me\n")
    archive.write_bytes(gzip.compress(b"id,x\n5,6\n"))
    with pytest.raises(errors.ArchiveError, match="changed since"):
        colabkit.extract(archive, quiet=True)
    assert out.read_text() == "edited by me\n"


# --------------------------------------------------------------------------- one top-level folder


def test_single_top_level_folder_is_returned(box):
    archive = make_zip(box / "food11.zip", {"food11/training/0_1.jpg": b"img", "food11/validation/1_2.jpg": b"v",
                                            "__MACOSX/food11/._0_1.jpg": b"mac"})
    folder = colabkit.extract(archive, quiet=True)
    assert folder == box / "food11" / "food11"
    assert (folder / "training" / "0_1.jpg").read_bytes() == b"img"
    assert colabkit.extract(archive, quiet=True) == folder  # the reuse path too
    assert colabkit.extract(archive, quiet=True, unwrap=False) == box / "food11"


def test_several_top_level_entries_return_the_target(box):
    archive = make_zip(box / "d.zip", V1)
    assert colabkit.extract(archive, quiet=True) == box / "d"
    archive = make_zip(box / "one.zip", {"only.txt": b"a file, not a folder"})
    assert colabkit.extract(archive, quiet=True) == box / "one"


# --------------------------------------------------------------------------- temps, locks, errors, Drive


def test_a_live_writers_work_folder_is_never_deleted(box):
    archive = make_zip(box / "d.zip", V1)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = temp_path(box / "d", "extract")
        live = live.with_name(live.name.replace(f"-{os.getpid()}-", f"-{sleeper.pid}-"))
        live.mkdir()
        (live / "half.txt").write_text("being written")
        dead = box / f".d.extract-{2**22 + 7}-0a0b0c0d.tmp"  # a pid beyond pid_max: gone
        dead.mkdir()
        old = time.time() - STALE_AFTER - 60
        for path in (live, dead):
            os.utime(path, (old, old))
        colabkit.extract(archive, quiet=True)
        assert (live / "half.txt").exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


CONCURRENT = textwrap.dedent("""
    import sys, colabkit
    folder = colabkit.extract(sys.argv[1], to=sys.argv[2])
    print("RESULT", folder)
""")


def test_two_processes_extracting_into_one_folder(box):
    files = {f"part{i // 200}/f{i:05d}.bin": os.urandom(64) * 8 for i in range(3000)}
    archive = make_zip(box / "big.zip", files)
    target = box / "out"
    children = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(archive), str(target)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    notes = sorted("Extracted" if "Extracted big.zip" in out else "Using" if "already extracted" in out else out
                   for out, _ in outputs)
    assert notes == ["Extracted", "Using"]  # one extracted, the other waited for it and reused it
    assert all(f"RESULT {target}" in out for out, _ in outputs)
    for name, data in list(files.items())[::101]:
        assert (target / name).read_bytes() == data
    assert sum(1 for p in target.rglob("*.bin")) == 3000
    assert names(box) == ["big.zip", "out"]


FSIZE_CHILD = textwrap.dedent("""
    import resource, signal, sys, colabkit
    from colabkit import errors
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
    try:
        colabkit.extract(sys.argv[1], quiet=True)
    except errors.ArchiveError as exc:
        print("ERROR", exc)
""")


def test_write_failure_names_its_cause_from_the_errno(box):
    archive = make_zip(box / "d.zip", {"big.bin": bytes(3 * 2**20)})
    done = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(archive)], capture_output=True, text=True,
                          timeout=120)
    assert "ERROR" in done.stdout, done
    assert "larger than this system allows" in done.stdout and "Free some space" not in done.stdout
    assert names(box) == ["d.zip"]  # nothing partial kept


def test_drive_mount_retires_superseded_files_at_zero_bytes(fake_colab, monkeypatch):
    data = fake_colab.mydrive / "data"
    data.mkdir(parents=True)
    archive = make_zip(data / "d.zip", {**V1, "train/big.bin": bytes(200_000)})
    folder = colabkit.extract(archive, quiet=True)
    make_zip(archive, V2)
    sizes = {}
    real_unlink = os.unlink

    def recording_unlink(path, *args, **kwargs):
        try:
            sizes[str(path)] = os.lstat(path, dir_fd=kwargs.get("dir_fd")).st_size
        except OSError:
            pass
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", recording_unlink)
    colabkit.extract(archive, quiet=True)
    retired = {p: s for p, s in sizes.items() if Path(p).name in ("old.csv", "big.bin", "a.csv", "README.txt")}
    assert str(folder / "train" / "big.bin") in retired and str(folder / "train" / "old.csv") in retired
    assert set(retired.values()) == {0}, retired  # Drive's trash keeps 0-byte copies
    assert (folder / "train" / "a.csv").read_bytes() == V2["train/a.csv"]
