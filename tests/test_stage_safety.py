"""colabkit.stage keeps to its folders: planted links, aliases, the symlink rule on both copy paths, errors.

For every escape case the folder around the destination (and the source) is
compared byte for byte, links and modes included, before and after.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import colabkit
from colabkit import errors
from colabkit._stage import SOURCE_MARKER

from tests.test_staging import cp_shim, dead_pid, make_tree


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Everything under `root`: kind, bytes or link text, mode and mtime.

    Except `skip` (the destination) with its own lock files beside it, and the
    cp shim's folder (its log grows).
    """
    found: dict[str, tuple] = {}
    skipped = [root / "bin"]
    if skip is not None:
        skipped += [skip, skip.with_name(f".{skip.name}.lock"), skip.with_name(f".{skip.name}.lock.pid")]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if any(path == s or s in path.parents for s in skipped):
                continue
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                found[rel] = ("file", path.read_bytes(), info.st_mode, info.st_mtime_ns)
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", info.st_mode, info.st_mtime_ns)
            else:
                found[rel] = ("special", info.st_mode)
        dirnames[:] = [d for d in dirnames if not Path(dirpath, d).is_symlink()]
    return found


def tree(root: Path) -> dict[str, tuple]:
    """A staged copy as kind and bytes (what a reader sees), without colabkit's marker."""
    return {rel: entry[:2] if entry[0] != "dir" else ("dir", "") for rel, entry in snapshot(root).items()
            if rel != SOURCE_MARKER}


@pytest.fixture
def victim(tmp_path) -> Path:
    """A folder outside source and destination, holding a file an attacker would like overwritten."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim.txt").write_bytes(b"precious\n")
    return folder


def test_a_file_symlink_planted_in_the_destination_is_replaced_not_written_through(tmp_path, victim):
    src, dest = tmp_path / "src", tmp_path / "dest"
    files = make_tree(src, 30)
    colabkit.stage(src, dest, quiet=True)
    planted = dest / "class1" / "img00001.bin"
    planted.unlink()
    planted.symlink_to(victim / "victim.txt")
    (dest / "class2" / "new.bin").symlink_to(victim / "victim.txt")  # a link where the source adds a file
    (src / "class2" / "new.bin").write_bytes(b"new")
    around = snapshot(tmp_path, skip=dest)
    colabkit.stage(src, dest, quiet=True)
    assert snapshot(tmp_path, skip=dest) == around  # nothing outside the destination changed
    assert not planted.is_symlink() and planted.read_bytes() == files["class1/img00001.bin"]
    assert not (dest / "class2" / "new.bin").is_symlink()
    assert (dest / "class2" / "new.bin").read_bytes() == b"new"


@pytest.mark.parametrize("workers", [1, 3])
def test_a_folder_symlink_planted_in_the_destination_is_removed_not_followed(tmp_path, victim, workers):
    src, dest = tmp_path / "src", tmp_path / "dest"
    files = make_tree(src, 30)
    colabkit.stage(src, dest, quiet=True)
    for folder in (dest / "class2", dest / "class5"):
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    (dest / "class2").symlink_to(victim, target_is_directory=True)
    (dest / "class5").symlink_to(tmp_path, target_is_directory=True)  # the folder around everything
    around = snapshot(tmp_path, skip=dest)
    colabkit.stage(src, dest, workers=workers, quiet=True)
    assert snapshot(tmp_path, skip=dest) == around
    assert (dest / "class2").is_dir() and not (dest / "class2").is_symlink()
    assert tree(dest) == {**tree(src)}
    assert sorted(victim.iterdir()) == [victim / "victim.txt"]
    assert all((dest / rel).read_bytes() == data for rel, data in files.items())


def test_a_planted_partial_folder_link_is_not_followed_and_a_link_inside_a_real_one_is_replaced(tmp_path, victim):
    src, dest = tmp_path / "src", tmp_path / "dest"
    files = make_tree(src, 20)
    dead = dead_pid()
    (tmp_path / f".dest.partial-{dead}-0badcafe.tmp").symlink_to(victim, target_is_directory=True)
    leftover = tmp_path / f".dest.partial-{dead}-feedf00d.tmp"  # a dead run's real hidden folder
    (leftover / "class1").mkdir(parents=True)
    (leftover / "class1" / "img00001.bin").symlink_to(victim / "victim.txt")
    (leftover / "class3").symlink_to(victim, target_is_directory=True)
    around = snapshot(tmp_path, skip=dest)
    del around[leftover.name], around[f"{leftover.name}/class1"]
    del around[f"{leftover.name}/class1/img00001.bin"], around[f"{leftover.name}/class3"]
    colabkit.stage(src, dest, quiet=True)
    assert snapshot(tmp_path, skip=dest) == around  # the planted link and the victim are untouched
    assert not leftover.exists()  # resumed and published as dest
    assert {rel: data for rel, (kind, data) in tree(dest).items() if kind == "file"} == files


def test_a_destination_inside_the_source_through_an_alias_is_refused(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 10)
    (tmp_path / "alias").symlink_to(src, target_is_directory=True)
    before = snapshot(tmp_path)
    with pytest.raises(errors.StageError, match="inside"):
        colabkit.stage(src, tmp_path / "alias" / "copy", quiet=True)
    with pytest.raises(errors.StageError, match="inside"):
        colabkit.stage(tmp_path / "alias", src / "copy", quiet=True)
    with pytest.raises(errors.StageError, match="inside"):
        colabkit.stage(src, tmp_path / "alias", quiet=True)  # the same folder under another name
    assert snapshot(tmp_path) == before


def test_a_source_inside_the_destination_through_an_alias_is_refused(tmp_path):
    outer = tmp_path / "outer"
    src = outer / "data"
    make_tree(src, 10)
    (tmp_path / "alias").symlink_to(outer, target_is_directory=True)
    before = snapshot(tmp_path)
    with pytest.raises(errors.StageError, match="inside"):
        colabkit.stage(src, tmp_path / "alias", quiet=True)
    assert snapshot(tmp_path) == before


def hostile_source(root: Path, outside: Path) -> None:
    """Regular files, plus every kind of link and a fifo."""
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a\n")
    (root / "sub" / "b.txt").write_bytes(b"b\n")
    (root / "link-in").symlink_to("sub/b.txt")  # a file inside the source: copied as a file
    (root / "sub" / "link-up").symlink_to("../a.txt")  # also inside
    (root / "link-out").symlink_to(outside / "victim.txt")  # a file outside: skipped
    (root / "dir-out").symlink_to(outside, target_is_directory=True)  # a folder outside: not followed
    (root / "dir-in").symlink_to("sub", target_is_directory=True)  # a folder inside: not followed either
    (root / "loop").symlink_to("loop")
    (root / "sub" / "loop2").symlink_to("../sub")  # a folder loop
    (root / "broken").symlink_to("nowhere")
    os.mkfifo(root / "fifo")


EXPECTED = {
    "a.txt": ("file", b"a\n"),
    "sub": ("dir", 0o40755),
    "sub/b.txt": ("file", b"b\n"),
    "link-in": ("file", b"b\n"),
    "sub/link-up": ("file", b"a\n"),
}


@pytest.mark.parametrize("path", ["cp", "python", "update"])
def test_one_symlink_rule_on_the_cp_path_and_the_python_path(tmp_path, monkeypatch, victim, capsys, path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    hostile_source(src, victim)
    monkeypatch.setenv("PATH", cp_shim(tmp_path / "bin", 'exec "$REAL" "$@"'))
    if path == "update":
        dest.mkdir()  # an existing destination: the update walk
    os.umask(0o022)
    around = snapshot(tmp_path, skip=dest)
    colabkit.stage(src, dest, workers=1 if path != "python" else 2)
    out = capsys.readouterr().out
    assert (tmp_path / "bin" / "log").exists() == (path == "cp")  # cp ran exactly on the cp path
    assert snapshot(tmp_path, skip=dest) == around
    staged = {rel: entry[:2] for rel, entry in snapshot(dest).items() if rel != SOURCE_MARKER}
    assert {rel: e if e[0] == "file" else ("dir", 0o40755) for rel, e in staged.items()} == EXPECTED
    assert staged["sub"][0] == "dir"
    assert "skipped 7 symbolic link(s) or special file(s)" in out
    assert "4 files" in out  # the same count on every path
    for rel in ("a.txt", "link-in"):
        assert not (dest / rel).is_symlink()


def test_modes_and_mtimes_are_kept_alike_on_both_paths_and_folders_stay_writable(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_tree(src, 12)
    (src / "class1" / "img00001.bin").chmod(0o755)
    (src / "class2" / "img00002.bin").chmod(0o400)
    os.umask(0o022)
    one, two = tmp_path / "one", tmp_path / "two"
    colabkit.stage(src, one, workers=1, quiet=True)  # cp
    colabkit.stage(src, two, workers=2, quiet=True)  # Python
    (src / "class4").chmod(0o500)  # a read-only folder
    for rel, mode in (("class1/img00001.bin", 0o755), ("class2/img00002.bin", 0o400),
                      ("class3/img00003.bin", 0o644)):
        modes = {stat.S_IMODE((root / rel).stat().st_mode) for root in (one, two)}
        assert modes == {mode}, (rel, modes)  # the source's modes (minus umask), alike on both paths
        assert (one / rel).stat().st_mtime_ns == (two / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns
    three, four = tmp_path / "three", tmp_path / "four"
    colabkit.stage(src, three, workers=1, quiet=True)
    colabkit.stage(src, four, workers=2, quiet=True)
    (src / "class4").chmod(0o755)
    assert {stat.S_IMODE((root / "class4").stat().st_mode) for root in (three, four)} == {0o700}  # u+w kept
    assert {stat.S_IMODE((root / "class1").stat().st_mode) for root in (three, four)} == {0o755}


def test_a_destination_that_is_a_file_is_a_stage_error_with_the_fix(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 3)
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    with pytest.raises(errors.StageError, match="not a folder") as caught:
        colabkit.stage(src, blocker, quiet=True)
    assert "To fix:" in str(caught.value)
    with pytest.raises(errors.StageError, match="To fix:"):
        colabkit.stage(src, blocker / "inside", quiet=True)  # a parent that is a file: NotADirectoryError
    with pytest.raises(errors.StageError, match="To fix:"):
        colabkit.stage(src / "class1" / "img00001.bin", blocker / "x.bin", quiet=True)
    assert blocker.read_text() == "mine"


def test_a_file_where_the_source_has_a_folder_is_kept_and_reported(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_tree(src, 20)
    colabkit.stage(src, dest, quiet=True)
    for path in (dest / "class4").iterdir():
        path.unlink()
    (dest / "class4").rmdir()
    (dest / "class4").write_text("the user's file")
    with pytest.raises(errors.StageError, match="a file stands where the source has a folder") as caught:
        colabkit.stage(src, dest, quiet=True)
    assert "move that file away" in str(caught.value)
    assert (dest / "class4").read_text() == "the user's file"


def test_a_file_staged_onto_itself_is_refused(tmp_path):
    src = tmp_path / "a.csv"
    src.write_text("x\n")
    (tmp_path / "alias.csv").symlink_to(src)
    with pytest.raises(errors.StageError, match="onto itself"):
        colabkit.stage(src, tmp_path / "alias.csv", quiet=True)
    with pytest.raises(errors.StageError, match="onto itself"):
        colabkit.stage(src, tmp_path, quiet=True)
    assert src.read_text() == "x\n"


def test_a_single_file_stage_replaces_a_planted_link(tmp_path, victim):
    src = tmp_path / "a.csv"
    src.write_text("x\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").symlink_to(victim / "victim.txt")
    around = snapshot(tmp_path, skip=out)
    assert colabkit.stage(src, out, quiet=True) == out / "a.csv"
    assert snapshot(tmp_path, skip=out) == around
    assert not (out / "a.csv").is_symlink() and (out / "a.csv").read_text() == "x\n"


def test_workers_follow_the_one_count_rule(tmp_path):
    src = tmp_path / "d"
    make_tree(src, 2)
    for bad in (0, True, 2.0, "8", -1):
        with pytest.raises(errors.ConfigError, match="workers"):
            colabkit.stage(src, workers=bad)


def test_on_the_drive_mount_a_superseded_staged_file_is_truncated_before_it_goes(tmp_path, fake_colab):
    src = tmp_path / "src"
    files = make_tree(src, 4)
    dest = fake_colab.mydrive / "staged"  # a destination on the mount: Drive's trash rule applies
    fake_colab.mydrive.mkdir(parents=True)
    colabkit.stage(src, dest, workers=1, quiet=True)
    rel = "class1/img00001.bin"
    os.link(dest / rel, tmp_path / "old-inode")  # sees what happens to the superseded file's bytes
    (src / rel).write_bytes(b"changed")
    colabkit.stage(src, dest, workers=1, quiet=True)
    assert (dest / rel).read_bytes() == b"changed"
    assert (tmp_path / "old-inode").stat().st_size == 0  # truncated: Drive's trash holds 0 bytes
    assert len(files[rel]) > 0


def test_off_the_mount_a_superseded_staged_file_is_simply_replaced(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    files = make_tree(src, 4)
    colabkit.stage(src, dest, quiet=True)
    rel = "class1/img00001.bin"
    os.link(dest / rel, tmp_path / "old-inode")
    (src / rel).write_bytes(b"changed")
    colabkit.stage(src, dest, quiet=True)
    assert (tmp_path / "old-inode").read_bytes() == files[rel]  # a reader holding it keeps its bytes
