"""A big zip is written by two processes: the same files, the same refusals, nothing kept on failure.

The helper is a real second interpreter (colabkit._archive.zipwrite); these tests lower its
threshold so that small archives use it too, and spy on the processes it starts.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

import colabkit
from colabkit import errors
from colabkit._archive import zipwrite

from .test_archive_hostile import box_of, snapshot, world  # noqa: F401  (world is a fixture)


@pytest.fixture
def started(monkeypatch):
    """The helper processes extract starts (real ones), recorded."""
    processes = []
    real = subprocess.Popen

    def spy(*args, **kwargs):
        process = real(*args, **kwargs)
        processes.append(process)
        return process

    monkeypatch.setattr(zipwrite.subprocess, "Popen", spy)
    return processes


@pytest.fixture
def always(monkeypatch, started):
    """Every zip of two or more files gets a helper."""
    monkeypatch.setattr(zipwrite, "_HELPER_MIN_S", 0.0)
    return started


@pytest.fixture
def box(tmp_path):
    folder = tmp_path / "box"  # tmp_path also holds the isolated VM's folders
    folder.mkdir()
    return folder


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith((".lock", ".pid")))


def files_of(count: int) -> dict[str, bytes]:
    return {f"data/part{i % 7}/item{i:05d}.txt": f"row {i}\n".encode() * (1 + i % 5) for i in range(count)}


def make_zip(path: Path, files: dict[str, bytes], *, stored: bool = False, modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zf.compression
            info.external_attr = ((modes or {}).get(name, 0o644) | stat.S_IFREG) << 16
            zf.writestr(info, data)
    return path


def contents(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".colabkit")}


def food11_like(count: int) -> dict[str, bytes]:
    """Shaped like ML2022's HW3 food11.zip: one top folder, '<label>_<n>.jpg' names, macOS's __MACOSX beside."""
    files = {}
    for i in range(count):
        split = ("training", "validation", "test")[i % 3]
        name = f"{i:04d}.jpg" if split == "test" else f"{i % 11}_{i}.jpg"
        files[f"food11/{split}/{name}"] = b"\xff\xd8\xff\xe0" + os.urandom(600) + bytes(600)
    files["__MACOSX/food11/._training"] = b"\x00\x05\x16\x07resource fork"
    files["food11/run.sh"] = b"#!/bin/sh\necho hi\n"
    return files


def test_a_big_zip_gets_one_helper_and_the_same_files_as_one_process(tmp_path, monkeypatch, started):
    files = food11_like(12_000)  # above the threshold as it ships (an estimated 0.5 s of work)
    archive = make_zip(tmp_path / "food11.zip", files, modes={"food11/run.sh": 0o755})
    split = colabkit.extract(archive, to=tmp_path / "split", quiet=True)
    assert split == tmp_path / "split" / "food11"  # unwrapped, as unzip lays it out
    assert len(started) == 1 and started[0].returncode == 0
    monkeypatch.setattr(zipwrite, "_HELPER_MIN_S", float("inf"))
    alone = colabkit.extract(archive, to=tmp_path / "alone", quiet=True)
    assert len(started) == 1
    got = contents(split.parent)
    assert got == contents(alone.parent)
    assert {name: data for name, (data, _) in got.items()} == files
    assert got["food11/run.sh"][1] == 0o755
    assert len(list((split / "training").iterdir())) == 4000


_SAME_TIME = textwrap.dedent("""
    import sys
    import colabkit
    from colabkit._archive import zipwrite
    zipwrite._HELPER_MIN_S = 0.0
    print(colabkit.extract(sys.argv[1], quiet=True))
""")


def test_two_processes_extracting_one_big_zip_at_once_take_turns(box):
    """Two notebooks (or a notebook and a !python) on the same archive: one writes, with its helper;
    the other waits on the lock, then reuses the result."""
    files = food11_like(3000)
    archive = make_zip(box / "food11.zip", files)
    runs = [subprocess.Popen([sys.executable, "-c", _SAME_TIME, str(archive)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert {out.strip() for out, _ in outputs} == {str(box / "food11" / "food11")}
    got = contents(box / "food11")
    assert {name: data for name, (data, _) in got.items()} == files
    assert left_in(box) == ["food11", "food11.zip"]  # no work folder left by either


def test_a_small_zip_is_written_by_this_process_alone(tmp_path, started):
    archive = make_zip(tmp_path / "small.zip", files_of(50))
    folder = colabkit.extract(archive, quiet=True)
    assert len(contents(folder)) == 50
    assert started == []


@pytest.mark.parametrize("where", ["helper", "this process"])
def test_a_damaged_member_in_either_share_keeps_nothing(box, always, where):
    files = {f"f{i}.txt": f"file {i}\n".encode() for i in range(6)}
    damaged = "f5.txt" if where == "helper" else "f0.txt"  # the helper takes the last files
    files[damaged] = b"THE-DAMAGED-MEMBER\n"
    archive = make_zip(box / "bad.zip", files, stored=True)
    raw = archive.read_bytes()
    assert raw.count(b"THE-DAMAGED-MEMBER") == 1
    archive.write_bytes(raw.replace(b"THE-DAMAGED-MEMBER", b"THE-DAMAGED-MEMBEX"))
    with pytest.raises(errors.ArchiveError, match=rf"damaged at '{damaged}'.*Fetch it again"):
        colabkit.extract(archive, quiet=True)
    assert left_in(box) == ["bad.zip"]
    assert len(always) == 1 and always[0].returncode is not None  # waited for (or stopped), never left running


def test_a_helper_that_cannot_start_leaves_its_part_to_this_process(box, monkeypatch, always):
    archive = make_zip(box / "data.zip", files_of(40))
    monkeypatch.setattr(zipwrite, "_BOOT", "import os; os._exit(3)")  # an import failed, say
    got = contents(colabkit.extract(archive, quiet=True))
    assert {k: v for k, (v, _) in got.items()} == {k[len("data/"):]: v for k, v in files_of(40).items()}
    assert [process.returncode for process in always] == [3]


# the real helper, killed (as by the out-of-memory killer) after it wrote two files of its part
_DIES_MIDWAY = textwrap.dedent("""
    import os, sys
    sys.path.append(sys.argv[1])
    from colabkit._archive import zipwrite
    real, done = zipwrite.write_zip_file, []
    def dying(*args):
        if len(done) == 2:
            os._exit(9)
        done.append(real(*args))
    zipwrite.write_zip_file = dying
    zipwrite.main()
""")


def test_a_helper_killed_midway_leaves_its_part_to_this_process(box, monkeypatch, always):
    files = {f"f{i:02d}.bin": os.urandom(3000) for i in range(30)}
    archive = make_zip(box / "data.zip", files)
    monkeypatch.setattr(zipwrite, "_BOOT", _DIES_MIDWAY)
    monkeypatch.setattr(zipwrite, "_START_S", 0.0)  # an even split: the helper gets 15 files
    got = contents(colabkit.extract(archive, quiet=True))
    assert {k: v for k, (v, _) in got.items()} == files
    assert [process.returncode for process in always] == [9]


@pytest.mark.parametrize("executable", ["", "/nonexistent/python3"])
def test_without_a_usable_interpreter_this_process_writes_everything(tmp_path, monkeypatch, always, executable):
    monkeypatch.setattr(zipwrite.sys, "executable", executable)
    archive = make_zip(tmp_path / "data.zip", files_of(40))
    got = contents(colabkit.extract(archive, quiet=True))
    assert {k: v for k, (v, _) in got.items()} == {k[len("data/"):]: v for k, v in files_of(40).items()}


def test_a_frozen_app_starts_no_helper(box, monkeypatch, always):
    """In a frozen app sys.executable is the app itself, which must not be run as a Python."""
    monkeypatch.setattr(zipwrite.sys, "frozen", True, raising=False)
    archive = make_zip(box / "data.zip", files_of(40))
    assert len(contents(colabkit.extract(archive, quiet=True))) == 40
    assert always == []


def test_an_archive_replaced_after_it_was_judged_gets_no_helper(tmp_path):
    judged = make_zip(tmp_path / "a.zip", files_of(5))
    other = make_zip(tmp_path / "b.zip", files_of(6))
    with zipfile.ZipFile(judged) as zf:
        assert zipwrite._Helper.start(other, zf, None, []) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("members,reason", [
    (["a", "a/b"], "lies under a path that another member made a file"),
    (["a/b", "a"], "is a file or link where other members make a folder"),
])
def test_a_file_and_a_folder_of_one_name_are_refused_before_any_write(world, always, members, reason):  # noqa: F811
    box = box_of(world)
    files = {f"pad{i}.txt": b"pad\n" for i in range(4)}
    files.update({name: b"clash\n" for name in members})
    archive = make_zip(box / "clash.zip", files)
    before = snapshot(world)
    with pytest.raises(errors.UnsafeArchiveError, match=reason):
        colabkit.extract(archive, quiet=True)
    assert snapshot(world) == before
    assert always == []  # decided from the member table: no process was started


_EXTRACT = textwrap.dedent("""
    import signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a kernel does; a background job ignores it
    import colabkit
    from colabkit._archive import zipwrite
    zipwrite._HELPER_MIN_S, zipwrite._START_S, zipwrite._BOOT = 0.0, 0.0, sys.argv[3]
    colabkit.extract(sys.argv[1], to=sys.argv[2], quiet=True)
""")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not reaped
    except FileNotFoundError:
        return True


def _wait_for(check, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _run_until_the_helper_starts(box: Path, boot: str) -> tuple[subprocess.Popen, int]:
    archive = make_zip(box / "data.zip", files_of(400))
    process = subprocess.Popen([sys.executable, "-c", _EXTRACT, str(archive), str(box / "out"), boot],
                               stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (box / "helper.pid").exists() and (box / "helper.pid").read_text())
    return process, int((box / "helper.pid").read_text())


def test_ctrl_c_while_waiting_for_the_helper_stops_it_and_keeps_nothing(box):
    boot = f"import os, time; open({str(box / 'helper.pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    process, helper = _run_until_the_helper_starts(box, boot)
    time.sleep(0.5)  # this process's part is written; it waits for the helper now
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) != 0
    assert "KeyboardInterrupt" in process.stderr.read()
    assert _wait_for(lambda: _gone(helper), 5)
    assert left_in(box) == ["data.zip"]  # no target, no work folder (helper.pid is filtered as a lock)


def test_a_helper_whose_parent_is_killed_stops(box):
    boot = textwrap.dedent(f"""
        import os, sys, time
        open({str(box / 'helper.pid')!r}, "w").write(str(os.getpid()))
        sys.path.append(sys.argv[1])
        from colabkit._archive import zipwrite
        real = zipwrite.write_zip_file
        def slow(*args):
            time.sleep(0.05)  # 200 files: 10 s
            real(*args)
        zipwrite.write_zip_file = slow
        zipwrite.main()
    """)
    process, helper = _run_until_the_helper_starts(box, boot)
    time.sleep(0.5)
    assert not _gone(helper)
    process.kill()  # a runtime restart, the out-of-memory killer
    process.wait(timeout=30)
    assert _wait_for(lambda: _gone(helper), 5)  # within a file or two, not after all 200
