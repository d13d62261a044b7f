"""colabkit.extract: formats, restartability and hostile archives (all built here)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import pytest

import colabkit
from colabkit import errors
from colabkit._archive.marker import MARKER_NAME
from colabkit._fsio import STALE_AFTER

FILES = {"train/a.csv": b"x,y\n1,2\n", "train/b.csv": b"x,y\n3,4\n", "README.txt": b"hello\n"}


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def add_special(path: Path, build) -> Path:
    """A plain tar holding one safe file plus whatever `build(tarfile)` adds."""
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("ok.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"ok"))
        build(tf)
    return path


@pytest.fixture
def box(tmp_path):
    """A folder of its own for each test's archives (tmp_path also holds the isolated VM)."""
    folder = tmp_path / "box"
    folder.mkdir()
    return folder


LOCK_FILE = re.compile(r"^\.[^/]+\.lock(\.pid)?$")


def tree(folder: Path) -> set[str]:
    """Every path under `folder`, except the lock files extract keeps beside its target (_fsio.locked)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not LOCK_FILE.match(p.name)}


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not LOCK_FILE.match(p.name))


def check_files(folder: Path) -> None:
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data


# --------------------------------------------------------------------------- formats and reuse


@pytest.mark.parametrize("name,mode", [
    ("data.tar", "w"), ("data.tar.gz", "w:gz"), ("data.tgz", "w:gz"),
    ("data.tar.bz2", "w:bz2"), ("data.tar.xz", "w:xz"),
])
def test_tar_formats_extract_next_to_the_archive(box, name, mode):
    archive = make_tar(box / name, FILES, mode)
    folder = colabkit.extract(archive, quiet=True)
    assert folder == box / "data"
    check_files(folder)
    assert (folder / MARKER_NAME).is_file()
    assert names(box) == sorted([name, "data"])  # no work folders left


def test_zip_extracts_and_a_second_call_is_skipped(box, capsys):
    archive = make_zip(box / "food-11.zip", FILES)
    folder = colabkit.extract(archive)
    check_files(folder)
    before = (folder / "README.txt").stat().st_mtime_ns, folder.stat().st_ino
    capsys.readouterr()
    assert colabkit.extract(archive) == folder
    assert "already extracted" in capsys.readouterr().out
    assert ((folder / "README.txt").stat().st_mtime_ns, folder.stat().st_ino) == before


def test_changed_archive_is_extracted_again(box):
    archive = make_zip(box / "d.zip", {"v.txt": b"one"})
    folder = colabkit.extract(archive, quiet=True)
    time.sleep(0.01)
    make_zip(archive, {"v.txt": b"two", "new.txt": b"n"})
    assert colabkit.extract(archive, quiet=True) == folder
    assert (folder / "v.txt").read_bytes() == b"two" and (folder / "new.txt").exists()


def test_explicit_target_folder(box):
    archive = make_zip(box / "d.zip", FILES)
    folder = colabkit.extract(archive, to=box / "elsewhere" / "here", quiet=True)
    assert folder == box / "elsewhere" / "here"
    check_files(folder)


def test_single_file_gz_is_decompressed_once(box):
    archive = box / "covid.train.csv.gz"
    archive.write_bytes(gzip.compress(b"id,x\n" * 1000))
    folder = colabkit.extract(archive, quiet=True)
    assert folder == box
    out = box / "covid.train.csv"
    assert out.read_bytes() == b"id,x\n" * 1000
    mtime = out.stat().st_mtime_ns
    colabkit.extract(archive, quiet=True)
    assert out.stat().st_mtime_ns == mtime


def test_folder_with_foreign_files_is_left_untouched(box):
    archive = make_zip(box / "d.zip", FILES)
    (box / "d").mkdir()
    (box / "d" / "mine.txt").write_text("keep me")
    with pytest.raises(errors.ArchiveError, match="did not put there"):
        colabkit.extract(archive, quiet=True)
    assert tree(box / "d") == {"mine.txt"}


def test_not_an_archive(box):
    page = box / "data.zip"
    page.write_text("<html>Google Drive - Virus scan warning</html>")
    with pytest.raises(errors.ArchiveError, match="cannot be read as a zip"):
        colabkit.extract(page, quiet=True)
    plain = box / "notes.txt"
    plain.write_text("just text")
    with pytest.raises(errors.ArchiveError, match="not an archive"):
        colabkit.extract(plain, quiet=True)


def test_internal_symlink_is_allowed(box):
    def build(tf):
        link = tarfile.TarInfo("latest.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "ok.txt"
        tf.addfile(link)

    folder = colabkit.extract(add_special(box / "links.tar", build), quiet=True)
    assert (folder / "latest.txt").read_bytes() == b"ok"


# --------------------------------------------------------------------------- hostile archives


def symlink(name, target):
    def build(tf):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        tf.addfile(info)
    return build


def hardlink(name, target):
    def build(tf):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.LNKTYPE, target
        tf.addfile(info)
    return build


def special(name, kind):
    def build(tf):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.devmajor, info.devminor = 1, 3
        tf.addfile(info)
    return build


def file_member(name, data=b"pwned"):
    def build(tf):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return build


def then(*builders):
    def build(tf):
        for b in builders:
            b(tf)
    return build


HOSTILE_TARS = {
    "zip-slip": (file_member("../outside.txt"), "'../outside.txt'", "'..'"),
    "deep-slip": (file_member("a/b/../../../outside.txt"), "outside.txt", "'..'"),
    "absolute": (file_member("/tmp/colabkit-absolute-test.txt"), "colabkit-absolute-test", "absolute path"),
    "symlink-out": (symlink("escape", "../../outside"), "'escape'", "symbolic link"),
    "symlink-absolute": (symlink("etc", "/etc"), "'etc'", "absolute path"),
    "symlink-then-write": (then(symlink("sub/up", "../.."), file_member("sub/up/outside.txt")), "'sub/up'",
                           "outside the target"),
    "hardlink-out": (hardlink("passwd", "../outside.txt"), "'passwd'", "hard link"),
    "hardlink-absolute": (hardlink("shadow", "/etc/passwd"), "'shadow'", "hard link"),
    "device": (special("null", tarfile.CHRTYPE), "'null'", "device"),
    "block-device": (special("sda", tarfile.BLKTYPE), "'sda'", "device"),
    "fifo": (special("pipe", tarfile.FIFOTYPE), "'pipe'", "fifo"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_members_are_refused(tmp_path, box, case):
    build, member, reason = HOSTILE_TARS[case]
    archive = add_special(box / "evil.tar", build)
    with pytest.raises(errors.UnsafeArchiveError) as info:
        colabkit.extract(archive, quiet=True)
    message = str(info.value)
    assert member in message and reason in message
    assert tree(box) == {"evil.tar"}  # no target, no work folder, nothing beside it
    assert not (tmp_path / "outside.txt").exists() and not Path("/tmp/colabkit-absolute-test.txt").exists()


@pytest.mark.parametrize("name", ["../outside.txt", "/abs/outside.txt", "ok/../../outside.txt"])
def test_hostile_zip_members_are_refused(tmp_path, box, name):
    archive = box / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(name), b"pwned")
    with pytest.raises(errors.UnsafeArchiveError, match="member"):
        colabkit.extract(archive, quiet=True)
    assert tree(box) == {"evil.zip"}
    assert not (tmp_path / "outside.txt").exists()


def test_zip_bomb_past_the_size_cap_is_refused(box):
    archive = box / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"zeros{i}.bin", bytes(4 * 2**20))  # 12 MiB of zeros in ~12 KiB
    assert archive.stat().st_size < 100_000
    with pytest.raises(errors.ArchiveTooLargeError, match="max_size") as info:
        colabkit.extract(archive, max_size=8 * 2**20, quiet=True)
    assert "archive bomb" in str(info.value)
    assert tree(box) == {"bomb.zip"}


def test_tar_bomb_past_the_size_cap_is_refused_while_streaming(box):
    archive = make_tar(box / "bomb.tar.gz", {f"z{i}.bin": bytes(2**20) for i in range(6)}, "w:gz")
    with pytest.raises(errors.ArchiveTooLargeError):
        colabkit.extract(archive, max_size=3 * 2**20, quiet=True)
    assert tree(box) == {"bomb.tar.gz"}


def test_member_count_cap(box):
    archive = make_zip(box / "many.zip", {f"f{i}.txt": b"." for i in range(50)})
    with pytest.raises(errors.ArchiveTooLargeError, match="max_members"):
        colabkit.extract(archive, max_members=20, quiet=True)
    assert tree(box) == {"many.zip"}


def test_gz_bomb_is_refused(box):
    archive = box / "big.bin.gz"
    archive.write_bytes(gzip.compress(bytes(5 * 2**20)))
    with pytest.raises(errors.ArchiveTooLargeError):
        colabkit.extract(archive, max_size=2**20, quiet=True)
    assert tree(box) == {"big.bin.gz"}


# --------------------------------------------------------------------------- interrupted extraction


CHILD = textwrap.dedent("""
    import sys, time
    import tqdm.auto
    import colabkit

    # Slow the progress bar down so the parent can kill us mid-way (colabkit itself runs unchanged).
    original = tqdm.auto.tqdm.update
    def slow_update(self, n=1):
        time.sleep(0.002)
        return original(self, n)
    tqdm.auto.tqdm.update = slow_update
    colabkit.extract(sys.argv[1], quiet=False)
    print("finished")
""")


def test_killed_extraction_is_redone_on_the_next_call(box):
    files = {f"part{i // 100}/f{i:04d}.txt": f"{i}\n".encode() * 50 for i in range(1500)}
    archive = make_tar(box / "big.tar.gz", files, "w:gz")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(archive)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    work = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        candidates = [p for p in box.iterdir() if p.name.startswith(".big.extract-") and p.name.endswith(".tmp")]
        if candidates and sum(1 for _ in candidates[0].rglob("*.txt")) >= 50:
            work = candidates[0]
            break
        time.sleep(0.005)
    assert work is not None, child.communicate()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert work.exists() and not (box / "big").exists()  # half done, nothing published

    folder = colabkit.extract(archive, quiet=True)
    assert folder == box / "big"
    assert sum(1 for p in folder.rglob("*.txt")) == 1500
    for name, data in list(files.items())[::97]:
        assert (folder / name).read_bytes() == data
    # _fsio's one stale rule: the dead writer's work folder goes once it has also sat idle long enough
    assert names(box) == sorted([work.name, "big", "big.tar.gz"])
    old = time.time() - STALE_AFTER - 60
    os.utime(work, (old, old))
    assert colabkit.extract(archive, quiet=True) == folder
    assert names(box) == ["big", "big.tar.gz"]  # the leftover is gone


def test_dot_prefixed_members_and_an_internal_hard_link_are_fine(box):
    def build(tf):
        root = tarfile.TarInfo(".")
        root.type = tarfile.DIRTYPE
        tf.addfile(root)
        file_member("./sub/data.txt", b"payload")(tf)
        hardlink("./sub/copy.txt", "./sub/data.txt")(tf)

    folder = colabkit.extract(add_special(box / "dots.tar", build), quiet=True)
    assert (folder / "sub" / "data.txt").read_bytes() == b"payload"
    assert (folder / "sub" / "copy.txt").read_bytes() == b"payload"
    assert names(box) == ["dots", "dots.tar"]


@pytest.mark.parametrize("name,mode", [("cut.tar.gz", "w:gz"), ("cut.tar", "w"), ("cut.zip", None)])
def test_truncated_archive_is_reported_as_damaged(box, name, mode):
    files = {f"f{i}.bin": os.urandom(5000) for i in range(20)}
    archive = make_zip(box / name, files) if mode is None else make_tar(box / name, files, mode)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if mode is not None else data[:40_000] + data[-2000:])
    with pytest.raises(errors.ArchiveError, match="damaged|cannot be read|Fetch it again"):
        colabkit.extract(archive, quiet=True)
    assert names(box) == [name]


# --------------------------------------------------------------------------- damage, trailers, pax


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_damaged_tar_gz_is_reported_and_nothing_kept(box, damage):
    files = {f"f{i}.bin": os.urandom(50_000) for i in range(100)}  # random: stored blocks, only the CRC sees a flip
    archive = make_tar(box / "cut.tar.gz", files, "w:gz")
    data = bytearray(archive.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2:]
    else:
        for at in range(len(data) // 2, len(data) // 2 + 64):
            data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(errors.ArchiveError, match="damaged|cannot be read|Fetch it again"):
        colabkit.extract(archive, quiet=True)
    assert names(box) == ["cut.tar.gz"]


def test_a_flipped_byte_in_a_tar_xz_check_sum_is_caught(box):
    """The xz case of the same promise (lzma's read-ahead already reached this check before)."""
    archive = make_tar(box / "flip.tar.xz", {f"f{i}.bin": os.urandom(20_000) for i in range(30)}, "w:xz")
    data = bytearray(archive.read_bytes())
    index_size = (int.from_bytes(data[-8:-4], "little") + 1) * 4  # the stream footer's backward size
    data[len(data) - 12 - index_size - 1] ^= 0x01  # the block's CRC64 ends where the index starts
    archive.write_bytes(bytes(data))
    with pytest.raises(errors.ArchiveError, match="damaged"):
        colabkit.extract(archive, quiet=True)
    assert names(box) == ["flip.tar.xz"]


def test_hostile_member_of_a_big_tar_gz_changes_nothing_around(tmp_path, box):
    archive = box / "evil.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:
        symlink("sub/up", "../..")(tf)
        file_member("sub/up/outside.txt")(tf)
        for i in range(40):
            file_member(f"pad/{i}.bin", os.urandom(1 << 20))(tf)

    def files_around():  # all but the lock files extract keeps beside its target
        return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not LOCK_FILE.match(p.name)}

    around = files_around()
    with pytest.raises(errors.UnsafeArchiveError, match="outside the target|symbolic link"):
        colabkit.extract(archive, quiet=True)
    assert files_around() == around
    assert tree(box) == {"evil.tar.gz"}


def test_bytes_after_a_complete_gzip_stream_are_ignored(box):
    archive = make_tar(box / "junk.tar.gz", FILES, "w:gz")
    archive.write_bytes(archive.read_bytes() + b"junk appended by a download tool")
    check_files(colabkit.extract(archive, quiet=True))


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress])
def test_a_bomb_after_the_end_marker_is_never_unpacked(box, monkeypatch, compress):
    """Zeros hidden after the tar's end: read only up to a bound (the old, unbounded read took hours)."""
    from colabkit._archive import members

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        file_member("ok.txt", b"ok")(tf)
    zeros = compress(bytes(64 << 20))
    (box / "tail.tar").write_bytes(compress(tar.getvalue()) + zeros * 16)  # 1 GiB after the end marker
    monkeypatch.setattr(members, "_TRAILER_MAX", 1 << 20)
    read = []
    opener = members.gzip.GzipFile if compress is gzip.compress else members.bz2.BZ2File

    class Counting(opener):
        def read(self, size=-1):
            data = super().read(size)
            read.append(len(data))
            return data

    monkeypatch.setattr(members.gzip if compress is gzip.compress else members.bz2, opener.__name__, Counting)
    folder = colabkit.extract(box / "tail.tar", quiet=True)
    assert (folder / "ok.txt").read_bytes() == b"ok"
    assert 0 < sum(read) <= len(tar.getvalue()) + (1 << 20) + (1 << 20)


def test_pax_archives_with_fractional_mtimes_extract(box):
    """GNU tar --format=posix (and tarfile's pax) store mtime as a decimal: a float in TarInfo."""
    source = box / "src"
    source.mkdir()
    (source / "a.txt").write_text("pax\n")
    os.utime(source / "a.txt", ns=(1_700_000_000_123_456_789,) * 2)
    made_by_tar = box / "gnu.tar.gz"
    subprocess.run(["tar", "--format=posix", "-czf", str(made_by_tar), "-C", str(source), "a.txt"], check=True)
    with tarfile.open(made_by_tar) as tf:
        assert isinstance(tf.getmember("a.txt").mtime, float)
    folder = colabkit.extract(made_by_tar, to=box / "out", quiet=True)
    assert (folder / "a.txt").read_text() == "pax\n"
    assert abs((folder / "a.txt").stat().st_mtime_ns - 1_700_000_000_123_456_789) < 10**4


def _squeezed(kind: str, data: list[bytes]) -> bytes:
    """`data` as one archive file: plain, gzip, bzip2 (after an empty first stream), xz or lzma-alone."""
    if kind == "plain":
        return b"".join(data)
    if kind == "gz":
        squeeze = zlib.compressobj(6, zlib.DEFLATED, 31)
        return b"".join(squeeze.compress(d) for d in data) + squeeze.flush()
    if kind == "bz2-empty-first":
        squeeze = bz2.BZ2Compressor()
        return bz2.compress(b"") + b"".join(squeeze.compress(d) for d in data) + squeeze.flush()
    squeeze = lzma.LZMACompressor(format=lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)
    return b"".join(squeeze.compress(d) for d in data) + squeeze.flush()


@pytest.mark.parametrize("kind", ["plain", "gz", "bz2-empty-first", "xz", "lzma-alone", "gz-unnamed",
                                  "bz2-unnamed"])
@pytest.mark.parametrize("header", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_header_declaring_gigabytes_is_refused_unread(tmp_path, box, kind, header):
    """tarfile reads a pax or long-name header whole, at its declared size: 2 MB of tar.gz took 6 GB."""
    import tracemalloc

    info = tarfile.TarInfo("././@LongLink" if header == tarfile.GNUTYPE_LONGNAME else "././@PaxHeader")
    info.type, info.size = header, 4 << 30
    body = [info.tobuf(format=tarfile.USTAR_FORMAT)] + [bytes(1 << 20)] * 64  # a real bomb goes on to 4 GiB
    name = {"plain": "bomb.tar", "gz": "bomb.tar.gz", "bz2-empty-first": "bomb.tar.bz2", "xz": "bomb.tar.xz",
            "lzma-alone": "bomb.tar",  # lzma-alone under a plain name: told by trying
            "gz-unnamed": "dataset", "bz2-unnamed": "dataset"}[kind]  # no suffix: told from the bytes
    (box / name).write_bytes(_squeezed(kind.replace("-unnamed", "").replace("bz2", "bz2-empty-first"), body))
    around = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not LOCK_FILE.match(p.name)}
    tracemalloc.start()
    try:
        with pytest.raises(errors.ArchiveTooLargeError, match="asks for 4,294,967,296 bytes more.*source you trust"):
            colabkit.extract(box / name, quiet=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20  # never the declared gigabytes, nor the 64 MiB after (xz holds an 8 MiB dictionary)
    assert names(box) == [name]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not LOCK_FILE.match(p.name)} == around


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    size = len(body) + 1
    while len(str(size)) + len(body) != size:
        size = len(str(size)) + len(body)
    return str(size).encode() + body


def test_many_large_pax_headers_extract_in_bounded_memory(box):
    """Each header under the cap; tarfile kept every member (and its headers) until the end."""
    import tracemalloc

    archive = box / "pax.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for i in range(24):
            info = tarfile.TarInfo(f"f{i}.txt")
            info.pax_headers = {"comment": "c" * 900_000}
            info.size = 3
            tf.addfile(info, io.BytesIO(b"hi\n"))
    tracemalloc.start()
    try:
        folder = colabkit.extract(archive, quiet=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".txt") == sorted(f"f{i}.txt" for i in range(24))
    assert peak < 16 << 20  # a few headers' worth, not 24 of them (about 45 MB kept before)


def test_global_pax_headers_past_the_cap_are_refused(box):
    archive = box / "global.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for key in ("a", "b"):  # each one under the cap; together they pass it, and tarfile keeps them all
            data = _pax_record(f"colabkit.{key}", key * 700_000)
            info = tarfile.TarInfo("././@PaxHeader")
            info.type, info.size = tarfile.XGLTYPE, len(data)
            tf.addfile(info, io.BytesIO(data))
            file_member(f"{key}.txt", b"x")(tf)
    with pytest.raises(errors.ArchiveTooLargeError, match="global pax headers"):
        colabkit.extract(archive, quiet=True)
    assert names(box) == ["global.tar.gz"]


def test_the_forward_reader_returns_what_a_file_would(monkeypatch):
    """Reads and forward seeks across many block edges give the bytes a plain file gives."""
    import random

    from colabkit._archive import tarstream

    monkeypatch.setattr(tarstream, "BLOCK", 7)
    data = os.urandom(5000)
    plain, raw = io.BytesIO(data), io.BytesIO(data)
    reader = tarstream.Forward(io.BufferedReader(raw, buffer_size=7), raw, Path("x.tar"))
    reader.got_member()
    rng = random.Random(4)
    while plain.tell() < len(data):
        if rng.random() < 0.3:
            to = plain.tell() + rng.randrange(0, 40)
            assert reader.seek(to) == plain.seek(to)
        size = rng.randrange(0, 60)
        assert reader.read(size) == plain.read(size)
        assert reader.tell() == plain.tell()
    assert reader.read(10) == b""


def test_the_forward_reader_never_goes_back_nor_reads_past_the_header_cap(monkeypatch):
    from colabkit._archive import tarstream

    data = bytes(range(256)) * 64
    raw = io.BytesIO(data)
    reader = tarstream.Forward(io.BufferedReader(raw), raw, Path("x.tar.gz"))
    reader.got_member()
    assert reader.read(100) == data[:100]
    with pytest.raises(OSError, match="go back from byte 100 to 99"):  # inside the block it holds, too
        reader.seek(99)
    with pytest.raises(OSError, match="to its end"):
        reader.read(-1)
    monkeypatch.setattr(tarstream, "HEADER_MAX", 1000)
    reader.expect_header()
    assert reader.read(600) == data[100:700]
    with pytest.raises(errors.ArchiveTooLargeError, match="asks for 600 bytes more"):
        reader.read(600)  # 1,200 header bytes before one member
    reader.got_member()
    assert reader.read(4000) == data[700:4700]  # a member's data is not header


def test_an_lzma_alone_tar_is_read_by_tarfile_itself(box):
    """No gzip/bzip2/xz magic and no tar header: tarfile's own detection (here: legacy .lzma)."""
    plain = make_tar(box / "plain.tar", FILES).read_bytes()
    (box / "plain.tar").unlink()
    (box / "data.tar.lzma").write_bytes(lzma.compress(plain, format=lzma.FORMAT_ALONE))
    check_files(colabkit.extract(box / "data.tar.lzma", quiet=True))


def test_the_ratio_cap_counts_hard_links_against_the_bytes_read_so_far(box):
    """5,000 hard links to one 2 MiB file claim 10 GiB from ~100 KB of tar.gz; random padding
    after them must not count (a reader that runs 10 MiB ahead let this through)."""
    archive = box / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        file_member("big.bin", bytes(2 << 20))(tf)
        for i in range(5000):
            hardlink(f"l/{i}", "big.bin")(tf)
        file_member("pad.bin", os.urandom(10 << 20))(tf)
    with pytest.raises(errors.ArchiveTooLargeError, match="max_ratio"):
        colabkit.extract(archive, quiet=True)
    assert names(box) == ["links.tar.gz"]


def test_a_member_of_negative_size_cannot_send_the_reader_back(box):
    """An old-GNU sparse member of size -1024 (base-256) points tarfile back into a.txt's data,
    where a forged header hides (CVE-2025-8194's shape); GNU tar refuses it too."""

    def checksummed(header: bytearray) -> bytes:
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        return bytes(header)

    hidden = tarfile.TarInfo("hidden.txt")
    hidden.size = 512
    first = tarfile.TarInfo("a.txt")
    first.size = 512
    sparse = bytearray(tarfile.TarInfo("s.bin").tobuf(format=tarfile.GNU_FORMAT))
    sparse[156:157] = b"S"
    sparse[124:136] = b"\xff" + (-1024 % 256**11).to_bytes(11, "big")
    sparse[483:495] = b"%011o\0" % 0
    tar = first.tobuf(format=tarfile.GNU_FORMAT) + hidden.tobuf(format=tarfile.GNU_FORMAT) \
        + checksummed(sparse) + bytes(1024)
    (box / "back.tar.gz").write_bytes(gzip.compress(tar))
    with pytest.raises(errors.ArchiveError):
        colabkit.extract(box / "back.tar.gz", quiet=True)
    assert names(box) == ["back.tar.gz"]


def test_a_hard_link_lands_where_it_names_when_folders_are_evicted_meanwhile(box):
    """Opening the source's 80 folders closed the cached descriptor of the link's own folder,
    whose number was reused: the link went into the source's path."""
    archive = box / "deep-link.tar"
    deep = "d/" + "/".join(f"a{i}" for i in range(80))
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("x")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        file_member(f"{deep}/f", b"linked\n")(tf)
        for i in range(70):
            info = tarfile.TarInfo(f"e/{i}")
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        hardlink("x/h", f"{deep}/f")(tf)
    folder = colabkit.extract(archive, to=box / "out", quiet=True)
    assert (folder / "x" / "h").read_bytes() == b"linked\n"
    assert sorted(p.name for p in (folder / deep).iterdir()) == ["f"]
    assert not list(folder.rglob("h"))[1:]  # only x/h


def test_a_plain_tar_whose_first_name_starts_like_bzip2_extracts(box):
    archive = make_tar(box / "data.tar", {"BZh91AY.txt": b"not bzip2\n", **FILES})
    assert archive.read_bytes().startswith(b"BZh9")
    folder = colabkit.extract(archive, quiet=True)
    assert (folder / "BZh91AY.txt").read_bytes() == b"not bzip2\n"
    check_files(folder)


def test_global_pax_headers_with_too_many_keys_are_refused(box):
    archive = box / "keys.tar.gz"
    data = b"".join(_pax_record(f"colabkit.k{i}", "v") for i in range(1001))
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("././@PaxHeader")
        info.type, info.size = tarfile.XGLTYPE, len(data)
        tf.addfile(info, io.BytesIO(data))
        for i in range(3):
            file_member(f"{i}.txt", b"x")(tf)
    with pytest.raises(errors.ArchiveTooLargeError, match="1,000 entries"):
        colabkit.extract(archive, quiet=True)
    assert names(box) == ["keys.tar.gz"]


@pytest.mark.parametrize("first", [True, False])
def test_a_malformed_pax_sparse_map_is_damaged_not_a_crash(box, first):
    archive = box / "map.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        if not first:
            file_member("ok.txt", b"ok")(tf)
        info = tarfile.TarInfo("sparse.bin")
        info.size = 3
        info.pax_headers = {"GNU.sparse.size": "10", "GNU.sparse.map": "x,y"}
        tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(errors.ArchiveError):
        colabkit.extract(archive, quiet=True)
    assert names(box) == ["map.tar.gz"]
