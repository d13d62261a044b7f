"""_fsio, the one publish layer: the stale-temp rule and the lock's holder file, against planted names."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from colabkit import _fsio


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    return int(child.stdout)


def test_only_colabkit_shaped_temps_of_a_dead_owner_are_stale(tmp_path):
    dead = _dead_pid()
    tmp_path = tmp_path / "folder"
    tmp_path.mkdir()
    users = [tmp_path / ".notes.tmp", tmp_path / ".draft.v2.tmp", tmp_path / ".x.1-abcd.tmp"]  # no pid shape
    ours = tmp_path / f".model.pt.{dead}-0badc0de.tmp"  # temp_path's shape, its writer gone
    tagged = tmp_path / f".data.part-{dead}-deadbeef.tmp"
    for path in [*users, ours, tagged]:
        path.write_bytes(b"kept for a week")
        os.utime(path, (1_000_000, 1_000_000))  # idle far past STALE_AFTER
    assert [_fsio.is_stale_temp(p) for p in users] == [False, False, False]
    assert _fsio.is_stale_temp(ours) and _fsio.is_stale_temp(tagged)
    removed = _fsio.remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([ours, tagged])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in users)
    assert all(p.read_bytes() == b"kept for a week" for p in users)


def test_a_temp_name_gives_its_owner_pid_only_in_temp_paths_shape(tmp_path):
    made = _fsio.temp_path(tmp_path / "ckpt-000001.pt", "part")
    assert _fsio.temp_owner_pid(made.name) == os.getpid()
    assert _fsio.temp_owner_pid(_fsio.temp_path(tmp_path / "a.b-c.csv").name) == os.getpid()
    for name in (".notes.tmp", ".a.b.tmp", ".x.12-zz.tmp", "x.12-0badc0de.tmp", ".x.12-0badc0de.tmp.bak"):
        assert _fsio.temp_owner_pid(name) is None, name


def test_the_lock_holder_file_is_never_written_through_a_planted_link(tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious.txt"
    victim.write_bytes(b"the user's own bytes")
    (box / ".data.lock.pid").symlink_to(victim)
    with _fsio.locked(box / "data", "The folder", timeout=5):
        pass
    assert victim.read_bytes() == b"the user's own bytes"
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert (box / ".data.lock.pid").is_symlink()  # left as it was: not ours to remove


def test_a_planted_link_at_the_lock_file_never_truncates_its_target(tmp_path):
    """filelock >= 3.20.3 opens the lock no-follow (setup.cfg's bound); older ones truncated the target."""
    box = tmp_path / "box"
    box.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"the user's own bytes")
    (box / ".data.lock").symlink_to(victim)
    with contextlib.suppress(OSError):  # ELOOP: refused rather than followed
        with _fsio.locked(box / "data", "The folder", timeout=5):
            pass
    assert victim.read_bytes() == b"the user's own bytes"
    assert (box / ".data.lock").is_symlink()


def test_only_this_process_or_a_dead_ones_temp_may_be_resumed(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not _fsio.may_resume(f".data.part-{alive.pid}-0badc0de.tmp")  # a live writer's
    finally:
        alive.kill()
        alive.wait()
    assert _fsio.may_resume(f".data.part-{_dead_pid()}-0badc0de.tmp")
    assert _fsio.may_resume(_fsio.temp_path(tmp_path / "data", "partial").name)
    assert not _fsio.may_resume(".data.partial.tmp")  # no owner named: not colabkit's to take


def test_a_lock_kept_off_the_users_folders_names_its_holder(tmp_path):
    """beside=False: nothing appears around the target; a waiter learns who holds it (BusyError.holder)."""
    from colabkit.errors import BusyError

    tmp_path = tmp_path / "box"
    tmp_path.mkdir()
    target = tmp_path / "data"
    target.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from colabkit import _fsio\n"
         "with _fsio.locked(Path(sys.argv[1]), 'The folder', beside=False):\n"
         "    print('held', flush=True); time.sleep(60)", str(tmp_path / "alias" / ".." / "data")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        try:
            with _fsio.locked(target, "The folder", timeout=0.2, beside=False):
                raise AssertionError("the lock was held by another process")
        except BusyError as exc:
            assert exc.holder == holder.pid and f"process {holder.pid}" in str(exc)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"] and list(target.iterdir()) == []


def test_replace_tree_publishes_the_new_folder_and_puts_the_old_one_back_on_failure(tmp_path):
    box = tmp_path / "box"
    (box / "final" / "sub").mkdir(parents=True)
    (box / "final" / "sub" / "old.txt").write_bytes(b"old")
    new = box / ".final.part-1-0badc0de.tmp"
    new.mkdir()
    (new / "new.txt").write_bytes(b"new")
    _fsio.replace_tree(new, box / "final")
    assert sorted(p.name for p in box.iterdir()) == ["final"]  # the old copy retired, no temp left
    assert [p.name for p in (box / "final").iterdir()] == ["new.txt"]
    try:
        _fsio.replace_tree(box / "missing", box / "final")
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a missing new folder must fail")
    assert sorted(p.name for p in box.iterdir()) == ["final"]
    assert (box / "final" / "new.txt").read_bytes() == b"new"
