"""colabkit.stage: Drive (the local stand-in) -> local cache disk, real files and threads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import colabkit
from colabkit import errors
from colabkit._fsio import STALE_AFTER
from colabkit._stage import SOURCE_MARKER

from tests.conftest import run_python


def make_tree(root: Path, count: int) -> dict[str, bytes]:
    files = {}
    for i in range(count):
        rel = f"class{i % 11}/img{i:05d}.bin"
        files[rel] = f"sample {i}\n".encode() * (1 + i % 7)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def is_lock(name: str) -> bool:
    """The destination's lock files (_fsio.locked), which stay beside it."""
    return name.endswith((".lock", ".lock.pid"))


def hidden_siblings(folder: Path) -> list[str]:
    """Hidden names in `folder` other than lock files: partial copies, temps."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not is_lock(p.name))


def inodes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_ino for p in root.rglob("*")
            if p.is_file() and p.name != SOURCE_MARKER}


def test_stage_2000_files_then_a_second_stage_copies_nothing(tmp_path, capsys):
    drive = Path(os.environ["COLABKIT_DRIVE_DIR"]) / "ML2022" / "data" / "food"
    files = make_tree(drive, 2000)
    staged = colabkit.stage(drive, workers=8)
    assert staged == Path(os.environ["COLABKIT_CACHE_DIR"]) / "staged" / "food"
    assert "2000 copied, 0 already there" in capsys.readouterr().out
    for rel, data in files.items():
        assert (staged / rel).read_bytes() == data
        assert (staged / rel).stat().st_mtime_ns == (drive / rel).stat().st_mtime_ns
    first = inodes(staged)
    assert len(first) == 2000  # no temporaries left behind

    assert colabkit.stage(drive, workers=8) == staged
    assert "0 copied, 2000 already there" in capsys.readouterr().out
    assert inodes(staged) == first  # nothing was rewritten

    (drive / "class3/img00003.bin").write_bytes(b"changed")
    colabkit.stage(drive, workers=8)
    assert "1 copied, 1999 already there" in capsys.readouterr().out
    assert (staged / "class3/img00003.bin").read_bytes() == b"changed"
    after = inodes(staged)
    assert {k for k in first if after[k] != first[k]} == {"class3/img00003.bin"}


def test_stage_keeps_extra_local_files_and_clears_stale_temporaries(tmp_path):
    src = tmp_path / "drive" / "d"
    make_tree(src, 5)
    dest = tmp_path / "local"
    colabkit.stage(src, dest, quiet=True)
    (dest / "notes.txt").write_text("mine")
    dead = dead_pid()
    stale = dest / "class1" / f".img00001.bin.{dead}-0badcafe.tmp"  # _fsio's scheme, a dead writer's
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 2 * STALE_AFTER,) * 2)
    recent = dest / "class1" / f".img00006.bin.{dead}-0badcafe.tmp"  # dead writer, but not idle long enough
    recent.write_bytes(b"half")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            alive = dest / "class1" / f".img00012.bin.{live.pid}-0badcafe.tmp"  # a live writer's work
            alive.write_bytes(b"in progress")
            os.utime(alive, (time.time() - 2 * STALE_AFTER,) * 2)
            (dest / "class1" / "img00001.bin").unlink()
            colabkit.stage(src, dest, quiet=True)
        finally:
            live.kill()
    assert (dest / "notes.txt").read_text() == "mine"
    assert not stale.exists()
    assert recent.read_bytes() == b"half" and alive.read_bytes() == b"in progress"  # one stale rule
    assert (dest / "class1" / "img00001.bin").read_bytes() == (src / "class1" / "img00001.bin").read_bytes()


def test_stage_a_single_archive_and_extract_it(tmp_path):
    archive = tmp_path / "drive" / "food-11.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("training/0_0.jpg", b"jpeg")
        zf.writestr("validation/0_1.jpg", b"jpeg")
    folder = colabkit.stage(archive, extract=True, quiet=True)
    cache = Path(os.environ["COLABKIT_CACHE_DIR"]) / "staged"
    assert folder == cache / "food-11"  # two top-level folders: the target itself (issue 13 item 8)
    assert (cache / "food-11.zip").read_bytes() == archive.read_bytes()
    assert (folder / "training" / "0_0.jpg").read_bytes() == b"jpeg"
    mtime = (cache / "food-11.zip").stat().st_mtime_ns
    assert colabkit.stage(archive, extract=True, quiet=True) == folder
    assert (cache / "food-11.zip").stat().st_mtime_ns == mtime


def test_single_file_into_an_existing_folder(tmp_path):
    src = tmp_path / "a.csv"
    src.write_text("x\n")
    (tmp_path / "out").mkdir()
    assert colabkit.stage(src, tmp_path / "out", quiet=True) == tmp_path / "out" / "a.csv"


def test_missing_source_says_what_to_do(tmp_path):
    with pytest.raises(errors.StageError, match="does not exist"):
        colabkit.stage(tmp_path / "nope")


def test_bad_arguments(tmp_path):
    src = tmp_path / "d"
    make_tree(src, 2)
    with pytest.raises(errors.ConfigError, match="workers"):
        colabkit.stage(src, workers=0)
    with pytest.raises(errors.StageError, match="inside"):
        colabkit.stage(src, src / "copy")
    with pytest.raises(errors.ConfigError, match="archive"):
        colabkit.stage(src, extract=True)


WRITE_LIMIT = r"""
import os, resource, signal, sys
from pathlib import Path
import colabkit
from colabkit.errors import StageError

src, dest = Path(sys.argv[1]), Path(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)            # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    colabkit.stage(src, dest, workers=int(sys.argv[3]), quiet=True)
except StageError as exc:
    print("STAGE-ERROR", exc)
"""


@pytest.mark.parametrize("workers", [1, 4])  # 1: cp copies a new local folder (and fails); 4: Python threads
def test_a_failed_copy_of_a_new_folder_is_never_published(tmp_path, workers):
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.txt").write_bytes(b"s" * 1000)
    (src / "big.bin").write_bytes(os.urandom(300_000))
    dest = tmp_path / "dest"
    result = run_python(WRITE_LIMIT, str(src), str(dest), str(workers))
    assert "STAGE-ERROR" in result.stdout, result.stderr
    assert "big.bin" in result.stdout and "larger than this system allows" in result.stdout
    assert not dest.exists()  # the failed copy is not published under its final name
    partials = hidden_siblings(tmp_path)
    assert len(partials) == 1 and partials[0].startswith(".dest.partial-"), partials
    partial = tmp_path / partials[0]
    assert not [p for p in partial.rglob("*") if p.name.endswith(".tmp")]  # no temp left inside
    if (partial / "big.bin").exists():  # cp's cut-short file: lacks the source's mtime, so it is redone
        assert (partial / "big.bin").stat().st_mtime_ns != (src / "big.bin").stat().st_mtime_ns
    colabkit.stage(src, dest, quiet=True)  # without the limit it completes, resuming the hidden folder
    assert (dest / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert (dest / "small.txt").read_bytes() == (src / "small.txt").read_bytes()
    assert hidden_siblings(tmp_path) == []


def test_a_failed_update_leaves_the_old_file_and_no_temp(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.txt").write_bytes(b"s" * 1000)
    (src / "big.bin").write_bytes(b"old")
    dest = tmp_path / "dest"
    colabkit.stage(src, dest, quiet=True)
    (src / "big.bin").write_bytes(os.urandom(300_000))
    result = run_python(WRITE_LIMIT, str(src), str(dest), "1")
    assert "STAGE-ERROR" in result.stdout and "big.bin" in result.stdout, result.stderr
    assert (dest / "big.bin").read_bytes() == b"old"  # replaced only by a complete copy
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == [SOURCE_MARKER]


def test_two_source_folders_with_the_same_name_get_separate_copies(tmp_path):
    first, second = tmp_path / "hw1" / "data", tmp_path / "hw2" / "data"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    (first / "only-in-hw1.txt").write_text("1")
    (second / "only-in-hw2.txt").write_text("2")
    one = colabkit.stage(first, quiet=True)
    two = colabkit.stage(second, quiet=True)
    assert one != two
    assert sorted(p.name for p in one.iterdir() if not p.name.startswith(".")) == ["only-in-hw1.txt"]
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith(".")) == ["only-in-hw2.txt"]
    assert colabkit.stage(first, quiet=True) == one and colabkit.stage(second, quiet=True) == two


def test_default_workers_follow_the_medium(tmp_path):
    from colabkit._runtime import mountpoint
    from colabkit._stage import DRIVE_WORKERS, default_workers

    assert default_workers(mountpoint() / "MyDrive" / "data") == DRIVE_WORKERS
    assert default_workers(tmp_path / "data") == 1


def cp_shim(folder: Path, body: str) -> str:
    """A `cp` on a PATH of its own: logs its arguments, then runs `body` (real cp is "$REAL")."""
    folder.mkdir()
    shim = folder / "cp"
    shim.write_text(f'#!/bin/sh\nREAL={shutil.which("cp")}\necho "$@" >> "{folder}/log"\n{body}\n')
    shim.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_a_new_local_folder_is_copied_by_cp_into_a_hidden_sibling_then_renamed(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    files = make_tree(src, 300)
    monkeypatch.setenv("PATH", cp_shim(tmp_path / "bin", 'exec "$REAL" "$@"'))
    dest = tmp_path / "out" / "data"
    assert colabkit.stage(src, dest) == dest
    assert "300 copied, 0 already there" in capsys.readouterr().out
    assert ".data.partial-" in (tmp_path / "bin" / "log").read_text()  # cp wrote the hidden sibling
    assert sorted(p.name for p in dest.parent.iterdir() if not is_lock(p.name)) == ["data"]  # renamed
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
        assert (dest / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns
    first = inodes(dest)
    colabkit.stage(src, dest)
    assert "0 copied, 300 already there" in capsys.readouterr().out
    assert inodes(dest) == first


def test_when_cp_fails_the_copy_goes_on_file_by_file(tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = make_tree(src, 40)
    # cp copies everything, then leaves one file cut short and fails
    body = '"$REAL" "$@"\nfor last; do :; done\nprintf half > "$last/class3/img00003.bin"\nexit 1'
    monkeypatch.setenv("PATH", cp_shim(tmp_path / "bin", body))
    dest = tmp_path / "dest"
    colabkit.stage(src, dest, quiet=True)
    assert (tmp_path / "bin" / "log").exists()
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*")
            if p.is_file() and p.name != SOURCE_MARKER} == files
    assert hidden_siblings(tmp_path) == []


KILLED_MIDWAY = r"""
import os, signal, sys
from pathlib import Path
import colabkit._stage as staging

copy, done = staging._copy_in_place, []
def copy_then_die(item):
    copy(item)
    done.append(item)
    if len(done) == 50:
        os.kill(os.getpid(), signal.SIGKILL)
staging._copy_in_place = copy_then_die
staging.stage(Path(sys.argv[1]), Path(sys.argv[2]), workers=2, quiet=True)
"""


def test_a_killed_run_leaves_nothing_visible_and_the_next_run_resumes_it(tmp_path, capsys):
    src = tmp_path / "src"
    files = make_tree(src, 400)
    dest = tmp_path / "dest"
    result = run_python(KILLED_MIDWAY, str(src), str(dest))
    assert result.returncode == -9, result.stderr
    assert not dest.exists()  # a copy cut short never looks complete
    partials = hidden_siblings(tmp_path)
    assert len(partials) == 1 and partials[0].startswith(".dest.partial-"), partials
    assert (tmp_path / partials[0]).is_dir()
    colabkit.stage(src, dest, workers=2)
    out = capsys.readouterr().out
    resumed = int(out.split(" already there")[0].rsplit(" ", 1)[1])
    assert resumed >= 50, out  # the killed run's finished files were kept
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*")
            if p.is_file() and p.name != SOURCE_MARKER} == files
    assert hidden_siblings(tmp_path) == []
