"""Hostile archives, all built here: nothing escapes the target, on Pythons with or without tarfile's data filter.

Each escape case snapshots the whole tree around the target (every file's
bytes, mode and link text, from a folder two levels above the archive) and
asserts it is byte-identical afterwards; the only new entries allowed are the
lock files extract keeps beside its target (`_fsio.locked`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

import colabkit
from colabkit._archive import checks as archive_checks
from colabkit._archive import marker as archive_marker
from colabkit import errors

LOCK_FILE = re.compile(r"^\.[^/]+\.lock(\.pid)?$")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` without following links: kind, mode, and bytes or link text."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if LOCK_FILE.match(name):
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                state[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                state[str(path.relative_to(root))] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                state[str(path.relative_to(root))] = (
                    "file", stat.S_IMODE(info.st_mode), info.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


@pytest.fixture
def world(tmp_path):
    """tmp_path/world/up/box/<archive>: victims beside the target and one and two levels up."""
    root = tmp_path / "world"
    box = root / "up" / "box"
    box.mkdir(parents=True)
    for folder in (root, root / "up", box):
        (folder / "victim.txt").write_bytes(b"original\n")
        (folder / "flag").write_bytes(b"flag\n")
    return root


def box_of(world: Path) -> Path:
    return world / "up" / "box"


@pytest.fixture(params=["data-filter", "no-data-filter"])
def python_kind(request, monkeypatch):
    """Run each case as on a Python with PEP 706, and as on one without (3.10.0-3.10.11, 3.11.0-3.11.3).

    On the second, tarfile's filters are gone and `extractall(filter=...)` raises
    TypeError as it did there, while a plain `extractall()` still extracts with
    full trust. Either way the returned list records every call of tarfile's own
    extraction: colabkit's must stay empty, since it writes members itself.
    """
    calls: list[str] = []
    for method in ("extractall", "extract"):
        original = getattr(tarfile.TarFile, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            calls.append(_method)
            if request.param == "no-data-filter" and "filter" in kwargs:
                raise TypeError(f"{_method}() got an unexpected keyword argument 'filter'")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(tarfile.TarFile, method, spy)
    if request.param == "no-data-filter" and hasattr(tarfile, "data_filter"):
        # what code detects PEP 706 by; tarfile's own fully-trusting default stays, as on those Pythons
        monkeypatch.delattr(tarfile, "data_filter")
    return calls


def add_file(tf, name, data=b"pwned\n", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data))


def add_dir(tf, name):
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o777
    tf.addfile(info)


def add_symlink(tf, name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tf.addfile(info)


def add_hardlink(tf, name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    tf.addfile(info)


def realpath_overflow(tf, target: Path) -> None:
    """CVE-2025-4517 (CPython gh-135034): symlinks whose expansion runs os.path.realpath past PATH_MAX.

    realpath stops resolving there, so the data filter judges a path that the OS
    then resolves differently: `escape` leads to the target's parent, and the
    members after it overwrite `flag` and create files there.
    """
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(target.parent, "PC_PATH_MAX")
    component = "d" * min(240, (path_max - len(str(target)) - 1) // (len(steps) + 1))
    path = ""
    for step in steps:
        add_dir(tf, os.path.join(path, component))
        add_symlink(tf, os.path.join(path, step), component)
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    add_symlink(tf, linkpath, os.path.join(*[".."] * len(steps)))
    add_symlink(tf, "escape", os.path.join(linkpath, ".."))
    add_hardlink(tf, "flaglink", os.path.join("escape", "flag"))
    add_file(tf, "flaglink", b"overwrite\n")
    add_file(tf, "escape/newfile", b"new\n")


def chain_write(tf, target):
    add_symlink(tf, "x", ".")
    add_symlink(tf, "y", "x/..")
    add_file(tf, "y/victim.txt")


def chain_link(tf, target):
    add_symlink(tf, "x", ".")
    add_symlink(tf, "y", "x/..")  # lexically 'inside', really the parent


def chain_deeper(tf, target):
    add_dir(tf, "sub")
    add_symlink(tf, "sub/x", "..")  # inside: the target itself
    add_symlink(tf, "sub/y", "x/../..")  # x is the root, so this is the parent


def hardlink_to_symlink(tf, target):
    add_dir(tf, "sub")
    add_symlink(tf, "sub/up", "..")  # inside: the target itself
    add_hardlink(tf, "up", "sub/up")  # the same link text, read from the root: the parent
    add_file(tf, "up/victim.txt")


def hardlink_to_symlink_alone(tf, target):
    add_dir(tf, "sub")
    add_symlink(tf, "sub/up", "..")
    add_hardlink(tf, "up", "sub/up")


def hardlink_missing(tf, target):
    add_hardlink(tf, "passwd", "not/in/the/archive")


def hardlink_later(tf, target):
    add_hardlink(tf, "early", "late.txt")
    add_file(tf, "late.txt", b"late\n")


def hardlink_to_dir(tf, target):
    add_dir(tf, "folder")
    add_hardlink(tf, "link", "folder")


def file_then_link_over_it(tf, target):
    add_file(tf, "y/victim.txt")
    add_symlink(tf, "y", ".")  # inside, but a folder already took the name


def duplicate_file(tf, target):
    add_file(tf, "a.txt", b"first\n")
    add_file(tf, "a.txt", b"second\n")


def forged_marker(tf, target):
    add_file(tf, archive_marker.MARKER_NAME, b'{"state": "complete"}')


def nul_name(tf, target):
    info = tarfile.TarInfo("placeholder")
    info.pax_headers = {"path": "ok.txt\x00../../victim.txt"}
    info.size = 1
    tf.addfile(info, io.BytesIO(b"x"))


def drive_letter(tf, target):
    add_file(tf, "C:\\victim.txt")


def backslash_slip(tf, target):
    add_file(tf, "..\\..\\victim.txt")


def symlink_backslash(tf, target):
    add_symlink(tf, "esc", "..\\..")


def bidi_name(tf, target):
    add_file(tf, "invoice\u202etxt.exe")


def control_name(tf, target):
    add_file(tf, "line\nbreak.txt")


def overlong_path(tf, target):
    add_file(tf, "/".join(["d" * 200] * 25) + "/f.txt")


def too_deep(tf, target):
    add_file(tf, "a/" * 300 + "f.txt")  # 600 bytes: short, but every folder's full path would be kept


def symlink_loop(tf, target):
    add_symlink(tf, "a", "b")
    add_symlink(tf, "b", "a")


def absolute_hardlink(tf, target):
    add_hardlink(tf, "shadow", "/etc/passwd")


def socket_like(tf, target):
    info = tarfile.TarInfo("weird")
    info.type = b"Z"  # no such member type
    tf.addfile(info)


HOSTILE = {
    "cve-2025-4517-realpath-overflow": (realpath_overflow, "symbolic link"),
    "symlink-chain-write": (chain_write, "symbolic link"),
    "symlink-chain-link": (chain_link, "resolves outside"),
    "symlink-chain-deeper": (chain_deeper, "resolves outside"),
    "hardlink-to-symlink-write": (hardlink_to_symlink, "symbolic link"),
    "hardlink-to-symlink": (hardlink_to_symlink_alone, "resolves outside"),
    "hardlink-missing": (hardlink_missing, "no earlier member"),
    "hardlink-later": (hardlink_later, "no earlier member"),
    "hardlink-to-dir": (hardlink_to_dir, "a folder"),
    "hardlink-absolute": (absolute_hardlink, "absolute path"),
    "file-then-link": (file_then_link_over_it, "where other members make a folder"),
    "duplicate-file": (duplicate_file, "appears twice"),
    "forged-marker": (forged_marker, "marker"),
    "nul-in-name": (nul_name, "NUL"),
    "drive-letter": (drive_letter, "absolute path"),
    "backslash-slip": (backslash_slip, "'..'"),
    "symlink-backslash-up": (symlink_backslash, "resolves outside"),
    "bidi-override-name": (bidi_name, "unsafe name part"),
    "newline-name": (control_name, "unsafe name part"),
    "path-over-PATH_MAX": (overlong_path, "longer than"),
    "nested-300-deep": (too_deep, "more than 256 folders deep"),
    "symlink-loop": (symlink_loop, "loop"),
    "unknown-member-type": (socket_like, "not a regular file"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_cannot_escape(world, python_kind, case):
    build, reason = HOSTILE[case]
    box = box_of(world)
    target = box / "evil"
    archive = box / "evil.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tf:
        add_file(tf, "ok.txt", b"ok\n")
        build(tf, target)
    before = snapshot(world)
    try:
        with pytest.raises(errors.UnsafeArchiveError) as info:
            colabkit.extract(archive, quiet=True)
    finally:
        assert snapshot(world) == before  # byte-identical around the target, and no target or work folder
    assert reason in str(info.value)
    assert str(info.value).rstrip().endswith("by hand.")  # says what to do
    assert python_kind == []  # tarfile's own extraction (and so its filter) never ran


@pytest.mark.parametrize("name", ["../victim.txt", "/abs/victim.txt", "ok/../../victim.txt", "C:/victim.txt",
                                  "C:\\victim.txt", "..\\victim.txt", "a/\u202egnp.exe",
                                  archive_marker.MARKER_NAME])
def test_hostile_zip_names_cannot_escape(world, name):
    archive = box_of(world) / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(name), b"pwned")
    before = snapshot(world)
    with pytest.raises(errors.UnsafeArchiveError, match="member"):
        colabkit.extract(archive, quiet=True)
    assert snapshot(world) == before


def zip_with_symlink(path: Path, name: str, target: str, then: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fine.txt", b"fine")
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
        for member, data in (then or {}).items():
            zf.writestr(member, data)
    return path


@pytest.mark.parametrize("link,then", [("up", None), ("x", {"x/victim.txt": b"pwned"})])
def test_zip_symlinks_are_judged_like_tar_ones(world, link, then):
    archive = zip_with_symlink(box_of(world) / "evil.zip", link, "../..", then)
    before = snapshot(world)
    with pytest.raises(errors.UnsafeArchiveError):
        colabkit.extract(archive, quiet=True)
    assert snapshot(world) == before


def test_duplicate_zip_names_are_refused(world):
    archive = box_of(world) / "dup.zip"
    with pytest.warns(UserWarning), zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", b"what a scanner sees")
        zf.writestr("a.txt", b"what is extracted")
    before = snapshot(world)
    with pytest.raises(errors.UnsafeArchiveError, match="twice"):
        colabkit.extract(archive, quiet=True)
    assert snapshot(world) == before


def test_zip_device_member_is_refused(world):
    archive = box_of(world) / "dev.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("null")
        info.external_attr = (stat.S_IFCHR | 0o666) << 16
        zf.writestr(info, b"")
    before = snapshot(world)
    with pytest.raises(errors.UnsafeArchiveError, match="device"):
        colabkit.extract(archive, quiet=True)
    assert snapshot(world) == before


def test_overlapping_zip_entries_bomb_is_refused(world):
    """Central-directory entries that all point at one compressed kernel (the 'better zip bomb')."""
    archive = box_of(world) / "overlap.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(8):
            zf.writestr(f"k{i}.bin", bytes(2**20))
    data = bytearray(archive.read_bytes())
    first = None
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        offset = int.from_bytes(data[position + 42:position + 46], "little")
        first = offset if first is None else first
        data[position + 42:position + 46] = first.to_bytes(4, "little")
        position = data.find(b"PK\x01\x02", position + 46)
    archive.write_bytes(bytes(data))
    before = snapshot(world)
    with pytest.raises(errors.UnsafeArchiveError, match="overlaps"):
        colabkit.extract(archive, quiet=True)
    assert snapshot(world) == before


# --------------------------------------------------------------------------- bombs and sizes


def test_links_count_at_the_size_of_what_they_point_to(world, python_kind):
    """8 KiB of headers naming one 1 MiB file 40 times must not pass a 16 MiB cap (Drive copies links)."""
    box = box_of(world)
    for kind, adder in (("hard", add_hardlink), ("sym", add_symlink)):
        archive = box / f"{kind}.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            add_file(tf, "big.bin", bytes(2**20))
            for i in range(40):
                adder(tf, f"copy{i}.bin", "big.bin")
        assert archive.stat().st_size < 20_000
        before = snapshot(world)
        with pytest.raises(errors.ArchiveTooLargeError, match="max_size"):
            colabkit.extract(archive, max_size=16 * 2**20, quiet=True)
        assert snapshot(world) == before
    assert python_kind == []


def test_where_links_are_refused_they_become_copies(box_with_links, monkeypatch):
    archive, box = box_with_links

    def refuse(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(os, "symlink", refuse)
    with pytest.raises(errors.ArchiveError, match="refuses links.*'latest'.*local disk"):
        colabkit.extract(archive, quiet=True)  # a link to a folder cannot become a copy
    assert names_in(box) == ["links.tar"]
    files_only = box / "files.tar"
    with tarfile.open(files_only, "w") as tf:
        add_file(tf, "data.txt", b"payload\n")
        add_hardlink(tf, "hard.txt", "data.txt")
        add_symlink(tf, "soft.txt", "data.txt")
        add_dir(tf, "sub")
        add_symlink(tf, "sub/up.txt", "../soft.txt")
    folder = colabkit.extract(files_only, quiet=True)
    for name in ("data.txt", "hard.txt", "soft.txt", "sub/up.txt"):
        path = folder / name
        assert not path.is_symlink() and path.read_bytes() == b"payload\n"
    assert (folder / "hard.txt").stat().st_ino != (folder / "data.txt").stat().st_ino


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not LOCK_FILE.match(p.name))


def test_links_within_the_target_stay_links(box_with_links):
    archive, box = box_with_links
    folder = colabkit.extract(archive, quiet=True)
    assert (folder / "soft.txt").is_symlink() and os.readlink(folder / "soft.txt") == "data.txt"
    assert (folder / "hard.txt").stat().st_ino == (folder / "data.txt").stat().st_ino
    assert (folder / "latest").is_symlink() and (folder / "latest" / "a.txt").read_bytes() == b"v2\n"
    assert (folder / "sub" / "up.txt").read_bytes() == b"payload\n"
    assert os.readlink(folder / "here") == "."


@pytest.fixture
def box_with_links(tmp_path):
    box = tmp_path / "links"
    box.mkdir()
    archive = box / "links.tar"
    with tarfile.open(archive, "w") as tf:
        add_file(tf, "data.txt", b"payload\n")
        add_hardlink(tf, "hard.txt", "data.txt")
        add_symlink(tf, "soft.txt", "data.txt")
        add_file(tf, "v2/a.txt", b"v2\n")
        add_symlink(tf, "latest", "v2")
        add_symlink(tf, "here", ".")
        add_dir(tf, "sub")
        add_symlink(tf, "sub/up.txt", "../here/soft.txt")  # a chain, all inside
    return archive, box


def test_ratio_cap_stops_a_zeros_bomb(world, monkeypatch):
    monkeypatch.setattr(archive_checks, "RATIO_FLOOR", 2**20)  # the real floor is 256 MiB; same rule, smaller
    box = box_of(world)
    zipped = box / "zeros.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(8 * 2**20))
    tarred = box / "zeros.tar.bz2"
    with tarfile.open(tarred, "w:bz2") as tf:
        add_file(tf, "zeros.bin", bytes(8 * 2**20))
    before = snapshot(world)
    for archive in (zipped, tarred):
        with pytest.raises(errors.ArchiveTooLargeError, match="max_ratio"):
            colabkit.extract(archive, max_ratio=100, quiet=True)
        assert snapshot(world) == before
    assert (colabkit.extract(zipped, quiet=True) / "zeros.bin").stat().st_size == 8 * 2**20  # ~1000:1 passes the default


def sparse_tar(box: Path) -> Path:
    """A GNU sparse member (64 MiB apparent, a few KiB of data), made by GNU tar itself."""
    source = box / "src"
    source.mkdir()
    with open(source / "holes.bin", "wb") as handle:
        handle.write(b"head")
        handle.seek(64 * 2**20 - 4)
        handle.write(b"tail")
    archive = box / "sparse.tar"
    subprocess.run(["tar", "-cSf", str(archive), "-C", str(source), "holes.bin"], check=True)
    for path in source.iterdir():
        path.unlink()
    source.rmdir()
    return archive


def test_sparse_member_counts_at_its_full_size(world):
    box = box_of(world)
    archive = sparse_tar(box)
    assert archive.stat().st_size < 100_000
    with tarfile.open(archive) as tf:
        assert tf.getmember("holes.bin").issparse()
    before = snapshot(world)
    with pytest.raises(errors.ArchiveTooLargeError):
        colabkit.extract(archive, max_size=16 * 2**20, quiet=True)
    assert snapshot(world) == before
    out = colabkit.extract(archive, quiet=True) / "holes.bin"
    assert out.stat().st_size == 64 * 2**20
    with open(out, "rb") as handle:
        assert handle.read(4) == b"head"
        handle.seek(64 * 2**20 - 4)
        assert handle.read() == b"tail"
